"""Evaluation on the multi-node cluster (``ec2er evaluate`` with the cluster's RAY_ADDRESS): two
models, one actor each, fanned out over two worker nodes (each actor asks for a whole
``ec2er_worker``), both answered by the scripted OpenAI-compatible server, each actor sending its
protocols at once. The node of one actor is lost without drain once the first (model, protocol)
part is written: Ray starts the actor again on another node and sends it the calls it had not
answered; the table finishes with every (model, protocol, item, rotation) scored exactly once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from fakes import FakeOpenAIServer
from multinode import (
    WORKER,
    actors,
    ensure_worker_nodes,
    node_ip,
    start,
    stop,
    tail,
    wait_until,
)
from test_evaluation import write_benchmark

pytestmark = pytest.mark.slow


def recipe(root: Path, server: FakeOpenAIServer) -> Path:
    models = [{"name": name, "engine": {"kind": "openai", "model": served, "base_url": server.base_url,
                                        "max_concurrency": 1}}
              for name, served in zip(("a", "b"), server.models, strict=True)]
    config = {"name": "eval-mn", "data": {"benchmark": str(write_benchmark(root / "bench", n=3, languages=("en",))),
                                          "languages": ["en"], "tasks": ["EU", "EA"]},
              "protocols": ["official", "constrained"], "models": models,
              "bootstrap_samples": 0, "ray": {"worker_resources": WORKER}}
    path = root / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _on_two_nodes(cluster) -> list:
    workers = actors(cluster, "EvalWorker")
    return workers if len({w.node_id for w in workers}) == 2 else []


def test_models_on_two_nodes_a_node_lost_every_prediction_once(multinode, tmp_path):
    ensure_worker_nodes(multinode, 3)  # one per model actor, one for the actor started again
    out, log = tmp_path / "eval", tmp_path / "eval.log"
    # official's part (6 requests of 0.5 s) is written well before constrained's (6 of 2 s): the
    # node goes while constrained's calls are under way
    with FakeOpenAIServer(delay_s=0.5, schema_delay_s=2.0, host=node_ip(), more_models=("fake-b",)) as server:
        proc = start(multinode, ["evaluate", "--config", str(recipe(tmp_path, server)), "--output", str(out)], log)
        try:
            # both actors alive on nodes of their own (on a slow machine the second may start after
            # the first has written a part), and a part written: the run is under way on both
            workers = wait_until(lambda: list(out.glob("parts/*.jsonl")) and _on_two_nodes(multinode), 300,
                                 "both actors on nodes of their own and a first part written", proc, log)
            victim = min(w.node_id for w in workers)
            multinode.kill_node(victim)
            again = wait_until(lambda: [w for w in actors(multinode, "EvalWorker") if w.num_restarts >= 1], 300,
                               "the lost actor started again", proc, log)
            assert victim not in {w.node_id for w in again}
            assert proc.wait(timeout=600) == 0, tail(log)
        finally:
            stop(proc)
    # each actor sent its two protocols at once, one request at a time each (max_concurrency 1): one
    # after another, the actor not lost would have had one request in flight at most
    assert sorted(server.most_in_flight) == ["fake-b", "fake-model"], server.most_in_flight
    assert min(server.most_in_flight.values()) >= 2, server.most_in_flight
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    keys = Counter((p["model"], p["protocol"], p["language"], p["task"], p["qid"], p["rotation"]) for p in preds)
    assert len(keys) == 2 * 2 * 6 and set(keys.values()) == {1}, keys  # 2 models x 2 protocols x 6 items, once
    # none lost to the node (the fake's replies do not fit the constrained schema: those are the model's errors)
    lost = [p["error"] for p in preds if (p["error"] or "").startswith(("engine", "http", "timeout"))]
    assert not lost, lost
    assert set(json.loads((out / "results.json").read_text())) == {"a", "b"}
