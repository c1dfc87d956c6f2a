"""The generation job on Ray Data, end to end, with a scripted OpenAI-compatible server on
127.0.0.1 as every actor's engine (``engine.kind: openai``), so Ray, the plan, the writers, the
checkpoints and the failure paths run for real without starting vLLM: outputs, export,
curation reading the run, resume after a driver kill -9, an actor killed mid-run, dialogues
tried again after network failures, and runs that end non-zero: a dialogue that fails every try,
and an error no retry can fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from fakes import FakeOpenAIServer

from ec2er.cli import main
from ec2er.generation.outputs import RESULTS, done_ids, iter_items

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def recipe(tmp_path: Path, server: FakeOpenAIServer, n: int = 12, pipeline: str = "mads", **ray) -> Path:
    config = {"pipeline": pipeline, "num_dialogues": n, "seed": 3,
              "items": {"eu_min": 2, "eu_max": 2, "ea_min": 2, "ea_max": 2},
              "engine": {"kind": "openai", "model": server.model, "base_url": server.base_url, "max_model_len": 4096,
                         "max_retries": 0},
              "ray": {"actors": 1, "batch_size": 2, "max_concurrent_batches": 2} | ray}
    if pipeline == "concise":
        config["turns"] = {"min_turns": 10, "max_turns": 10}
    path = tmp_path / f"{pipeline}-{n}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def qids(out: Path) -> list[str]:
    return sorted(json.loads(line)["qid"] for _, _, line in iter_items(str(out)))


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """An uninterrupted run of 12 dialogues: the items every interrupted run must end with."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "run"
    assert main(["generate", "--config", str(recipe(root, server)), "--output", str(out), "--no-progress"]) == 0
    return out


def test_outputs_export_and_curation_read_the_run(reference, tmp_path, capsys, ray_local, server):
    stats = json.loads((reference / "stats.json").read_text())
    assert stats["dialogues"] == {"committed": 12, "ok": 12, "failed": 0, "planned": 12}
    assert stats["items"]["eu"] == stats["items"]["ea"] == 24 and len(qids(reference)) == 48
    assert sum(stats["distributions"]["eu_coarse"].values()) == 24
    assert len(set(qids(reference))) == 48 and len(done_ids(str(reference))) == 12
    assert main(["generate", "export", "--input", str(reference), "--output", str(tmp_path / "x")]) == 0
    assert main(["validate", str(tmp_path / "x" / "eu.jsonl"), str(tmp_path / "x" / "ea.jsonl")]) == 0
    assert len((tmp_path / "x" / "metadata.jsonl").read_text().splitlines()) == 12
    capsys.readouterr()
    assert main(["curate", "--input", str(reference), "--output", str(tmp_path / "cur"),
                 "--set", "checks.min_words=1"]) == 0
    curated = json.loads((tmp_path / "cur" / "stats.json").read_text())
    assert curated["counts"]["read"] == 48 and curated["dialogues"]["dialogues"] == 12
    # a re-run into the finished folder writes nothing; other data-shaping settings are refused
    before = sorted(p.name for p in (reference / RESULTS).iterdir())
    path = recipe(tmp_path, server)
    assert main(["generate", "--config", str(path), "--output", str(reference), "--no-progress"]) == 0
    assert sorted(p.name for p in (reference / RESULTS).iterdir()) == before
    assert main(["generate", "--config", str(path), "--output", str(reference), "--set", "seed=9"]) == 2
    assert "seed" in capsys.readouterr().err


def test_concise_writes_its_final_files_once(server, tmp_path, ray_local):
    out = tmp_path / "concise"
    assert main(["generate", "--config", str(recipe(tmp_path, server, n=3, pipeline="concise")),
                 "--output", str(out), "--no-progress"]) == 0
    assert len(json.loads((out / "personas_final.json").read_text())) == 3
    items = (out / "items_final.jsonl").read_text().splitlines()
    assert len(items) == 12 and json.loads((out / "summary.json").read_text())["counts"] == {"personas": 3, "items": 12}
    assert main(["validate", str(out / "items_final.jsonl")]) == 0


def test_driver_killed_mid_run_then_resumed_gives_the_uninterrupted_items(reference, tmp_path):
    """kill -9 of the driver (and its local Ray) after some dialogues were written; the re-run
    skips them through Ray Data's checkpoints and ends with exactly the reference's items."""
    with FakeOpenAIServer(model="fake-model", delay_s=0.05) as slow:
        path = recipe(tmp_path, slow)
        out = tmp_path / "killed"
        env = dict(os.environ, RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1")
        env.pop("RAY_ADDRESS", None)
        cmd = [str(BIN / "ec2er"), "generate", "--config", str(path), "--output", str(out), "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not len(done_ids(str(out))) >= 2:
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        written = len(done_ids(str(out)))
        assert 2 <= written < 12
        rerun = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert qids(out) == qids(reference)


def test_a_sigterm_to_the_drivers_group_stops_it_with_143_and_no_stack(tmp_path):
    """SIGTERM to the whole process group of a running generation (as systemd, Kubernetes and
    `timeout` stop a job): the driver stops its work and its local Ray and exits 143, without
    Ray's crash handler ("SIGTERM received", a stack, SIGABRT), and none of its processes
    survives it."""
    with FakeOpenAIServer(model="fake-model", delay_s=0.05) as slow:
        out = tmp_path / "stopped"
        env = dict(os.environ, RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1")
        env.pop("RAY_ADDRESS", None)
        cmd = [str(BIN / "ec2er"), "generate", "--config", str(recipe(tmp_path, slow)), "--output", str(out),
               "--no-progress"]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        native = out / "logs" / "native.log"
        try:
            # stopped once Ray Data's actor pool exists: the driver's core worker has logged ray#57733's line
            deadline = time.time() + 180
            while time.time() < deadline and proc.poll() is None and not (
                    native.is_file() and "core_worker.cc" in native.read_text()):
                time.sleep(0.2)
            assert proc.poll() is None, f"the run ended before it could be stopped: {proc.stderr.read()[-3000:]}"
            family = psutil.Process(proc.pid).children(recursive=True)  # Ray's processes and workers
            os.killpg(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err[-3000:]
    # nothing else: Ray's crash handler would print "SIGTERM received" and a stack, and the
    # driver's core worker logs its errors (ray-project/ray#57733's line) to logs/native.log, not here
    assert err == "ec2er: stopped by SIGTERM\n", err[-3000:]
    assert "SIGTERM received" not in native.read_text()
    _, alive = psutil.wait_procs(family, timeout=60)  # Ray stops each after a grace; slower under load
    assert alive == [], [(p.pid, p.name()) for p in alive]


def test_an_actor_killed_mid_run_is_replaced_and_its_dialogues_redone(reference, tmp_path, ray_local):
    """SIGKILL of an engine actor's process while its batches are in flight: Ray restarts the
    actor and retries them; the run finishes with every dialogue once."""
    from ec2er.generation.config import GenerateConfig
    from ec2er.generation.driver import run_generation

    with FakeOpenAIServer(model="fake-model", delay_s=0.05) as slow:
        config = GenerateConfig.model_validate(yaml.safe_load(recipe(tmp_path, slow).read_text()))
        out = tmp_path / "actor"
        done: list[object] = []
        runner = threading.Thread(target=lambda: done.append(run_generation(config, out)), daemon=True)
        runner.start()
        deadline = time.time() + 120
        while time.time() < deadline and runner.is_alive() and len(done_ids(str(out))) < 2:
            time.sleep(0.1)
        victims = [p for p in psutil.process_iter(["cmdline"]) if "GenerationActor" in " ".join(p.info["cmdline"] or [])]
        written = len(done_ids(str(out)))
        assert victims and runner.is_alive() and written < 12, (len(victims), written)
        for victim in victims:
            victim.kill()
        runner.join(timeout=300)
        assert done, "the run did not finish after its actor was killed"
    assert qids(out) == qids(reference)
    assert sorted(done_ids(str(out))) == sorted(done_ids(str(reference)))


def test_network_failures_are_tried_again_and_the_run_finishes(reference, tmp_path, ray_local):
    """An endpoint that fails now and then (HTTP 503, the client's own retries off) costs only
    tries: each dialogue it touched is tried again at once, the run finishes with the reference's
    items, and the dialogues that needed more than one try say so."""
    from ec2er.generation.config import GenerateConfig
    from ec2er.generation.driver import run_generation

    with FakeOpenAIServer(model="fake-model") as flaky:
        config = GenerateConfig.model_validate(yaml.safe_load(recipe(tmp_path, flaky).read_text()))
        flaky.fail_first_of = 10  # about one background or turn request in 10 gets a 503 once
        out = tmp_path / "flaky"
        stats = run_generation(config, out)
    assert stats["dialogues"] == {"committed": 12, "ok": 12, "failed": 0, "planned": 12}
    tries = [json.loads(line)["tries"] for line in _metadata(out)]
    assert stats["session"]["redo"] == sum(t - 1 for t in tries) > 0
    assert qids(out) == qids(reference)


def _metadata(out: Path) -> list[str]:
    from ec2er.generation.outputs import iter_result_batches

    return [m for _, b in iter_result_batches(str(out), ["metadata"]) for m in b.column(0).to_pylist()]


@pytest.mark.parametrize("fault", ["always_503", "no_choices"])
def test_a_dialogue_that_cannot_finish_ends_the_run_with_its_cause(fault, tmp_path, ray_local, capsys):
    """An endpoint that always fails (after ray.dialogue_tries tries), and a reply the code cannot
    use (a programming error's stand-in, never retried): the run exits non-zero with one line
    naming the dialogue and the cause, instead of passing it off as bad luck."""
    with FakeOpenAIServer(model="fake-model") as broken:
        if fault == "always_503":
            broken.fail_all = True
        else:
            broken.no_choices = True
        path = recipe(tmp_path, broken, n=4, dialogue_tries=2)
        assert main(["generate", "--config", str(path), "--output", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ec2er: error: dialogue ") and "\n" not in err, err
    if fault == "always_503":
        assert "failed all 2 tries" in err and "HTTP 503" in err, err
    else:
        assert "IndexError" in err and "tries" not in err, err
    assert not done_ids(str(tmp_path / "out"))
