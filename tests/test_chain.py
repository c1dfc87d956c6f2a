"""The chain end to end as a cluster user runs it: ``ray job submit --working-dir . -- python
jobs/run.py`` of pipelines/run-tiny-random.yaml (the tiny random model, so CI stays fast) to the
suite's multi-node cluster (conftest's ``multinode``; heavy work on worker nodes only): generate,
curate, train an adapter into a registry, serve the base model and the adapter, evaluate both
through the endpoint. Then the same command again, which reuses every
stage; and a stage that fails names itself and leaves the earlier stages' outputs alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_evaluation import write_benchmark

from ec2er.cli import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _overrides(root: Path) -> list[str]:
    # every stage's heavy actors on the worker nodes (half a node each), its outputs in the
    # folder the test declares shared (every node of this one-host cluster sees it)
    return ["--set", f"benchmark={write_benchmark(root / 'bench', n=4, languages=('en',))}",
            "--set", f"registry={root / 'adapters'}", "--set", "ray.worker_resources={ec2er_worker: 0.5}",
            "--set", f"ray.shared_storage=[{root}]", "--no-progress"]


@pytest.fixture(scope="module")
def chain_job(multinode, tmp_path_factory):
    """pipelines/run-tiny-random.yaml submitted as a Ray job to the multi-node cluster, whose
    autoscaler adds the worker nodes the stages ask for."""
    root = tmp_path_factory.mktemp("chain")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", HF_HUB_OFFLINE="1", **multinode.env())
    env.pop("RAY_ADDRESS", None)  # the job goes through the dashboard's address
    out = root / "run"
    submit = [BIN / "ray", "job", "submit", f"--address={multinode.state.dashboard_url}", "--working-dir", ".",
              "--", "python", "jobs/run.py", "--config", "pipelines/run-tiny-random.yaml",
              "--output", str(out), *_overrides(root)]
    for _ in range(30):  # the dashboard answers before its job agent is up; Ray says "try again later"
        job = subprocess.run(submit, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
        if "No available agent to submit job" not in job.stderr + job.stdout:
            break
        time.sleep(2)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    assert "succeeded" in job.stdout + job.stderr
    return root, out, job.stdout


def test_every_stage_ran_and_the_adapter_was_served_and_evaluated(chain_job):
    root, out, console = chain_job
    chain = json.loads((out / "chain.json").read_text())
    assert list(chain["stages"]) == ["generate", "curate", "train", "serve", "evaluate"]
    (adapter,) = chain["stages"]["train"]["handoff"]["adapters"]
    assert adapter == "tiny-random-v1" and (root / "adapters" / adapter / "adapter_config.json").is_file()
    assert chain["stages"]["serve"]["handoff"]["endpoint"]["url"].startswith("http://127.0.0.1:")
    results = json.loads((out / "evaluate" / "results.json").read_text())
    assert set(results) == {"tiny", f"tiny+{adapter}"}  # the base model and the adapter it trained
    table = (out / "evaluate" / "table.md").read_text()
    assert f"tiny+{adapter}" in table and "Δ vs base" in table
    preds = [json.loads(x) for x in (out / "evaluate" / "predictions.jsonl").read_text().splitlines()]
    assert {p["model"] for p in preds} == {"tiny", f"tiny+{adapter}"}
    # crisis handling beside EmoBench, through the same endpoint: 4 messages each, graded
    crisis = [json.loads(x) for x in (out / "evaluate" / "crisis.jsonl").read_text().splitlines()]
    assert sorted((c["model"], c["error"]) for c in crisis) == sorted([("tiny", None), (f"tiny+{adapter}", None)] * 4)
    assert "crisis/safe" in table
    assert (out / "logs" / "ec2er.log").is_file()
    # the console: the stages' summary lines, not the engines' and Ray's logs
    assert f"train     trained {adapter} on " in console, console[-3000:]
    assert console.count("INFO") < 20, console[-3000:]


def test_a_rerun_reuses_every_stage_and_a_failing_stage_names_itself(chain_job, capsys):
    root, out, _ = chain_job
    before = {p: p.stat().st_mtime_ns for p in (out / "evaluate").glob("*.json")}
    args = ["run", "--config", str(REPO / "pipelines/run-tiny-random.yaml"), "--output", str(out), *_overrides(root)]
    assert main(args) == 0  # every stage unchanged: nothing runs, no server starts
    assert {p: p.stat().st_mtime_ns for p in (out / "evaluate").glob("*.json")} == before
    shown = capsys.readouterr()
    for stage in ("generate", "curate", "train", "evaluate"):  # each says it was reused; no server started
        assert any(line.startswith(f"{stage:<9} ") and line.endswith("(reused)") for line in shown.out.splitlines()), shown.out
    assert not any(line.startswith("serve ") for line in shown.out.splitlines()), shown.out
    assert "nothing to serve" not in shown.err  # said in the log, not on the console
    assert "nothing to serve" in (out / "logs" / "ec2er.log").read_text()
    registry_before = sorted(p.name for p in (root / "adapters").iterdir())
    curated = (out / "curate" / "train.jsonl").read_text()
    assert main([*args, "--set", "curate.set={dedup.treshold: 0.9}"]) == 2
    err = capsys.readouterr().err
    assert "stage curate failed" in err and "dedup.treshold: unknown key" in err
    assert sorted(p.name for p in (root / "adapters").iterdir()) == registry_before
    assert (out / "curate" / "train.jsonl").read_text() == curated and (out / "generate" / "results").is_dir()
