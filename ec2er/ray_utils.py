"""Ray helpers shared by the stages: connecting, and the resources an engine actor asks for."""

from __future__ import annotations

import logging
import os

from ec2er.config import EngineConfig

log = logging.getLogger(__name__)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster ``ray job submit`` started us in (RAY_ADDRESS), or start a local one.

    Locally, Ray is given more logical CPUs than cores: engine actors mostly wait on vLLM's own
    threads, and on 2 cores Ray Serve's ingress replica never schedules otherwise.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # address="local": always a fresh instance, never one that `ray start` left running
        ray.init(address="local", num_cpus=num_cpus or max(4, os.cpu_count() or 1),
                 include_dashboard=False, log_to_driver=True)
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
