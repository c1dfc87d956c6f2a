"""The Ray Serve deployment: each replica owns one vLLM ``AsyncLLM`` with vLLM's OpenAI serving
objects, and is its own HTTP ingress (Serve's proxy routes to the replicas; no second hop).

    serve run serve/serve-app.yaml          # import_path: ec2er.serving.deployment:app_builder
    ec2er serve --config serve/demo.yaml    # the same application, in the foreground

Replicas scale with ``scaling`` (fixed or autoscaled on requests in flight); each replica loads
adapters on first use, so any replica can answer for any adapter.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from ec2er.config import load_config
from ec2er.errors import ConfigError
from ec2er.serving.config import ServeConfig


class OpenAIReplica:
    """One replica: vLLM's engine and OpenAI layer for one base model and its adapters."""

    async def __init__(self, config: dict[str, Any]):
        from ec2er.serving.engine import start_engine

        self.config = ServeConfig.model_validate(config)
        # read where the replica runs (the recipe carries where the key is, never the key), and
        # before the engine starts, so that an unreadable key fails the replica at once
        self.api_key = self.config.resolve_api_key()
        self.served = await start_engine(self.config)
        self._app: Any = None  # built on a router's first forward

    def build_app(self) -> Any:
        from ec2er.serving.app import build_app

        return build_app(self.served, self.api_key, self.config.limits, self.config.safety)

    async def forward(self, method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> AsyncIterator[dict[str, Any]]:
        """One HTTP request from the router of a several-base endpoint (``router.py``), answered
        by this replica's own app, its ASGI messages streamed back as they come."""
        from ec2er.serving.router import call_asgi

        if self._app is None:
            self._app = self.build_app()
        async for message in call_asgi(self._app, method, path, query, headers, body):
            yield message

    async def check_health(self) -> None:
        """Serve replaces a replica whose engine died."""
        await self.served.engine.check_health()

    def __del__(self) -> None:
        served = getattr(self, "served", None)
        if served is not None:  # stop the engine core process with the replica
            served.engine.shutdown()


HEALTH = {"health_check_period_s": 10, "health_check_timeout_s": 30}


@serve.deployment(name="OpenAIServer", **HEALTH)
@serve.ingress()  # the ASGI app is built in the replica, after its engine (__serve_build_asgi_app__)
class OpenAIServer(OpenAIReplica):
    """A base model served alone: the replica is the HTTP ingress (no second hop)."""

    async def __serve_build_asgi_app__(self) -> Any:
        return self.build_app()


# A base model among several: Serve allows one HTTP ingress per application (the router), so
# the bases are plain deployments the router calls through handles.
BaseModelServer = serve.deployment(name="BaseModelServer", **HEALTH)(OpenAIReplica)


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

    resources = worker_resources(config.ray)
    bases = config.bases()
    if len(bases) == 1:
        options = config.scaling.deployment_options(replica_gpus(config), resources)
        return OpenAIServer.options(**options).bind(config.model_dump(mode="json"))
    from ec2er.serving.router import OpenAIRouter

    servers = {base.served_name: BaseModelServer.options(name=f"BaseModelServer-{i}",
                                                         **base.scaling.deployment_options(replica_gpus(base), resources))
               .bind(base.model_dump(mode="json")) for i, base in enumerate(bases)}
    return OpenAIRouter.options(**router_options(bases)).bind(config.model_dump(mode="json"), servers)


def router_options(bases: list[ServeConfig]) -> dict[str, Any]:
    """The router only forwards: no CPU of its own, and room for every request the bases can hold
    or queue (each base's own queue limit answers 503 through it)."""
    def room(base: ServeConfig) -> int:
        scaling = base.scaling
        replicas = scaling.autoscaling_config.max_replicas if scaling.autoscaling_config else scaling.num_replicas or 1
        return scaling.max_ongoing_requests * replicas + (scaling.max_queued_requests or 1024)

    return {"num_replicas": 1, "max_ongoing_requests": sum(room(b) for b in bases),
            "ray_actor_options": {"num_cpus": 0}}


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
