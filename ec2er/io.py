"""Files shared by every stage: JSONL and JSON in and out, atomic writes, fingerprints, one
writer per output folder, and dataset files from the hub.

Every writer here is crash-safe: whole files are written to a temporary sibling and renamed
into place (atomic on POSIX), so a killed process leaves the old file or the new one. Readers
name the file and line of anything they cannot read.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ec2er.errors import DataError, Ec2erError
from ec2er.schemas.facts import OUTPUT_LOCK


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it); whoever binds it later may find it taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]

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


def json_error(e: json.JSONDecodeError) -> str:
    """'invalid JSON (Expecting value: column 7)'. The decoder's message may end in "at" itself
    ("Unterminated string starting at"), so the column follows a colon, as in ``str(e)``."""
    return f"invalid JSON ({e.msg}: column {e.colno})"


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
                yield lineno, DataError(f"{path}:{lineno}: {json_error(e)}")
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


def read_json(path: str | Path) -> Any:
    """One JSON document (a record a stage wrote: stats, stage.json, training.json, an index...);
    a missing, unreadable or corrupt file is one DataError naming it."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: {json_error(e)}; the file is "
                        "damaged: restore it or remove it to start that part again") from None


def fingerprint(obj: Any) -> str:
    """A stable hex digest of a JSON-able value (keys sorted): what resumes and reuses compare."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


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


_HELD: dict[str, int] = {}  # folders this process holds (output_lock), with their nesting depth


@contextlib.contextmanager
def output_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder`` for one writer: a second run into it (another process) fails at once with
    one line naming the folder and who holds it, instead of both writing the same files. An OS
    lock (``flock``) ends with its process, so a killed run never leaves a folder locked; a
    process may take the same folder again (nested stages). Object-storage URIs have no such lock
    (one writer there is the user's to ensure)."""
    if ":/" in str(folder):
        yield Path(folder)
        return
    created = not Path(folder).exists()
    folder = check_writable(folder)
    key = str(folder.resolve())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    with open(folder / OUTPUT_LOCK, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise Ec2erError(f"{folder}: another ec2er run is writing here ({holder}); wait for it "
                             "to end, or choose another output folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]
            if created and [p.name for p in folder.iterdir()] == [OUTPUT_LOCK]:
                # a run that failed at its start leaves no folder behind (the lock file goes
                # while still held, so no other run can have taken it in between)
                (folder / OUTPUT_LOCK).unlink()
                folder.rmdir()
            fcntl.flock(f, fcntl.LOCK_UN)


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


def hub_download(repo_id: str, what: str, *, filename: str | None = None,
                 patterns: Iterable[str] = (), hint: str = "") -> Path:
    """One file (``filename``) of a hub dataset, or its files matching ``patterns``, downloaded
    once into the Hugging Face cache (with ``HF_HUB_OFFLINE=1``, from the cache only). Any failure
    (offline, unknown id, gated, not an id at all) is one DataError naming ``what`` was asked for."""
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if filename is not None:
            return Path(hf_hub_download(repo_id, filename, repo_type="dataset"))
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(patterns) or None))
    except Exception as e:  # offline machines, unknown ids: one line, not a traceback
        reason = next(iter(str(e).strip().splitlines()), "")
        target = f"{repo_id}/{filename}" if filename else repo_id
        raise DataError(f"{what} {target!r}: not a local file or folder, and the hub download failed "
                        f"({type(e).__name__}{': ' + reason[:200] if reason else ''})"
                        f"{'; ' + hint if hint else ''}") from None
