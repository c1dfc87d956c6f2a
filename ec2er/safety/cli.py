"""``ec2er safety assess "text"`` / ``--file F.jsonl``: risk assessments as JSON.

A text prints one JSON object; a file (JSONL, each line an object with a ``text`` field) prints
one JSON line per input line, its ``line`` number and ``id`` (when the input has one) first.
The guard of tier 2 comes from ``--config`` (a ``SafetyConfig`` YAML), ``--set`` overrides, or the
``--guard-url`` / ``--guard-model`` shorthands (mode ambiguous_only unless ``--guard-mode`` says).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ec2er.config import config_from_overrides, load_config, parse_override
from ec2er.errors import ConfigError, DataError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("safety", help="crisis-risk assessment of texts (rules, optionally a guard model)",
                       description="Crisis safety: risk of suicide, self-harm, harm to others or abuse, by "
                                   "transparent English rules and optionally a guard model (Llama Guard 3 "
                                   "format) behind an OpenAI-compatible endpoint. Not a clinical instrument.")
    ssub = p.add_subparsers(dest="safety_command", required=True)
    a = ssub.add_parser("assess", help="assess a text, or each line of a JSONL file, and print JSON")
    a.add_argument("text", nargs="?", help="the text to assess")
    a.add_argument("--file", type=Path, help="JSONL file whose lines have a 'text' field")
    a.add_argument("--config", type=Path, help="SafetyConfig YAML (roles, guard)")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    add_guard_arguments(a)
    a.set_defaults(func=_assess)


def add_guard_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guard-url", help="OpenAI-compatible base URL of a guard model (e.g. http://host:8000/v1)")
    p.add_argument("--guard-model", help="the guard's model name at that endpoint")
    p.add_argument("--guard-mode", choices=["ambiguous_only", "always", "off"], default=None,
                   help="when to ask the guard (default with --guard-url: ambiguous_only)")
    p.add_argument("--guard-prompt", choices=["explicit", "template"], default=None,
                   help="explicit: Llama Guard 3 prompt as one message (any model); template: the model's own")


def guard_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--guard-*`` flags as config overrides (a URL without a model is an error)."""
    out: dict[str, Any] = {}
    if args.guard_url:
        if not args.guard_model:
            raise ConfigError("--guard-url needs --guard-model (the model name the endpoint serves)")
        out |= {"guard.engine": {"kind": "openai", "base_url": args.guard_url, "model": args.guard_model},
                "guard.mode": "ambiguous_only"}
    if args.guard_mode:
        out["guard.mode"] = args.guard_mode
    if args.guard_prompt:
        out["guard.prompt"] = args.guard_prompt
    return out


def safety_config(args: argparse.Namespace) -> Any:
    from ec2er.safety.schema import SafetyConfig

    overrides = dict(parse_override(s) for s in getattr(args, "set", [])) | guard_overrides(args)
    if getattr(args, "config", None):
        return load_config(args.config, SafetyConfig, overrides)
    return config_from_overrides(SafetyConfig, overrides)


def read_texts(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, object) of every line; a line that is not an object with a string 'text' is a
    DataError naming the file and the line."""
    from ec2er.io import iter_jsonl

    rows = []
    for line, obj in iter_jsonl(path):
        if isinstance(obj, DataError):
            raise obj
        if not isinstance(obj.get("text"), str):
            raise DataError(f"{path}:{line}: text: expected a string field 'text'")
        rows.append((line, obj))
    return rows


def _assess(args: argparse.Namespace) -> int:
    from ec2er.safety.assess import assess
    from ec2er.safety.guard import guard_engine

    if (args.text is None) == (args.file is None):
        raise ConfigError("ec2er safety assess: give a text or --file, not both")
    config = safety_config(args)
    engine = guard_engine(config.guard) if config.guard.mode != "off" else None  # one client for every line
    if args.text is not None:
        print(assess(args.text, config, engine).model_dump_json())
        return 0
    for line, obj in read_texts(args.file):
        head = {"line": line} | ({"id": obj["id"]} if "id" in obj else {})
        print(json.dumps(head | assess(obj["text"], config, engine).model_dump(mode="json"), ensure_ascii=False))
        sys.stdout.flush()
    return 0
