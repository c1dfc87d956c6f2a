"""The Ray Serve deployment: each replica owns one vLLM ``AsyncLLM`` with vLLM's OpenAI serving
objects, and is its own HTTP ingress (Serve's proxy routes to the replicas; no second hop).

    serve run serve/serve-app.yaml          # import_path: ec2er.serving.deployment:app_builder
    ec2er serve --config serve/demo.yaml    # the same application, in the foreground

Replicas scale with ``scaling`` (fixed or autoscaled on requests in flight); each replica loads
adapters on first use, so any replica can answer for any adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve

from ec2er.config import load_config
from ec2er.errors import ConfigError
from ec2er.serving.config import ServeConfig


@serve.deployment(name="OpenAIServer", health_check_period_s=10, health_check_timeout_s=30)
@serve.ingress()  # the ASGI app is built in the replica, after its engine (__serve_build_asgi_app__)
class OpenAIServer:
    async def __init__(self, config: dict[str, Any]):
        from ec2er.serving.engine import start_engine

        self.config = ServeConfig.model_validate(config)
        # read where the replica runs (the recipe carries where the key is, never the key), and
        # before the engine starts, so that an unreadable key fails the replica at once
        self.api_key = self.config.resolve_api_key()
        self.served = await start_engine(self.config)

    async def __serve_build_asgi_app__(self) -> Any:
        from ec2er.serving.app import build_app

        return build_app(self.served, self.api_key, self.config.limits)

    async def check_health(self) -> None:
        """Serve replaces a replica whose engine died."""
        await self.served.engine.check_health()

    def __del__(self) -> None:
        served = getattr(self, "served", None)
        if served is not None:  # stop the engine core process with the replica
            served.engine.shutdown()


def replica_gpus(config: ServeConfig) -> float:
    from ec2er.llm.vllm_engine import is_cpu_build

    gpus = config.scaling.resources_per_replica.gpus
    if gpus is not None:
        return gpus
    return 0 if is_cpu_build() else config.engine.tensor_parallel_size


def build_application(config: ServeConfig) -> Any:
    """The Serve application for a config: ours, or ``ray.serve.llm``'s for object storage."""
    config = config.with_absolute_paths()
    if config.ray_serve_llm is not None:
        from ec2er.serving.ray_serve_llm import build_ray_serve_llm_app

        return build_ray_serve_llm_app(config)
    from ec2er.ray_utils import worker_resources

    options = config.scaling.deployment_options(replica_gpus(config), worker_resources(config.ray))
    return OpenAIServer.options(**options).bind(config.model_dump(mode="json"))


def app_builder(args: dict[str, Any]) -> Any:
    """Serve's application builder for ``serve run`` / ``serve deploy`` configs:
    ``args: {config: serve/<name>.yaml, set: {dotted.key: value, ...}}`` (``set`` optional)."""
    unknown = set(args) - {"config", "set"}
    if "config" not in args or unknown:
        raise ConfigError(f"serve application args: expected config (and optionally set), "
                          f"got {', '.join(sorted(args)) or 'nothing'}")
    from ec2er.serving.stage import check_registry
    from ec2er.stage import Promise

    config = load_config(Path(args["config"]), ServeConfig, args.get("set") or {})
    check_registry(config, Promise())  # the API key is read, or refused, by each replica
    return build_application(config)
