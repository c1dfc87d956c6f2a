"""Generation stage end to end on real engines: a Ray job of the tiny recipe submitted to a
local ``ray start --head`` cluster (tiny random model), a kill -9 of the driver mid-run and a
resume into the same folder (their items must equal the job's), and the tiny MADS recipe on the
embedded SmolLM2. Per-request seeds make every dialogue's text independent of its batch."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ec2er.io import read_jsonl
from ec2er.validate import validate_files

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The tiny random model writes strings up to their schema bounds: give extraction room.
TINY = ["--set", "engine.model=tiny-random-llama", "--set", "engine.max_model_len=4096",
        "--set", "sampling.extraction.max_tokens=1024", "--set", "sampling.supervisor.max_tokens=160",
        "--set", "turns.max_turns=4", "--set", "items={eu_min: 1, eu_max: 1, ea_min: 1, ea_max: 1}",
        "--set", "ray.batch_size=2", "--num-dialogues", "4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    # Ray 2.60 turns on token auth whenever ~/.ray/auth_token exists (any local ray.init makes
    # one); the throwaway cluster listens on 127.0.0.1 only, so the test runs it without.
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    return env


def _qids(out: Path) -> list[str]:
    return sorted(r["qid"] for name in ("eu.jsonl", "ea.jsonl") if (out / name).exists()
                  for r in read_jsonl(out / name))


def _stop_cluster(temp: Path) -> None:
    """Stop only this test's cluster: `ray stop` would kill every Ray process on the machine,
    including the suite's own session cluster (whose loss then takes pytest down with it).
    Every process of a cluster names its temp dir on its command line."""
    import psutil

    procs = [p for p in psutil.process_iter(["cmdline"])
             if any(str(temp) in arg for arg in p.info["cmdline"] or [])]
    for p in procs:
        p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=20)
    for p in alive:
        p.kill()


@pytest.fixture(scope="module")
def ray_job_output(tmp_path_factory):
    """The tiny MADS recipe run as `ray job submit --working-dir .` on a fresh local cluster."""
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are limited
    port, dash = _free_port(), _free_port()
    env = _env()
    subprocess.run([BIN / "ray", "start", "--head", f"--port={port}", f"--temp-dir={temp}",
                    "--num-cpus=4", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash}", "--disable-usage-stats",
                    # fixed default ports (agent 52365...) are taken by the suite's own session
                    # cluster, and a job agent that cannot bind never accepts the submission
                    f"--dashboard-agent-listen-port={_free_port()}",
                    f"--dashboard-agent-grpc-port={_free_port()}", f"--metrics-export-port={_free_port()}",
                    f"--runtime-env-agent-port={_free_port()}"],
                   env=env, check=True, capture_output=True, timeout=120)
    out = tmp_path_factory.mktemp("ray_job") / "mads"
    try:
        submit = [BIN / "ray", "job", "submit", f"--address=http://127.0.0.1:{dash}", "--working-dir", ".",
                  "--", "python", "jobs/generate.py", "--config", "pipelines/mads-tiny.yaml",
                  "--output", str(out), "--no-progress", *TINY]
        for _ in range(30):  # the dashboard answers before its job agent is up; Ray says "try again later"
            job = subprocess.run(submit, cwd=REPO, env=env, capture_output=True, text=True, timeout=420)
            if "No available agent to submit job" not in job.stderr + job.stdout:
                break
            time.sleep(2)
    finally:
        _stop_cluster(temp)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "succeeded" in job.stdout + job.stderr
    return out


def test_ray_job_submit_of_the_tiny_recipe(ray_job_output):
    meta = read_jsonl(ray_job_output / "metadata.jsonl")
    assert len(meta) == 4 and all(m["status"] == "ok" for m in meta), meta
    files = [ray_job_output / "eu.jsonl", ray_job_output / "ea.jsonl"]
    assert validate_files([f for f in files if f.exists()]).ok
    assert (ray_job_output / "stats.json").is_file()


def test_kill_9_and_resume_on_vllm_equals_the_uninterrupted_run(ray_job_output, tmp_path):
    out = tmp_path / "mads"
    cmd = [BIN / "ec2er", "generate", "--config", "pipelines/mads-tiny.yaml", "--output", str(out),
           "--no-progress", *TINY, "--set", "ray.executor=local"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    meta = out / "metadata.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if meta.exists() and meta.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: vLLM's engine core must notice alone
    proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)  # then its orphaned engine processes, so CPUs are free
    assert 1 <= meta.read_text().count("\n") < 4
    subprocess.run(cmd, cwd=REPO, env=_env(), check=True, capture_output=True, timeout=400)
    assert len(read_jsonl(meta)) == 4
    assert _qids(out) == _qids(ray_job_output)


def test_mads_tiny_recipe_on_smollm2_writes_valid_items(tmp_path):
    out = tmp_path / "mads"
    run = subprocess.run([BIN / "ec2er", "generate", "--config", "pipelines/mads-tiny.yaml", "--output",
                          str(out), "--set", "ray.executor=local", "--num-dialogues", "2"],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=500)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 dialogues ok" in run.stdout
    files = [out / "eu.jsonl", out / "ea.jsonl"]
    report = validate_files([f for f in files if f.exists()])
    assert report.ok, report.errors
    # a 135M model often repeats an option (such rows are recorded as failed, never written)
    meta = read_jsonl(out / "metadata.jsonl")
    written = sum(m["eu"] + m["ea"] for m in meta)
    assert written == sum(report.counts.values())
    assert written + sum(len(m["item_failures"]) for m in meta) == 8
