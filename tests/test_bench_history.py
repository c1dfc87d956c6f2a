"""jobs/bench_history.py: recording a benchmark's last JSON line with commit and machine, and
``show``'s side-by-side table. A fake benchmark (python -c) stands in for a real one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "jobs"))

import bench_history  # noqa: E402  (jobs/, a script's folder)


def fake_benchmark(rate: float, ratio: float, relative: float) -> list[str]:
    """A command printing a progress line, then a benchlib-shaped result as its last line."""
    result = {"requests_per_s": rate, "mixed_vs_single": ratio, "errors": 0, "ok": True, "model": "m",
              "spread": {"mixed_vs_single": {"min": ratio - 0.01, "max": ratio + 0.01, "relative": relative,
                                             "rounds": [ratio - 0.01, ratio, ratio + 0.01]}},
              "sizes": {"10000": {"speedup_vs_cdist": 3.0, "spread": {"speedup_vs_cdist": {"relative": 0.1}}}}}
    return [sys.executable, "-c", f"print('-- round 1/3', flush=True); print({json.dumps(json.dumps(result))})"]


def record(history: Path, command: list[str], *options: str) -> int:
    return bench_history.main(["record", "--history", str(history), *options, "--", *command])


def test_record_appends_result_commit_and_machine_and_passes_output(tmp_path, capfd):
    history = tmp_path / "bench" / "history.jsonl"  # the folder does not exist yet
    assert record(history, fake_benchmark(1.0, 0.50, 0.04), "--name", "serve") == 0
    assert record(history, fake_benchmark(1.4, 0.55, 0.04), "--name", "serve") == 0
    out = capfd.readouterr().out
    assert out.count("-- round 1/3\n") == 2 and out.count('"requests_per_s"') == 2  # output passed through

    first, second = (json.loads(line) for line in history.read_text().splitlines())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert first["commit"] == head and isinstance(first["dirty"], bool)
    assert first["bench"] == "serve" and first["args"][0] == "-c" and first["exit_code"] == 0
    assert first["error"] is None and first["result"]["requests_per_s"] == 1.0
    assert second["result"]["requests_per_s"] == 1.4
    machine = first["machine"]
    assert machine["cores"] >= 1 and machine["memory_gib"] > 0 and machine["cpu"] and machine["python"]
    assert "torch" in machine["packages"] and "ray" in machine["packages"]
    assert first["started"] <= second["started"]


def test_show_puts_runs_side_by_side_with_the_change(tmp_path, capsys):
    history = tmp_path / "history.jsonl"
    for rate, ratio in [(1.0, 0.50), (1.1, 0.52), (1.5, 0.53)]:
        assert record(history, fake_benchmark(rate, ratio, relative=0.1), "--name", "serve") == 0
    capsys.readouterr()
    assert bench_history.main(["show", "--history", str(history), "--last", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= bench_history.WIDTH for line in lines)
    assert lines[0].startswith("== serve (3 runs")
    commit = json.loads(history.read_text().splitlines()[0])["commit"][:7]
    assert lines[1].count(commit) == 3 and lines[1].endswith("change vs") and lines[2].endswith("previous")
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:] if line and not line.startswith(("!", " "))}
    # requests_per_s: 1.5 against the median of 1.0 and 1.1 (1.05) is +42.9%, beyond their 9.5% spread
    assert rows["requests_per_s"] == ["1", "1.1", "1.5", "+42.9%", "!"]
    # mixed_vs_single: +3.9% against 0.51, within the 10% its own rounds spread: not flagged
    assert rows["mixed_vs_single"] == ["0.5", "0.52", "0.53", "+3.9%"]
    assert rows["sizes.10000.speedup_vs_cdist"][-1] == "+0.0%"
    assert "ok" not in rows and "model" not in rows and "spread" not in rows  # not numbers: no rows

    assert bench_history.main(["show", "--history", str(history), "--last", "2", "--bench", "bench_serve"]) == 0
    assert capsys.readouterr().out.startswith("== serve (2 runs")


def test_a_last_line_that_is_not_json_is_recorded_as_an_error_with_the_exit_code(tmp_path, capsys):
    history = tmp_path / "history.jsonl"
    command = [sys.executable, "-c", "import sys; print('{\"partial\": 1}'); print('Traceback: boom'); sys.exit(3)"]
    assert record(history, command, "--name", "broken") == 3
    assert "last line is not JSON" in capsys.readouterr().err
    run = json.loads(history.read_text())
    assert run["exit_code"] == 3 and run["result"] is None and "Traceback: boom" in run["error"]

    assert bench_history.main(["show", "--history", str(history)]) == 0
    assert "exit 3, last line is not JSON" in capsys.readouterr().out


def test_a_bad_history_line_is_named(tmp_path):
    history = tmp_path / "history.jsonl"
    history.write_text('{"bench": "x"}\n')
    with pytest.raises(SystemExit, match=r"history.jsonl:1: args: Field required"):
        bench_history.main(["show", "--history", str(history)])
