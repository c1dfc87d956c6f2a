"""The pieces of ec2er's cluster behaviour that need no cluster: what a recipe may declare
(worker resources, shared mounts), where heavy actors ask for them, which local paths are refused
on several nodes, the accounting of lost actors and redone batches, how a failed dialogue reaches
the console, and the fake autoscaler's config. The multi-node runs are in test_multinode_*.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ec2er.config import RayJobConfig
from ec2er.llm import OpenAIEngineConfig, VLLMEngineConfig
from ec2er.errors import ConfigError


@pytest.fixture(autouse=True)
def _before_ray_starts(monkeypatch):
    """These checks are answered before init_ray (from the recipe and RAY_ADDRESS), whatever Ray
    an earlier test left in this process."""
    monkeypatch.setattr("ray.is_initialized", lambda: False)


def test_worker_resources_and_shared_mounts_are_checked_in_the_recipe():
    ok = RayJobConfig(worker_resources={"ec2er_worker": 0.5}, shared_storage=["/mnt/shared"])
    assert ok.worker_resources == {"ec2er_worker": 0.5}
    for bad, key in (({"worker_resources": {"GPU": 1}}, "Ray's own resource"),
                     ({"worker_resources": {"ec2er_worker": 0}}, "must be positive"),
                     ({"shared_storage": ["relative/dir"]}, "absolute local path"),
                     ({"shared_storage": ["s3://bucket/x"]}, "absolute local path")):
        with pytest.raises(ValueError, match=key):
            RayJobConfig(**bad)


def test_heavy_actors_ask_for_the_worker_resources_only_on_a_joined_cluster(monkeypatch):
    from ec2er import ray_utils
    from ec2er.serving.config import ScalingConfig

    config = RayJobConfig(worker_resources={"ec2er_worker": 1})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_utils.worker_resources(config) == {}  # a local Ray of this process has none
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # `ray job submit` sets it
    asks = ray_utils.worker_resources(config)
    assert asks == {"ec2er_worker": 1}
    assert ray_utils.engine_actor_resources(OpenAIEngineConfig(base_url="http://x/v1"), 0.5, asks) == \
        {"num_cpus": 0.5, "resources": {"ec2er_worker": 1}}
    assert ray_utils.engine_actor_resources(VLLMEngineConfig(), 0.5, asks)["resources"] == {"ec2er_worker": 1}
    options = ScalingConfig(num_replicas=2).deployment_options(0, asks)
    assert options["ray_actor_options"]["resources"] == {"ec2er_worker": 1} and options["num_replicas"] == 2
    assert "resources" not in ScalingConfig().deployment_options(0)["ray_actor_options"]


def test_an_actor_calling_a_loopback_endpoint_stays_on_the_drivers_node(monkeypatch):
    """127.0.0.1 is each node's own: the chain's endpoint is reached from the driver's node only."""
    from ec2er import ray_utils

    monkeypatch.setattr(ray_utils, "on_this_node", lambda: {"scheduling_strategy": "the driver's node"})
    asks = {"ec2er_worker": 1}
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:8000/v1"):
        assert ray_utils.engine_actor_resources(OpenAIEngineConfig(base_url=url), 0.5, asks) == \
            {"num_cpus": 0.5, "scheduling_strategy": "the driver's node"}
    assert ray_utils.engine_actor_resources(OpenAIEngineConfig(base_url="http://10.0.0.7:8000/v1"), 0.5, asks) == \
        {"num_cpus": 0.5, "resources": asks}


def test_training_workers_ask_for_them_and_the_run_name_ignores_where_it_runs(monkeypatch):
    from ec2er.training.config import TrainConfig
    from ec2er.training.trainer import torch_trainer

    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    base = {"model": "tiny-random-llama", "name": "t"}
    plain = TrainConfig.model_validate(base)
    placed = TrainConfig.model_validate(base | {"ray": {"worker_resources": {"ec2er_worker": 1},
                                                        "shared_storage": ["/mnt/s"], "address": "h:1"}})
    assert plain.default_run_name("d") == placed.default_run_name("d")  # same run, resumable anywhere
    trainer = torch_trainer(placed, {}, "run", "/tmp/storage")
    assert trainer.scaling_config.resources_per_worker == {"CPU": 1.0, "ec2er_worker": 1}


def test_a_local_path_is_refused_only_when_work_spans_nodes(monkeypatch, tmp_path):
    from ec2er import ray_utils

    config = RayJobConfig(shared_storage=[str(tmp_path / "shared")])
    monkeypatch.setattr(ray_utils, "spans_nodes", lambda config, asks=(): None)
    ray_utils.require_shared_storage({"the output": tmp_path / "out"}, config)  # one node: anything goes
    monkeypatch.setattr(ray_utils, "spans_nodes", lambda config, asks=(): "this cluster has 3 nodes")
    ray_utils.require_shared_storage({"the output": "s3://bucket/run", "the registry": None,
                                      "the storage": tmp_path / "shared" / "ray"}, config)
    with pytest.raises(ConfigError) as e:
        ray_utils.require_shared_storage({"the output": tmp_path / "out"}, config)
    line = str(e.value)
    assert line.startswith(f"the output {tmp_path / 'out'} is a local path, but this cluster has 3 nodes")
    assert "s3://" in line and "ray.shared_storage" in line and "\n" not in line


def test_lost_actors_and_redone_batches_are_counted_once():
    from ec2er.generation.job import Progress

    p = Progress()
    p.actor_started("a1/n1/10", False)
    p.actor_started("a2/n2/20", False)
    assert p.batch_started("k1", "a1/n1/10", 2) == 0 and p.batch_started("k2", "a1/n1/10", 2) == 0
    p.batch_finished("k1", "a1/n1/10", "n1", {"dialogues": 2, "items": 8})
    # n1 is lost: Ray restarts a1 on n3 and retries k2 (in flight) and k1 (its output was on n1)
    p.actor_started("a1/n3/30", True)
    assert p.batch_started("k2", "a1/n3/30", 2) == 1  # lost in flight: a try of each dialogue
    assert p.batch_started("k1", "a1/n3/30", 2) == 0  # finished before: no try lost
    p.batch_finished("k1", "a1/n3/30", "n3", {"dialogues": 2, "items": 8})
    p.batch_finished("k2", "a1/n3/30", "n3", {"dialogues": 2, "items": 8})
    counts = p.snapshot()
    assert counts["actors_started"] == 3 and counts["actors_restarted"] == 1 and counts["actors_lost"] == 1
    assert counts["batches_redone"] == 2 and counts["redo"] == 4 and counts["dialogues"] == 6
    assert p.dialogues_per_node() == {"n1": 2, "n3": 4}


def test_a_failed_dialogue_reaches_the_console_as_its_own_line():
    from ec2er.generation.job import DialogueFailed, _failed_dialogue, transient_cause

    wrapped = RuntimeError("ray::MapWorker(...).submit()\n  File x, line 1\n"
                           "ec2er.generation.job.DialogueFailed: dialogue d-7 failed all 3 tries; the last: http: 503\n"
                           "\nThe above exception was the direct cause of the following exception:\nUserCodeException")
    assert str(_failed_dialogue(wrapped)) == "dialogue d-7 failed all 3 tries; the last: http: 503"
    assert isinstance(_failed_dialogue(DialogueFailed("x")), DialogueFailed)
    assert _failed_dialogue(RuntimeError("something else")) is None
    meta = {"error": None, "supervisor_errors": [],
            "item_failures": [{"qid": "q1", "error": "invalid: repeated option"}, {"qid": "q2", "error": "http: 503"}]}
    assert transient_cause(meta) == "item q2: http: 503"
    assert transient_cause(meta | {"error": "turn: timeout: slow"}) == "turn: timeout: slow"


def test_the_fake_autoscaler_config_has_every_key_the_autoscaler_reads(tmp_path):
    from ec2er.cluster import WORKER_RESOURCE, ClusterState, LocalCluster

    cluster = LocalCluster(ClusterState(root=tmp_path, gcs_address="10.0.0.1:6379", dashboard_url="http://x",
                                        head_cpus=1, worker_cpus=2, worker_resources={WORKER_RESOURCE: 1},
                                        object_store_mb=256, autoscale=3, auth=False))
    config = cluster._autoscaler_config("10.0.0.1", 6379, idle_minutes=5)
    worker = config["available_node_types"]["ec2er.worker"]
    assert worker["resources"]["ec2er_worker"] == 1 and worker["min_workers"] == 0 and worker["max_workers"] == 3
    assert config["available_node_types"][config["head_node_type"]]["max_workers"] == 0
    assert "ec2er_worker" not in config["available_node_types"][config["head_node_type"]]["resources"]
    provider = config["provider"]
    assert provider["gcs_address"] == "10.0.0.1:6379" and provider["root"] == str(tmp_path)
    module, name = provider["module"].rsplit(".", 1)  # Ray's fake provider, each node with a folder of its own
    from importlib import import_module

    from ray.autoscaler._private.fake_multi_node.node_provider import (
        FakeMultiNodeProvider,
    )

    assert issubclass(getattr(import_module(module), name), FakeMultiNodeProvider)
    for key in ("auth", "docker", "file_mounts", "setup_commands", "worker_start_ray_commands"):
        assert key in config
    assert cluster.env() == {"RAY_ADDRESS": "10.0.0.1:6379", "RAY_AUTH_MODE": "disabled"}


def test_cluster_commands_without_a_cluster_say_so(tmp_path, capsys):
    from ec2er.cli import main

    assert main(["cluster", "status", "--dir", str(tmp_path)]) == 2
    assert f"{tmp_path}: no cluster started there" in capsys.readouterr().err
    assert main(["cluster", "up", "--worker-resource", "gpu_ish", "--dir", str(tmp_path / "c")]) == 2
    assert "--worker-resource gpu_ish: expected NAME=AMOUNT" in capsys.readouterr().err
    assert not Path(tmp_path / "c" / "cluster.json").exists()
