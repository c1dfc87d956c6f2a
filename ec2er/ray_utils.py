"""Ray helpers shared by the stages: connecting, the resources a heavy actor asks for, and where
outputs may live when the work spans several nodes."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ec2er.config import EngineBase, RayJobConfig
from ec2er.errors import ConfigError
from ec2er.sigterm import ray_start_held

log = logging.getLogger(__name__)


_LOCAL_RAY = {"started": False}  # whether init_ray started a local Ray in this process

# Ray Data 2.60 reads Parquet footers with a pool of 32 actors for every read_parquet, whatever
# the cluster's size (RAY_DATA_PARQUET_FOOTER_NUM_ACTORS, read when a read is planned, in the
# driver: ray/data/_internal/datasource_v2/formats/parquet/footer_file_indexer.py). Each is a
# Python process start, about 2 s of a core and 200 MB: on our 2-core machine one read of a
# one-file generation plan cost over a minute of CPU, and a resumed generation test took 191 s
# instead of 58 s. One actor per 8 of the cluster's CPUs (1 to 32), unless the user set it.
FOOTER_READERS_ENV = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
_USER_FOOTER_READERS = os.environ.get(FOOTER_READERS_ENV)


def parquet_footer_readers(cluster_cpus: float) -> int:
    """How many footer-reading actors a Parquet read of this cluster gets."""
    return max(1, min(32, int(cluster_cpus) // 8))


def _size_parquet_footer_readers() -> None:
    import ray

    if _USER_FOOTER_READERS is None:
        os.environ[FOOTER_READERS_ENV] = str(parquet_footer_readers(ray.cluster_resources().get("CPU", 1)))


def started_local_ray() -> bool:
    """Whether the Ray this process is connected to is a local one ``init_ray`` started here (it
    ends with this process), rather than a cluster it joined."""
    import ray

    return ray.is_initialized() and _LOCAL_RAY["started"]


def init_ray(address: str | None = None, num_cpus: int | None = None, worker_output: bool | None = None) -> None:
    """Join the cluster ``ray job submit`` started us in (RAY_ADDRESS), or start a local one.
    ``worker_output``: stream the workers' output to this process (default: only with --verbose).

    Locally, Ray is given more logical CPUs than cores: engine actors mostly wait on vLLM's own
    threads, and on 2 cores Ray Serve's ingress replica never schedules otherwise.
    """
    import ray
    import ray.data  # noqa: F401  (its loggers exist now, so they can be adopted)

    from ec2er import console

    if ray.is_initialized():
        return
    console.adopt_library_loggers()  # before init too: Ray logs while it starts
    console.native_output_to_log()  # the driver's core worker logs its errors to stderr
    address = address or os.environ.get("RAY_ADDRESS")
    # the workers' output (engines, Ray Data, Ray Train) reaches the console only with --verbose;
    # it is in Ray's session logs (logs/ray points there) either way
    streamed = console.verbose() if worker_output is None else worker_output
    quiet = {"log_to_driver": streamed, "configure_logging": console.verbose()}
    with ray_start_held():  # a SIGTERM stops this process cleanly (exit 143), not Ray's crash handler
        if address:
            ray.init(address=address, **quiet)
        else:
            # address="local": always a fresh instance, never one that `ray start` left running
            ray.init(address="local", num_cpus=num_cpus or max(4, os.cpu_count() or 1),
                     include_dashboard=False, **quiet)
    _LOCAL_RAY["started"] = not address
    _size_parquet_footer_readers()
    console.adopt_library_loggers()
    console.link_ray_logs()
    log.info("ray: %s", ray.cluster_resources())


def engine_actor_resources(engine: EngineBase, cpus_per_actor: float = 0.5,
                           resources: dict[str, float] | None = None) -> dict[str, Any]:
    """Resources for one actor owning one engine: a GPU per tensor-parallel rank on GPU builds,
    a fractional CPU on CPU builds (Ray Data's read tasks must still get a CPU); an actor that
    calls an endpoint only waits on the network. ``resources``: the recipe's worker resources
    (``worker_resources``), asked on top, except by an actor calling a loopback endpoint, which
    runs on the driver's node (so Ray must be up)."""
    extra = {"resources": dict(resources)} if resources else {}
    if engine.only_reachable_from_this_machine():
        # only this machine reaches 127.0.0.1 (the chain's own endpoint listens there): on a
        # cluster, an actor anywhere else would call its own node
        return {"num_cpus": cpus_per_actor, **on_this_node()}
    gpus = engine.gpus()
    if not gpus:
        return {"num_cpus": cpus_per_actor, **extra}
    return {"num_cpus": 1, "num_gpus": gpus, **extra}


def joins_cluster(address: str | None = None) -> bool:
    """Whether this process's Ray work runs on a cluster it joins (``address``, RAY_ADDRESS), not
    on a local Ray it starts; answered before or after ``init_ray``."""
    import ray

    if ray.is_initialized():
        return not _LOCAL_RAY["started"]
    return bool(address or os.environ.get("RAY_ADDRESS"))


def worker_resources(config: RayJobConfig) -> dict[str, float]:
    """The custom resources a heavy actor asks for: the recipe's ``worker_resources`` on a joined
    cluster; none on a local Ray of this process (one node, which has none of them), so a recipe
    written for a cluster also runs on a laptop."""
    return dict(config.worker_resources) if config.worker_resources and joins_cluster(config.address) else {}


def on_this_node() -> dict[str, Any]:
    """Options that keep an actor on the driver's node: a small bookkeeping one (progress
    counters, a queue), since a worker node may be lost mid-run (a spot instance) and the counters
    with it; or one that calls an endpoint only this node reaches."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                  soft=False)}


def spans_nodes(config: RayJobConfig, asks: Iterable[str] = ()) -> str | None:
    """Why the Ray this process is connected to runs work on other nodes than this one, or None:
    more than one live node, or heavy work asking for a resource this node lacks (GPUs on a CPU
    head, ``worker_resources``), which only nodes to come (the autoscaler's) can give."""
    import ray

    if not ray.is_initialized() or _LOCAL_RAY["started"]:
        return None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1:
        return f"this cluster has {len(nodes)} nodes"
    here = ray.get_runtime_context().get_node_id()
    mine = next((n.get("Resources", {}) for n in nodes if n.get("NodeID") == here), {})
    lacking = sorted(k for k in {*worker_resources(config), *asks} if not mine.get(k))
    return f"the work runs on other nodes than this one (it has no {', '.join(lacking)})" if lacking else None


def require_shared_storage(paths: dict[str, str | Path | None], config: RayJobConfig,
                           asks: Iterable[str] = ()) -> None:
    """Refuse, before any work, a local path that nodes other than this one would write to or read
    from on a cluster whose work spans nodes: each would use its own disk, and the results would be
    scattered (or missing). Object storage URIs and paths under ``ray.shared_storage`` pass."""
    why = spans_nodes(config, asks)
    if why is None:
        return
    mounts = [Path(m).resolve() for m in config.shared_storage]
    for what, path in paths.items():
        if path is None or "://" in str(path):
            continue
        where = Path(path).resolve()
        if any(where.is_relative_to(m) for m in mounts):
            continue
        raise ConfigError(f"{what} {where} is a local path, but {why}: each node would use its own disk. "
                          "Use object storage (s3://..., gs://...), or a mount every node shares, listed in "
                          "the recipe's ray.shared_storage")
