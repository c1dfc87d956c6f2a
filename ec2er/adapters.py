"""The adapter registry: where training, serving and evaluation meet.

A registry is a folder (default ``runs/adapters/``) of immutable, versioned LoRA adapters::

    runs/adapters/
      index.json                 every version, oldest first (``ec2er adapters list`` prints it)
      smollm2-demo-v1/           adapter_config.json, adapter weights, tokenizer, training.json
      smollm2-demo-v2/

Training only adds versions: ``publish`` copies a finished adapter in under the next free name
``<family>-v<N>`` and never overwrites one, because vLLM's prefix cache keys on the adapter name
and would serve a reloaded adapter's stale results under the same name. Serving and evaluation
only read, by name. Names are checked before any path is built from them, so a request cannot
name a folder outside the registry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ec2er.errors import ConfigError
from ec2er.io import write_json

log = logging.getLogger(__name__)

DEFAULT_REGISTRY = Path("runs/adapters")
INDEX = "index.json"
TRAINING_RECORD = "training.json"  # what training writes beside the weights
ADAPTER_CONFIG = "adapter_config.json"  # peft's file: its presence makes a folder an adapter

# The one rule for names (adapter families, registry names, any model name a request gives):
# letters, digits, '.', '_', '-'; a letter or digit first; no '..'; at most 96 characters. Matched
# whole (fullmatch: a '$' anchor would let "name\n" through).
NAME_CHARACTERS = "A-Za-z0-9._-"
_NAME = re.compile(rf"[A-Za-z0-9][{NAME_CHARACTERS}]{{0,95}}")
_VERSIONED = re.compile(r"(?P<family>.+)-v(?P<version>[1-9][0-9]*)")  # a registry name: <family>-v<N>


def is_valid_name(name: object) -> bool:
    """Whether ``name`` can only ever name a folder directly inside the registry: no separators,
    no '..', no absolute path, no percent-encoded form of them, no whitespace or newline."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None and ".." not in name


def check_name(name: str, what: str = "adapter name") -> str:
    """``name`` if it is valid (``is_valid_name``), else ValueError."""
    if not is_valid_name(name):
        raise ValueError(f"invalid {what} {name!r}: use letters, digits, '.', '_' and '-' "
                         f"(not starting with '.', no '..', at most 96 characters)")
    return name


def family_of(name: str) -> str | None:
    """``<family>`` of a registry name ``<family>-v<N>`` (a valid name), None for any other string."""
    match = _VERSIONED.fullmatch(name) if is_valid_name(name) else None
    return match.group("family") if match else None


def check_targets(adapter: Path, base_model: str) -> None:
    """Refuse an adapter that adapts modules its base model does not have: vLLM serves it without a
    word as the base model itself (vllm-project/vllm#34186), so it would look trained and change
    nothing. Checked where the base model's config is at hand (a folder, an embedded model, a
    cached hub id), from the config alone (``ec2er.models.families.missing_targets``)."""
    from ec2er.models import model_location
    from ec2er.models.families import missing_targets, read_model_config

    folder = model_location(base_model)
    if read_model_config(folder) is None:
        return
    targets = json.loads((adapter / ADAPTER_CONFIG).read_text("utf-8")).get("target_modules") or []
    missing = missing_targets(folder, targets)
    if missing:
        raise ConfigError(f"{adapter}: adapts {', '.join(missing)}, which {base_model} does not have: "
                          "vLLM would serve it as the base model unchanged")


class AdapterEntry(BaseModel):
    """One version in the registry."""

    name: str = Field(description="<family>-v<N>: the name requests, recipes and files use")
    family: str
    version: int = Field(ge=1)
    base_model: str = Field(description="the base model as recipes name it (embedded name, hub id or folder)")
    created: str
    path: str = Field(description="folder, relative to the registry")
    summary: dict[str, Any] = Field(default_factory=dict, description="headline numbers from training.json")


class AdapterRegistry:
    def __init__(self, root: str | Path = DEFAULT_REGISTRY):
        self.root = Path(root)

    # ---- reading ----
    def entries(self) -> list[AdapterEntry]:
        """Every version, oldest first. The index is rebuilt from the folders when it is missing
        or behind (a publisher killed between its rename and its index write)."""
        listed = self._read_index()
        on_disk = {p.name for p in self._version_folders()}
        if listed is not None and on_disk == {e.name for e in listed}:
            return listed
        return self._scan()

    def names(self) -> list[str]:
        return [e.name for e in self.entries()]

    def get(self, name: str) -> AdapterEntry:
        check_name(name)
        for e in self.entries():
            if e.name == name:
                return e
        raise ConfigError(f"{self.root}: no adapter {name!r} (registry has: {', '.join(self.names()) or 'none'})")

    def path(self, name: str) -> Path:
        return self.root / self.get(name).path

    def latest(self, family: str) -> AdapterEntry | None:
        versions = [e for e in self.entries() if e.family == family]
        return max(versions, key=lambda e: e.version) if versions else None

    def find(self, name: str) -> Path | None:
        """The folder of a registry name, or None (no error: callers fall back to other sources).
        Checks the name first, so no path outside the registry is ever built."""
        try:
            check_name(name)
        except ValueError:
            return None
        folder = self.root / name
        return folder if (folder / ADAPTER_CONFIG).is_file() and family_of(name) else None

    # ---- writing ----
    def check_writable(self) -> None:
        """A ConfigError now, naming the registry, if ``publish`` could not write into it: a
        training run must not find out after hours that its adapter has nowhere to go. A registry
        that does not exist yet is created with its missing parents, so the nearest folder that
        exists on its path must be one this process can write in (not a file, not read-only)."""
        root = self.root.absolute()
        existing = next(p for p in (root, *root.parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError(f"registry {self.root}: {existing} is a file, not a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"registry {self.root}: cannot write in {existing} (permission denied)")

    def publish(self, family: str, source: str | Path, base_model: str,
                summary: dict[str, Any] | None = None) -> AdapterEntry:
        """Copy the adapter folder ``source`` in as the next version of ``family``; returns its
        entry. The copy is made beside its final place and renamed in (atomic), under a lock."""
        check_name(family, "adapter family")
        source = Path(source)
        if not (source / ADAPTER_CONFIG).is_file():
            raise ConfigError(f"{source}: not a peft adapter folder (no {ADAPTER_CONFIG})")
        check_targets(source, base_model)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            version = 1 + max((e.version for e in self._scan() if e.family == family), default=0)
            name = f"{family}-v{version}"
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
            try:
                shutil.copytree(source, tmp, dirs_exist_ok=True)
                entry = AdapterEntry(name=name, family=family, version=version, base_model=base_model,
                                     created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                     path=name, summary=summary or {})
                write_json(tmp / ".entry.json", entry)
                os.rename(tmp, self.root / name)  # fails rather than overwrite an existing version
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            self._write_index(self._scan())
        return entry

    # ---- internals ----
    def _version_folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_dir() and family_of(p.name)
                and (p / ".entry.json").is_file()]

    def _read_index(self) -> list[AdapterEntry] | None:
        """The index's entries; None when it is missing or unreadable. An unreadable index (a
        hand edit, a copy cut short) is one warning naming it: the version folders hold
        the same facts, so readers (servers above all) go on from them."""
        index = self.root / INDEX
        if not index.is_file():
            return None
        try:
            return [AdapterEntry.model_validate(e) for e in json.loads(index.read_text("utf-8"))["adapters"]]
        except (OSError, ValueError, KeyError, TypeError) as e:  # JSON and pydantic errors are ValueErrors
            log.warning("%s: unreadable adapter index (%s: %s); reading the version folders instead "
                        "(the next publish rewrites it)", index, type(e).__name__, _first_line(e))
            return None

    def _scan(self) -> list[AdapterEntry]:
        entries = []
        for folder in self._version_folders():
            record = folder / ".entry.json"
            try:
                entries.append(AdapterEntry.model_validate_json(record.read_text("utf-8")))
            except (OSError, ValueError) as e:
                log.warning("%s: unreadable version record (%s); %s is not served or listed",
                            record, _first_line(e), folder.name)
        return sorted(entries, key=lambda e: (e.created, e.family, e.version))

    def _write_index(self, entries: list[AdapterEntry]) -> None:
        write_json(self.root / INDEX, {"adapters": [e.model_dump(mode="json") for e in entries]})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]
