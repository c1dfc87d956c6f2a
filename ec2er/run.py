"""``ec2er run``: the whole chain in one command, as a list of stages.

The chain knows no stage's insides. Its recipe has one section per stage of ``chain()`` (the
stage's own recipe file and overrides) and the settings the stages share (``benchmark``,
``registry``, ``ray``). Every stage's recipe is loaded and checked (``Stage.check``, against what
earlier stages promise) before the first stage starts. Each stage then writes into
``OUTPUT/<stage>/`` and reads the running ``Handoff`` of the stages before it (an upstream folder,
a held-out split, published adapters, a served endpoint); at the end the chain prints every
stage's ``highlights``.

A stage whose recipe, inputs and upstream results are unchanged since its last success is not run
again (its summary is reused) unless ``--force``; a stage that fails is named, and every earlier
stage's outputs stay as they are. A stage that keeps running (serving) stays up while the later
stages run and stops with the chain; it is started only when a later stage has work to do. The
chain's summary goes to ``OUTPUT/chain.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, create_model, model_validator

from ec2er.config import RayJobConfig, StrictModel, load_config, parse_override
from ec2er.errors import Ec2erError
from ec2er.io import check_writable, fingerprint, output_lock, write_json
from ec2er.schemas.facts import CHAIN_SUMMARY, LOGS, STAGE_RECORD
from ec2er.stage import Handoff, Promise, Stage, StageInputs, StageSummary

log = logging.getLogger(__name__)


def chain() -> list[Stage[Any]]:
    """The stages, in order. Adding a stage to the chain is adding it here."""
    from ec2er.curation.stage import STAGE as CURATE
    from ec2er.evaluation.stage import STAGE as EVALUATE
    from ec2er.generation.stage import STAGE as GENERATE
    from ec2er.serving.stage import STAGE as SERVE
    from ec2er.training.stage import STAGE as TRAIN

    return [GENERATE, CURATE, TRAIN, SERVE, EVALUATE]


class StageRecipe(StrictModel):
    config: Path = Field(description="the stage's own recipe (pipelines/*.yaml, serve/*.yaml)")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted-key overrides of that recipe")


class ChainSettings(StrictModel):
    """What the stages of one chain share, set once here rather than in each stage's recipe."""

    benchmark: str | None = Field(
        None, description="EmoBench folder (EU.jsonl, EA.jsonl): curation decontaminates against "
                          "it and evaluation scores on it. When it is missing, the chain says so, "
                          "skips decontamination and evaluates on the curated held-out split.")
    registry: Path | None = Field(
        None, description="the adapter registry: training publishes into it, serving and evaluation "
                          "read it (sets `registry` in every stage recipe that has one)")
    ray: RayJobConfig | None = Field(
        None, description="the keys given here are set in every stage's `ray:` block (the cluster "
                          "to join, the resources heavy work asks for, ...)")


def _run_config_model() -> type[ChainSettings]:
    """``RunConfig``: ``ChainSettings`` and one optional section per stage of ``chain()``: one
    recipe, or (for stages that run to completion) several run one after the other, e.g. one
    training per base model."""
    fields: dict[str, Any] = {
        stage.name: (StageRecipe | list[StageRecipe] | None, Field(None, description=stage.help))
        for stage in chain()}

    def _some_stage(self: ChainSettings) -> ChainSettings:
        if not any(getattr(self, stage.name) for stage in chain()):
            raise ValueError(f"name at least one stage ({', '.join(s.name for s in chain())})")
        return self

    return create_model("RunConfig", __base__=ChainSettings,
                        __validators__={"_some_stage": model_validator(mode="after")(_some_stage)}, **fields)


RunConfig = _run_config_model()


class StageFailed(Ec2erError):
    """A stage of the chain failed; earlier stages' outputs are kept."""


@dataclass
class Step:
    """One run of one stage in the chain."""

    stage: Stage[Any]
    key: str  # the summary's name in chain.json: the stage's name, with ':<recipe>' when it has several
    config: StrictModel
    output: Path


def plan_chain(cfg: ChainSettings, output: Path) -> list[Step]:
    """Every stage's recipe loaded (with the chain's shared settings) and checked against what the
    stages before it promise, before anything runs: a bad evaluation recipe is found before
    generation, not after it."""
    steps: list[Step] = []
    promised = Promise()
    for stage in chain():
        recipe = getattr(cfg, stage.name)
        if recipe is None:
            log.info("%s: not in the recipe, skipped", stage.name)
            continue
        if isinstance(recipe, list) and stage.open is not None:
            raise StageFailed(f"stage {stage.name}: give one recipe (it keeps running while later stages run)")
        for key, one, out in _instances(stage.name, recipe, output):
            with _named(key, "before the chain started"):
                config = stage.load(one.config, shared_overrides(cfg, stage) | one.set)
                if stage.check is not None:
                    stage.check(config, promised)
            promised = promised.then(stage.promise(config))
            steps.append(Step(stage, key, config, out))
    return steps


def shared_overrides(cfg: ChainSettings, stage: Stage[Any]) -> dict[str, Any]:
    """The chain's shared settings, as overrides of the keys this stage's recipe has (a stage's
    own ``set`` still wins)."""
    fields = stage.config_model.model_fields
    overrides: dict[str, Any] = {}
    if cfg.registry is not None and "registry" in fields:
        overrides["registry"] = str(cfg.registry)
    if cfg.ray is not None and "ray" in fields:
        overrides |= {f"ray.{k}": v for k, v in cfg.ray.model_dump(mode="json", exclude_unset=True).items()}
    return overrides


def run_chain(cfg: ChainSettings, output: Path, force: bool = False,
              report: Callable[[str, StageSummary], None] = lambda name, summary: None) -> dict[str, Any]:
    """Run the chain; ``report`` hears each stage's summary as soon as the stage is done."""
    with output_lock(output):
        benchmark = _benchmark(cfg.benchmark)
        steps = plan_chain(cfg, output)
        start = time.perf_counter()
        summaries: dict[str, StageSummary] = {}
        handoff = Handoff()
        with contextlib.ExitStack() as running:
            for k, step in enumerate(steps):
                inputs = handoff.inputs(benchmark)
                if step.stage.open is not None:
                    promised = Handoff(endpoint=step.stage.promise(step.config).endpoint)
                    if not _later_work(steps[k + 1:], handoff.then(promised).inputs(benchmark), force):
                        log.info("%s: every later stage is unchanged, so nothing to serve", step.key)
                        handoff = handoff.then(promised)  # they are reused as they were, served
                        continue
                    with _named(step.key):
                        summary = running.enter_context(step.stage.opened(step.config, inputs, step.output))
                else:
                    summary = _run_step(step, inputs, force)
                summaries[step.key] = summary
                report(step.key, summary)
                handoff = handoff.then(summary.handoff)
        record = {"output": str(output), "seconds": round(time.perf_counter() - start, 1),
                  "stages": {name: s.model_dump(mode="json") for name, s in summaries.items()}}
        write_json(output / CHAIN_SUMMARY, record)
    return record


def _benchmark(benchmark: str | None) -> str | None:
    """The chain's benchmark, checked before anything runs: curation decontaminates against both
    of its tasks, so a folder that lacks a task's file is an error now, not after generation."""
    from ec2er.schemas.benchmark import benchmark_files

    if benchmark and Path(benchmark).exists():
        benchmark_files(benchmark)
        return benchmark
    if benchmark:
        log.warning("benchmark %s not found: no decontamination, and evaluation on the curated held-out "
                    "split. EmoBench (MIT) is at github.com/Sahandfer/EmoBench (data/EU.jsonl, data/EA.jsonl) "
                    "or the hub dataset SahandSab/EmoBench; point `benchmark:` at its folder", benchmark)
    return None


def _instances(name: str, recipe: StageRecipe | list[StageRecipe],
               output: Path) -> list[tuple[str, StageRecipe, Path]]:
    """(summary key, recipe, folder) of each run of a stage: several recipes run one after the
    other, each in a folder named after its recipe file."""
    if isinstance(recipe, StageRecipe):
        return [(name, recipe, output / name)]
    return [(f"{name}:{r.config.stem}", r, output / name / r.config.stem) for r in recipe]


def _later_work(later: list[Step], inputs: StageInputs, force: bool) -> bool:
    """Whether a stage after a serving stage will run (so the server is worth starting)."""
    if force:
        return bool(later)
    return any(step.stage.run is not None and _reusable(step.config, inputs, step.output) is None
               for step in later)


@contextlib.contextmanager
def _named(key: str, when: str = "") -> Iterator[None]:
    """Any failure inside, as one line naming the stage (a later stage's failure passes through)."""
    try:
        yield
    except StageFailed:
        raise
    except Ec2erError as e:
        raise StageFailed(f"stage {key} failed{' ' + when if when else ''}: {e}") from e
    except Exception as e:
        raise StageFailed(f"stage {key} failed{' ' + when if when else ''}: {type(e).__name__}: {e}") from e


def _run_step(step: Step, inputs: StageInputs, force: bool) -> StageSummary:
    with _named(step.key):
        previous = None if force else _reusable(step.config, inputs, step.output)
        if previous is not None:
            log.info("%s: unchanged since its last run, reused (--force runs it again)", step.key)
            return previous.model_copy(update={"reused": True})
        summary = step.stage(step.config, inputs, step.output)
    write_json(step.output / STAGE_RECORD, {"fingerprint": _fingerprint(step.config, inputs),
                                            "summary": summary.model_dump(mode="json")})
    return summary


def _reusable(config: StrictModel, inputs: StageInputs, out: Path) -> StageSummary | None:
    """The stage's last summary, if it succeeded on the same recipe, inputs and upstream results."""
    from ec2er.io import read_json

    record = out / STAGE_RECORD
    if not record.is_file():
        return None
    previous = read_json(record)
    if previous.get("fingerprint") != _fingerprint(config, inputs):
        return None
    return StageSummary.model_validate(previous["summary"])


def _fingerprint(config: StrictModel, inputs: StageInputs) -> str:
    """What a stage's result depends on: its recipe, its inputs (an endpoint by what it serves,
    not where), and the upstream stage's record (so a stage re-runs when anything upstream
    changed)."""
    upstream = inputs.data / STAGE_RECORD if inputs.data else None
    return fingerprint({"config": config.model_dump(mode="json"),
                        "inputs": inputs.model_dump(mode="json", exclude={"endpoint": {"url"}}),
                        "upstream": upstream.read_text(encoding="utf-8") if upstream and upstream.is_file() else None})


def _run(args: argparse.Namespace) -> int:
    from ec2er import console

    console.set_progress(not args.no_progress)
    cfg = load_config(args.config, RunConfig, dict(parse_override(s) for s in args.set))
    logs = console.log_to(check_writable(args.output) / LOGS)

    def report(name: str, summary: StageSummary) -> None:
        took = "reused" if summary.reused else f"{summary.seconds:.0f} s"
        print(f"{name:<9} {summary.headline} ({took})", flush=True)

    record = run_chain(cfg, args.output, force=args.force, report=report)
    print(f"done in {record['seconds']:.0f} s; logs in {logs}; summary in {args.output / CHAIN_SUMMARY}")
    for summary in record["stages"].values():
        for line in summary["highlights"]:
            print(line)
    print(f"view:     ec2er view {args.output}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run the whole chain: " + ", ".join(s.name for s in chain()),
                              description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, type=Path, help="pipelines/run-*.yaml (RunConfig)")
    p.add_argument("--output", required=True, type=Path, help="run folder; re-running into it reuses or resumes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set generate.set.num_dialogues=8")
    p.add_argument("--force", action="store_true", help="run every stage again, even unchanged ones")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
