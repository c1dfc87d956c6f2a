"""``ec2er train``: train and publish a LoRA adapter; ``ec2er train preview``: show what is learned."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ec2er.config import parse_override
from ec2er.errors import ConfigError
from ec2er.stage import register_stage
from ec2er.training.stage import STAGE


def register(subparsers: argparse._SubParsersAction) -> None:
    v = register_stage(subparsers, STAGE, (
        "preview", "print rendered training examples and the tokens that carry loss",
        "One JSON object per example: 'text' (the whole rendered example), 'trained_text' (the decoded "
        "tokens that carry loss) and 'eos_trained' (whether the end-of-turn token is among them)."))
    v.add_argument("--config", type=Path, required=True, help="recipe YAML (TrainConfig)")
    v.add_argument("--data", type=Path, help="curated folder; default: the recipe's 'data'")
    v.add_argument("--n", type=int, default=3, help="examples to print, at least 1 (default 3)")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    v.set_defaults(func=_preview)


def _preview(args: argparse.Namespace) -> int:
    from ec2er.models import resolve_model
    from ec2er.schemas.facts import CuratedFiles
    from ec2er.training.data import ChatFormat, preview, read_examples

    if args.n < 1:
        raise ConfigError(f"ec2er train preview: --n {args.n}: give at least 1 example to print")
    config = STAGE.load(args.config, dict(parse_override(s) for s in args.set))
    data = args.data or config.data
    if data is None:
        raise ConfigError("ec2er train preview: give --data or the recipe's 'data'")
    _, examples = read_examples(Path(data) / CuratedFiles.TRAIN)
    fmt = ChatFormat.load(resolve_model(config.model))
    for example in examples[: args.n]:
        print(json.dumps(preview(fmt, example), ensure_ascii=False))
    return 0
