"""Benchmark: what survives what on a cluster. A multi-node Ray cluster on this host
(``ec2er.cluster``: a head with 1 CPU, worker nodes of 2 CPUs carrying ``ec2er_worker``, Ray's fake
autoscaler adding up to 3 of them; Ray's own node-death detection, 5 missed 3-second health
checks), and in turn:

1. generation, from zero worker nodes, two engine actors (tiny random model on vLLM, short
   budgets), one per node; once rows were written, one node is lost without drain (SIGKILL of all
   its processes): ``gen_recovery_s`` (the loss to the next row written), ``gen_replaced_s`` (the
   loss to the first row from the node that replaced it), ``gen_lost`` (planned dialogues never
   written), ``gen_duplicated`` (rows written twice);
2. serving, two replicas on two nodes (each holding 2 requests at most, Serve's proxy on the head
   alone), 4 clients sending requests one after another; one replica's node is lost:
   ``serve_failed_during_loss`` (requests that failed), ``serve_inflight_at_loss`` (requests in
   flight at that moment, on both replicas), ``serve_replaced_s`` (the loss to a
   replacement replica running, the load stopped once the endpoint has answered after the loss);
3. training, two Ray Train workers on two nodes; a worker's node is lost once a checkpoint is
   committed: ``train_resumed_from_step`` and ``train_restarts`` from ``training.json``.

The LAST line is one JSON object with those keys. Uses the helpers of the multi-node tests
(tests/multinode.py); about 10 minutes on 2 cores.

    python jobs/bench_cluster.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from multinode import (  # noqa: E402  (tests/, the multi-node tests' helpers)
    Load,
    actors,
    replicas_replaced,
    rows_per_dialogue,
    rows_per_node,
    serve_on_two_nodes,
    start,
    stop,
    tail,
    wait_until,
)

# generation's recipe: pipelines/mads-tiny.yaml on the tiny random model with short budgets (as
# bench_scale), two actors, one per worker node
GENERATION = {"engine.model": "tiny-random-llama", "engine.max_model_len": 1024, "turns": "{min_turns: 4, max_turns: 4}",
              "items": "{eu_min: 0, eu_max: 0, ea_min: 0, ea_max: 0}", "sampling.background.max_tokens": 16,
              "sampling.turn.max_tokens": 16, "ray.actors": 2, "ray.batch_size": 4, "ray.max_concurrent_batches": 2,
              "ray.worker_resources": "{ec2er_worker: 1}"}


def generation(cluster, root: Path, n: int) -> dict:
    out, log = root / "gen", root / "gen.log"
    sets = [a for k, v in (GENERATION | {"num_dialogues": n, "ray.shared_storage": f"[{root}]"}).items()
            for a in ("--set", f"{k}={v}")]
    proc = start(cluster, ["generate", "--config", str(REPO / "pipelines/mads-tiny.yaml"), "--output", str(out),
                           "--no-progress", *sets], log)
    try:
        nodes = wait_until(lambda: _two_or_more(rows_per_node(out)), 900, "rows from two nodes", proc, log)
        victim = min(set(nodes) & {a.node_id for a in actors(cluster, "GenerationActor")})
        written, lost_at = sum(rows_per_node(out).values()), time.monotonic()
        cluster.kill_node(victim)
        next_row = replaced = None
        while proc.poll() is None and (next_row is None or replaced is None):
            now, by_node = time.monotonic(), rows_per_node(out)
            if next_row is None and sum(by_node.values()) > written:
                next_row = now - lost_at
            if replaced is None and set(by_node) - set(nodes):
                replaced = now - lost_at
            time.sleep(0.2)
        assert proc.wait(timeout=1800) == 0, tail(log)
    finally:
        stop(proc)
    rows = rows_per_dialogue(out)
    session = json.loads((out / "stats.json").read_text())["session"]
    return {"gen_recovery_s": _round(next_row), "gen_replaced_s": _round(replaced), "gen_lost": n - len(rows),
            "gen_duplicated": sum(rows.values()) - len(rows), "gen_dialogues": n,
            "gen_redone": session.get("redo"), "gen_actors_lost": session.get("actors_lost"),
            "gen_actors_restarted": session.get("actors_restarted")}


def serving(cluster, root: Path) -> dict:
    from ec2er.io import free_port

    port, log = free_port("127.0.0.1"), root / "serve.log"
    url = f"http://127.0.0.1:{port}/v1"
    (root / "adapters").mkdir(exist_ok=True)
    proc = start(cluster, serve_on_two_nodes(port, root / "adapters", root, root / "serve-logs"), log)
    try:
        wait_until(lambda: "ready in" in log.read_text(), 900, "the endpoint ready", proc, log)
        victim = min(r.node_id for r in actors(cluster, "ServeReplica:ec2er:OpenAIServer"))
        with Load(url, ["tiny-random-llama"]) as load:
            wait_until(lambda: load.ok_since(0) >= 8, 600, "answers before the loss", proc, log)
            with load.lock:
                in_flight, lost_at = load.in_flight, time.monotonic()
            cluster.kill_node(victim)
            wait_until(lambda: load.ok_since(lost_at) >= 8, 600, "answers after the loss", proc, log)
        wait_until(lambda: replicas_replaced(cluster, victim), 900, "a replacement replica", proc, log)
        replaced = time.monotonic() - lost_at
    finally:
        stop(proc)
    return {"serve_failed_during_loss": sum(not ok for _, _, ok, _ in load.done),
            "serve_inflight_at_loss": in_flight, "serve_requests": len(load.done),
            "serve_replaced_s": _round(replaced)}


def training(cluster, root: Path) -> dict:
    out, log = root / "train", root / "train.log"
    proc = start(cluster, ["train", "--config", str(REPO / "pipelines/train-tiny-random.yaml"),
                           "--data", str(REPO / "tests/fixtures/curated"), "--output", str(out),
                           "--set", f"registry={root / 'adapters'}", "--set", "ray.worker_resources={ec2er_worker: 1}",
                           "--set", f"ray.shared_storage=[{root}]", "--set", "optim.max_steps=60",
                           "--set", "ray.checkpoint_every_steps=4", "--set", "logging_steps=4"], log)
    try:
        wait_until(lambda: _committed(out), 900, "a committed checkpoint", proc, log)
        cluster.kill_node(min(w.node_id for w in actors(cluster, "RayTrainWorker")))
        assert proc.wait(timeout=1800) == 0, tail(log)
    finally:
        stop(proc)
    run = json.loads((out / "training.json").read_text())["run"]
    return {"train_resumed_from_step": (run["resumed_from_steps"] or [None])[0], "train_restarts": run["restarts"]}


def _two_or_more(counts: dict) -> dict | None:
    return counts if len(counts) >= 2 else None


def _committed(out: Path) -> int:
    snapshots = list(out.glob("ray/*/checkpoint_manager_snapshot.json"))
    try:
        return len(json.loads(snapshots[0].read_text())["checkpoint_results"]) if snapshots else 0
    except (ValueError, KeyError):
        return 0


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogues", type=int, default=120, help="generation's dialogues (default 120)")
    args = parser.parse_args()
    from ec2er.cluster import LocalCluster

    root = Path(tempfile.mkdtemp(prefix="ec2er-bc-", dir="/tmp"))  # short: Ray's socket paths are limited
    cluster = LocalCluster.up(root / "ray", autoscale=3)
    figures: dict = {}
    try:
        for name, part in (("generation", lambda: generation(cluster, root, args.dialogues)),
                           ("serving", lambda: serving(cluster, root)), ("training", lambda: training(cluster, root))):
            began = time.monotonic()
            figures |= part()
            print(f"{name}: {round(time.monotonic() - began)} s", file=sys.stderr, flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
