"""What a person sees on the console: one progress bar per stage, one summary line, warnings of
ours; everything else (vLLM, Ray, transformers, DeepSpeed and our own INFO lines) goes to
``<run>/logs/``. ``--verbose`` puts it all on the console as well.

- Python logging: the console handler passes ec2er's warnings and errors (all records with
  ``--verbose``); a file handler, added once a stage knows its output folder, takes every INFO
  record into ``logs/ec2er.log``. Libraries that install console handlers of their own (vLLM,
  Ray) are made to log through the root logger instead.
- Processes we start: Ray workers' output stays in Ray's log files unless ``--verbose``
  (``log_to_driver``); an engine started in this process (curation's judge) is spawned with its
  output sent to ``logs/engines.log``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

_settings: dict[str, Any] = {"progress": True, "verbose": False, "log_dir": None}
# DeepSpeed's own logger is "DeepSpeed" (a handler of its own, to stdout)
THIRD_PARTY = ("vllm", "ray", "ray.data", "ray.train", "ray.tune", "ray.serve", "transformers", "deepspeed",
               "DeepSpeed", "torch", "py.warnings")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
RAY_DATA_LOGGING = Path(__file__).with_name("data") / "ray_data_logging.yaml"


def set_progress(enabled: bool) -> None:
    _settings["progress"] = enabled


def verbose() -> bool:
    return bool(_settings["verbose"])


def progress_bar(total: int | None, desc: str, unit: str, initial: int = 0) -> tqdm[Any]:
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not _settings["progress"],
                dynamic_ncols=True)


class _OursOrVerbose(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _settings["verbose"] or (record.name.startswith("ec2er") and record.levelno >= logging.WARNING)


def setup(verbose_console: bool = False, debug: bool = False) -> None:
    """The console side, at start-up (before any stage knows its log folder)."""
    _settings["verbose"] = verbose_console or debug
    if not _settings["verbose"]:
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM logs through the root logger
        os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING))  # Ray Data too
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for handler in _settings.pop("handlers", []):  # ours from an earlier call (tests call main often)
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    console.addFilter(_OursOrVerbose())
    root.addHandler(console)
    _settings["handlers"] = [console]
    adopt_library_loggers()


class _LazyFileHandler(logging.FileHandler):
    """Creates its folder and file with the first record (``delay``), so a run that fails before
    it logs anything (bad data found at start) leaves no empty ``logs/`` folder behind."""

    def __init__(self, path: Path):
        super().__init__(path, encoding="utf-8", delay=True)

    def _open(self) -> IO[str]:
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def log_to(folder: Path) -> Path:
    """Add ``<folder>/ec2er.log`` (every INFO record, the folder made with the first one) and
    remember the folder for engine output."""
    path = folder / "ec2er.log"
    root = logging.getLogger()
    if not any(getattr(h, "baseFilename", None) == str(path.absolute()) for h in root.handlers):
        handler = _LazyFileHandler(path)
        handler.setLevel(logging.DEBUG if logging.getLogger().level <= logging.DEBUG else logging.INFO)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        _settings.setdefault("handlers", []).append(handler)
    _settings["log_dir"] = folder
    return folder


def log_dir() -> Path | None:
    return _settings["log_dir"]


def adopt_library_loggers() -> None:
    """Libraries that print to the console through handlers of their own log through ours
    instead (Ray sets its handlers up again in ``ray.init``: call this after it too)."""
    if _settings["verbose"]:
        return
    for name in THIRD_PARTY:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True
    # Serve logs its start at INFO through a handler it installs during serve.start, before anyone
    # can adopt it; its own log files (Ray's session logs) keep the full record
    logging.getLogger("ray.serve").setLevel(logging.WARNING)


def link_ray_logs() -> None:
    """``logs/ray``: a link to this Ray session's log folder (workers, engines, Ray Data)."""
    folder = log_dir()
    if folder is None:
        return
    import ray

    with contextlib.suppress(Exception):  # no session folder on this node, or a link we cannot make
        session = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / "ray"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(session)


@contextlib.contextmanager
def engine_output() -> Iterator[None]:
    """Start an engine inside this block: the processes it spawns inherit stdout and stderr
    pointed at ``logs/engines.log``, so their chatter never reaches the console."""
    folder = log_dir()
    if _settings["verbose"] or folder is None:
        yield
        return
    with console_to_log(folder / "engines.log"):
        yield


def output_log() -> Path | None:
    """The file this process's output goes to inside ``console_to_log``, else None (so Ray
    workers started meanwhile can send their output there too)."""
    return _settings.get("output_log")


@contextlib.contextmanager
def console_to_log(log_file: Path) -> Iterator[IO[str]]:
    """Send this process's stdout and stderr (and so those of the processes it starts, which
    inherit them) to ``log_file``; yield a stream to the real console for the few lines a person
    should read. Restored on exit, so errors still reach the console in one line."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(1), "w")
    outer = _settings.get("output_log")
    try:
        with open(log_file, "a") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            _settings["output_log"] = log_file
            yield console
    finally:
        _settings["output_log"] = outer
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        console.close()


@contextlib.contextmanager
def library_output_to(log_file: Path) -> Iterator[None]:
    """Everything printed inside this block goes to ``log_file``: what libraries write to the
    process's file descriptors (C++ code, subprocesses) and what they write to Python's
    ``sys.stdout``/``sys.stderr`` (tqdm bars, transformers' and warnings' handlers), which may be
    other objects than those descriptors (a caller's capture). For a library step whose progress
    bars and advice are not for the user: a model's conversion. With ``--verbose`` it all stays on
    the console."""
    if _settings["verbose"]:
        yield
        return
    with console_to_log(log_file), open(log_file, "a") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def own_terminal() -> None:
    """The ``ec2er`` command itself calls this (not a test or a job calling ``main`` in-process):
    this process's file descriptors are its own to redirect (``native_output_to_log``)."""
    _settings["own_terminal"] = True


def native_output_to_log() -> None:
    """From now on, what this process's native code writes to file descriptor 2 goes to
    ``logs/native.log``: Ray's core worker logs its errors there (e.g. "core_worker.cc: Actor
    ... has constructor arguments in the object store", ray-project/ray#57733, for every Ray Data
    actor pool), beside Python's ``logging``. Python's ``sys.stderr`` (our warnings, progress
    bar and one-line errors) stays on the console, through a copy of the descriptor. Called
    before ``ray.init``; only by the ``ec2er`` command, outside ``console_to_log`` (which sends
    everything to its own file), and not with ``--verbose``."""
    folder = log_dir()
    if (_settings["verbose"] or folder is None or not _settings.get("own_terminal") or output_log() is not None
            or _settings.get("native_log")):
        return
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "native.log", "a") as log:
        os.dup2(log.fileno(), 2)
    sys.stderr = terminal
    for handler in _settings.get("handlers", []):  # the console handler holds the stream it was given
        if type(handler) is logging.StreamHandler:
            handler.setStream(terminal)
    _settings["native_log"] = folder / "native.log"
