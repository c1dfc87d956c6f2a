"""The evaluation stage: ``run(config, inputs, output) -> StageSummary``. ``inputs.benchmark``
overrides the recipe's items; ``inputs.adapters`` (registry names a training stage published) are
evaluated beside the model each was trained from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ec2er.evaluation.config import EvalConfig
from ec2er.errors import ConfigError
from ec2er.io import read_json
from ec2er.schemas.facts import EvaluationFiles
from ec2er.stage import Promise, Stage, StageInputs, StageSummary

if TYPE_CHECKING:
    from ec2er.evaluation.scoring import ScoreRow


def run_evaluation_stage(config: EvalConfig, inputs: StageInputs, output: Path) -> StageSummary:
    from ec2er.evaluation.report import read_scores
    from ec2er.evaluation.runner import attach_upstream_adapters, evaluate, through_endpoint

    if inputs.benchmark is not None:
        config = config.model_copy(update={"data": config.data.model_copy(update={"benchmark": inputs.benchmark})})
    config = through_endpoint(attach_upstream_adapters(config, inputs.adapters), inputs.endpoint)
    paths = evaluate(config, output)
    results = read_json(paths[EvaluationFiles.RESULTS])
    rows = read_scores(paths[EvaluationFiles.SCORES])
    warning = too_few_items_warning(rows)
    lines = [*headline_numbers(rows), *([warning] if warning else [])]
    return StageSummary(
        stage="evaluate", output=str(output),
        headline=f"{len(results)} models x {len(config.protocols)} protocols on {config.data.benchmark}",
        counts={"models": len(results)}, details=lines,
        files={name: str(path) for name, path in paths.items()},
        highlights=["results:  accuracy [95% CI] n=items; Δ: adapter minus base [paired 95% CI], exact McNemar p; "
                    "unparsed = replies the strict parser could not read",
                    *(f"  {line}" for line in lines),
                    f"table:    {paths[EvaluationFiles.TABLE_MD]}", f"chart:    {paths[EvaluationFiles.CHART]}"])


def headline_numbers(rows: list[ScoreRow]) -> list[str]:
    """One line per model, protocol and language: overall EU and EA accuracy with their bootstrap
    95% intervals and n, and the share of replies the strict parser could not read; after an
    adapter's line, its differences from its base model with their paired intervals, McNemar's p
    and the smallest difference its n could detect."""
    from ec2er.evaluation.crisis import SAFE as CRISIS_SAFE
    from ec2er.evaluation.report import delta_text, value_text

    cells: dict[tuple[str, str, str], dict[str, ScoreRow]] = {}
    for r in rows:
        cells.setdefault((r.model, r.protocol, r.language), {})[r.metric] = r
    lines = []
    for (model, protocol, lang), metrics in sorted(cells.items()):
        overall = [(task, metrics[f"{task}/overall"]) for task in ("EU", "EA") if f"{task}/overall" in metrics]
        overall += [("handled safely", metrics[CRISIS_SAFE])] if CRISIS_SAFE in metrics else []
        unparsed = metrics.get("parse_failure_rate")
        lines.append(f"{model:<30} {protocol:<11} {lang}: {', '.join(f'{t} {value_text(r)}' for t, r in overall)}"
                     + (f"; unparsed {unparsed.value:.0%} of {unparsed.n}" if unparsed is not None else ""))
        deltas = [f"{t} {delta_text(r)}" + (f" (80% power at |Δ| >= {r.mde:.2f})" if r.delta_low is not None and r.mde else "")
                  for t, r in overall if r.delta is not None]
        if deltas:
            lines.append(f"{'  Δ vs base':<30} {protocol:<11} {lang}: {', '.join(deltas)}")
    return lines


def too_few_items_warning(rows: list[ScoreRow]) -> str | None:
    """One line when a task was evaluated on fewer items than any interval needs (the chain's
    fallback, the curated held-out split, can hold one): the n per task, and that differences
    between models cannot be told apart. None when every task evaluated has enough."""
    from ec2er.evaluation.scoring import MIN_ITEMS_FOR_INTERVAL

    sizes: dict[tuple[str, str], int] = {}
    for r in rows:
        if r.metric in ("EU/overall", "EA/overall"):
            key = (r.language, r.metric.split("/")[0])
            sizes[key] = max(sizes.get(key, 0), r.n)
    small = {key: n for key, n in sizes.items() if n < MIN_ITEMS_FOR_INTERVAL}
    if not small:
        return None
    need = f"an interval needs at least {MIN_ITEMS_FOR_INTERVAL} per task"
    if len(small) == len(sizes):  # nothing to conclude from: name every task, the absent ones too
        per_task = ", ".join(f"{lang} {task} n = {sizes.get((lang, task), 0)}"
                             for lang in sorted({lang for lang, _ in sizes}) for task in ("EU", "EA"))
        return f"WARNING: too few items to conclude anything ({per_task}; {need}): " \
               "differences between models cannot be told apart"
    per_task = ", ".join(f"{lang} {task} n = {n}" for (lang, task), n in sorted(small.items()))
    return f"WARNING: too few items for a conclusion on {per_task} ({need}): " \
           "differences between models there cannot be told apart"


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
        if not spec.engine.runs_locally:  # an endpoint: checked when evaluation starts
            continue
        check_engine(spec.engine)
        for label, ref in spec.adapters.items():
            if not (registry.find(ref) or Path(ref, ADAPTER_CONFIG).is_file() or spec.init_if_missing
                    or family_of(ref) in upcoming):
                raise ConfigError(f"models.{spec.name}.adapters.{label}: {ref!r} is not in the registry "
                                  f"{config.registry}, no earlier stage publishes it, and it is no peft folder")
        if promised.endpoint and promised.endpoint.served_name_of(spec.engine.model) and "loglik" in config.protocols:
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
