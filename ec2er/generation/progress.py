"""What a person watching a generation run sees: turns and tokens as they happen, tokens/s and
an estimate of the time left, on the console and in ``progress.json`` (the viewer shows it live).

Dialogues finish late (a dialogue is all its turns plus extraction), so counting finished
dialogues alone leaves the bar at 0 for minutes. The actors therefore also report every reply as
it happens (``TurnReporter``, a few messages a second at most): its completion tokens, and its
request's ``max_tokens``, the unit of the estimate. The work of a session is its dialogues times
a dialogue's token budget (``GenerateConfig.token_budget``: background, turns, the supervisor's
looks and the items' extraction, whose long replies are most of a dialogue's time: counted in
turns, the bar sat at 70% through the whole extraction), for the turns a dialogue takes (the
mean of the dialogues finished so far, ``max_turns`` before the first one finishes, so the first
estimate errs long, never short).

``progress.json`` (written atomically every few seconds while a session runs, then once more at its
end) holds the running counters and these derived numbers::

    state            "running" | "done" | "stopped" (the session ended with an error or Ctrl-C)
    updated          unix time of this write; a "running" file not updated for long is a dead driver
    started          unix time the session started
    planned          dialogues the run plans; already: written before this session
    dialogues ...    the counters (dialogues, failed, redo, items, turns, completion_tokens, ...)
    tokens_per_s     completion tokens per second since the first reply of this session
    fraction         share of this session's work done (estimated in token budget)
    eta_s            seconds left (null until the first turn)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ec2er.schemas.facts import GenerationFiles

WRITE_EVERY_S = 2.0   # progress.json
REPORT_EVERY_S = 1.0  # an actor's turn and token counts to the counters actor


class TurnReporter:
    """Per-turn counts from a generation actor, sent on at most once a second (a fire-and-forget
    call), so a dialogue's progress shows while it runs at no cost to the engine."""

    def __init__(self, send: Callable[[dict[str, int]], None], every_s: float = REPORT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic):
        self.send, self.every_s, self.clock = send, every_s, clock
        self.pending: Counter[str] = Counter()
        self.last = clock()

    def add(self, delta: dict[str, int]) -> None:
        self.pending.update(delta)
        if self.clock() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.send(dict(self.pending))
            self.pending.clear()
        self.last = self.clock()


class LiveProgress:
    """Turns the counters into a bar position, a console line and ``progress.json``."""

    def __init__(self, folder: Path, planned: int, already: int, max_turns: int,
                 token_budget: Callable[[float], float], clock: Callable[[], float] = time.time):
        self.path = folder / GenerationFiles.PROGRESS
        self.planned, self.already, self.max_turns = planned, already, max_turns
        self.token_budget = token_budget  # of a dialogue of so many turns
        self.clock = clock
        self.started = clock()
        self.first_reply: float | None = None  # engines start before the first reply: not work
        self.written = 0.0

    def document(self, counts: dict[str, int], state: str = "running") -> dict[str, Any]:
        now = self.clock()
        turns, tokens = counts.get("turns", 0), counts.get("completion_tokens", 0)
        if self.first_reply is None and tokens:
            self.first_reply = now
        busy = now - self.first_reply if self.first_reply is not None else 0.0
        todo = max(self.planned - self.already, 0)
        finished = counts.get("dialogues", 0) + counts.get("redo", 0)
        turns_per_dialogue = counts.get("finished_turns", 0) / finished if finished else self.max_turns
        work = max(todo * self.token_budget(turns_per_dialogue), 1.0)
        fraction = 1.0 if state == "done" else min(counts.get("budget", 0) / work, 0.99) if todo else 1.0
        eta = None if state == "done" or not turns or busy <= 0 else busy * (1 - fraction) / max(fraction, 1e-9)
        return {"state": state, "updated": round(now, 1), "started": round(self.started, 1),
                "planned": self.planned, "already": self.already, **counts,
                "tokens_per_s": round(tokens / busy, 1) if busy > 0 else None,
                "fraction": round(fraction, 4), "eta_s": None if eta is None else round(eta)}

    def bar_position(self, doc: dict[str, Any]) -> float:
        """Dialogues done, in dialogue-equivalents (turns done count as parts of dialogues)."""
        return self.already + doc["fraction"] * max(self.planned - self.already, 0)

    def line(self, doc: dict[str, Any]) -> str:
        rate = f"{doc['tokens_per_s']:.0f} tok/s" if doc["tokens_per_s"] is not None else "starting"
        eta = f"ETA {_duration(doc['eta_s'])}" if doc["eta_s"] is not None else "ETA ?"
        return (f"{self.already + doc.get('dialogues', 0)}/{self.planned} dialogues, {doc.get('turns', 0)} turns, "
                f"{doc.get('completion_tokens', 0)} tokens, {rate}, {eta}; items={doc.get('items', 0)} "
                f"failed={doc.get('failed', 0)} redo={doc.get('redo', 0)}")

    def write(self, doc: dict[str, Any], force: bool = False) -> None:
        from ec2er.io import write_json

        if force or doc["updated"] - self.written >= WRITE_EVERY_S:
            write_json(self.path, doc)
            self.written = doc["updated"]


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
