"""Shared fixtures. Engines and Ray are session-scoped: each start costs 20-50 s on 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EMOBENCH = Path(os.environ.get("EC2ER_EMOBENCH_DIR", REPO.parent / "shared" / "emobench"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def emobench_dir() -> Path:
    """The real EmoBench files, when the machine has them (never copied into the repo)."""
    if not (EMOBENCH / "EU.jsonl").is_file() or not (EMOBENCH / "EA.jsonl").is_file():
        pytest.skip(f"EmoBench not present at {EMOBENCH}")
    return EMOBENCH


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from ec2er.models import prepare_model

    return str(prepare_model("tiny-random-llama"))


@pytest.fixture(scope="session")
def smollm2_model() -> str:
    from ec2er.models import prepare_model

    return str(prepare_model("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def tiny_adapters(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two visibly different random LoRA adapters of the tiny model."""
    from ec2er.models.random_lora import init_lora_adapter

    root = tmp_path_factory.mktemp("adapters")
    return {name: str(init_lora_adapter(tiny_model, root / name, rank=8, random_b=True, seed=seed))
            for name, seed in (("lora_a", 1), ("lora_b", 2))}


@pytest.fixture(scope="session")
def tiny_engine(tiny_model: str, tiny_adapters: dict[str, str]):
    """vLLM on the tiny random Llama with two LoRA adapters loaded."""
    from ec2er.config import VLLMEngineConfig
    from ec2er.llm import build_engine

    engine = build_engine(VLLMEngineConfig(model=tiny_model, max_model_len=1024, kv_cache_gib=1,
                                       adapters=tiny_adapters, max_lora_rank=8, max_loras=2))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def smollm2_engine(smollm2_model: str):
    """vLLM on the embedded default model (the one real model these tests use)."""
    from ec2er.config import VLLMEngineConfig
    from ec2er.llm import build_engine

    engine = build_engine(VLLMEngineConfig(model="smollm2-135m-instruct", max_model_len=2048, kv_cache_gib=1))
    yield engine
    engine.close()


def pytest_collection_modifyitems(config, items):
    """The tests on the multi-node cluster run last and one after another, so that the cluster
    (several Ray nodes) is up only while they run."""
    items.sort(key=lambda item: "multinode" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def multinode():
    """A multi-node Ray cluster on this host (``ec2er.cluster.LocalCluster``) shared by the cluster
    tests: a head with 1 CPU and no worker resource, and worker nodes of 2 CPUs carrying
    ``ec2er_worker: 1``, which Ray's fake autoscaler adds (up to 3) as work asks for them; tests add
    and kill nodes too. Nodes are declared dead after 5 missed 1-second health checks (Ray's
    default: 15 s). It stops only its own processes."""
    import shutil
    import tempfile

    from ec2er.cluster import LocalCluster

    root = Path(tempfile.mkdtemp(prefix="ec2er-mn-", dir="/tmp"))  # short: Ray's socket paths are limited
    cluster = LocalCluster.up(root, autoscale=3, health_check_period_ms=1000)
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)  # Ray's session folders (the tests keep their own logs)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance shared by every test that needs one."""
    import ray

    from ec2er.ray_utils import init_ray

    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()
