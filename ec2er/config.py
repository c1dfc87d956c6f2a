"""Recipes: YAML files under ``pipelines/`` loaded into strict pydantic models.

Unknown keys are rejected and every error names the file and the dotted key, e.g.
``pipelines/mads.yaml: turns.max_turns: Input should be less than or equal to 14``. A key written
twice in one mapping is an error too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ec2er.errors import ConfigError, DataError
from ec2er.io import load_yaml
from ec2er.schemas.facts import DEFAULT_MODEL

C = TypeVar("C", bound="StrictModel")


class StrictModel(BaseModel):
    """Base of every config: unknown keys are errors, not silently ignored typos."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class SamplingConfig(StrictModel):
    """Per-request sampling parameters, mapped onto vLLM's SamplingParams or the OpenAI API."""

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    repetition_penalty: float = Field(1.0, gt=0.0, description="multiplies down every token of the prompt and the "
                                                               "output so far, so it also punishes quoting the prompt")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="subtracted from tokens the output already has: "
                                                                       "pushes list items apart without punishing the prompt")


class RayJobConfig(StrictModel):
    """Where a stage's Ray work runs: the ``ray:`` block every stage's recipe has (each stage adds
    its own keys to it)."""

    address: str | None = Field(None, description="a running cluster to join (host:port or ray://...); "
                                                   "None: RAY_ADDRESS (set by `ray job submit`), else a "
                                                   "local Ray started for the stage")
    worker_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources every heavy actor (engine actors, training "
                                          "workers, serving replicas) asks for on top of its CPUs/GPUs, so "
                                          "that none lands on a node without them (the head): e.g. "
                                          "{ec2er_worker: 1} on `ec2er cluster up` nodes; fractions let "
                                          "several share a node. Ignored on a local Ray started for the stage")
    shared_storage: list[str] = Field(
        default_factory=list, description="local folders every node of the cluster sees at the same path "
                                          "(an NFS or other shared mount): outputs, training storage and the "
                                          "adapter registry may live under them on a multi-node cluster, "
                                          "where any other local path is refused before work starts")

    @field_validator("worker_resources")
    @classmethod
    def _custom_resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"{name}: Ray's own resource; worker_resources names custom ones "
                                 "(CPUs and GPUs have their own keys)")
            if amount <= 0:
                raise ValueError(f"{name}: {amount} must be positive")
        return v

    @field_validator("shared_storage")
    @classmethod
    def _absolute_mounts(cls, v: list[str]) -> list[str]:
        for path in v:
            if "://" in path or not os.path.isabs(path):
                raise ValueError(f"{path!r}: a shared mount is an absolute local path (object storage "
                                 "URIs need no declaring)")
        return v


class EngineBase(StrictModel):
    """What every engine kind has: the model it answers as, its seed, JSON recovery. Each kind
    is its own config type, a subclass with a ``kind`` literal, defined and registered with its
    builder in its own module of ``ec2er.llm.kinds``, as Ray's batch processors are."""

    model: str = DEFAULT_MODEL
    max_model_len: int = Field(2048, ge=128, description="the context window prompts and replies must fit: "
                                                         "what vLLM allocates, or what an endpoint's model has")
    adapters: dict[str, str] = Field(default_factory=dict, description="adapter label -> peft folder (vLLM) or "
                                                                       "the model name an endpoint serves it under")
    seed: int = 0
    # JSON recovery when constrained decoding is unavailable or output is truncated
    max_reasks: int = Field(1, ge=0, le=5)
    structured_outputs: bool = True

    # How fast and where the engine runs, not what it writes: a resumed run or evaluation may
    # change these (another machine, another endpoint) and keep what it has.
    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset()

    # What the kind can do, declared by each kind so that callers ask these, never its type:
    # runs_locally: the model's weights load in the engine's own process (so an actor holding it
    #   asks for the machine's accelerators, and an endpoint serving the same model can stand in);
    #   otherwise the engine calls a server that has the model.
    runs_locally: ClassVar[bool] = False
    # adapters_in_process: ``adapters`` are peft folders the engine loads itself (they must be
    #   readable where it runs); otherwise they are names the server it calls serves them under.
    adapters_in_process: ClassVar[bool] = False
    # prompt_logprobs: it scores a prompt's own tokens (the loglik protocol).
    prompt_logprobs: ClassVar[bool] = False

    def output_identity(self) -> dict[str, Any]:
        """The settings that shape what the engine writes."""
        return self.model_dump(mode="json", exclude=set(self.RUNTIME_FIELDS))

    def with_adapters(self, adapters: dict[str, str]) -> EngineBase:
        """This engine with ``adapters`` to serve (and whatever room the kind needs for them)."""
        return self.model_copy(update={"adapters": dict(adapters)})

    def gpus(self) -> int:
        """The GPUs one engine of this config occupies on this build (0: none)."""
        return 0

    def only_reachable_from_this_machine(self) -> bool:
        """Whether only a process on this machine can use it (an endpoint on a loopback address)."""
        return False


def read_secret(env: str | None, file: Path | None, what: str = "api key") -> str | None:
    """A secret from a file (first line, stripped) or an environment variable, never from a recipe:
    recipes are copied into logs, summaries and Ray's task arguments. None when neither names one;
    a named file that cannot be read, or an empty one, is a ConfigError naming it."""
    if file is not None:
        try:
            value = Path(file).read_text(encoding="utf-8").strip().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{file}: cannot read the {what} ({getattr(e, 'strerror', None) or e})") from None
        if not value or not value[0].strip():
            raise ConfigError(f"{file}: the {what} file is empty")
        return value[0].strip()
    return os.environ.get(env) if env else None


# The tag pydantic puts in an error's path for the member of a tagged union it tried, e.g.
# ``engine.kind=vllm.dtype`` (``ec2er.llm.kinds.EngineConfig``), and the error type of a bad tag.
UNION_TAG_PREFIX = "kind="
BAD_KIND_ERROR = "engine_kind"


def error_key(err: Any) -> str:
    """The dotted key of one pydantic error as a recipe spells it: without the union tags pydantic
    puts in the path (``engine.kind=vllm.dtype`` is ``engine.dtype``); a bad engine kind names ``kind``."""
    loc = [str(p) for p in err["loc"] if not str(p).startswith(UNION_TAG_PREFIX)]
    return ".".join(loc + (["kind"] if err["type"] == BAD_KIND_ERROR else []))


def _format_errors(path: Path, exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = error_key(err) or "<root>"
    msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{path}: {key}: {msg}{more}"


def load_config(path: str | Path, model: type[C], overrides: dict[str, Any] | None = None) -> C:
    """Load and validate a YAML recipe; raise ConfigError naming file and key on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        data = load_yaml(path) or {}
    except DataError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from None


def config_from_overrides(model: type[C], overrides: dict[str, Any] | None = None) -> C:
    """The model's defaults plus ``--set`` overrides, for a run without a recipe file; errors
    name the key as ``load_config``'s do."""
    data: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(Path("--set"), e)) from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``a.b.0.c=v``: numeric parts index into existing lists (``models.0.engine.model``)."""
    keys = dotted.split(".")
    node: Any = data
    for k, nxt in zip(keys[:-1], keys[1:]):
        node = _child(node, k, dotted, default=[] if nxt.isdigit() else {})
    last = keys[-1]
    if isinstance(node, list):
        node[_index(node, last, dotted)] = value
    else:
        node[last] = value


def _index(node: list[Any], key: str, dotted: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"--set {dotted}: {key!r} is not an index of a list of {len(node)}")
    return int(key)


def _child(node: Any, key: str, dotted: str, default: Any) -> Any:
    if isinstance(node, list):
        return node[_index(node, key, dotted)]
    if not isinstance(node, dict):
        raise ConfigError(f"--set {dotted}: {key!r} is inside a value that is not a mapping")
    return node.setdefault(key, default)


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` from the command line, the value parsed as YAML (numbers, bools...)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)
