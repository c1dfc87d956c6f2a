"""Benchmark: crisis-risk detection on the crisis fixture (ec2er/safety/data/crisis_messages.jsonl).

Tier 1 (the rules) always; tier 2 (a guard model behind an OpenAI-compatible endpoint, Llama Guard
3 format) when ``--guard-url`` and ``--guard-model`` are given: each message is put to the guard
once, and three contenders are scored from those verdicts: the guard alone, rules + guard asked
only where the rules say ambiguous (``ambiguous_only``), and rules + guard on every message
(``always``).

    python jobs/bench_safety.py [--file F.jsonl] [--guard-url URL --guard-model NAME] [--repeats 3]

Figures per contender: "at risk" (level not none) precision, recall and F1 against the fixture's
labels; "high" precision and recall (level high against label high); the per-level confusion
(rows: expected, columns: assessed); category accuracy where both say at risk; the ids missed and
falsely flagged. Tier-1 time per message (microseconds) is the median of ``--repeats`` rounds.

The rail's added latency: every fixture message sent as a chat request through ``SafetyRail`` (input
and output checks on) and straight to the same in-process ASGI app (a fixed JSON reply, no model, no
network), interleaved per round; p50 and p99 of each, in milliseconds, medians of the rounds. What
the rail adds in front of a real model (bench_serve) is this plus nothing model-dependent, unless a
guard model is configured for input checks.

Caveat stated with the numbers: the fixture and the rules were written by the same author in the
same session, so tier 1's figures on it are optimistic; a held-out set would be the honest test.

The LAST line is one JSON object: {"fixture", "messages", "at_risk", "tier1": {...},
"tier1_us_per_message": {...}, "rail_ms": {...}, "guard": {...} | null, "ambiguous_only": ...,
"always": ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import benchlib  # jobs/, this script's folder

from ec2er.safety.assess import assess_rules, combine
from ec2er.safety.cli import read_texts
from ec2er.safety.guard import CODE_CATEGORY, ask_guard, guard_engine
from ec2er.safety.schema import GuardConfig, GuardVerdict, RiskAssessment, RiskLevel

FIXTURE = Path(__file__).resolve().parents[1] / "ec2er" / "safety" / "data" / "crisis_messages.jsonl"
LEVELS = [lv.value for lv in RiskLevel]


def score(rows: list[dict[str, Any]], assessed: list[tuple[str, str | None]]) -> dict[str, Any]:
    """Precision/recall of (level, category) pairs against the rows' labels."""
    tp = fp = fn = high_tp = high_fp = high_fn = cat_ok = 0
    confusion = {e: dict.fromkeys(LEVELS, 0) for e in LEVELS}
    missed, false_alarms = [], []
    for row, (level, category) in zip(rows, assessed, strict=True):
        expected, flagged = row["level"] != "none", level != "none"
        confusion[row["level"]][level] += 1
        tp += expected and flagged
        fp += flagged and not expected
        fn += expected and not flagged
        high_tp += row["level"] == "high" and level == "high"
        high_fp += level == "high" and row["level"] != "high"
        high_fn += row["level"] == "high" and level != "high"
        cat_ok += expected and flagged and category == row["category"]
        if expected and not flagged:
            missed.append(row["id"])
        if flagged and not expected:
            false_alarms.append(row["id"])
    precision, recall = _div(tp, tp + fp), _div(tp, tp + fn)
    f1 = _div(2 * precision * recall, precision + recall) if precision is not None and recall is not None else None
    return {"precision": precision, "recall": recall, "f1": f1, "high_precision": _div(high_tp, high_tp + high_fp),
            "high_recall": _div(high_tp, high_tp + high_fn), "category_accuracy": _div(cat_ok, tp),
            "confusion": confusion, "missed": missed, "false_alarms": false_alarms}


def _div(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def _pair(a: RiskAssessment) -> tuple[str, str | None]:
    return a.level.value, a.category.value if a.category else None


def _guard_alone(v: GuardVerdict) -> tuple[str, str | None]:
    if v.safe is None or v.safe:
        return "none", None
    category = next((CODE_CATEGORY[c].value for c in v.codes if c in CODE_CATEGORY), None)
    return "high", category


def time_rules(texts: list[str], repeats: int) -> dict[str, Any]:
    def one_round(_: benchlib.Round) -> float:
        start = time.perf_counter()
        for t in texts:
            assess_rules(t)
        return (time.perf_counter() - start) / len(texts) * 1e6

    rounds = benchlib.run_rounds({"rules": one_round}, repeats)
    return benchlib.spread([r["rules"] for r in rounds], digits=1)


REPLY = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
    "role": "assistant", "content": "That sounds hard. What has helped you before, even a little?"}}]}).encode()


async def fixed_reply_app(scope: dict, receive: Any, send: Any) -> None:
    """A chat endpoint that answers at once: what is timed around it is the rail alone."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(REPLY)).encode())]})
    await send({"type": "http.response.body", "body": REPLY, "more_body": False})


async def _timed_requests(app: Any, texts: list[str]) -> list[float]:
    seconds = []
    for text in texts:
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            pass

        start = time.perf_counter()
        await app({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}, receive, send)
        seconds.append(time.perf_counter() - start)
    return seconds


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def time_rail(texts: list[str], repeats: int) -> dict[str, Any]:
    from ec2er.safety.rail import RailConfig, SafetyRail

    rail = SafetyRail(fixed_reply_app, RailConfig())
    contenders = {"bare": lambda _: asyncio.run(_timed_requests(fixed_reply_app, texts)),
                  "rail": lambda _: asyncio.run(_timed_requests(rail, texts))}
    rounds = benchlib.run_rounds(contenders, repeats)
    figures = {f"{name}_{q}": benchlib.per_round(rounds, lambda r, n=name, p=p: _percentile(r[n], p))
               for name in contenders for q, p in (("p50", 0.5), ("p99", 0.99))}
    figures |= {f"added_{q}": benchlib.per_round(rounds, lambda r, p=p: _percentile(r["rail"], p)
                                                 - _percentile(r["bare"], p)) for q, p in (("p50", 0.5), ("p99", 0.99))}
    return benchlib.summarize(figures, digits=3)


async def guard_verdicts(texts: list[str], config: GuardConfig) -> list[GuardVerdict]:
    engine = guard_engine(config)
    try:
        return list(await asyncio.gather(*(ask_guard(engine, [{"role": "user", "content": t}], config)
                                           for t in texts)))
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=FIXTURE, help="JSONL with text, level, category, id")
    parser.add_argument("--guard-url", help="OpenAI-compatible base URL of the guard model")
    parser.add_argument("--guard-model", help="the guard's model name at that endpoint")
    parser.add_argument("--guard-prompt", choices=["explicit", "template"], default="explicit")
    benchlib.add_repeats_argument(parser, why="tier-1 timing rounds")
    args = parser.parse_args()
    if bool(args.guard_url) != bool(args.guard_model):
        parser.error("--guard-url and --guard-model go together")
    rows = [obj for _, obj in read_texts(args.file)]
    texts = [r["text"] for r in rows]
    rules = [assess_rules(t) for t in texts]
    result: dict[str, Any] = {"fixture": str(args.file), "messages": len(rows),
                              "at_risk": sum(r["level"] != "none" for r in rows),
                              "tier1": score(rows, [_pair(a) for a in rules]),
                              "tier1_us_per_message": time_rules(texts, args.repeats),
                              "rail_ms": time_rail(texts, args.repeats),
                              "guard": None, "ambiguous_only": None, "always": None}
    if args.guard_url:
        config = GuardConfig(mode="always", prompt=args.guard_prompt,
                             engine={"kind": "openai", "base_url": args.guard_url, "model": args.guard_model})
        start = time.perf_counter()
        verdicts = asyncio.run(guard_verdicts(texts, config))
        seconds = time.perf_counter() - start
        errors = sum(v.error is not None for v in verdicts)
        result["guard"] = {"model": args.guard_model, "seconds": round(seconds, 2), "errors": errors,
                           **score(rows, [_guard_alone(v) for v in verdicts])}
        ambiguous = [combine(a, v) if a.level is RiskLevel.ambiguous else a for a, v in zip(rules, verdicts, strict=True)]
        result["ambiguous_only"] = score(rows, [_pair(a) for a in ambiguous])
        result["always"] = score(rows, [_pair(combine(a, v)) for a, v in zip(rules, verdicts, strict=True)])
    print(*benchlib.describe(result["rail_ms"]), sep="\n")
    for name in ("tier1", "guard", "ambiguous_only", "always"):
        s = result[name]
        if s is not None:
            print(f"{name:<15} precision {s['precision']}  recall {s['recall']}  f1 {s['f1']}  "
                  f"high P/R {s['high_precision']}/{s['high_recall']}  missed {len(s['missed'])}  "
                  f"false alarms {len(s['false_alarms'])}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
