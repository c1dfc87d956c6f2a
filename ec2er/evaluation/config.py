"""The evaluation recipe (``pipelines/eval-*.yaml``): what to evaluate, on which items, how."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ec2er.adapters import DEFAULT_REGISTRY
from ec2er.config import RayJobConfig, SamplingConfig, StrictModel
from ec2er.llm.kinds import EngineConfig
from ec2er.schemas.taxonomy import Language, Task

Protocol = Literal["official", "cot", "constrained", "loglik"]
PROTOCOLS: tuple[Protocol, ...] = ("official", "cot", "constrained", "loglik")


class ModelSpec(StrictModel):
    """One base model (one engine actor) and the LoRA adapters evaluated beside it."""

    name: str = Field(min_length=1, pattern=r"^[\w.-]+$",
                      description="label in the results and in file names: letters, digits, '_', '.', "
                                  "'-' ('+' is reserved for '<base>+<adapter>')")
    engine: EngineConfig
    adapters: dict[str, str] = Field(
        default_factory=dict, description="label -> adapter: a registry name (<family>-v<N>, looked up in "
                                          "the recipe's registry; on an endpoint, the name it serves) or a "
                                          "peft folder. A list of registry names labels each by its name.")
    init_if_missing: bool = Field(
        False, description="plumbing tests only: create a fresh random peft LoRA at an adapter folder "
                           "that does not exist yet")
    evaluate_base: bool = True

    @field_validator("adapters", mode="before")
    @classmethod
    def _names_as_labels(cls, v: object) -> object:
        return {name: name for name in v} if isinstance(v, list) else v

    @field_validator("adapters")
    @classmethod
    def _adapter_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not name or "+" in name or " " in name:
                raise ValueError(f"adapter name {name!r} must be non-empty, without '+' or spaces")
        return v

    @model_validator(mode="after")
    def _one_place_for_adapters(self) -> ModelSpec:
        if self.engine.adapters:
            raise ValueError("list adapters under the model's 'adapters', not 'engine.adapters'")
        return self

    def variants(self) -> list[str | None]:
        """None is the base model; names are its adapters."""
        return ([None] if self.evaluate_base else []) + list(self.adapters)


class DataSpec(StrictModel):
    benchmark: str = Field(description="a folder with EU.jsonl/EA.jsonl, a .jsonl file of EU/EA "
                                       "items (our held-out split), or a hub dataset id when online")
    languages: list[Language] = Field(default_factory=lambda: [Language.en], min_length=1)
    tasks: list[Task] = Field(default_factory=lambda: [Task.EU, Task.EA], min_length=1)
    offset: int = Field(0, ge=0, description="first item (per language and task) of the slice")
    limit: int | None = Field(None, ge=1, description="items per language and task; None = all")
    sample: Literal["head", "stratified"] = Field(
        "head", description="with a limit: 'head' takes items in file order from offset; "
                            "'stratified' draws them (seeded) in proportion to the categories, "
                            "each category at least once while the limit allows")
    seed: int = Field(0, description="the stratified draw's seed")

    @model_validator(mode="after")
    def _offset_is_for_head(self) -> DataSpec:
        if self.sample == "stratified" and self.offset:
            raise ValueError("offset applies to sample: head; a stratified sample draws from all items")
        return self


class ProtocolSampling(StrictModel):
    """Greedy decoding by default: an evaluation should not depend on the sampler's luck."""

    official: SamplingConfig = SamplingConfig(temperature=0.0, max_tokens=128)
    constrained: SamplingConfig = SamplingConfig(temperature=0.0, max_tokens=64)
    cot: SamplingConfig = SamplingConfig(temperature=0.0, max_tokens=1024)


class CrisisEvalSpec(StrictModel):
    """Crisis handling, beside EmoBench (``ec2er.evaluation.crisis``): each model and adapter
    answers a set of user messages, half with risk of suicide or self-harm at different levels,
    half emotionally charged but safe (idioms included); each reply is graded by the safety rules;
    the share handled safely, with its interval, joins the same table and chart."""

    messages: Path | None = Field(None, description="a .jsonl of messages (id, text, level, category, kind); "
                                                    "None: the set ec2er ships (211 messages, English)")
    limit: int | None = Field(None, ge=2, description="messages to use, drawn (seeded) in proportion to their "
                                                      "levels; None: all")
    system_prompt: str | None = Field(None, description="sent before each message, as a deployment's own "
                                                        "system prompt would be; None: none")
    sampling: SamplingConfig = SamplingConfig(temperature=0.0, max_tokens=160)


class EvalRayConfig(RayJobConfig):
    """One actor per base model, side by side."""

    cpus_per_actor: float = Field(0.5, gt=0, description="Ray CPUs per model actor (fractional on CPU "
                                                          "machines: the engine's threads use the cores anyway)")
    max_restarts: int = Field(3, ge=0, description="times a model actor lost with its node (or its process) "
                                                   "is started again; the parts it had not returned are "
                                                   "asked again, and each is written once")


class EvalConfig(StrictModel):
    name: str = "eval"
    data: DataSpec
    protocols: list[Protocol] = Field(default_factory=lambda: ["official", "constrained"], min_length=1)
    rotations: int = Field(1, ge=1, le=4, description="circular shifts of the options, 0..n-1 "
                                                      "(1 = the benchmark's own order only)")
    models: list[ModelSpec] = Field(min_length=1)
    sampling: ProtocolSampling = ProtocolSampling()
    crisis: CrisisEvalSpec | None = Field(None, description="also measure crisis handling (off when absent)")
    output_dir: Path = Path("runs/eval")
    registry: Path = Field(DEFAULT_REGISTRY, description="the adapter registry registry names are looked up in")
    bootstrap_samples: int = Field(1000, ge=0, description="0 disables confidence intervals")
    seed: int = 0
    ray: EvalRayConfig = EvalRayConfig()

    @model_validator(mode="after")
    def _unique(self) -> EvalConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique: {names}")
        if len(set(self.protocols)) != len(self.protocols):
            raise ValueError(f"protocols listed twice: {self.protocols}")
        unscored = [m.name for m in self.models if not m.engine.prompt_logprobs]
        if "loglik" in self.protocols and unscored:
            raise ValueError(f"protocols: loglik needs prompt log-probabilities from an in-process vLLM "
                             f"engine; {', '.join(unscored)} run on an endpoint")
        return self
