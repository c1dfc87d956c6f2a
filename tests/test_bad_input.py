"""Bad input, as a new user would give it: each case is a one-line error that names the culprit
(file, line, key or model), a non-zero exit, and nothing written that would block the corrected
run. None of these starts Ray or an engine: they are all found before."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ec2er.cli import main

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "items_emobench_layout.jsonl"


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("ec2er: error:")]
    assert len(lines) == 1, err[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _generate(out: Path, *extra: str) -> int:
    return main(["generate", "--config", str(REPO / "pipelines/mads-tiny.yaml"), "--output", str(out),
                 "--no-progress", *extra])


def test_unknown_model_is_named_before_anything_starts(tmp_path, capsys):
    start = time.monotonic()
    assert _generate(tmp_path / "out", "--set", "engine.model=gpt-17") == 2
    _one_line_error(capsys, "gpt-17", "unknown model")
    assert time.monotonic() - start < 10  # no Ray, no engine
    assert not (tmp_path / "out" / "fingerprint.json").exists()


@pytest.fixture
def no_job(monkeypatch):
    """Everything of a generation run up to the Ray job (checks, fingerprint, stats); the job and
    its plan stand in as empty, so these tests start neither Ray nor an engine."""
    import ec2er.generation.driver as driver
    import ec2er.generation.job as job
    import ec2er.ray_utils as ray_utils

    monkeypatch.setattr(ray_utils, "init_ray", lambda *a, **k: None)
    monkeypatch.setattr(driver, "ensure_plan", lambda config, out: config.num_dialogues)
    monkeypatch.setattr(job, "run_job", lambda config, out, show: dict.fromkeys(("dialogues", "items", "failed", "redo"), 0))


def test_a_run_that_fails_at_start_leaves_nothing_that_blocks_the_fix(tmp_path, capsys, no_job):
    out = tmp_path / "out"
    personas = tmp_path / "personas.jsonl"
    personas.write_text('{"persona": ""}\n{"persona": "A nurse who loves chess."}\n')
    assert _generate(out, "--set", "personas.source=file", "--set", f"personas.path={personas}",
                     "--set", "personas.max_reuse=1", "--num-dialogues", "2") == 2
    _one_line_error(capsys, f"{personas}:1", "persona")
    assert not (out / "fingerprint.json").exists()
    # the corrected input into the same folder gets past the checks
    personas.write_text('{"persona": "A nurse who loves chess."}\n{"persona": "A retired sailor."}\n')
    assert _generate(out, "--set", "personas.source=file", "--set", f"personas.path={personas}",
                     "--num-dialogues", "2") == 0
    assert (out / "fingerprint.json").is_file()


def test_unreadable_persona_and_theme_files(tmp_path, capsys):
    latin = tmp_path / "p.jsonl"
    latin.write_bytes(b'{"persona": "Un caf\xe9"}\n{"persona": "A chef."}\n')
    assert _generate(tmp_path / "o1", "--set", "personas.source=file", "--set", f"personas.path={latin}") == 2
    _one_line_error(capsys, f"{latin}:1", "not UTF-8")
    parquet = tmp_path / "p.parquet"
    parquet.write_bytes(b"PAR1 this is not parquet")
    assert _generate(tmp_path / "o2", "--set", "personas.source=file", "--set", f"personas.path={parquet}") == 2
    _one_line_error(capsys, str(parquet), "not a readable Parquet file")
    pq.write_table(pa.table({"text": ["A chef."]}), tmp_path / "cols.parquet")
    assert _generate(tmp_path / "o3", "--set", "personas.source=file",
                     "--set", f"personas.path={tmp_path / 'cols.parquet'}") == 2
    _one_line_error(capsys, "no column 'persona'", "text")
    themes = tmp_path / "themes.yaml"
    themes.write_text("Family:\n  - id: a\n    name: x\n  - [1, 2]\n")
    assert _generate(tmp_path / "o4", "--set", f"themes.path={themes}") == 2
    _one_line_error(capsys, str(themes), "Family[0]")
    themes.write_text("Family: [\n")
    assert _generate(tmp_path / "o5", "--set", f"themes.path={themes}") == 2
    _one_line_error(capsys, str(themes), "invalid YAML")


def test_output_that_is_a_file_or_the_input_itself(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _generate(blocker) == 2
    _one_line_error(capsys, str(blocker), "is a file")
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "eu.jsonl").write_text(FIXTURE.read_text())
    (gen / "stats.json").write_text('{"from": "generation"}')
    assert main(["curate", "--input", str(gen), "--output", str(gen)]) == 2
    _one_line_error(capsys, "must differ from the input folder")
    assert json.loads((gen / "stats.json").read_text()) == {"from": "generation"}


def test_refused_resume_names_the_keys_that_differ(tmp_path, capsys, no_job):
    out = tmp_path / "out"
    assert _generate(out, "--set", "engine.model=tiny-random-llama") == 0
    assert _generate(out, "--set", "engine.model=tiny-random-llama", "--set", "seed=9",
                     "--set", "sampling.turn.temperature=0.1") == 2
    _one_line_error(capsys, "sampling.turn.temperature", "seed")


def test_curation_names_malformed_lines_on_the_console(tmp_path, caplog):
    gen = tmp_path / "gen"
    gen.mkdir()
    lines = FIXTURE.read_text().splitlines()
    (gen / "eu.jsonl").write_text(lines[0] + "\n{oops\n")
    assert main(["curate", "--input", str(gen), "--output", str(tmp_path / "cur")]) == 0
    assert any(f"{gen / 'eu.jsonl'}:2: invalid JSON" in r.getMessage() for r in caplog.records)


def test_a_benchmark_folder_without_a_task_the_recipe_asks_for(tmp_path, capsys):
    """A recipe asking for EU and EA on a folder holding only EU.jsonl: evaluation does not drop
    EA silently, and curation does not decontaminate against half the benchmark."""
    from test_evaluation import write_benchmark

    bench = write_benchmark(tmp_path / "bench", n=4, languages=("en",))
    (bench / "EA.jsonl").unlink()
    assert main(["evaluate", "--config", str(REPO / "pipelines/eval-tiny.yaml"), "--output", str(tmp_path / "e"),
                 "--benchmark", str(bench)]) == 2
    _one_line_error(capsys, str(bench), "no EA.jsonl")
    assert not (tmp_path / "e" / "results.json").exists()
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "eu.jsonl").write_text(FIXTURE.read_text())
    assert main(["curate", "--input", str(gen), "--output", str(tmp_path / "c"), "--benchmark", str(bench)]) == 2
    _one_line_error(capsys, str(bench), "no EA.jsonl")
    assert not (tmp_path / "c" / "train.jsonl").exists()


def test_a_broken_json_line_reads_well(tmp_path, capsys):
    """The decoder's own message may end in "at" ("Invalid control character at"): the column
    follows a colon, never a second "at"."""
    broken = tmp_path / "items.jsonl"
    broken.write_text(FIXTURE.read_text().splitlines()[0] + '\n{"qid": "unterminated\n')
    assert main(["validate", str(broken)]) == 1
    err = capsys.readouterr().err
    assert f"{broken}:2: invalid JSON (Invalid control character at: column 22)" in err and "at at" not in err


# Each stage's job entry point and a recipe it takes.
JOB_RECIPES = {"generate.py": "pipelines/mads-tiny.yaml", "curate.py": "pipelines/curate.yaml",
               "train.py": "pipelines/train-tiny-random.yaml", "serve.py": "serve/demo.yaml",
               "evaluate.py": "pipelines/eval-tiny.yaml", "run.py": "pipelines/run-tiny-random.yaml"}


def test_a_wrong_key_in_a_recipe_and_a_job_entry_point(tmp_path):
    """jobs/*.py go through the CLI: the same one-line error, naming the recipe and the bad key,
    and exit code."""
    import subprocess
    import sys

    # the benchmarks and their helper (benchlib.py) take no recipe
    jobs = sorted(j.name for j in (REPO / "jobs").glob("*.py") if not j.name.startswith("bench"))
    assert jobs == sorted(JOB_RECIPES)  # every job is checked
    for job in jobs:
        bad = tmp_path / f"bad-{job.removesuffix('.py')}.yaml"
        bad.write_text((REPO / JOB_RECIPES[job]).read_text() + "\nnum_dialogs: 2\n")  # a misspelt key
        output = [] if job == "serve.py" else ["--output", str(tmp_path / "o")]  # a server writes no folder
        run = subprocess.run([sys.executable, str(REPO / "jobs" / job), "--config", str(bad), *output],
                             capture_output=True, text=True, timeout=120, cwd=REPO)
        assert run.returncode == 2, (job, run.stderr[-1500:])
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("ec2er: error:") and f"{bad.name}: num_dialogs: unknown key" in last, (job, last)


def test_an_empty_persona_file_a_malformed_line_and_a_missing_benchmark(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert _generate(tmp_path / "o1", "--set", "personas.source=file", "--set", f"personas.path={empty}") == 2
    _one_line_error(capsys, str(empty), "no personas")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"persona": "A chef.",\n')
    assert _generate(tmp_path / "o2", "--set", "personas.source=file", "--set", f"personas.path={broken}") == 2
    _one_line_error(capsys, f"{broken}:1", "invalid JSON")
    assert main(["evaluate", "--config", str(REPO / "pipelines/eval-tiny.yaml"), "--output", str(tmp_path / "e"),
                 "--benchmark", str(tmp_path / "no-emobench")]) == 2
    _one_line_error(capsys, str(tmp_path / "no-emobench"))
    assert not (tmp_path / "e" / "results.json").exists()
