"""Training on the multi-node cluster (``ec2er train`` with the cluster's RAY_ADDRESS): two Ray
Train workers on two worker nodes (each asks for a whole ``ec2er_worker``); the node of one of
them is lost without drain once a checkpoint is committed in the shared storage. Ray Train restarts
the worker group on the nodes left (a spare stands in for the node the autoscaler would add),
resumes from the last checkpoint, finishes, and exactly one adapter version is published;
``training.json`` records the restart and the step resumed from. A node-local storage path is
refused before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from multinode import (
    REPO,
    actors,
    ensure_worker_nodes,
    run,
    start,
    stop,
    tail,
    wait_until,
)

from ec2er.adapters import AdapterRegistry

pytestmark = pytest.mark.slow


def train_args(root: Path, out: Path, shared: bool = True) -> list[str]:
    args = ["train", "--config", str(REPO / "pipelines/train-tiny-random.yaml"),
            "--data", str(REPO / "tests/fixtures/curated"), "--output", str(out),
            "--set", f"registry={root / 'adapters'}", "--set", "ray.worker_resources={ec2er_worker: 1}",
            "--set", "optim.max_steps=40", "--set", "ray.checkpoint_every_steps=4", "--set", "logging_steps=4"]
    return args + (["--set", f"ray.shared_storage=[{root}]"] if shared else [])


def test_a_node_lost_mid_training_resumes_from_the_shared_checkpoint(multinode, tmp_path):
    ensure_worker_nodes(multinode, 3)  # two for the workers, one that stands in for the lost one
    out, log = tmp_path / "train", tmp_path / "train.log"
    proc = start(multinode, train_args(tmp_path, out), log)
    try:
        wait_until(lambda: _committed(out), 600, "a checkpoint Ray Train has committed", proc, log)
        workers = actors(multinode, "RayTrainWorker")
        nodes = {w.node_id for w in workers}
        assert len(workers) == 2 and len(nodes) == 2, [(w.class_name, w.node_id) for w in workers]
        multinode.kill_node(min(nodes))
        assert proc.wait(timeout=600) == 0, tail(log)
    finally:
        stop(proc)
    record = json.loads((out / "training.json").read_text())
    assert record["run"]["restarts"] >= 1 and record["run"]["resumed_from_steps"][0] >= 4, record["run"]
    assert record["steps"] == 40
    assert AdapterRegistry(tmp_path / "adapters").names() == ["tiny-random-v1"]  # published once
    assert f"resumed from the checkpoint of step {record['run']['resumed_from_steps'][0]}" in log.read_text()


def _committed(out: Path) -> int:
    """Checkpoints Ray Train's controller has registered (its snapshot in the run's storage): a
    checkpoint folder alone may still be waiting for the controller's next look at the workers."""
    snapshots = list(out.glob("ray/*/checkpoint_manager_snapshot.json"))
    try:
        return len(json.loads(snapshots[0].read_text())["checkpoint_results"]) if snapshots else 0
    except (ValueError, KeyError):  # being written
        return 0


def test_a_node_local_storage_is_refused_before_training(multinode, tmp_path):
    ensure_worker_nodes(multinode, 1)
    refused = run(multinode, train_args(tmp_path, tmp_path / "train", shared=False), timeout_s=300)
    assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"ec2er: error: ray.storage_path {tmp_path / 'train' / 'ray'} is a local path"), line
    assert not (tmp_path / "adapters").exists() and not list((tmp_path / "train").glob("ray/*/checkpoint_*"))
