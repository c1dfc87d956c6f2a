"""The evaluation stage: ``run(config, inputs, output) -> StageSummary``. ``inputs.benchmark``
overrides the recipe's items; ``inputs.adapters`` (registry names a training stage published) are
evaluated beside the model each was trained from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ec2er.evaluation.config import EvalConfig
from ec2er.config import VLLMEngineConfig
from ec2er.errors import ConfigError
from ec2er.io import read_json
from ec2er.schemas.facts import EvaluationFiles
from ec2er.stage import Promise, Stage, StageInputs, StageSummary


def run_evaluation_stage(config: EvalConfig, inputs: StageInputs, output: Path) -> StageSummary:
    from ec2er.evaluation.runner import attach_upstream_adapters, evaluate, through_endpoint

    if inputs.benchmark is not None:
        config = config.model_copy(update={"data": config.data.model_copy(update={"benchmark": inputs.benchmark})})
    config = through_endpoint(attach_upstream_adapters(config, inputs.adapters), inputs.endpoint)
    paths = evaluate(config, output)
    results = read_json(paths[EvaluationFiles.RESULTS])
    lines = headline_numbers(paths[EvaluationFiles.SCORES])
    return StageSummary(
        stage="evaluate", output=str(output),
        headline=f"{len(results)} models x {len(config.protocols)} protocols on {config.data.benchmark}",
        counts={"models": len(results)}, details=lines,
        files={name: str(path) for name, path in paths.items()},
        highlights=["results:  accuracy [95% CI]; unparsed = replies the strict parser could not read",
                    *(f"  {line}" for line in lines),
                    f"table:    {paths[EvaluationFiles.TABLE_MD]}", f"chart:    {paths[EvaluationFiles.CHART]}"])


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


def check_evaluation(config: EvalConfig, promised: Promise) -> None:
    """What a chain checks before its first stage: every in-process model can be had, every
    adapter a model names is in the registry, a peft folder, or published by an earlier stage,
    every adapter an earlier stage publishes has its base model here, and an endpoint an earlier
    stage serves can answer every protocol. (Endpoints are checked when evaluation starts.)"""
    from ec2er.adapters import ADAPTER_CONFIG, AdapterRegistry, family_of
    from ec2er.llm import check_engine

    registry = AdapterRegistry(config.registry)
    upcoming = {family for family, p in promised.adapters.items()
                if Path(p.registry).resolve() == config.registry.resolve()}
    for spec in config.models:
        if not isinstance(spec.engine, VLLMEngineConfig):
            continue
        check_engine(spec.engine)
        for label, ref in spec.adapters.items():
            if not (registry.find(ref) or Path(ref, ADAPTER_CONFIG).is_file() or spec.init_if_missing
                    or family_of(ref) in upcoming):
                raise ConfigError(f"models.{spec.name}.adapters.{label}: {ref!r} is not in the registry "
                                  f"{config.registry}, no earlier stage publishes it, and it is no peft folder")
        if promised.endpoint and spec.engine.model == promised.endpoint.model and "loglik" in config.protocols:
            raise ConfigError(f"protocols: loglik needs an in-process engine, and {spec.name} will be "
                              "evaluated through the chain's endpoint")
    loaded = {m.engine.model for m in config.models}
    for family, p in promised.adapters.items():
        if p.base_model not in loaded:
            raise ConfigError(f"models: adapters {family}-v<N> are trained from {p.base_model}, which no "
                              f"model of the evaluation recipe loads ({', '.join(sorted(loaded))})")


STAGE = Stage(
    name="evaluate", help="evaluate models and adapters on EmoBench (EU/EA), fanned out on Ray; "
                          "or `evaluate rescore` an existing run",
    config_model=EvalConfig, run=run_evaluation_stage, benchmark_flag=True, check=check_evaluation,
    default_output=lambda config: config.output_dir)
