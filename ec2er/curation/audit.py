"""What a careful reader sees in curation's output, before and after the reader checks.

    python -m ec2er.curation.audit --input runs/demo/generate --config pipelines/curate-tiny.yaml \
        [--n 20] [--seed 0] [--dialogue] [--set checks.copy_similarity=85]

Curates the generation run twice into a temporary folder (no judge, no engine: seconds): once with
the reader checks off (``checks.sense: skip``, what curation kept before them) and once with the
recipe as given. Prints both counts, each reader rule's count, then a seeded sample of the items
kept *before*, each as a reader meets it (subject, scenario, question, options with the gold
marked, explanation) and whether the checks now keep it or why they reject it. Read the sample and
count the items you would accept, in each list: that is the measure the data card cannot give.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import textwrap
from pathlib import Path

from ec2er.config import load_config, parse_override
from ec2er.curation.config import CurateConfig
from ec2er.curation.pipeline import curate, dialogue_texts, read_dialogue_rows
from ec2er.io import read_jsonl
from ec2er.schemas import parse_item
from ec2er.schemas.facts import CuratedFiles
from ec2er.schemas.prompts import question_text


def _kept(out: Path) -> list[dict]:
    return [*read_jsonl(out / CuratedFiles.TRAIN), *read_jsonl(out / CuratedFiles.VAL)]


def _show(obj: dict, verdict: str, dialogue) -> str:
    item = parse_item(obj)
    lines = [f"--- {item.qid} ({item.task.value}, {item.category}) -> {verdict}",
             f"subject: {item.subject}", *textwrap.wrap(f"scenario: {item.scenario}", 100)]
    for part, (choices, gold) in item.options().items():
        lines.append(f"Q ({part}): {question_text(item, part, gold if part == 'emotion' else None)}")
        lines += [f"  {'*' if c == gold else ' '} {c}" for c in choices]
    lines += textwrap.wrap(f"explanation: {item.explanation}", 100)
    if dialogue is not None:
        lines += [f"  turn {i}: {t[:160]}" for i, t in enumerate(dialogue.turns)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=Path, required=True, help="a generation run's folder")
    p.add_argument("--config", type=Path, default=Path("pipelines/curate-tiny.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--n", type=int, default=20, help="items in the sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dialogue", action="store_true", help="print each item's dialogue turns too")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config, CurateConfig, dict(parse_override(x) for x in args.set))
    cfg = cfg.model_copy(update={"judge": None})
    before_cfg = cfg.model_copy(update={"checks": cfg.checks.model_copy(update={"sense": "skip"})})
    with tempfile.TemporaryDirectory() as tmp:
        before = curate(args.input, Path(tmp) / "before", before_cfg)
        after = curate(args.input, Path(tmp) / "after", cfg)
        kept_before = _kept(Path(tmp) / "before")
        kept_after = {r["qid"] for r in _kept(Path(tmp) / "after")}
        rejected = {r["qid"]: r["reasons"] for r in read_jsonl(Path(tmp) / "after" / CuratedFiles.REJECTS)}
    dialogues = dialogue_texts(read_dialogue_rows(args.input))
    print(f"read {before['counts']['read']}: kept {before['counts']['kept']} without the reader checks, "
          f"{after['counts']['kept']} with them")
    for code, rule in after["sense"]["rules"].items():
        print(f"  {code:32} {rule['items']:4} items ({rule['removed_by_it_alone']} by it alone)")
    print(f"  {after['sense']['note']}")
    sample = random.Random(args.seed).sample(kept_before, min(args.n, len(kept_before)))
    for obj in sample:
        verdict = "KEPT" if obj["qid"] in kept_after else "REJECTED: " + "; ".join(
            f"{r['code']}: {r['detail']}" for r in rejected.get(obj["qid"], []))
        dialogue = dialogues.get((obj.get("provenance") or {}).get("dialogue_id")) if args.dialogue else None
        print(_show(obj, verdict, dialogue))
    return 0


if __name__ == "__main__":
    sys.exit(main())
