"""The ``ec2er`` command line. Every stage registers its own subcommand; errors are one line.

Each stage module exposes ``register(subparsers)``, which adds its parser and sets
``func(args) -> int``. Stages that have not landed yet say so instead of pretending.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from ec2er import __version__
from ec2er.errors import Ec2erError, NotBuiltYet

# subcommand -> module with register(subparsers), or the issue that will build it
STAGES: dict[str, str] = {
    "generate": "ec2er.generation.cli",
    "curate": "ec2er.curation.cli",
    "review": "ec2er.curation.review_cli",
    "train": "not built yet: the training stage (LoRA on Ray Train + DeepSpeed) is a later issue",
    "serve": "not built yet: the serving stage (Ray Serve, base + LoRA adapters) is a later issue",
    "evaluate": "ec2er.evaluation.cli",
    "run": "ec2er.run",
}


def _not_built(message: str):
    def run(args: argparse.Namespace) -> int:
        raise NotBuiltYet(f"ec2er {args.command}: {message}")

    return run


def _register_stage(sub: argparse._SubParsersAction, name: str, target: str) -> None:
    if target.startswith("ec2er."):
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            if e.name != target:
                raise
            target = "not built yet"
        else:
            module.register(sub)
            return
    p = sub.add_parser(name, help=f"({target})", description=target)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_not_built(target))


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


def _register_validate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check JSONL files of EU/EA items (EmoBench layout)",
                       description="Validate every line of each file as an EU or EA item (detected per "
                                   "line); print counts per task and the first errors; exit 1 if any "
                                   "line is invalid.")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--max-errors", type=int, default=10, help="errors to print (default 10)")
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    from ec2er.validate import validate_files

    report = validate_files(args.files)
    for (path, task, lang), n in sorted(report.counts.items()):
        print(f"{path}: {task} {lang}: {n} valid")
    for err in report.errors[: args.max_errors]:
        print(err, file=sys.stderr)
    if report.invalid > args.max_errors:
        print(f"... and {report.invalid - args.max_errors} more invalid lines", file=sys.stderr)
    print(f"{sum(report.counts.values())} valid, {report.invalid} invalid")
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ec2er", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ec2er {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, target in STAGES.items():
        _register_stage(sub, name, target)
    _register_models(sub)
    _register_validate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Ec2erError as e:
        if args.debug:
            raise
        print(f"ec2er: error: {e}", file=sys.stderr)
        return 2
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
