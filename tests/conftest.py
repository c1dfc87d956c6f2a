"""Shared fixtures. Engines and Ray are session-scoped: each start costs 20-50 s on 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EMOBENCH = Path(os.environ.get("EC2ER_EMOBENCH_DIR", REPO.parent / "shared" / "emobench"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # the suite's many Rays report nothing anywhere
# Every vLLM-CPU engine the suite starts (in this process, its subprocesses and their Ray workers,
# which inherit the environment) runs its model worker inside its engine process: about 18 s of a
# core less per engine start, for batched decoding ~18% slower, a good trade for the suite's dozen
# short-lived engines (~220 s of its time on 2 cores), not for long runs
# (VLLMEngineConfig.cpu_single_process).
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
# Ray Train's preemption watcher (an actor per training run, polling Ray for nodes being drained
# so as to log spot preemptions) is a process start per run with nothing to watch: no test drains
# a node (nodes are killed, which Ray Train's failure handling covers).
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
# Each Ray node's log monitor globs its log folder every 0.1 s while it holds under 1,000 files,
# and every 0.5 s past that; the suite keeps several nodes up for most of its length, so the
# later rule for all of them (new worker output reaches a driver at most 0.5 s later).
os.environ.setdefault("RAY_LOG_MONITOR_MANY_FILES_THRESHOLD", "0")

# Where the suite's time goes: with EC2ER_TEST_TIMELINE=FILE, each test's worker, start and end
# (set-up, call and tear-down together) are appended to FILE as JSON lines, one per test.
TIMELINE = os.environ.get("EC2ER_TEST_TIMELINE")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    import time

    start = time.time()
    yield
    if TIMELINE:
        import json

        line = {"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "test": item.nodeid,
                "start": round(start, 2), "end": round(time.time(), 2)}
        with open(TIMELINE, "a") as timeline:
            timeline.write(json.dumps(line) + "\n")


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
    from ec2er.llm import VLLMEngineConfig
    from ec2er.llm import build_engine

    engine = build_engine(VLLMEngineConfig(model=tiny_model, max_model_len=1024, kv_cache_gib=1,
                                       adapters=tiny_adapters, max_lora_rank=8, max_loras=2))
    yield engine
    engine.close()


# `make test` runs the suite on 2 pytest-xdist workers: much of an end-to-end test's time is spent
# waiting (Ray's health checks, Serve's graceful stops, nodes joining), which the other worker
# fills. A group is a unit one worker runs whole, so that a module's fixtures (a server, a training
# run) and the session's (the multi-node cluster, the tiny engine) start once: the modules on the
# multi-node cluster form one group, those sharing the tiny engine another, two long tests are
# groups of their own, and every other module is a group. (xdist's own `--dist loadgroup` marks
# do not group on pytest 9.2, whose node ids no longer come from the field xdist rewrites; the
# scheduler below groups by node id instead.)
GROUPS = {
    "tests/test_chain.py": "multinode", "tests/test_multinode_generation.py": "multinode",
    "tests/test_multinode_training.py": "multinode", "tests/test_multinode_serving.py": "multinode",
    "tests/test_multinode_evaluation.py": "multinode",
    "tests/test_engine_vllm.py": "tiny-engine", "tests/test_curation_confidence.py": "tiny-engine",
    "tests/test_evaluation.py": "tiny-engine",
    "tests/test_evaluation_crisis.py::test_the_tiny_engine_answers_every_message_for_base_and_adapters": "tiny-engine",
    "tests/test_training_slow.py::test_a_killed_driver_started_again_continues_its_run": "training-driver",
}
# Groups that take minutes (measured on 2 cores), longest first: the workers take groups in
# collection order, so the long ones start early and the short ones fill the gaps at the end.
LONG_GROUPS = ["multinode", "tests/test_smollm2.py", "tests/test_training_slow.py", "tests/test_generation_slow.py",
               "training-driver", "tests/test_architectures.py", "tests/test_generation_job.py",
               "tests/test_serving.py", "tests/test_serving_bases.py", "tests/test_gemma3.py",
               "tests/test_serving_cli.py", "tiny-engine"]


def test_group(nodeid: str) -> str:
    test = nodeid.split("[")[0]
    module = test.split("::")[0]
    return GROUPS.get(test) or GROUPS.get(module) or module


test_group.__test__ = False  # a helper, not a test


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent without it
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return test_group(nodeid)

        def _reschedule(self, node) -> None:
            # A worker runs a test once it knows the next one, so it needs a new group when only
            # the test it holds back is left (pending 1). xdist's own rule (pending 2) claims the
            # group one test earlier: behind a long test the group waits while the other worker
            # may have nothing left to do.
            if node.shutting_down:
                return
            if not self.workqueue:
                node.shutdown()
            elif self._pending_of(self.assigned_work[node]) <= 1:
                self._assign_work_unit(node)

    config.option.loadscopereorder = False  # the collection order below: longest groups first
    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "multinode" in getattr(item, "fixturenames", ()) and test_group(item.nodeid) != "multinode":
            raise pytest.UsageError(f"{item.nodeid} uses the multi-node cluster: add its module to GROUPS")
    rank = {group: i for i, group in enumerate(LONG_GROUPS)}
    items.sort(key=lambda item: rank.get(test_group(item.nodeid), len(rank)))  # stable: file order within


_MULTINODE: dict = {}  # "stop": how to stop the multi-node cluster, until something has


def _stop_multinode() -> None:
    stop = _MULTINODE.pop("stop", None)
    if stop is not None:
        stop()


def pytest_runtest_teardown(item, nextitem):
    """The multi-node cluster stops after the last test that uses it, not at the end of the session:
    its nodes would keep a share of the 2 cores busy while the other tests run."""
    uses = "multinode" in getattr(item, "fixturenames", ())
    if uses and (nextitem is None or "multinode" not in getattr(nextitem, "fixturenames", ())):
        _stop_multinode()


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

    def stop() -> None:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)  # Ray's session folders (the tests keep their own logs)

    _MULTINODE["stop"] = stop
    yield cluster
    _stop_multinode()  # unless the last test using it did


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance shared by every test that needs one."""
    import ray

    from ec2er.ray_utils import init_ray, started_local_ray

    if ray.is_initialized() and not started_local_ray():  # a Ray some library started by itself
        ray.shutdown()
    init_ray(num_cpus=4)
    yield ray
    ray.shutdown()
