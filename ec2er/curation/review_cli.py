"""``ec2er review export|kappa``: sample items for two annotators, then measure their agreement."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("review", help="human review of curated items (sample sheets, Cohen's kappa)")
    sub = p.add_subparsers(dest="review_command", required=True)
    ex = sub.add_parser("export", help="write a sample sheet (one CSV per annotator)")
    ex.add_argument("--input", type=Path, required=True, help="train.jsonl of a curated run")
    ex.add_argument("--n", type=int, default=50, help="items to sample (default 50)")
    ex.add_argument("--output", type=Path, required=True, help="folder for annotator_A.csv / annotator_B.csv")
    ex.add_argument("--seed", type=int, default=0)
    ex.set_defaults(func=_export)
    ka = sub.add_parser("kappa", help="Cohen's kappa between two filled-in sheets")
    ka.add_argument("sheet_a", type=Path)
    ka.add_argument("sheet_b", type=Path)
    ka.set_defaults(func=_kappa)


def _export(args: argparse.Namespace) -> int:
    from ec2er.curation.review import export_sample
    from ec2er.errors import DataError

    if not args.input.is_file():
        raise DataError(f"{args.input}: no such file")
    for path in export_sample(args.input, args.n, args.output, args.seed):
        print(path)
    return 0


def _kappa(args: argparse.Namespace) -> int:
    from ec2er.curation.review import kappa_from_files

    print(json.dumps(kappa_from_files(args.sheet_a, args.sheet_b)))
    return 0
