"""The driver side of a training run: a Ray Train ``TorchTrainer`` over ``loop.train_loop_per_worker``.

Fault tolerance is Ray Train's own (the V2 API, Ray 2.60's default):
- a worker that dies is replaced, up to ``FailureConfig(max_failures)`` times, and the new
  workers resume from the last reported checkpoint (``ray.train.get_checkpoint()``);
- a driver that dies and is started again with the same ``RunConfig(storage_path, name)`` finds
  the run's checkpoint snapshot in storage and hands its latest checkpoint to the workers the
  same way. (V2 has no ``TorchTrainer.restore``/``can_restore``: both raise a deprecation error
  and point to exactly this.) The run name therefore defaults to a hash of the recipe and the
  data, so re-running the same command continues the same run.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ec2er.errors import Ec2erError
from ec2er.schemas.facts import TrainingFiles
from ec2er.training.config import TrainConfig


@dataclass
class FitResult:
    checkpoint: Path  # the final HF checkpoint folder (adapter, trainer_state.json, ...)
    run_name: str
    storage: str
    seconds: float


def storage_path(config: TrainConfig, output: Path) -> str:
    """Absolute path or URI where Ray Train keeps the run (Ray requires absolute paths)."""
    given = config.ray.storage_path
    if given is None:
        return str((output / TrainingFiles.RAY).resolve())
    return given if "://" in given else str(Path(given).resolve())


def fit(config: TrainConfig, loop_config: dict[str, Any], run_name: str, output: Path,
        keep: Path) -> FitResult:
    """Run (or continue) the Ray Train run ``run_name``; copy its final HF checkpoint's files
    into ``keep`` (the run's storage may be remote) and return where they are."""
    import ray.train
    from ray.util.queue import Queue

    from ec2er.ray_utils import init_ray, on_this_node, require_shared_storage
    from ec2er.training.loop import HF_CHECKPOINT

    init_ray(config.ray.address)
    storage = storage_path(config, output)
    # workers write checkpoints to the storage and resume from it on any node; serving and
    # evaluation replicas load the published adapter from the registry on theirs
    require_shared_storage({"ray.storage_path": storage, "the adapter registry": config.registry}, config.ray,
                           ["GPU"] if config.ray.use_gpu else [])
    progress = Queue(actor_options={"num_cpus": 0, **on_this_node()})  # a worker node may be lost
    trainer = torch_trainer(config, {**loop_config, "progress": progress}, run_name, storage)
    start = time.perf_counter()
    try:
        with printing(progress):
            result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        raise Ec2erError(f"training run {run_name} failed ({_root_cause(e)}); worker logs in "
                         f"{loop_config['log_dir']}, checkpoints in {storage}/{run_name}") from None
    finally:
        progress.shutdown()
    seconds = time.perf_counter() - start
    if result.checkpoint is None:
        raise Ec2erError(f"training run {run_name} ended without a checkpoint (storage {storage})")
    with result.checkpoint.as_directory() as folder:
        _copy_tree(Path(folder) / HF_CHECKPOINT, keep)
    return FitResult(keep, run_name, storage, seconds)


def torch_trainer(config: TrainConfig, loop_config: dict[str, Any], run_name: str, storage: str) -> Any:
    import ray.train
    from ray.train.torch import TorchConfig

    TorchTrainer = lean_trainer_class()  # noqa: N806

    from ec2er.ray_utils import worker_resources
    from ec2er.training.loop import FAULT_ENV, parse_fault, train_loop_per_worker

    r = config.ray
    resources = {"CPU": r.cpus_per_worker, **({"GPU": 1} if r.use_gpu else {}), **worker_resources(r)}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**loop_config, "fault": parse_fault(os.environ.get(FAULT_ENV))},
        scaling_config=ray.train.ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            storage_path=storage, name=run_name,
            failure_config=ray.train.FailureConfig(max_failures=r.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=r.num_to_keep),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            # Ray Train's print patch copies every print to a logger as well: one copy in the
            # worker's log file is enough
            worker_runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}),
        torch_config=TorchConfig(backend="nccl" if r.use_gpu else "gloo"),
    )


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"


def _copy_tree(source: Path, dest: Path) -> None:
    """The checkpoint's small files (adapter, tokenizer, trainer state): DeepSpeed's optimizer
    shards (global_step*/) stay in Ray's storage."""
    import shutil

    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("global_step*", "optimizer.pt", "*.pth",
                                                                 "scheduler.pt"))


@contextlib.contextmanager
def printing(queue: Any) -> Iterator[None]:
    """Print the workers' progress lines on the console while the block runs."""
    stop = threading.Event()

    def pump() -> None:
        from ray.util.queue import Empty

        while True:
            try:
                print(f"train: {queue.get(timeout=0.5)}", flush=True)
            except Empty:
                if stop.is_set():
                    return
            except Exception:  # noqa: BLE001 - the queue actor is gone (Ray shut down)
                return

    thread = threading.Thread(target=pump, name="train-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def lean_trainer_class() -> type:
    """Ray Train's ``TorchTrainer`` without two of its default callbacks where they have nothing
    to do; the hook is a private method of Ray 2.60's trainer (pinned in pyproject.toml), and
    without it nothing changes.

    - The datasets callback, when the run is given no Ray Dataset (ec2er's workers read their
      examples themselves): it starts a ``DatasetManager`` actor for every run all the same, a
      process that imports Ray Data and Ray Train for nothing (about 5 s of a core each run).
    - The placement-group cleaner, when this driver runs Ray itself (no RAY_ADDRESS:
      ``init_ray``'s local instance). The cleaner is a detached actor that removes the run's
      placement group once the state API says the train controller is gone. It finds the state
      API through /tmp/ray/ray_current_cluster, which names the LAST Ray instance started on the
      machine: on a machine running a second local Ray (another user's, a test's), it asks that
      instance, which has never heard of our controller, takes "not found" for "dead", and
      removes the placement group of our live run. Seen here: 11 s after another local Ray
      started, Ray logged "Destroying worker since its placement group was removed" for both
      workers of a healthy run, which then restarted from its last checkpoint (step 0: it had none
      yet). A local instance's placement groups end with the driver anyway, so the cleaner has
      nothing to do there. On a cluster joined by address it stays.
    """
    from ray.train.torch import TorchTrainer

    if not hasattr(TorchTrainer, "_create_default_callbacks"):
        return TorchTrainer
    unneeded = {"PlacementGroupCleanerCallback"} if not os.environ.get("RAY_ADDRESS") else set()

    class LeanTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self) -> list[Any]:
            skip = unneeded | (set() if self.datasets else {"DatasetsCallback"})
            return [cb for cb in super()._create_default_callbacks() if type(cb).__name__ not in skip]

    return LeanTorchTrainer
