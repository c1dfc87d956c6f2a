"""The curation stage: ``run(config, inputs, output) -> StageSummary``; ``inputs.data`` is a
generation folder, ``inputs.benchmark`` (or the recipe's) the set to decontaminate against."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ec2er import console
from ec2er.curation.config import CurateConfig
from ec2er.errors import DataError
from ec2er.schemas.facts import CuratedFiles
from ec2er.stage import Handoff, Promise, Stage, StageInputs, StageSummary

log = logging.getLogger(__name__)


def run_curation_stage(config: CurateConfig, inputs: StageInputs, output: Path) -> StageSummary:
    from ec2er.curation.pipeline import curate
    from ec2er.io import check_writable
    from ec2er.llm import build_engine, check_engine

    source = inputs.data
    if source is None or not source.is_dir():
        raise DataError(f"{source}: no such folder (curation reads a generation run's folder)")
    if output.resolve() == source.resolve():
        raise DataError(f"{output}: the output folder must differ from the input folder "
                        "(curation would overwrite the generation's stats.json)")
    if inputs.benchmark is not None:
        config = config.model_copy(update={"decontaminate": config.decontaminate.model_copy(
            update={"benchmark": inputs.benchmark})})
    if config.judge is not None:
        check_engine(config.judge.engine)
    check_writable(output)
    judge = None
    if config.judge is not None:
        with console.engine_output():
            judge = build_engine(config.judge.engine)
    try:
        stats = curate(source, output, config, judge)
    finally:
        if judge is not None:
            judge.close()
    c = stats["counts"]
    top = ", ".join(f"{code} {n}" for code, n in list(stats["rejections"].items())[:3])
    return StageSummary(
        stage="curate", output=str(output),
        headline=f"kept {c['kept']} of {c['read']} items (train {c['train']}, val {c['val']}); "
                 f"rejected {c['rejected']}" + (f" ({top})" if top else ""),
        counts=c, files={"train": str(output / CuratedFiles.TRAIN), "val": str(output / CuratedFiles.VAL),
                         "datacard": str(output / CuratedFiles.DATACARD)},
        highlights=[f"items:    kept {c['kept']} of {c['read']} (train {c['train']}, val {c['val']}); "
                    f"data card {output / CuratedFiles.DATACARD}"],
        handoff=Handoff(data=str(output), heldout=str(output / CuratedFiles.VAL)))


def check_curation(config: CurateConfig, promised: Promise) -> None:
    """What a chain checks before its first stage: the judge's model can be had."""
    from ec2er.llm import check_engine

    if config.judge is not None:
        check_engine(config.judge.engine)


STAGE = Stage(
    name="curate", help="validate, dedup, decontaminate, balance and split generated items",
    config_model=CurateConfig, run=run_curation_stage, config_required=False, check=check_curation,
    data_flag="--input", data_help="a generation run's folder (eu.jsonl, ea.jsonl, dialogues.jsonl)",
    benchmark_flag=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ec2er.stage import register_stage

    register_stage(subparsers, STAGE)
