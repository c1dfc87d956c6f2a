"""Engine kinds: each module of this package is one backend. It defines the backend's typed config
(a subclass of ``EngineBase`` with a ``kind`` literal) and registers it with its builder and its
pre-flight check (``register_engine``), as Ray's batch processors register with their builder.

The package imports its own modules, and the modules installed packages name under the
``ec2er.engine_kinds`` entry-point group (a user's own backend, outside this repository), so a new
backend is one new module: a recipe's ``engine:`` (``EngineConfig``), its JSON schema, its error
messages, ``build_engine`` and ``check_engine`` all follow from the registry. Nothing outside a
kind's module asks a config's type: callers ask the capabilities ``EngineBase`` declares.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, Tag

from ec2er.config import BAD_KIND_ERROR, UNION_TAG_PREFIX, EngineBase

if TYPE_CHECKING:
    from ec2er.llm.base import ChatEngine

DEFAULT_KIND = "vllm"  # a recipe's engine without a ``kind``
ENTRY_POINT_GROUP = "ec2er.engine_kinds"  # installed packages' backends: name = module


@dataclass(frozen=True)
class EngineKind:
    """One backend: its config type, how to build its engine (``asynchronous``: one whose
    ``achat_one`` coroutines share it), and a check that fails in one line, before Ray or an
    engine starts, when the config's model cannot be had."""

    config: type[EngineBase]
    build: Callable[[Any, bool], ChatEngine]
    check: Callable[[Any], None]


ENGINE_KINDS: dict[str, EngineKind] = {}


def register_engine(config: type[EngineBase], build: Callable[[Any, bool], ChatEngine],
                    check: Callable[[Any], None]) -> None:
    """Register a backend under its config's ``kind`` (called once, by the backend's own module)."""
    kind = config.model_fields["kind"].default
    if kind in ENGINE_KINDS:
        raise ValueError(f"engine kind {kind!r} is registered twice ({ENGINE_KINDS[kind].config.__name__}, "
                         f"{config.__name__})")
    ENGINE_KINDS[kind] = EngineKind(config, build, check)


def engine_kind(config: EngineBase) -> EngineKind:
    """The registered backend of a config."""
    kind = ENGINE_KINDS.get(getattr(config, "kind", ""))
    if kind is None or kind.config is not type(config):
        raise TypeError(f"no engine is registered for {type(config).__name__}")
    return kind


def _import_backends() -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: (m.name != DEFAULT_KIND, m.name)):
        importlib.import_module(f"{__name__}.{module.name}")
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        importlib.import_module(entry.value)


_import_backends()


def _tag(value: Any) -> str:
    """The union member an ``engine:`` mapping (or config) is validated as: its ``kind``."""
    kind = value.get("kind", DEFAULT_KIND) if isinstance(value, dict) else getattr(value, "kind", DEFAULT_KIND)
    return f"{UNION_TAG_PREFIX}{kind}" if kind in ENGINE_KINDS else "unknown"


# A recipe's ``engine:``: one config type per registered kind, chosen by its ``kind``.
EngineConfig = Annotated[
    Union[tuple(Annotated[k.config, Tag(f"{UNION_TAG_PREFIX}{name}")] for name, k in ENGINE_KINDS.items())],
    Discriminator(_tag, custom_error_type=BAD_KIND_ERROR,
                  custom_error_message=f"Input should be {' or '.join(map(repr, ENGINE_KINDS))}"),
]

__all__ = ["DEFAULT_KIND", "ENGINE_KINDS", "ENTRY_POINT_GROUP", "EngineConfig", "EngineKind", "engine_kind",
           "register_engine"]
