"""Generation on the multi-node cluster, run as a user runs it (``ec2er generate`` with the
cluster's RAY_ADDRESS), every actor's engine the scripted OpenAI-compatible server (so Ray, the
autoscaler, the writers and the checkpoints run for real without vLLM):

- from zero worker nodes, the autoscaler adds nodes as the actor pool asks for ``ec2er_worker``;
  rows come from two nodes; one of them is lost without drain mid-run (every process SIGKILLed):
  the run finishes by itself, every planned dialogue is written exactly once with the items of an
  uninterrupted run, and the summary and stats.json count the lost actor and the redone dialogues;
- the driver killed mid-run: the same command again finishes the run (the existing resume);
- a node-local output folder on a multi-node cluster is refused before any work."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
import yaml
from fakes import FakeEngine, FakeOpenAIServer
from multinode import (
    WORKER,
    actors,
    clear_worker_nodes,
    ensure_worker_nodes,
    node_ip,
    rows_per_dialogue,
    rows_per_node,
    run,
    start,
    stop,
    tail,
    wait_until,
)

pytestmark = pytest.mark.slow


def recipe(root: Path, server: FakeOpenAIServer, n: int, shared: bool = True) -> Path:
    config = {"pipeline": "mads", "num_dialogues": n, "seed": 5,
              "items": {"eu_min": 2, "eu_max": 2, "ea_min": 2, "ea_max": 2},
              "engine": {"kind": "openai", "model": server.model, "base_url": server.base_url, "max_model_len": 4096},
              "ray": {"actors": {"min": 1, "max": 2}, "batch_size": 2, "max_concurrent_batches": 2,
                      "worker_resources": WORKER, "shared_storage": [str(root)] if shared else []}}
    path = root / f"mads-{n}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def uninterrupted_qids(path: Path) -> list[str]:
    """The items of the same dialogues generated in this process with the same replies (the fake
    engine answers exactly as the fake server does), with nothing lost."""
    from ec2er.generation.config import GenerateConfig
    from ec2er.generation.dialogue import DialogueRunner
    from ec2er.generation.plan import sampler_specs

    config = GenerateConfig.model_validate(yaml.safe_load(path.read_text()))
    runner = DialogueRunner(FakeEngine(), config)

    async def all_of_them():
        return await asyncio.gather(*(runner.run(s) for s in sampler_specs(config, list(range(config.num_dialogues)))))

    return sorted(item["qid"] for r in asyncio.run(all_of_them()) for item in [*r.eu, *r.ea])


def _at_least_two(counts):
    return counts if len(counts) >= 2 else None


def _two_nodes_before_the_end(server: FakeOpenAIServer, counts):
    """Rows from two nodes, or None; while one node has written a quarter of the 40 dialogues
    alone, replies slow down so that the run cannot finish before the second node joins: on a
    loaded machine (a fresh clone's first suite run) a node took longer to start than the whole
    run took at 0.3 s a reply (40 dialogues in 43 s, all from one node)."""
    if len(counts) < 2 and sum(counts.values()) >= 10:
        server.delay_s = 1.5
    return _at_least_two(counts)


def written_qids(out: Path) -> list[str]:
    from ec2er.generation.outputs import iter_items

    return sorted(json.loads(line)["qid"] for _, _, line in iter_items(str(out)))


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(host=node_ip()) as s:
        yield s


def test_from_zero_nodes_a_node_lost_mid_run_costs_nothing(multinode, server, tmp_path):
    clear_worker_nodes(multinode)
    path, out, log = recipe(tmp_path, server, n=40), tmp_path / "run", tmp_path / "generate.log"
    server.delay_s = 0.3  # slow replies until the loss, so the run is surely in the middle of its work
    proc = start(multinode, ["generate", "--config", str(path), "--output", str(out), "--no-progress"], log)
    try:
        # the autoscaler adds a node per actor (each asks for a whole ec2er_worker)
        nodes = wait_until(lambda: _two_nodes_before_the_end(server, rows_per_node(out)), 300,
                           "rows from two worker nodes", proc, log)
        busy = {a.node_id for a in actors(multinode, "GenerationActor")} & set(nodes)
        assert busy and sum(nodes.values()) < 40, (nodes, busy)
        victim = min(busy)
        multinode.kill_node(victim)
        server.delay_s = 0.02
        assert proc.wait(timeout=600) == 0, tail(log)
    finally:
        stop(proc)
    rows = rows_per_dialogue(out)
    assert len(rows) == 40 and set(rows.values()) == {1}, rows  # every dialogue, exactly once
    assert written_qids(out) == uninterrupted_qids(path)
    assert victim in rows_per_node(out) and len(rows_per_node(out)) >= 2
    session = json.loads((out / "stats.json").read_text())["session"]
    assert session["actors_lost"] >= 1 and session["actors_restarted"] >= 1, session
    assert session["batches_redone"] >= 1 and session["redo"] >= 2, session
    console = log.read_text()
    assert f"Ray restarted {session['actors_restarted']} actors" in console, tail(log)


def test_a_killed_driver_run_again_finishes_the_run(multinode, server, tmp_path):
    """The driver losing the cluster (killed here; a head restart looks the same to it): the
    same command again skips what was written and finishes."""
    ensure_worker_nodes(multinode, 1)
    path, out, log = recipe(tmp_path, server, n=12), tmp_path / "run", tmp_path / "generate.log"
    args = ["generate", "--config", str(path), "--output", str(out), "--no-progress"]
    server.delay_s = 0.3
    proc = start(multinode, args, log)
    try:
        wait_until(lambda: len(rows_per_dialogue(out)) >= 2, 300, "two dialogues written", proc, log)
    finally:
        stop(proc, signal.SIGKILL)
    written = len(rows_per_dialogue(out))
    assert 2 <= written < 12
    server.delay_s = 0.0
    again = run(multinode, args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    rows = rows_per_dialogue(out)
    assert len(rows) == 12 and set(rows.values()) == {1}
    assert written_qids(out) == uninterrupted_qids(path)


def test_a_local_output_is_refused_on_a_multinode_cluster(multinode, server, tmp_path):
    """Not declared shared: one line naming the folder and the fix, exit 2, nothing planned."""
    ensure_worker_nodes(multinode, 1)
    out = tmp_path / "run"
    refused = run(multinode, ["generate", "--config", str(recipe(tmp_path, server, n=4, shared=False)),
                              "--output", str(out), "--no-progress"], timeout_s=300)
    assert refused.returncode == 2, refused.stderr[-3000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"ec2er: error: the generation output {out} is a local path"), line
    assert "s3://" in line and "ray.shared_storage" in line, line
    assert not (out / "plan").exists()
