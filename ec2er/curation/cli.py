"""``ec2er curate``: generation outputs -> train/val/rejects/stats/data card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ec2er.config import config_from_overrides, load_config, parse_override
from ec2er.curation.config import CurateConfig
from ec2er.errors import DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "curate", help="validate, dedup, decontaminate, balance and split generated items",
        description="Read eu.jsonl / ea.jsonl (and dialogues.jsonl) from a generation folder; write "
                    "train.jsonl, val.jsonl, rejects.jsonl, stats.json and DATACARD.md.")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", type=Path, required=True, help="generation output folder")
    p.add_argument("--output", type=Path, required=True, help="folder for the curated files")
    p.add_argument("--benchmark", help="EmoBench folder (EU.jsonl, EA.jsonl) or hub id to decontaminate against")
    p.add_argument("--config", type=Path, help="recipe, e.g. pipelines/curate.yaml (defaults otherwise)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")


def load(args: argparse.Namespace) -> CurateConfig:
    overrides = dict(parse_override(s) for s in args.set)
    if args.benchmark:
        overrides["decontaminate.benchmark"] = args.benchmark
    if args.config:
        return load_config(args.config, CurateConfig, overrides)
    return config_from_overrides(CurateConfig, overrides)


def run(args: argparse.Namespace) -> int:
    from ec2er.curation.pipeline import curate

    if not args.input.is_dir():
        raise DataError(f"{args.input}: no such folder")
    cfg = load(args)
    judge = None
    if cfg.judge is not None:
        from ec2er.llm import build_engine

        judge = build_engine(cfg.judge.engine)
    try:
        stats = curate(args.input, args.output, cfg, judge)
    finally:
        if judge is not None:
            judge.close()
    print(json.dumps({"output": str(args.output), **stats["counts"], "rejections": stats["rejections"]}))
    return 0
