"""``ec2er run``: the whole chain in one command, as a list of stages.

Each stage writes into ``OUTPUT/<stage>/`` and gets the previous stage's folder as
``inputs.data``, the run's benchmark, and the adapters upstream stages published. A stage whose
recipe, inputs and upstream results are unchanged since its last success is not run again (its
summary is reused) unless ``--force``; a stage that fails is named, and every earlier stage's
outputs stay as they are. A serving stage stays up while the later stages run (evaluation then
calls the model and its adapters through it) and stops with the chain; it is started only when a
later stage has work to do. The chain's summary goes to ``OUTPUT/chain.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from pydantic import Field

from ec2er.config import StrictModel, load_config, parse_override
from ec2er.errors import Ec2erError
from ec2er.io import check_writable, write_json
from ec2er.schemas.facts import CHAIN_SUMMARY
from ec2er.stage import Endpoint, Stage, StageInputs, StageSummary

log = logging.getLogger(__name__)
STAGE_RECORD = "stage.json"  # in each stage's folder: its summary and what it was run on


class StageRecipe(StrictModel):
    config: Path = Field(description="the stage's own recipe (pipelines/*.yaml)")
    set: dict[str, Any] = Field(default_factory=dict, description="dotted-key overrides of that recipe")


class RunConfig(StrictModel):
    benchmark: str | None = Field(
        None, description="EmoBench folder (EU.jsonl, EA.jsonl): curation decontaminates against "
                          "it and evaluation scores on it. When it is missing, the chain says so, "
                          "skips decontamination and evaluates on the curated held-out split.")
    generate: StageRecipe
    curate: StageRecipe
    train: StageRecipe | list[StageRecipe] | None = Field(
        None, description="one recipe, or several (one adapter per base model): each publishes an adapter "
                          "that evaluation adds beside its base model")
    serve: StageRecipe | None = Field(None, description="serve the base model and its adapters while "
                                                        "evaluation runs, and evaluate through the endpoint")
    evaluate: StageRecipe | None = None


def chain() -> list[Stage[Any]]:
    """The stages, in order (imported here: each pulls in its own dependencies)."""
    from ec2er.curation.stage import STAGE as CURATE
    from ec2er.evaluation.stage import STAGE as EVALUATE
    from ec2er.generation.stage import STAGE as GENERATE
    from ec2er.serving.stage import STAGE as SERVE
    from ec2er.training.stage import STAGE as TRAIN

    return [GENERATE, CURATE, TRAIN, SERVE, EVALUATE]


class StageFailed(Ec2erError):
    """A stage of the chain failed; earlier stages' outputs are kept."""


def run_chain(cfg: RunConfig, output: Path, force: bool = False,
              report: Callable[[str, StageSummary], None] = lambda name, summary: None) -> dict[str, Any]:
    """Run the chain; ``report`` hears each stage's summary as soon as the stage is done."""
    check_writable(output)
    benchmark = cfg.benchmark if cfg.benchmark and Path(cfg.benchmark).exists() else None
    if cfg.benchmark and benchmark is None:
        log.warning("benchmark %s not found: no decontamination, and evaluation on the curated held-out "
                    "split. EmoBench (MIT) is at github.com/Sahandfer/EmoBench (data/EU.jsonl, data/EA.jsonl) "
                    "or the hub dataset SahandSab/EmoBench; point `benchmark:` at its folder", cfg.benchmark)
    start = time.perf_counter()
    summaries: dict[str, StageSummary] = {}
    upstream: Path | None = None
    heldout: str | None = None  # a held-out split an upstream stage wrote (curation's val.jsonl)
    adapters: list[str] = []
    endpoint: Endpoint | None = None  # what a serving stage serves (or would, had it been needed)
    stages = [(stage, getattr(cfg, stage.name)) for stage in chain()]
    with contextlib.ExitStack() as running:
        for k, (stage, recipe) in enumerate(stages):
            if recipe is None:
                log.info("%s: not in the recipe, skipped", stage.name)
                continue
            inputs = StageInputs(data=upstream, benchmark=benchmark or heldout, adapters=adapters, endpoint=endpoint)
            if stage.open is not None:
                try:
                    config = stage.load(recipe.config, recipe.set)
                except Ec2erError as e:
                    raise StageFailed(f"stage {stage.name} failed: {e}") from e
                endpoint = stage.serves(config) if stage.serves else None
                if not _later_work(stages[k + 1:], inputs.model_copy(update={"endpoint": endpoint}), output, force):
                    log.info("%s: every later stage is unchanged, so nothing to serve", stage.name)
                    continue  # the later stages are reused as they were, served
                summary = running.enter_context(_open_stage(stage, config, inputs, output / stage.name))
                summaries[stage.name] = summary
                endpoint = summary.endpoint
                report(stage.name, summary)
                continue
            for name, one, out in _instances(stage.name, recipe, output):
                summary = _run_stage(stage, one, inputs, out, force)
                summaries[name] = summary
                report(name, summary)
                adapters = adapters + summary.adapters
            upstream = Path(summary.output)
            heldout = summary.files.get("heldout", heldout)
    record = {"output": str(output), "seconds": round(time.perf_counter() - start, 1),
              "stages": {name: s.model_dump(mode="json") for name, s in summaries.items()}}
    write_json(output / CHAIN_SUMMARY, record)
    return record


def _instances(name: str, recipe: StageRecipe | list[StageRecipe], output: Path):
    """(summary key, recipe, folder) of each run of a stage: several recipes run one after the
    other, each in a folder named after its recipe file."""
    if isinstance(recipe, StageRecipe):
        return [(name, recipe, output / name)]
    return [(f"{name}:{r.config.stem}", r, output / name / r.config.stem) for r in recipe]


def _later_work(later: list[tuple[Stage[Any], StageRecipe | None]], inputs: StageInputs, output: Path,
                force: bool) -> bool:
    """Whether a stage after a serving stage will run (so the server is worth starting)."""
    if force:
        return any(recipe is not None for _, recipe in later)
    return any(stage.run is not None and not _reusable(stage, stage.load(one.config, one.set), inputs, out)
               for stage, recipe in later if recipe is not None for _, one, out in _instances(stage.name, recipe, output))


@contextlib.contextmanager
def _open_stage(stage: Stage[Any], config: StrictModel, inputs: StageInputs, out: Path):
    assert stage.open is not None
    try:
        with stage.open(config, inputs, out) as summary:
            yield summary
    except StageFailed:
        raise  # a later stage's failure, passing through
    except Ec2erError as e:
        raise StageFailed(f"stage {stage.name} failed: {e}") from e
    except Exception as e:
        raise StageFailed(f"stage {stage.name} failed: {type(e).__name__}: {e}") from e


def _run_stage(stage: Stage[Any], recipe: StageRecipe, inputs: StageInputs, out: Path,
               force: bool) -> StageSummary:
    try:
        config = stage.load(recipe.config, recipe.set)
        previous = None if force else _reusable(stage, config, inputs, out)
        if previous is not None:
            log.info("%s: unchanged since its last run, reused (--force runs it again)", stage.name)
            return previous.model_copy(update={"reused": True})
        summary = stage(config, inputs, out)
    except Ec2erError as e:
        raise StageFailed(f"stage {stage.name} failed: {e}") from e
    except Exception as e:
        raise StageFailed(f"stage {stage.name} failed: {type(e).__name__}: {e}") from e
    write_json(out / STAGE_RECORD, {"fingerprint": _fingerprint(config, inputs),
                                    "summary": summary.model_dump(mode="json")})
    return summary


def _reusable(stage: Stage[Any], config: StrictModel, inputs: StageInputs, out: Path) -> StageSummary | None:
    """The stage's last summary, if it succeeded on the same recipe, inputs and upstream results."""
    record = out / STAGE_RECORD
    if not record.is_file():
        return None
    previous = json.loads(record.read_text(encoding="utf-8"))
    if previous.get("fingerprint") != _fingerprint(config, inputs):
        return None
    return StageSummary.model_validate(previous["summary"])


def _fingerprint(config: StrictModel, inputs: StageInputs) -> str:
    """What a stage's result depends on: its recipe, its inputs (an endpoint by what it serves,
    not where), and the upstream stage's record (so a stage re-runs when anything upstream
    changed)."""
    upstream = inputs.data / STAGE_RECORD if inputs.data else None
    key = {"config": config.model_dump(mode="json"),
           "inputs": inputs.model_dump(mode="json", exclude={"endpoint": {"url"}}),
           "upstream": upstream.read_text(encoding="utf-8") if upstream and upstream.is_file() else None}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _run(args: argparse.Namespace) -> int:
    from ec2er import console

    console.set_progress(not args.no_progress)
    cfg = load_config(args.config, RunConfig, dict(parse_override(s) for s in args.set))
    logs = console.log_to(check_writable(args.output) / "logs")

    def report(name: str, summary: StageSummary) -> None:
        took = "reused" if summary.reused else f"{summary.seconds:.0f} s"
        print(f"{name:<9} {summary.headline} ({took})", flush=True)

    record = run_chain(cfg, args.output, force=args.force, report=report)
    print(f"done in {record['seconds']:.0f} s; logs in {logs}; summary in {args.output / CHAIN_SUMMARY}")
    for line in headline(record["stages"]):
        print(line)
    return 0


def headline(stages: dict[str, Any]) -> list[str]:
    """The numbers a person looks for at the end of a chain, and where the results are."""
    lines = []
    if "curate" in stages:
        lines.append(f"items:    {stages['curate']['headline']}")
    for name, s in stages.items():
        if name.startswith("train"):
            lines.append(f"adapter:  {s['headline']}")
    if "evaluate" in stages:
        lines += ["results:  accuracy [95% CI]; unparsed = replies the strict parser could not read"]
        lines += [f"  {line}" for line in stages["evaluate"]["details"]]
        files = stages["evaluate"]["files"]
        lines.append(f"table:    {files.get('table.md')}")
        lines.append(f"chart:    {files.get('chart.png')}")
    return lines


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run the whole chain: generate, curate, train, evaluate",
                              description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, type=Path, help="pipelines/run-*.yaml (RunConfig)")
    p.add_argument("--output", required=True, type=Path, help="run folder; re-running into it reuses or resumes")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set generate.set.num_dialogues=8")
    p.add_argument("--force", action="store_true", help="run every stage again, even unchanged ones")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
