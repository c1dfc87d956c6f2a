"""The stage contract: every stage is ``run(config, inputs, output) -> StageSummary``.

A stage's CLI subcommand, its ``jobs/<stage>.py`` (through ``ec2er.cli.main``, so every job gets
the CLI's one-line errors and ``--debug``) and ``ec2er run`` all call that one function (a stage
that keeps running, serving, is opened instead: the same function as a context manager). The
chain is a list of ``Stage`` objects and knows nothing of their insides: each stage declares what
it hands on (``StageSummary.handoff``: a folder, a held-out split, adapters, an endpoint), what
it will hand on before it runs (``promises``), its pre-flight ``check`` and its ``highlights``;
the chain wires handoffs to the next stages' ``StageInputs``. While a stage writes its output
folder it holds it (``ec2er.io.output_lock``): a second run into the same folder stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from ec2er.config import StrictModel, config_from_overrides, load_config, parse_override
from ec2er import console
from ec2er.console import set_progress
from ec2er.errors import ConfigError
from ec2er.io import output_lock
from ec2er.schemas.facts import LOGS

C = TypeVar("C", bound=StrictModel)


class ServedBaseModel(BaseModel):
    """One base model an endpoint serves (with the registry adapters trained on it)."""

    model: str = Field(description="the base model as recipes name it")
    served_name: str = Field(description="the name requests give for the base model")


class Endpoint(BaseModel):
    """A served OpenAI-compatible endpoint an upstream stage keeps up (the chain's serve step)."""

    url: str
    bases: list[ServedBaseModel] = Field(min_length=1, description="the base models it serves")
    # where a caller finds the bearer key the endpoint asks for (never the key itself)
    api_key_env: str | None = Field(None, description="the environment variable holding it")
    api_key_file: Path | None = Field(None, description="the file holding it (its first line)")

    def served_name_of(self, model: str) -> str | None:
        """The name requests give for a base model as recipes name it; None if not served here."""
        return next((b.served_name for b in self.bases if b.model == model), None)


class StageInputs(BaseModel):
    """What a stage reads besides its recipe."""

    data: Path | None = Field(None, description="the upstream stage's output folder (curate: a "
                                                "generation run; train: a curated folder)")
    benchmark: str | None = Field(None, description="EmoBench folder (EU.jsonl, EA.jsonl) or hub id: "
                                                    "curation decontaminates against it, evaluation "
                                                    "scores on it")
    adapters: list[str] = Field(default_factory=list, description="registry names of adapters an "
                                                                  "upstream stage produced (evaluate "
                                                                  "adds each to its base model)")
    endpoint: Endpoint | None = Field(None, description="a served endpoint of a base model: evaluate "
                                                        "calls that model and its adapters through it")


class Handoff(BaseModel):
    """What a stage hands to the stages after it. The chain keeps one running handoff: each
    finished stage's own replaces ``data``, ``heldout`` and ``endpoint`` where it sets them and
    adds its ``adapters``; every later stage reads it as its ``StageInputs``."""

    data: str | None = Field(None, description="the folder later stages read (a stage's output folder)")
    heldout: str | None = Field(None, description="items held out for evaluation, used when the run has "
                                                  "no benchmark (curation's val.jsonl)")
    adapters: list[str] = Field(default_factory=list, description="registry names this stage published")
    endpoint: Endpoint | None = Field(None, description="what a serving stage serves, while it runs")

    def then(self, later: Handoff) -> Handoff:
        """This handoff followed by a later stage's."""
        return Handoff(data=later.data or self.data, heldout=later.heldout or self.heldout,
                       adapters=self.adapters + [a for a in later.adapters if a not in self.adapters],
                       endpoint=later.endpoint or self.endpoint)

    def inputs(self, benchmark: str | None) -> StageInputs:
        return StageInputs(data=Path(self.data) if self.data else None, benchmark=benchmark or self.heldout,
                           adapters=self.adapters, endpoint=self.endpoint)


class PromisedAdapters(BaseModel):
    """Versions ``<family>-v<N>`` a stage will publish."""

    registry: str = Field(description="the registry folder they go into")
    base_model: str = Field(description="the base model they are trained from, as recipes name it")


class Promise(BaseModel):
    """What a stage will hand on, known from its recipe before anything runs, so that a chain can
    check every later stage's recipe against it before the first stage starts."""

    adapters: dict[str, PromisedAdapters] = Field(default_factory=dict, description="by family")
    endpoint: Endpoint | None = None

    def then(self, later: Promise) -> Promise:
        return Promise(adapters=self.adapters | later.adapters, endpoint=later.endpoint or self.endpoint)


class StageSummary(BaseModel):
    """What a stage reports: one line for a person, numbers for the chain and for tests."""

    stage: str
    output: str
    headline: str = Field(description="one line: what was done, the key counts")
    seconds: float = 0.0
    counts: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="name -> path of the main outputs")
    details: list[str] = Field(default_factory=list, description="more lines for a person (distributions...)")
    highlights: list[str] = Field(default_factory=list, description="the lines a person looks for at the "
                                                                    "end of a chain (a chain prints them last)")
    handoff: Handoff = Field(default_factory=Handoff, description="what later stages read")
    reused: bool = Field(False, description="the chain reused this summary of an earlier, unchanged run")


@dataclass(frozen=True)
class Stage(Generic[C]):
    """One stage: its name, its recipe model and its ``run``. ``data_flag`` is the CLI flag for
    ``inputs.data`` (None: the stage reads no upstream folder; ``data_required`` False: the recipe
    may name it); ``config_required`` False lets the stage run on its recipe model's defaults;
    ``default_output`` gives the output folder when ``--output`` is not given."""

    name: str
    help: str
    config_model: type[C]
    run: Callable[[C, StageInputs, Path], StageSummary] | None = None
    # a stage that keeps running (serving): a context manager yielding its summary while it runs
    open: Callable[[C, StageInputs, Path], AbstractContextManager[StageSummary]] | None = None
    # what the stage will hand on, from its recipe alone (a chain checks later recipes against it,
    # and decides from a serving stage's endpoint whether later stages need it started)
    promises: Callable[[C], Promise] | None = None
    # the checks a chain runs on this stage's recipe before its first stage starts (models,
    # files, names, what upstream stages promise): raise Ec2erError; nothing is written
    check: Callable[[C, Promise], None] | None = None
    data_flag: str | None = None
    data_help: str = ""
    data_required: bool = True
    benchmark_flag: bool = False
    config_required: bool = True
    extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    overrides_from_args: Callable[[argparse.Namespace], dict[str, Any]] = field(default=lambda args: {})
    default_output: Callable[[C], Path] | None = None
    # a stage that keeps running, run from the CLI: the file its process's output (and its
    # workers') goes to, from its recipe and output folder; the console keeps the one ready line
    foreground_log: Callable[[C, Path], Path] | None = None

    def load(self, path: Path | None, overrides: dict[str, Any]) -> C:
        if path is not None:
            return load_config(path, self.config_model, overrides)
        if self.config_required:
            raise ConfigError(f"ec2er {self.name}: --config is required")
        return config_from_overrides(self.config_model, overrides)

    def __call__(self, config: C, inputs: StageInputs, output: Path) -> StageSummary:
        """Run the stage and time it, holding its output folder so no second run writes there."""
        if self.run is None:
            raise TypeError(f"stage {self.name} keeps running: use its open, not a call")
        start = time.perf_counter()
        with output_lock(output):
            summary = self.run(config, inputs, Path(output))
        return summary.model_copy(update={"seconds": round(time.perf_counter() - start, 1)})

    def opened(self, config: C, inputs: StageInputs, output: Path) -> AbstractContextManager[StageSummary]:
        """Open a long-running stage, holding its output folder while it runs."""
        if self.open is None:
            raise TypeError(f"stage {self.name} runs to completion: call it, do not open it")
        return _opened(self.open, config, inputs, output)

    def promise(self, config: C) -> Promise:
        return self.promises(config) if self.promises else Promise()


@contextlib.contextmanager
def _opened(open_stage: Callable[..., AbstractContextManager[StageSummary]], config: Any, inputs: StageInputs,
            output: Path) -> Iterator[StageSummary]:
    with output_lock(output), open_stage(config, inputs, Path(output)) as summary:
        yield summary


def add_stage_arguments(p: argparse.ArgumentParser, stage: Stage[Any]) -> None:
    """The flags every stage shares: --config, --output, the input folder, --set. Presence is
    checked when the stage runs, not by argparse, so stages can have sub-commands
    (``evaluate rescore``, ``train preview``) that do not take them."""
    p.add_argument("--config", type=Path, help=f"recipe YAML ({stage.config_model.__name__})"
                                               + ("" if stage.config_required else "; defaults otherwise"))
    p.add_argument("--output", type=Path, help="output folder; re-running into it resumes"
                                               + ("" if stage.default_output is None else " (default: the recipe's)"))
    if stage.data_flag:
        p.add_argument(stage.data_flag, dest="data", type=Path, help=stage.data_help)
    if stage.benchmark_flag:
        p.add_argument("--benchmark", help="EmoBench folder (EU.jsonl, EA.jsonl) or hub id")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key (dotted, list indices allowed), repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if stage.extra_arguments:
        stage.extra_arguments(p)


def run_from_args(stage: Stage[Any], args: argparse.Namespace) -> int:
    """The CLI path of a stage: load the recipe, run, print the summary's headline."""
    set_progress(not args.no_progress)
    overrides = dict(parse_override(s) for s in args.set) | stage.overrides_from_args(args)
    config = stage.load(args.config, overrides)
    data = getattr(args, "data", None)
    if stage.data_flag and stage.data_required and data is None:
        raise ConfigError(f"ec2er {stage.name}: {stage.data_flag} is required")
    output = args.output
    if output is None:
        if stage.default_output is None:
            raise ConfigError(f"ec2er {stage.name}: --output is required")
        output = stage.default_output(config)
    inputs = StageInputs(data=data, benchmark=getattr(args, "benchmark", None))
    console.log_to(Path(output) / LOGS)  # the folder is checked and held when the stage takes it
    if stage.open is not None:
        return _keep_open(stage, config, inputs, output)
    summary = stage(config, inputs, output)
    for line in summary.details:
        print(f"  {line}")
    print(f"{stage.name}: {summary.headline} ({summary.seconds:.0f} s) -> {summary.output}")
    return 0


def _keep_open(stage: Stage[Any], config: Any, inputs: StageInputs, output: Path) -> int:
    """The CLI path of a stage that keeps running (``ec2er serve``): open it, print one line when
    it is ready, keep it open until Ctrl-C or SIGTERM, close it and say so."""
    log_file = stage.foreground_log(config, output) if stage.foreground_log else None
    to_log = console.console_to_log(log_file) if log_file else contextlib.nullcontext(sys.stdout)
    with to_log as out:
        with stage.opened(config, inputs, output) as summary:
            logs = f"; logs: {log_file}" if log_file else ""
            print(f"{stage.name}: {summary.headline} (ready in {summary.seconds:.0f} s){logs}; "
                  "Ctrl-C or SIGTERM stops it", file=out, flush=True)
            _wait_for_stop()
        print(f"{stage.name}: stopped", file=out, flush=True)
    return 0


def _wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM; both end here, so the caller closes what it opened and
    exits 0. Installed once the stage is open, after any Ray it started (``ray.init`` installs a
    SIGTERM handler of its own)."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        # a second SIGTERM (a process group signalled twice) must not cut the closing short;
        # a second Ctrl-C still can, on purpose
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def register_stage(subparsers: argparse._SubParsersAction, stage: Stage[Any],
                   command: tuple[str, str, str] | None = None) -> argparse.ArgumentParser | None:
    """Add ``ec2er <stage>`` with the shared flags. ``command``: (name, help, description) of the
    one command a stage may have beside its run (``generate export``, ``train preview``); its
    parser is returned for the caller's arguments and ``set_defaults(func=...)``."""
    p = subparsers.add_parser(stage.name, help=stage.help, description=stage.help)
    add_stage_arguments(p, stage)
    p.set_defaults(func=lambda args: run_from_args(stage, args))
    if command is None:
        return None
    name, help_line, description = command
    sub = p.add_subparsers(dest=f"{stage.name}_command", metavar=name)
    return sub.add_parser(name, help=help_line, description=description)
