"""``ec2er evaluate``: the stage (``ec2er.evaluation.stage``) and ``evaluate rescore``, which
recomputes every score of a predictions file against the benchmark's golds."""

from __future__ import annotations

import argparse
from pathlib import Path

from ec2er.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    from ec2er.evaluation.records import AUDIT_CONTRACT
    from ec2er.evaluation.stage import STAGE
    from ec2er.stage import register_stage

    r = register_stage(subparsers, STAGE, (
        "rescore", "recompute every score from predictions + benchmark golds",
        "Re-derive answers from the raw replies and score them against the benchmark's gold letters "
        "(stored answers are never trusted), from any tool's predictions JSONL. " + AUDIT_CONTRACT))
    r.add_argument("--predictions", type=Path, required=True)
    r.add_argument("--benchmark", required=True, help="EmoBench folder, items .jsonl, or hub id")
    r.add_argument("--output", type=Path, required=True)
    r.add_argument("--bootstrap-samples", type=int, default=1000)
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=_rescore)


def _rescore(args: argparse.Namespace) -> int:
    from ec2er.evaluation.rescore import rescore

    if not args.predictions.is_file():
        raise ConfigError(f"{args.predictions}: no such predictions file")
    res = rescore(args.predictions, args.benchmark, args.output,
                  bootstrap_samples=args.bootstrap_samples, seed=args.seed)
    compared = (f"{res.changed} of the {res.compared} with stored answers differed from them"
                if res.compared else "none carried stored answers to compare")
    print(f"rescored {res.rows} predictions ({compared}); wrote {args.output}")
    return 0
