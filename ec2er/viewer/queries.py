"""The dialogues of a generation run, read from its Parquet results a page at a time.

Never the whole run in memory: a page reads only the row groups that hold its rows, and of those
only the columns it shows; a filter first reads the small columns it needs (status, categories,
stop reason: a few bytes a row) and only then the rows it keeps, and stops once the page is full.
What a scan learns is kept, keyed by each file's path, size and modification time (a finished
results file never changes): footers (so a total is a sum, not a scan), per-file match counts and
positions of recent filters (so the next page, or a count, skips whole files), facet counts, and
where recently listed dialogues are. A free-text search reads the big text columns and so has a
time budget: when it runs out, the page says how far it got, and asking again continues there.

Files still being written are skipped, the rule of ``ec2er.generation.outputs.finished_result_files``
(a Parquet footer is written last: no readable footer, not finished), applied here to a cached
listing so that a page does not re-read every footer.
"""

from __future__ import annotations

import json
import posixpath
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ec2er.schemas.facts import GenerationFiles
from ec2er.schemas.taxonomy import EU_FINE_TO_COARSE
from ec2er.viewer.folder import RunFolder

LIST_COLUMNS = ["dialogue_id", "status", "error", "theme_category", "stop_reason", "turns", "eu_fine",
                "ea_category", "item_failures", "completion_tokens", "metadata"]
FACET_COLUMNS = ["status", "error", "theme_category", "stop_reason", "eu_fine", "ea_category"]
SEARCH_COLUMNS = ["dialogue", "metadata", "eu", "ea"]  # the transcript, persona and background, items
BATCH_ROWS = 4096
SEARCH_BATCH_ROWS = 1024
PAGE_ROWS = 200  # the most rows a page asks for
PERSONA_CHARS = 200       # of the persona, in a list row
LISTING_TTL_S = 1.0       # a live run adds files; a burst of requests shares one listing
POSITIONS_CACHE_BYTES = 64 << 20
COUNTS_CACHE_ENTRIES = 200_000
FINE_TO_COARSE = {fine.value: coarse.value for fine, coarse in EU_FINE_TO_COARSE.items()}


def error_kind(error: str | None) -> str | None:
    """A failure's reason without its particulars: 'turn: invalid_json: <message>' -> 'turn: invalid_json'."""
    return None if error is None else ": ".join(error.split(": ")[:2])


@dataclass(frozen=True)
class DialogueFilter:
    status: str | None = None   # ok | failed
    theme: str | None = None    # theme category
    stop: str | None = None     # stop reason
    eu: str | None = None       # an EU fine or coarse category among the dialogue's items
    ea: str | None = None       # an EA category among the dialogue's items
    error: str | None = None    # a failure reason, as error_kind gives it
    q: str | None = None        # free text (any case) in the transcript, persona, background or items

    @property
    def empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    @property
    def key(self) -> tuple[str | None, ...]:
        return tuple(getattr(self, f.name) or None for f in fields(self))

    def columns(self) -> list[str]:
        wanted = [("status", self.status), ("theme_category", self.theme), ("stop_reason", self.stop),
                  ("eu_fine", self.eu), ("ea_category", self.ea), ("error", self.error)]
        return [c for c, v in wanted if v] + (SEARCH_COLUMNS if self.q else [])

    def mask(self, batch: pa.RecordBatch) -> np.ndarray:
        keep = np.ones(batch.num_rows, dtype=bool)
        for column, value in (("status", self.status), ("theme_category", self.theme), ("stop_reason", self.stop)):
            if value:
                keep &= _bools(pc.equal(batch.column(column), value))
        if self.eu:
            fines = [fine for fine, coarse in FINE_TO_COARSE.items() if self.eu in (fine, coarse)]
            keep &= _list_any(batch.column("eu_fine"), lambda flat: pc.is_in(flat, value_set=pa.array(fines or [self.eu])))
        if self.ea:
            keep &= _list_any(batch.column("ea_category"), lambda flat: pc.equal(flat, self.ea))
        if self.error:
            keep &= _bools(pc.starts_with(batch.column("error"), self.error))
        if self.q:
            found = np.zeros(batch.num_rows, dtype=bool)
            for column in ("dialogue", "metadata"):
                found |= _bools(pc.match_substring(batch.column(column), self.q, ignore_case=True))
            for column in ("eu", "ea"):
                found |= _list_any(batch.column(column), lambda flat: pc.match_substring(flat, self.q, ignore_case=True))
            keep &= found
        return keep


def _bools(array: pa.Array) -> np.ndarray:
    return np.asarray(array.fill_null(False), dtype=bool)


def _list_any(lists: pa.Array, test: Any) -> np.ndarray:
    """Per row: whether any element of its list passes ``test`` (a compute function of the flat values)."""
    out = np.zeros(len(lists), dtype=bool)
    flat = pc.list_flatten(lists)
    if len(flat):
        out[np.asarray(pc.list_parent_indices(lists))[_bools(test(flat))]] = True
    return out


@dataclass(frozen=True)
class ResultFile:
    """A finished results file: where it is, its identity, its footer."""

    path: str
    size: int
    mtime_ns: int
    metadata: pq.FileMetaData

    @property
    def key(self) -> tuple[str, int, int]:
        return self.path, self.size, self.mtime_ns

    @property
    def rows(self) -> int:
        return self.metadata.num_rows

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)


class _Lru(OrderedDict):
    """A dict that forgets its least recently used entries beyond a size (entries or bytes)."""

    def __init__(self, limit: int, size_of: Any = lambda value: 1):
        super().__init__()
        self.limit, self.size_of, self.total = limit, size_of, 0
        self.lock = threading.Lock()

    def get(self, key: Any, default: Any = None) -> Any:
        with self.lock:
            if key not in self:
                return default
            self.move_to_end(key)
            return self[key]

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            if key in self:
                self.total -= self.size_of(self.pop(key))
            self[key] = value
            self.total += self.size_of(value)
            while self.total > self.limit and len(self) > 1:
                _, old = self.popitem(last=False)
                self.total -= self.size_of(old)


class Results:
    """The results of one generation stage folder."""

    def __init__(self, folder: RunFolder, stage_key: str):
        self.fs = folder.fs
        self.base = folder.join(stage_key, GenerationFiles.RESULTS)
        self._footers: dict[str, ResultFile] = {}
        self._listing: tuple[float, list[ResultFile]] | None = None
        self._lock = threading.Lock()
        self._counts = _Lru(COUNTS_CACHE_ENTRIES)
        self._positions = _Lru(POSITIONS_CACHE_BYTES, size_of=lambda a: a.nbytes + 64)
        self._facets = _Lru(COUNTS_CACHE_ENTRIES)
        self._where = _Lru(100_000)  # dialogue id -> (file key, row) of recently listed dialogues

    # ---- files
    def files(self) -> list[ResultFile]:
        """The finished results files, oldest first (a live run appends newer ones)."""
        with self._lock:
            if self._listing is not None and time.monotonic() - self._listing[0] < LISTING_TTL_S:
                return self._listing[1]
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.base, recursive=True, allow_not_found=True))
        except OSError:
            infos = []
        files = []
        for info in infos:
            if info.type != pafs.FileType.File or info.base_name.startswith((".", "_")):
                continue  # hidden and temporary files, as pyarrow's dataset discovery skips them
            known = self._footers.get(info.path)
            if known is None or (known.size, known.mtime_ns) != (info.size, info.mtime_ns or 0):
                known = self._footer(info)
                if known is None:
                    continue  # still being written: read once its writer has finished it
            files.append(known)
        files.sort(key=lambda f: (f.mtime_ns, f.path))
        with self._lock:
            self._footers = {f.path: f for f in files}
            self._listing = (time.monotonic(), files)
        return files

    def _footer(self, info: pafs.FileInfo) -> ResultFile | None:
        try:
            with self.fs.open_input_file(info.path) as source:
                metadata = pq.ParquetFile(source).metadata
        except (pa.ArrowInvalid, OSError):
            return None
        return ResultFile(info.path, info.size, info.mtime_ns or 0, metadata)

    def _batches(self, f: ResultFile, columns: list[str], row_groups: list[int] | None = None,
                 batch_rows: int = BATCH_ROWS) -> Iterator[tuple[int, pa.RecordBatch]]:
        """(first row, batch) over a file's columns, a few thousand rows at a time."""
        groups = list(range(f.metadata.num_row_groups)) if row_groups is None else row_groups
        starts = np.concatenate([[0], np.cumsum([f.metadata.row_group(i).num_rows
                                                 for i in range(f.metadata.num_row_groups)])])
        with self.fs.open_input_file(f.path) as source:
            reader = pq.ParquetFile(source, metadata=f.metadata, buffer_size=1 << 20)
            for group in groups:
                offset = int(starts[group])
                for batch in reader.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns):
                    yield offset, batch
                    offset += batch.num_rows

    # ---- filters
    def positions(self, f: ResultFile, flt: DialogueFilter) -> np.ndarray:
        """Rows of a file that pass a filter, in file order."""
        if flt.empty:
            return np.arange(f.rows)
        cached = self._positions.get((f.key, flt.key))
        if cached is not None:
            return cached
        batch_rows = SEARCH_BATCH_ROWS if flt.q else BATCH_ROWS  # the text columns are ~10 KB a row
        found = [start + np.nonzero(flt.mask(batch))[0]
                 for start, batch in self._batches(f, flt.columns(), batch_rows=batch_rows)]
        out = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
        self._positions.put((f.key, flt.key), out)
        self._counts.put((f.key, flt.key), len(out))
        return out

    def _count(self, f: ResultFile, flt: DialogueFilter) -> int | None:
        return f.rows if flt.empty else self._counts.get((f.key, flt.key))

    def rows_at(self, f: ResultFile, rows: np.ndarray, columns: list[str]) -> list[dict[str, Any]]:
        """The given rows of a file (ascending), reading only the row groups that hold them."""
        if not len(rows):
            return []
        ends = np.cumsum([f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)])
        groups = sorted(set(np.searchsorted(ends, rows, side="right").tolist()))
        out: list[dict[str, Any]] = []
        last = int(rows[-1])
        # small batches when a few rows are wanted: the reader then decodes only the pages up to them
        for start, batch in self._batches(f, columns, groups, 256 if len(rows) <= PAGE_ROWS else BATCH_ROWS):
            inside = rows[(rows >= start) & (rows < start + batch.num_rows)] - start
            if len(inside):
                out += batch.take(pa.array(inside)).to_pylist()
            if start + batch.num_rows > last:
                break  # the rest of the row group holds none of them
        return out

    # ---- what the page asks
    def page(self, flt: DialogueFilter, offset: int, limit: int, newest: bool = False,
             budget_s: float = 2.5) -> dict[str, Any]:
        files = self.files()
        deadline = time.monotonic() + budget_s
        rows: list[dict[str, Any]] = []
        before = scanned = 0  # matches in the files passed; rows of the files looked at
        partial = False
        for f in reversed(files) if newest else files:
            if len(rows) >= limit:
                break
            n = self._count(f, flt)
            if n is not None and before + n <= offset:
                before += n
                scanned += f.rows
                continue
            if n is None and time.monotonic() > deadline:
                partial = True  # asking again continues here: the files scanned are remembered
                break
            matches = self.positions(f, flt)
            scanned += f.rows
            ordered = matches[::-1] if newest else matches
            skip = max(offset - before, 0)
            before += len(matches)
            wanted = ordered[skip:skip + limit - len(rows)]
            if len(wanted):
                found = self.rows_at(f, np.sort(wanted), LIST_COLUMNS)
                listed = [list_row(r, f) for r in (found[::-1] if newest else found)]
                for r, position in zip(listed, wanted, strict=True):
                    self._where.put(r["id"], (f.key, int(position)))
                rows += listed
        counts = [self._count(f, flt) for f in files]
        total = None if any(c is None for c in counts) else sum(counts)
        return {"rows": rows, "offset": offset, "limit": limit, "total": total, "partial": partial,
                "scanned_rows": scanned, "total_rows": sum(f.rows for f in files), "files": len(files)}

    def count(self, flt: DialogueFilter, budget_s: float = 2.5) -> dict[str, Any]:
        files = self.files()
        deadline = time.monotonic() + budget_s
        total = scanned = 0
        exact = True
        for f in files:
            n = self._count(f, flt)
            if n is None:
                if time.monotonic() > deadline:
                    exact = False
                    break
                n = len(self.positions(f, flt))
            total += n
            scanned += f.rows
        return {"count": total, "exact": exact, "scanned_rows": scanned,
                "total_rows": sum(f.rows for f in files)}

    def facets(self, budget_s: float = 2.5) -> dict[str, Any]:
        """Counts of each value of the small columns (what the filters offer), over the files
        counted within the budget (later calls count the rest)."""
        files = self.files()
        deadline = time.monotonic() + budget_s
        total: dict[str, Counter] = {c: Counter() for c in FACET_COLUMNS}
        counted = 0
        for f in files:
            counts = self._facets.get(f.key)
            if counts is None:
                if time.monotonic() > deadline:
                    break
                counts = self._file_facets(f)
                self._facets.put(f.key, counts)
            for column, c in counts.items():
                total[column].update(c)
            counted += f.rows
        eu_coarse: Counter = Counter()
        for fine, n in total["eu_fine"].items():
            eu_coarse[FINE_TO_COARSE.get(fine, "?")] += n
        return {"status": dict(total["status"]), "error": dict(total["error"].most_common(50)),
                "theme": dict(total["theme_category"]), "stop": dict(total["stop_reason"]),
                "eu": dict(total["eu_fine"]), "eu_coarse": dict(eu_coarse), "ea": dict(total["ea_category"]),
                "counted_rows": counted, "total_rows": sum(f.rows for f in files)}

    def _file_facets(self, f: ResultFile) -> dict[str, Counter]:
        out: dict[str, Counter] = {c: Counter() for c in FACET_COLUMNS}
        for _, batch in self._batches(f, FACET_COLUMNS):
            for column in FACET_COLUMNS:
                values = batch.column(column)
                if column in ("eu_fine", "ea_category"):
                    values = pc.list_flatten(values)
                elif column == "error":
                    values = pa.array([error_kind(e) for e in values.to_pylist()], pa.string())
                for entry in pc.value_counts(values).to_pylist():
                    if entry["values"] is not None:
                        out[column][entry["values"]] += entry["counts"]
        return out

    def dialogue(self, dialogue_id: str) -> dict[str, Any] | None:
        """One dialogue in full (metadata, transcript, items), found where it was last listed or
        by a scan of the id column."""
        files = self.files()
        by_key = {f.key: f for f in files}
        where = self._where.get(dialogue_id)
        if where is not None and where[0] in by_key:
            found = self._row(by_key[where[0]], where[1], dialogue_id)
            if found is not None:
                return found
        for f in files:
            for start, batch in self._batches(f, ["dialogue_id"]):
                hits = np.nonzero(_bools(pc.equal(batch.column(0), dialogue_id)))[0]
                if len(hits):
                    return self._row(f, start + int(hits[0]), dialogue_id)
        return None

    def _row(self, f: ResultFile, position: int, dialogue_id: str) -> dict[str, Any] | None:
        found = self.rows_at(f, np.array([position]), _all_columns(f))
        if not found or found[0]["dialogue_id"] != dialogue_id:
            return None
        r = found[0]
        return {"id": dialogue_id, "file": f.name, "row": position,
                "metadata": _json(r.get("metadata")) or {}, "dialogue": _json(r.get("dialogue")),
                "eu": [_json(x) for x in r.get("eu") or []], "ea": [_json(x) for x in r.get("ea") or []]}


def _all_columns(f: ResultFile) -> list[str]:
    return f.metadata.schema.to_arrow_schema().names


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {"unreadable": text[:2000]}


def _safety_summary(record: Any) -> dict[str, Any] | None:
    """What the list shows of a dialogue's safety record: its highest client risk and handling."""
    if not isinstance(record, dict):
        return None
    return {"client_risk": record.get("client_risk"), "handling": record.get("handling")}


def list_row(r: dict[str, Any], f: ResultFile) -> dict[str, Any]:
    """What the list shows of a dialogue."""
    meta = _json(r.get("metadata")) or {}
    persona = meta.get("persona") or ""
    return {"id": r["dialogue_id"], "status": r["status"], "error": r["error"], "theme": r["theme_category"],
            "stop": r["stop_reason"], "turns": r["turns"], "eu": r["eu_fine"] or [], "ea": r["ea_category"] or [],
            "item_failures": r["item_failures"], "tokens": r["completion_tokens"],
            "safety": _safety_summary(meta.get("safety")),
            "persona": persona[:PERSONA_CHARS] + ("…" if len(persona) > PERSONA_CHARS else ""),
            "file": f.name}
