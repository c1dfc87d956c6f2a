"""The generation stage: ``run(config, inputs, output) -> StageSummary`` and its CLI flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ec2er.generation.config import GenerateConfig
from ec2er.schemas.facts import GenerationFiles
from ec2er.stage import Handoff, Promise, Stage, StageInputs, StageSummary


def run_generation_stage(config: GenerateConfig, inputs: StageInputs, output: Path) -> StageSummary:
    from ec2er.generation.driver import run_generation, summary_lines

    stats = run_generation(config, output)
    d, i = stats["dialogues"], stats["items"]
    return StageSummary(
        stage="generate", output=str(output),
        headline=f"{d['ok']} dialogues ok, {d['failed']} failed (of {d['planned']}); "
                 f"{i['eu']} EU + {i['ea']} EA items ({i['failed']} failed extraction)",
        counts={"dialogues_ok": d["ok"], "dialogues_failed": d["failed"], "eu": i["eu"], "ea": i["ea"],
                "items_failed": i["failed"], "redone": stats["session"].get("redo", 0),
                "actors_lost": stats["session"].get("actors_lost", 0),
                "actors_restarted": stats["session"].get("actors_restarted", 0)},
        files={"stats": str(output / GenerationFiles.STATS)},
        details=summary_lines(stats, output), handoff=Handoff(data=str(output)))


def _extra_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-dialogues", type=int, help="override num_dialogues")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {} if args.num_dialogues is None else {"num_dialogues": args.num_dialogues}


def check_generation(config: GenerateConfig, promised: Promise) -> None:
    """What a chain checks before its first stage: the model, the personas, the themes."""
    from ec2er.generation.driver import check_inputs

    check_inputs(config)


STAGE = Stage(
    name="generate", help="generate dialogues and EU/EA items (MADS or concise) on Ray Data + vLLM; "
                          "re-run into the same folder to resume",
    config_model=GenerateConfig, run=run_generation_stage, check=check_generation,
    extra_arguments=_extra_arguments, overrides_from_args=_overrides)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ec2er.stage import register_stage

    ex = register_stage(subparsers, STAGE, (
        "export", "write eu.jsonl, ea.jsonl, dialogues.jsonl, metadata.jsonl",
        "Write a generation run's items, dialogues and metadata as JSONL files for "
        "people and other tools (curation reads the run folder directly)."))
    ex.add_argument("--input", type=Path, required=True, help="a generation run's folder")
    ex.add_argument("--output", type=Path, help="folder for the files (default: the run folder)")
    ex.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from ec2er.errors import DataError
    from ec2er.generation.outputs import RESULTS, export

    if not (args.input / RESULTS).is_dir():
        raise DataError(f"{args.input}: not a generation run (no {RESULTS}/ folder)")
    counts = export(str(args.input), str(args.output or args.input))
    print(f"exported {counts.get('dialogues', 0)} dialogues, {counts.get('eu', 0)} EU and "
          f"{counts.get('ea', 0)} EA items to {args.output or args.input}")
    return 0
