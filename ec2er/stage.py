"""The stage contract: every stage is ``run(config, inputs, output) -> StageSummary``.

A stage's CLI subcommand, its ``jobs/<stage>.py`` (through ``ec2er.cli.main``, so every job gets
the CLI's one-line errors and ``--debug``) and ``ec2er run`` all call that one function. The chain
is a list of ``Stage`` objects: it hands each stage the previous one's output folder as
``inputs.data`` and knows nothing of their insides.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from ec2er.config import StrictModel, config_from_overrides, load_config, parse_override
from ec2er import console
from ec2er.console import set_progress
from ec2er.errors import ConfigError
from ec2er.io import check_writable

C = TypeVar("C", bound=StrictModel)


class Endpoint(BaseModel):
    """A served OpenAI-compatible endpoint an upstream stage keeps up (the chain's serve step)."""

    url: str
    model: str = Field(description="the base model as recipes name it")
    served_name: str = Field(description="the name requests give for the base model")
    api_key_env: str | None = None


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


class StageSummary(BaseModel):
    """What a stage reports: one line for a person, numbers for the chain and for tests."""

    stage: str
    output: str
    headline: str = Field(description="one line: what was done, the key counts")
    seconds: float = 0.0
    counts: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="name -> path of the main outputs")
    adapters: list[str] = Field(default_factory=list, description="registry names this stage added")
    details: list[str] = Field(default_factory=list, description="more lines for a person (distributions...)")
    endpoint: Endpoint | None = Field(None, description="what a serving stage serves, while it runs")
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
    # a stage that keeps running (serving): a context manager yielding its summary while it runs,
    # and what it will serve, known before it starts (the chain decides from it whether to start)
    open: Callable[[C, StageInputs, Path], AbstractContextManager[StageSummary]] | None = None
    serves: Callable[[C], Endpoint] | None = None
    data_flag: str | None = None
    data_help: str = ""
    data_required: bool = True
    benchmark_flag: bool = False
    config_required: bool = True
    extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    overrides_from_args: Callable[[argparse.Namespace], dict[str, Any]] = field(default=lambda args: {})
    default_output: Callable[[C], Path] | None = None

    def load(self, path: Path | None, overrides: dict[str, Any]) -> C:
        if path is not None:
            return load_config(path, self.config_model, overrides)
        if self.config_required:
            raise ConfigError(f"ec2er {self.name}: --config is required")
        return config_from_overrides(self.config_model, overrides)

    def __call__(self, config: C, inputs: StageInputs, output: Path) -> StageSummary:
        """Run the stage and time it."""
        assert self.run is not None, f"{self.name} keeps running: use open"
        start = time.perf_counter()
        summary = self.run(config, inputs, Path(output))
        return summary.model_copy(update={"seconds": round(time.perf_counter() - start, 1)})


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
    console.log_to(check_writable(output) / "logs")
    summary = stage(config, inputs, output)
    for line in summary.details:
        print(f"  {line}")
    print(f"{stage.name}: {summary.headline} ({summary.seconds:.0f} s) -> {summary.output}")
    return 0


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
