"""JSONL files (curated items, rejects, predictions) read a page at a time, never whole.

A page reads from the start of the files (or, once a file's line count is known, from the nearest
indexed line: a byte offset is kept every ``INDEX_EVERY`` lines, keyed by the file's path, size
and modification time) and stops once the page is full. A filter tests the raw line for a word
first and parses only the lines that may match; it has a time budget, like the dialogue search.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

INDEX_EVERY = 1024


@dataclass(frozen=True)
class Source:
    path: str
    tag: str  # what the page calls the lines of this file (e.g. "train", "rejected")


@dataclass
class _Index:
    offsets: list[int]  # byte offset of line 0, INDEX_EVERY, 2*INDEX_EVERY, ...
    lines: int


def text_contains(value: Any, needle: str) -> bool:
    """Whether any string inside a JSON value contains ``needle`` (already lower case)."""
    if isinstance(value, str):
        return needle in value.lower()
    if isinstance(value, dict):
        return any(text_contains(v, needle) for v in value.values())
    if isinstance(value, list):
        return any(text_contains(v, needle) for v in value)
    return False


def raw_needle(q: str | None) -> bytes | None:
    """The search word as it appears in a raw JSONL line, when JSON writes it unchanged (no quote,
    backslash or control character), for a test before parsing; else None (every line is parsed)."""
    if not q or not q.isascii() or any(c in q for c in '"\\') or any(ord(c) < 32 for c in q):
        return None  # (bytes.lower() lowers ASCII letters only)
    return q.lower().encode("utf-8")


class JsonlFiles:
    def __init__(self, fs: pafs.FileSystem):
        self.fs = fs
        self._indexes: dict[tuple[str, int, int], _Index] = {}
        self._lock = threading.Lock()

    def _key(self, path: str) -> tuple[str, int, int] | None:
        info = self.fs.get_file_info(path)
        return None if info.type != pafs.FileType.File else (path, info.size, info.mtime_ns or 0)

    def lines(self, path: str, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(line number from 1, raw line) from line ``start`` (0-based) on."""
        key = self._key(path)
        if key is None:
            return
        index = self._indexes.get(key)
        first, offset = 0, 0
        if index is not None and start:
            slot = min(start // INDEX_EVERY, len(index.offsets) - 1)
            first, offset = slot * INDEX_EVERY, index.offsets[slot]
        with self.fs.open_input_file(path) as raw:
            raw.seek(offset)
            reader = io.BufferedReader(raw, buffer_size=1 << 20)
            for n, line in enumerate(reader, start=first):
                if n >= start and line.strip():
                    yield n + 1, line

    def count(self, path: str) -> int:
        """Lines of a file (blank lines included, as line numbers count them); indexes it once."""
        key = self._key(path)
        if key is None:
            return 0
        with self._lock:
            if key in self._indexes:
                return self._indexes[key].lines
        offsets, position, n = [], 0, 0
        with self.fs.open_input_file(path) as raw:
            for n, line in enumerate(io.BufferedReader(raw, buffer_size=1 << 20)):  # noqa: B007
                if n % INDEX_EVERY == 0:
                    offsets.append(position)
                position += len(line)
            lines = n + 1 if position else 0
        with self._lock:
            for old in [k for k in self._indexes if k[0] == path]:
                del self._indexes[old]  # a file that grew: its older index is of no use
            self._indexes[key] = _Index(offsets or [0], lines)
        return lines

    def page(self, sources: list[Source], offset: int, limit: int,
             keep: Callable[[Source, dict[str, Any]], bool] | None = None, needle: bytes | None = None,
             budget_s: float = 2.5) -> dict[str, Any]:
        """Lines ``offset``... of the sources taken in order (only those ``keep`` accepts and
        whose raw text holds ``needle``, when given), each as {source tag, line number, record}."""
        if keep is None and needle is None:
            return self._plain_page(sources, offset, limit)
        deadline = time.monotonic() + budget_s
        rows: list[dict[str, Any]] = []
        seen = 0
        for source in sources:
            for number, line in self.lines(source.path):
                if time.monotonic() > deadline:
                    return {"rows": rows, "offset": offset, "limit": limit, "partial": True}
                if needle is not None and needle not in line.lower():
                    continue
                obj = _parse(line)
                if keep is not None and not keep(source, obj):
                    continue
                seen += 1
                if seen > offset:
                    rows.append({"source": source.tag, "line": number, "record": obj})
                    if len(rows) >= limit:
                        return {"rows": rows, "offset": offset, "limit": limit, "partial": False}
        return {"rows": rows, "offset": offset, "limit": limit, "partial": False}

    def _plain_page(self, sources: list[Source], offset: int, limit: int) -> dict[str, Any]:
        """Unfiltered: whole files before the page are skipped by their line counts."""
        rows: list[dict[str, Any]] = []
        seen = 0
        for source in sources:
            skip = offset - seen
            if skip > 0:
                n = self.count(source.path)
                if skip >= n:
                    seen += n
                    continue
            seen += max(skip, 0)
            for number, line in self.lines(source.path, max(skip, 0)):
                rows.append({"source": source.tag, "line": number, "record": _parse(line)})
                if len(rows) >= limit:
                    return {"rows": rows, "offset": offset, "limit": limit, "partial": False}
        return {"rows": rows, "offset": offset, "limit": limit, "partial": False}

    def total(self, sources: list[Source]) -> int:
        return sum(self.count(s.path) for s in sources)


def _parse(line: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError:
        return {"unreadable": line[:2000].decode("utf-8", "replace")}
    return obj if isinstance(obj, dict) else {"value": obj}
