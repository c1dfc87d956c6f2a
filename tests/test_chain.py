"""The chain end to end as a cluster user runs it: ``ray start --head``, then ``ray job submit
--working-dir . -- python jobs/run.py`` of pipelines/run-tiny-random.yaml (the tiny random model,
so CI stays fast): generate, curate, train an adapter into a registry, serve the base model and
the adapter, evaluate both through the endpoint. Then the same command again, which reuses every
stage; and a stage that fails names itself and leaves the earlier stages' outputs alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ec2er.cli import main
from test_evaluation import write_benchmark

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


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


def _stop_cluster(temp: Path) -> None:
    """Stop only this test's cluster: `ray stop` would kill every Ray process on the machine,
    including the suite's own session cluster. Every process of a cluster names its temp dir on
    its command line."""
    import psutil

    procs = [p for p in psutil.process_iter(["cmdline"]) if any(str(temp) in arg for arg in p.info["cmdline"] or [])]
    for p in procs:
        p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=20)
    for p in alive:
        p.kill()


def _overrides(root: Path) -> list[str]:
    registry = root / "adapters"
    return ["--set", f"benchmark={write_benchmark(root / 'bench', n=4, languages=('en',))}",
            "--set", f"train.set.registry={registry}", "--set", f"serve.set.registry={registry}",
            "--set", f"evaluate.set.registry={registry}", "--no-progress"]


@pytest.fixture(scope="module")
def chain_job(tmp_path_factory):
    """pipelines/run-tiny-random.yaml submitted as a Ray job to a fresh `ray start --head`."""
    root = tmp_path_factory.mktemp("chain")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths are limited
    dash = _free_port()
    env = _env()
    subprocess.run([BIN / "ray", "start", "--head", f"--port={_free_port()}", f"--temp-dir={temp}",
                    "--num-cpus=4", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dash}", "--disable-usage-stats",
                    # fixed default ports (agent 52365...) are taken by the suite's own session
                    # cluster, and a job agent that cannot bind never accepts the submission
                    f"--dashboard-agent-listen-port={_free_port()}",
                    f"--dashboard-agent-grpc-port={_free_port()}", f"--metrics-export-port={_free_port()}",
                    f"--runtime-env-agent-port={_free_port()}"],
                   env=env, check=True, capture_output=True, timeout=120)
    out = root / "run"
    try:
        submit = [BIN / "ray", "job", "submit", f"--address=http://127.0.0.1:{dash}", "--working-dir", ".",
                  "--", "python", "jobs/run.py", "--config", "pipelines/run-tiny-random.yaml",
                  "--output", str(out), *_overrides(root)]
        for _ in range(30):  # the dashboard answers before its job agent is up; Ray says "try again later"
            job = subprocess.run(submit, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
            if "No available agent to submit job" not in job.stderr + job.stdout:
                break
            time.sleep(2)
    finally:
        _stop_cluster(temp)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    assert "succeeded" in job.stdout + job.stderr
    return root, out, job.stdout


def test_every_stage_ran_and_the_adapter_was_served_and_evaluated(chain_job):
    root, out, console = chain_job
    chain = json.loads((out / "chain.json").read_text())
    assert list(chain["stages"]) == ["generate", "curate", "train", "serve", "evaluate"]
    (adapter,) = chain["stages"]["train"]["adapters"]
    assert adapter == "tiny-random-v1" and (root / "adapters" / adapter / "adapter_config.json").is_file()
    assert chain["stages"]["serve"]["endpoint"]["url"].startswith("http://127.0.0.1:")
    results = json.loads((out / "evaluate" / "results.json").read_text())
    assert set(results) == {"tiny", f"tiny+{adapter}"}  # the base model and the adapter it trained
    table = (out / "evaluate" / "table.md").read_text()
    assert f"tiny+{adapter}" in table and "Δ vs base" in table
    preds = [json.loads(x) for x in (out / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert {p["model"] for p in preds} == {"tiny", f"tiny+{adapter}"}
    assert (out / "logs" / "ec2er.log").is_file()
    # the console: the stages' summary lines, not the engines' and Ray's logs
    assert "train     trained" in console or "train " in console
    assert console.count("INFO") < 20, console[-3000:]


def test_a_rerun_reuses_every_stage_and_a_failing_stage_names_itself(chain_job, capsys):
    root, out, _ = chain_job
    before = {p: p.stat().st_mtime_ns for p in (out / "evaluate").glob("*.json")}
    args = ["run", "--config", str(REPO / "pipelines/run-tiny-random.yaml"), "--output", str(out), *_overrides(root)]
    assert main(args) == 0  # every stage unchanged: nothing runs, no server starts
    assert {p: p.stat().st_mtime_ns for p in (out / "evaluate").glob("*.json")} == before
    assert "nothing to serve" not in capsys.readouterr().err  # said in the log, not on the console
    registry_before = sorted(p.name for p in (root / "adapters").iterdir())
    curated = (out / "curate" / "train.jsonl").read_text()
    assert main([*args, "--set", "curate.set={dedup.treshold: 0.9}"]) == 2
    err = capsys.readouterr().err
    assert "stage curate failed" in err and "dedup.treshold: unknown key" in err
    assert sorted(p.name for p in (root / "adapters").iterdir()) == registry_before
    assert (out / "curate" / "train.jsonl").read_text() == curated and (out / "generate" / "results").is_dir()
