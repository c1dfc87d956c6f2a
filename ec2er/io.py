"""File formats shared by every stage: JSONL in and out, atomic writes, resumable appends.

Every writer here is crash-safe: whole files are written to a temporary sibling and renamed
into place (atomic on POSIX), and appends go line by line with a flush and fsync so a killed
process leaves at most one torn final line, which the readers detect and the resumers drop.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ec2er.errors import DataError

M = TypeVar("M", bound=BaseModel)


def dumps(record: BaseModel | dict) -> str:
    """One JSONL line. Pydantic records are written by alias (EmoBench's "question type")
    and without unset optional fields, so EmoBench rows round-trip to the same JSON."""
    if isinstance(record, BaseModel):
        record = record.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(record, ensure_ascii=False)


def format_validation_error(exc: ValidationError) -> str:
    """First error of a pydantic ValidationError as 'field.path: message'."""
    err = exc.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {msg}" if loc else msg


def _check_text_file(path: Path) -> None:
    """A missing, unreadable or binary file is one DataError naming it, before any line is read."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with path.open("rb") as f:
            head = f.read(8192)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if b"\0" in head:
        raise DataError(f"{path}: not a text file (binary data)")


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file; a missing, binary or non-UTF-8 file is a DataError naming it."""
    path = Path(path)
    _check_text_file(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {e.start})") from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """Yield (line_number, object) for each non-blank line; a bad line yields a DataError
    naming the file and line instead of raising, so callers can report and continue. A missing
    or binary file raises a DataError naming it."""
    path = Path(path)
    _check_text_file(path)
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, DataError(f"{path}:{lineno}: not UTF-8 text (byte {e.start} of the line)")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, DataError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(obj, dict):
                yield lineno, DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                continue
            yield lineno, obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All objects of a JSONL file; the first bad line raises a DataError naming it."""
    rows = []
    for _, obj in iter_jsonl(path):
        if isinstance(obj, DataError):
            raise obj
        rows.append(obj)
    return rows


def read_records(path: str | Path, parse: type[M] | Callable[[dict[str, Any]], M]) -> list[M]:
    """Every line of a JSONL file as a record: validated into a pydantic model class, or built by
    a parse function that raises ValueError. Errors name file, line and field."""
    build = parse.model_validate if isinstance(parse, type) and issubclass(parse, BaseModel) else parse
    out = []
    for lineno, obj in iter_jsonl(path):
        if isinstance(obj, DataError):
            raise obj
        try:
            out.append(build(obj))
        except ValueError as e:  # pydantic's ValidationError included
            msg = format_validation_error(e) if isinstance(e, ValidationError) else str(e)
            raise DataError(f"{path}:{lineno}: {msg}") from None
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; a recipe with a key written twice
    almost always holds a typo, so it is an error here."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> Any:
    """A YAML file (safe loader, duplicate keys refused); errors are DataErrors naming file:line."""
    path = Path(path)
    text = read_text(path)
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise DataError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None


def check_writable(folder: str | Path) -> Path:
    """Create ``folder`` (or find it) and prove a file can be written in it, before any work is
    done: a run that can only fail at its end should fail at its start."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ec2er-write-probe."):
            pass
    except OSError as e:
        raise DataError(f"{folder}: cannot write here ({e.strerror})") from None
    return folder


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling for writing and rename it over ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, records: Iterable[BaseModel | dict]) -> int:
    """Atomically write all records; returns the count."""
    n = 0
    with atomic_open(path) as f:
        for r in records:
            f.write(dumps(r) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write one JSON document (pretty, UTF-8)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", by_alias=True)
    with atomic_open(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def append_jsonl(path: str | Path, records: Iterable[BaseModel | dict]) -> int:
    """Append records durably (flush + fsync) for checkpoints; see ``repair_jsonl_tail``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("a", encoding="utf-8") as f:
        for r in records:
            f.write(dumps(r) + "\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    return n


def repair_jsonl_tail(path: str | Path) -> int:
    """Drop a torn last line left by a killed writer (no trailing newline or invalid JSON).

    Returns the number of bytes removed. Called before resuming an append-only file.
    """
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = len(data)
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with atomic_open(path, "wb") as f:
            f.write(data[:keep])
    return len(data) - keep
