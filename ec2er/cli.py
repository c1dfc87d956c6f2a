"""The ``ec2er`` command line. Every stage registers its own subcommand; errors are one line.

Each stage module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from typing import NoReturn

from ec2er import __version__
from ec2er.errors import Ec2erError, Terminated
from ec2er.sigterm import EXIT_STATUS, let_ray_data_stop

# subcommand -> the module whose register(subparsers) adds it
STAGES: dict[str, str] = {
    "generate": "ec2er.generation.stage",
    "curate": "ec2er.curation.stage",
    "review": "ec2er.curation.review_cli",
    "train": "ec2er.training.cli",
    "serve": "ec2er.serving.stage",
    "evaluate": "ec2er.evaluation.cli",
    "run": "ec2er.run",
    "view": "ec2er.viewer.cli",
    "cluster": "ec2er.cluster",
    "safety": "ec2er.safety.cli",
}




def _register_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list or prepare embedded models",
                       description="Embedded models ship inside PyPI packages and are converted once "
                                   "to HF folders in the cache (~/.cache/ec2er/models or $EC2ER_CACHE_DIR).")
    msub = p.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="embedded models and whether they are prepared").set_defaults(func=_models_list)
    prep = msub.add_parser("prepare", help="convert an embedded model to an HF folder vLLM loads")
    prep.add_argument("name")
    prep.add_argument("--force", action="store_true", help="rebuild even if prepared")
    prep.set_defaults(func=_models_prepare)


def _models_list(args: argparse.Namespace) -> int:
    from ec2er.models import list_models

    for m in list_models():
        print(f"{m['name']:<24} {m['status']:<13} {m['license']:<11} {m['path']}")
    return 0


def _models_prepare(args: argparse.Namespace) -> int:
    from ec2er.models import prepare_model

    print(prepare_model(args.name, force=args.force))
    return 0


def _register_adapters(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adapters", help="list the adapter registry (what training published)",
                       description="The adapter registry: immutable, versioned LoRA adapters <family>-v<N> "
                                   "that training publishes and serving and evaluation load by name.")
    asub = p.add_subparsers(dest="adapters_command", required=True)
    ls = asub.add_parser("list", help="every version, oldest first")
    ls.add_argument("--registry", type=Path, default=None, help="registry folder (default runs/adapters)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=_adapters_list)


def _adapters_list(args: argparse.Namespace) -> int:
    import json

    from ec2er.adapters import DEFAULT_REGISTRY, AdapterRegistry

    registry = AdapterRegistry(args.registry or DEFAULT_REGISTRY)
    entries = registry.entries()
    for e in entries:
        if args.json:
            print(json.dumps(e.model_dump(mode="json")))
        else:
            loss = e.summary.get("val_loss", e.summary.get("train_loss"))
            print(f"{e.name:<32} {e.base_model:<28} {e.created}  {'' if loss is None else f'loss {loss:.3f}'}")
    if not entries and not args.json:
        print(f"{registry.root}: no adapters yet (ec2er train publishes them)")
    return 0


def _register_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check JSONL files of EU/EA items (EmoBench layout)",
                       description="Check every line of each file as an EU or EA item (detected per "
                                   "line) with the checks every valid item passes (schema, taxonomy, "
                                   "option counts, distinct options, gold among them: the same checks "
                                   "curation starts with); print counts per task and the first errors; "
                                   "exit 1 if any line is invalid.")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--max-errors", type=int, default=10, help="errors to print (default 10)")
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from ec2er.schemas.checks import check_files

    report = check_files(args.files)
    for key, n in sorted(report.counts.items()):
        path, task, lang = key.rsplit(" ", 2)
        print(f"{path}: {task} {lang}: {n} valid")
    for err in report.errors[: args.max_errors]:
        print(err, file=sys.stderr)
    if len(report.errors) > args.max_errors:
        print(f"... and {len(report.errors) - args.max_errors} more invalid lines", file=sys.stderr)
    print(f"{sum(report.counts.values())} valid, {len(report.errors)} invalid")
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ec2er", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ec2er {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show every log on the console too (vLLM, Ray, ...; by default in <output>/logs/)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in STAGES.values():
        importlib.import_module(module).register(sub)
    _register_models(sub)
    _register_adapters(sub)
    _register_validate(sub)
    return parser


GLOBAL_FLAGS = ("--debug", "-v", "--verbose")


def job_main(command: list[str], argv: list[str]) -> int:
    """A ``jobs/<stage>.py`` entry point: ``ec2er <command> <argv>``, where the flags every command
    shares (``--debug``, ``--verbose``) may come anywhere in ``argv``, as a job's user writes them."""
    shared = [a for a in argv if a in GLOBAL_FLAGS]
    return main([*shared, *command, *(a for a in argv if a not in GLOBAL_FLAGS)])


def exit_stopped() -> NoReturn:
    """The ``ec2er`` command, stopped by SIGTERM once its work is stopped: stop this process's Ray
    (what Ray's exit hook would do) and end now with 143. Left to the interpreter's exit, the
    status was at times 1 (under load, in the suite), not 143: an exit hook, or Ray's core worker
    finding its raylet gone, ends the process its own way, and a supervisor reads a crash."""
    try:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            let_ray_data_stop()
            ray.shutdown()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STATUS)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ec2er import console

    console.setup(verbose_console=args.verbose, debug=args.debug)
    if argv is None:  # the command itself, not a caller in-process
        console.own_terminal()
    try:
        return int(args.func(args) or 0)
    except Ec2erError as e:
        if args.debug:
            raise
        print(f"ec2er: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("ec2er: stopped by SIGTERM", file=sys.stderr)
        if argv is None:
            exit_stopped()
        return EXIT_STATUS
    except KeyboardInterrupt:
        print("ec2er: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure still gets one line unless --debug
        if args.debug:
            raise
        print(f"ec2er: error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
