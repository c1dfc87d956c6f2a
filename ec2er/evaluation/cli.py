"""``ec2er evaluate``: run a recipe, or rescore a predictions file against the benchmark's golds."""

from __future__ import annotations

import argparse
from pathlib import Path

from ec2er.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="evaluate models and adapters on EmoBench (EU/EA)",
        description="Evaluate the models of a recipe (pipelines/eval-*.yaml) on EmoBench or a "
                    "held-out split, fanned out on Ray; or `evaluate rescore` an existing run.")
    p.add_argument("--config", type=Path, help="recipe YAML (pipelines/eval-<name>.yaml)")
    p.add_argument("--output", type=Path, help="output folder (default: the recipe's output_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set data.limit=5 (repeatable)")
    p.set_defaults(func=_evaluate)
    sub = p.add_subparsers(dest="evaluate_command", metavar="rescore")
    r = sub.add_parser("rescore", help="recompute every score from predictions + benchmark golds",
                       description="Re-derive answers from raw responses and score them against the "
                                   "benchmark's gold letters (stored answers/correct are not trusted).")
    r.add_argument("--predictions", type=Path, required=True)
    r.add_argument("--benchmark", required=True, help="EmoBench folder, items .jsonl, or hub id")
    r.add_argument("--output", type=Path, required=True)
    r.add_argument("--bootstrap-samples", type=int, default=1000)
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=_rescore)


def _evaluate(args: argparse.Namespace) -> int:
    from ec2er.config import load_config, parse_override
    from ec2er.evaluation.config import EvalConfig
    from ec2er.evaluation.runner import evaluate

    if args.config is None:
        raise ConfigError("ec2er evaluate: --config is required (or use `ec2er evaluate rescore`)")
    config = load_config(args.config, EvalConfig, dict(parse_override(s) for s in args.set))
    paths = evaluate(config, args.output)
    print(f"wrote {paths['table.md'].parent}: " + ", ".join(p.name for p in paths.values()))
    return 0


def _rescore(args: argparse.Namespace) -> int:
    from ec2er.evaluation.rescore import rescore

    if not args.predictions.is_file():
        raise ConfigError(f"{args.predictions}: no such predictions file")
    res = rescore(args.predictions, args.benchmark, args.output,
                  bootstrap_samples=args.bootstrap_samples, seed=args.seed)
    print(f"rescored {res.rows} predictions ({res.changed} differed from the stored answers); "
          f"wrote {args.output}")
    return 0
