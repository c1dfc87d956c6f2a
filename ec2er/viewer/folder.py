"""A run folder as the viewer reads it: a local folder or any URI pyarrow understands, its stage
folders found by what they hold, and every path the viewer opens kept inside it.

Paths a request names are checked before anything is opened: relative, no ``..`` or ``.``
segments, no backslashes, percent signs or control characters, a known kind of file; on a local
disk the real path (symlinks resolved) must also stay inside the run folder.
"""

from __future__ import annotations

import json
import os
import posixpath
import threading
import time
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from ec2er.adapters import TRAINING_RECORD
from ec2er.errors import DataError
from ec2er.io import json_error
from ec2er.schemas.facts import (
    CHAIN_SUMMARY,
    STAGE_RECORD,
    CuratedFiles,
    EvaluationFiles,
    GenerationFiles,
    TrainingFiles,
)

# the kinds of file the page may fetch as they are (plots, the data card, tables, JSON records)
SERVED_TYPES = {".png": "image/png", ".md": "text/plain; charset=utf-8", ".csv": "text/plain; charset=utf-8",
                ".json": "text/plain; charset=utf-8", ".jsonl": "text/plain; charset=utf-8",
                ".txt": "text/plain; charset=utf-8"}
MAX_SERVED_BYTES = 32 << 20
STAGE_KINDS = ("generate", "curate", "train", "serve", "evaluate")
LISTING_TTL_S = 2.0  # stage folders appear while a chain runs


class PathRefused(ValueError):
    """A requested path that is not a readable file of the run (answered 404, never opened)."""


@dataclass(frozen=True)
class StageFolder:
    key: str    # the folder relative to the run folder ("" for the run folder itself)
    kind: str   # one of STAGE_KINDS
    summary: dict[str, Any] | None  # the chain's record of the stage (stage.json), if any

    @property
    def label(self) -> str:
        return self.key or "."


class RunFolder:
    def __init__(self, uri: str):
        self.uri = uri
        local = "://" not in uri
        self.fs, root = pafs.FileSystem.from_uri(os.path.abspath(uri) if local else uri)
        self.root = root.rstrip("/") or "/"
        info = self.fs.get_file_info(self.root)
        if info.type != pafs.FileType.Directory:
            raise DataError(f"{uri}: not a folder")
        self.real_root = os.path.realpath(self.root) if local else None
        self._stages: tuple[float, list[StageFolder]] | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return posixpath.basename(self.root) or self.root

    # ---- paths
    def join(self, *parts: str) -> str:
        """A path inside the run made from names the viewer itself chose (stage keys, file names)."""
        return posixpath.join(self.root, *(p for p in parts if p))

    def requested(self, rel: str) -> str:
        """The full path of a file a request names, or PathRefused."""
        if not rel or len(rel) > 1024 or any(c in rel for c in "\\%\x00") or any(ord(c) < 32 for c in rel):
            raise PathRefused(rel)
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
            raise PathRefused(rel)
        if posixpath.splitext(rel)[1].lower() not in SERVED_TYPES:
            raise PathRefused(rel)
        full = self.join(*parts)
        if self.real_root is not None:
            real = os.path.realpath(full)
            if os.path.commonpath([real, self.real_root]) != self.real_root:
                raise PathRefused(rel)  # a symlink out of the run
        if self.fs.get_file_info(full).type != pafs.FileType.File:
            raise PathRefused(rel)
        return full

    # ---- reading
    def info(self, path: str) -> pafs.FileInfo:
        return self.fs.get_file_info(path)

    def is_file(self, path: str) -> bool:
        return self.info(path).type == pafs.FileType.File

    def is_dir(self, path: str) -> bool:
        return self.info(path).type == pafs.FileType.Directory

    def children(self, path: str) -> list[pafs.FileInfo]:
        try:
            return sorted(self.fs.get_file_info(pafs.FileSelector(path)), key=lambda i: i.path)
        except (FileNotFoundError, OSError):
            return []

    def read_bytes(self, path: str, limit: int = MAX_SERVED_BYTES) -> bytes:
        with self.fs.open_input_stream(path) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise DataError(f"{path}: larger than {limit >> 20} MB, not shown")
        return data

    def read_json(self, path: str) -> Any | None:
        """A JSON file, or None when it is absent or damaged (``damaged`` says which and why)."""
        return self._load_json(path)[0]

    def damaged(self, path: str) -> str | None:
        """Why a JSON file that is there cannot be read, in one line naming it; None when it
        reads or is absent. (Stages write these files atomically, so a damaged one is damaged,
        not half-written; a reader on another filesystem may rarely meet a torn one, which the
        page's next refresh shows whole.)"""
        return self._load_json(path)[1]

    def _load_json(self, path: str) -> tuple[Any | None, str | None]:
        if not self.is_file(path):
            return None, None
        name = posixpath.relpath(path, self.root) if path.startswith(self.root) else path
        try:
            return json.loads(self.read_bytes(path)), None
        except json.JSONDecodeError as e:
            return None, f"{name}: damaged: {json_error(e)} at line {e.lineno}"
        except UnicodeDecodeError as e:
            return None, f"{name}: damaged: not UTF-8 text (byte {e.start})"
        except DataError as e:
            return None, f"{name}: {e}".replace(f"{path}: ", "")
        except OSError as e:
            return None, f"{name}: cannot be read ({str(e).splitlines()[0]})"

    # ---- stages
    def stages(self) -> list[StageFolder]:
        """The stage folders of the run: the run folder itself when it is one stage's output,
        else its children (and their children, for a stage run once per recipe: train/<recipe>)."""
        with self._lock:
            if self._stages is not None and time.monotonic() - self._stages[0] < LISTING_TTL_S:
                return self._stages[1]
        found = [StageFolder("", kind, self._summary(self.root))] if (kind := self._kind(self.root)) else []
        if not found:
            for child in self.children(self.root):
                if child.type != pafs.FileType.Directory or child.base_name.startswith((".", "_")):
                    continue
                if kind := self._kind(child.path):
                    found.append(StageFolder(child.base_name, kind, self._summary(child.path)))
                    continue
                for grandchild in self.children(child.path):
                    if grandchild.type == pafs.FileType.Directory and (kind := self._kind(grandchild.path)):
                        found.append(StageFolder(f"{child.base_name}/{grandchild.base_name}", kind,
                                                 self._summary(grandchild.path)))
        found.sort(key=lambda s: (STAGE_KINDS.index(s.kind), s.key))
        with self._lock:
            self._stages = (time.monotonic(), found)
        return found

    def stage(self, key: str, kind: str | None = None) -> StageFolder:
        """A stage folder by its key (a name the page got from ``stages``), or PathRefused."""
        for s in self.stages():
            if s.key == key and (kind is None or s.kind == kind):
                return s
        raise PathRefused(key)

    def first(self, kind: str) -> StageFolder | None:
        return next((s for s in self.stages() if s.kind == kind), None)

    def _summary(self, path: str) -> dict[str, Any] | None:
        record = self.read_json(posixpath.join(path, STAGE_RECORD))
        return record.get("summary") if isinstance(record, dict) else None

    def _kind(self, path: str) -> str | None:
        """What stage wrote a folder: the chain's record says so; else its documented files do."""
        summary = self._summary(path)
        if isinstance(summary, dict) and summary.get("stage") in STAGE_KINDS:
            return summary["stage"]
        names = {c.base_name: c.type for c in self.children(path)}
        if names.get(GenerationFiles.RESULTS) == pafs.FileType.Directory \
                or names.get(GenerationFiles.PLAN) == pafs.FileType.Directory \
                or GenerationFiles.FINGERPRINT in names:
            return "generate"
        if CuratedFiles.REJECTS in names or CuratedFiles.DATACARD in names:
            return "curate"
        if TRAINING_RECORD in names or TrainingFiles.PREVIEW in names:  # the preview: written before training
            return "train"
        if EvaluationFiles.PREDICTIONS in names or names.get(EvaluationFiles.RESULTS) == pafs.FileType.File:
            return "evaluate"
        return None

    def chain(self) -> dict[str, Any] | None:
        return self.read_json(self.join(CHAIN_SUMMARY))
