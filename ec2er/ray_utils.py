"""Ray helpers shared by the stages: connecting, and the resources an engine actor asks for."""

from __future__ import annotations

import logging
import os

from ec2er.config import EngineConfig

log = logging.getLogger(__name__)


_LOCAL_RAY = {"started": False}  # whether init_ray started a local Ray in this process


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
    address = address or os.environ.get("RAY_ADDRESS")
    # the workers' output (engines, Ray Data, Ray Train) reaches the console only with --verbose;
    # it is in Ray's session logs (logs/ray points there) either way
    streamed = console.verbose() if worker_output is None else worker_output
    quiet = {"log_to_driver": streamed, "configure_logging": console.verbose()}
    if address:
        ray.init(address=address, **quiet)
    else:
        # address="local": always a fresh instance, never one that `ray start` left running
        ray.init(address="local", num_cpus=num_cpus or max(4, os.cpu_count() or 1),
                 include_dashboard=False, **quiet)
    _LOCAL_RAY["started"] = not address
    console.adopt_library_loggers()
    console.link_ray_logs()
    log.info("ray: %s", ray.cluster_resources())


def engine_actor_resources(engine: EngineConfig, cpus_per_actor: float = 0.5) -> dict[str, float]:
    """Resources for one actor owning one engine: a GPU per tensor-parallel rank on GPU builds,
    a fractional CPU on CPU builds (Ray Data's read tasks must still get a CPU)."""
    if engine.kind == "openai":
        return {"num_cpus": cpus_per_actor}
    from ec2er.llm.vllm_engine import is_cpu_build

    if is_cpu_build():
        return {"num_cpus": cpus_per_actor}
    return {"num_cpus": 1, "num_gpus": engine.tensor_parallel_size}
