"""The output folder of a generation run, written crash-safely and resumed idempotently.

Per dialogue the driver appends its EU, EA and dialogue lines first and its ``metadata.jsonl``
line last: that line is the commit marker. On resume, torn last lines are dropped, lines of
dialogues without a metadata line (killed mid-commit) are removed, and committed dialogues are
skipped. Item ids derive from dialogue ids, which derive from the seed, so a crashed-and-resumed
run ends with exactly the items of an uninterrupted one: none lost, none duplicated.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ec2er.errors import ConfigError
from ec2er.generation.config import GenerateConfig
from ec2er.generation.dialogue_loop import DialogueResult
from ec2er.io import append_jsonl, read_jsonl, repair_jsonl_tail, write_json, write_jsonl

EU, EA, DIALOGUES, METADATA = "eu.jsonl", "ea.jsonl", "dialogues.jsonl", "metadata.jsonl"
RUN_FILE = "run.json"


def run_identity(config: GenerateConfig) -> dict[str, Any]:
    """What must match for a folder to be resumed: everything that shapes the data (not the
    dialogue count, which may grow, nor how the work is spread over actors)."""
    identity = config.model_dump(mode="json", exclude={"num_dialogues", "ray", "checkpoint_every", "engine"})
    return identity | {"engine": config.engine.output_identity()}


class RunOutputs:
    def __init__(self, out: str | Path, config: GenerateConfig):
        self.out = Path(out)
        self.config = config

    def path(self, name: str) -> Path:
        return self.out / name

    def prepare(self) -> set[str]:
        """Create or resume the folder; returns the ids of dialogues already committed."""
        self.out.mkdir(parents=True, exist_ok=True)
        identity = run_identity(self.config)
        run_file = self.path(RUN_FILE)
        if run_file.exists():
            if json.loads(run_file.read_text(encoding="utf-8")) != identity:
                raise ConfigError(f"{self.out}: holds a run with a different config "
                                  f"(see {run_file}); use a new output folder")
        else:
            write_json(run_file, identity)
        for name in (EU, EA, DIALOGUES, METADATA):
            repair_jsonl_tail(self.path(name))
        committed = ({m["dialogue_id"] for m in read_jsonl(self.path(METADATA))}
                     if self.path(METADATA).exists() else set())
        self._drop_uncommitted(committed)
        return committed

    def _drop_uncommitted(self, committed: set[str]) -> None:
        for name, key in ((EU, _item_dialogue), (EA, _item_dialogue), (DIALOGUES, lambda r: r["dialogue_id"])):
            path = self.path(name)
            if not path.exists():
                continue
            rows = read_jsonl(path)
            seen: set[str] = set()
            keep = []
            for r in rows:
                ident = r.get("qid") or r.get("dialogue_id")
                if key(r) in committed and ident not in seen:
                    seen.add(ident)
                    keep.append(r)
            if len(keep) != len(rows):
                write_jsonl(path, keep)

    def commit(self, result: DialogueResult) -> None:
        """Append one dialogue's lines; the metadata line goes last (the commit marker)."""
        append_jsonl(self.path(EU), result.eu)
        append_jsonl(self.path(EA), result.ea)
        if result.dialogue is not None:
            append_jsonl(self.path(DIALOGUES), [result.dialogue])
        append_jsonl(self.path(METADATA), [result.metadata])

    def stats(self, session: dict[str, Any] | None = None) -> dict[str, Any]:
        """Category distributions, token counts and outcomes over everything committed."""
        meta = read_jsonl(self.path(METADATA)) if self.path(METADATA).exists() else []
        eu = read_jsonl(self.path(EU)) if self.path(EU).exists() else []
        ea = read_jsonl(self.path(EA)) if self.path(EA).exists() else []
        ok = [m for m in meta if m["status"] == "ok"]
        return {
            "pipeline": self.config.pipeline, "model": self.config.engine.model,
            "dialogues": {"committed": len(meta), "ok": len(ok), "failed": len(meta) - len(ok),
                          "planned": self.config.num_dialogues},
            "items": {"eu": len(eu), "ea": len(ea),
                      "failed": sum(len(m["item_failures"]) for m in meta)},
            "distributions": {
                "eu_coarse": dict(Counter(r["coarse_category"] for r in eu)),
                "eu_fine": dict(Counter(r["finegrained_category"] for r in eu)),
                "ea_category": dict(Counter(r["category"] for r in ea)),
                "ea_question_type": dict(Counter(r["question type"] for r in ea)),
                "theme_category": dict(Counter(m["theme_category"] for m in meta if m["theme_category"])),
                "stop_reason": dict(Counter(m["stop_reason"] for m in meta)),
                "turns": dict(Counter(str(m["turns"]) for m in ok)),
            },
            "tokens": {"prompt": sum(m["prompt_tokens"] for m in meta),
                       # served from the engine's prefix cache (absent from runs before it was recorded)
                       "cached_prompt": sum(m.get("cached_prompt_tokens", 0) for m in meta),
                       "completion": sum(m["completion_tokens"] for m in meta)},
            "session": session or {},
        }

    def checkpoint(self, session: dict[str, Any], final: bool = False) -> dict[str, Any]:
        stats = self.stats(session)
        write_json(self.path("stats.json"), stats)
        if self.config.pipeline == "concise":
            from ec2er.generation.concise import write_concise_files

            stats["summary"] = write_concise_files(self.out, final, stats)
        return stats


def _item_dialogue(row: dict[str, Any]) -> str:
    return (row.get("provenance") or {}).get("dialogue_id", "")
