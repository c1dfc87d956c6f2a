"""``ec2er generate --config FILE --output DIR [--set key=value ...] [--num-dialogues N]``."""

from __future__ import annotations

import argparse

from ec2er.config import load_config, parse_override


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pipelines/*.yaml (GenerateConfig)")
    p.add_argument("--output", required=True, help="output folder; re-running into it resumes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set engine.model=tiny-random-llama")
    p.add_argument("--num-dialogues", type=int, help="override num_dialogues")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ec2er.generation.config import GenerateConfig
    from ec2er.generation.driver import run_generation, summary_lines

    overrides = dict(parse_override(s) for s in args.set)
    if args.num_dialogues is not None:
        overrides["num_dialogues"] = args.num_dialogues
    config = load_config(args.config, GenerateConfig, overrides)
    stats = run_generation(config, args.output, progress=not args.no_progress)
    print("\n".join(summary_lines(stats, args.output)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate dialogues and EU/EA items (MADS or concise)",
                              description="Generate synthetic therapy dialogues and EmoBench-layout "
                                          "items on Ray Data + vLLM; re-run into the same folder to resume.")
    add_arguments(p)
    p.set_defaults(func=run)
