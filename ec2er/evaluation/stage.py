"""The evaluation stage: ``run(config, inputs, output) -> StageSummary``. ``inputs.benchmark``
overrides the recipe's items; ``inputs.adapters`` (registry names a training stage published) are
evaluated beside the model each was trained from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ec2er.evaluation.config import EvalConfig
from ec2er.stage import Stage, StageInputs, StageSummary


def run_evaluation_stage(config: EvalConfig, inputs: StageInputs, output: Path) -> StageSummary:
    from ec2er.evaluation.runner import attach_upstream_adapters, evaluate, through_endpoint

    if inputs.benchmark is not None:
        config = config.model_copy(update={"data": config.data.model_copy(update={"benchmark": inputs.benchmark})})
    config = through_endpoint(attach_upstream_adapters(config, inputs.adapters), inputs.endpoint)
    paths = evaluate(config, output)
    results = json.loads(paths["results.json"].read_text(encoding="utf-8"))
    lines = headline_numbers(paths["scores.csv"])
    return StageSummary(
        stage="evaluate", output=str(output),
        headline=f"{len(results)} models x {len(config.protocols)} protocols on {config.data.benchmark}",
        counts={"models": len(results)}, details=lines,
        files={name: str(path) for name, path in paths.items()})


def headline_numbers(scores_csv: Path) -> list[str]:
    """One line per model, protocol and language: overall EU and EA accuracy with their bootstrap
    95% intervals, and the share of replies the strict parser could not read."""
    import pandas as pd

    scores = pd.read_csv(scores_csv)
    lines = []
    for (model, protocol, lang), rows in scores.groupby(["model", "protocol", "language"], sort=True):
        cells = {r.metric: r for r in rows.itertuples()}
        parts = [f"{task} {_with_interval(cells[f'{task}/overall'])}" for task in ("EU", "EA") if f"{task}/overall" in cells]
        unparsed = cells.get("parse_failure_rate")
        lines.append(f"{model:<30} {protocol:<11} {lang}: {', '.join(parts)}"
                     + (f"; unparsed {unparsed.value:.0%}" if unparsed is not None else ""))
    return lines


def _with_interval(row: Any) -> str:
    if row.ci_low != row.ci_low or row.ci_high != row.ci_high:  # NaN: too few items for an interval
        return f"{row.value:.3f}"
    return f"{row.value:.3f} [{row.ci_low:.2f}, {row.ci_high:.2f}]"


STAGE = Stage(
    name="evaluate", help="evaluate models and adapters on EmoBench (EU/EA), fanned out on Ray; "
                          "or `evaluate rescore` an existing run",
    config_model=EvalConfig, run=run_evaluation_stage, benchmark_flag=True,
    default_output=lambda config: config.output_dir)
