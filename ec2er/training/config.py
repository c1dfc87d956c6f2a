"""The training recipe (``pipelines/train-*.yaml``): base model, LoRA, optimiser, data shaping,
DeepSpeed and the Ray Train run. Validated like every recipe: unknown keys are errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ec2er.adapters import DEFAULT_REGISTRY, check_name
from ec2er.config import RayJobConfig, StrictModel
from ec2er.io import fingerprint
from ec2er.schemas.facts import DEFAULT_MODEL


class LoraSettings(StrictModel):
    rank: int = Field(16, ge=1, description="LoRA rank r (vLLM serves it only up to its max_lora_rank)")
    alpha: float = Field(32.0, gt=0, description="scaling numerator: the update is scaled by alpha / rank")
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["attention", "all-linear"] = Field(
        "attention", description="module names to adapt; 'attention': the model family's attention "
                                 "projections (ec2er.models.families); or PEFT's 'all-linear'")

    @field_validator("target_modules")
    @classmethod
    def _not_empty(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and not v:
            raise ValueError("name at least one module, or 'attention', or 'all-linear'")
        return v


class OptimSettings(StrictModel):
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                          "constant_with_warmup", "inverse_sqrt"] = "cosine"
    warmup_ratio: float | None = Field(None, ge=0.0, lt=1.0, description="share of all steps spent warming "
                                                                          "up (default 0.03 unless warmup_steps)")
    warmup_steps: int | None = Field(None, ge=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    per_device_batch_size: int = Field(1, ge=1, description="rows per worker per forward pass (with packing, "
                                                            "a row holds several examples)")
    gradient_accumulation: int | None = Field(None, ge=1, description="default: from effective_batch_size, else 1")
    effective_batch_size: int | None = Field(
        None, ge=1, description="rows per optimizer step over all workers = per_device_batch_size x "
                                "gradient_accumulation x ray.num_workers; checked, never rounded")
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float = Field(1.0, ge=0.0, description="gradient clipping; 0 turns it off")
    seed: int = 0

    @model_validator(mode="after")
    def _one_warmup(self) -> OptimSettings:
        if self.warmup_ratio is not None and self.warmup_steps is not None:
            raise ValueError("give warmup_ratio or warmup_steps, not both")
        return self

    def warmup(self) -> float:
        """transformers' ``warmup_steps``: an int counts steps, a float below 1 is a ratio."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return 0.03 if self.warmup_ratio is None else self.warmup_ratio


class RaySettings(RayJobConfig):
    num_workers: int = Field(2, ge=1, description="Ray Train workers (one per GPU on GPU clusters)")
    use_gpu: bool = Field(False, description="one GPU per worker and NCCL; CPU workers use gloo")
    cpus_per_worker: float = Field(1.0, gt=0)
    storage_path: str | None = Field(None, description="where Ray Train keeps checkpoints: a folder, or a "
                                                       "shared path / URI (s3://...) on multi-node clusters; "
                                                       "default <output>/ray")
    run_name: str | None = Field(None, description="Ray Train run name; default <name>-<hash of the recipe "
                                                   "and data>, so re-running the same command continues "
                                                   "the same run")
    max_failures: int = Field(2, ge=0, description="worker-group failures survived (resume from the last checkpoint)")
    checkpoint_every_steps: int = Field(50, ge=1, description="save, evaluate and report every N optimizer steps")
    num_to_keep: int = Field(2, ge=1, description="checkpoints Ray keeps in storage")

    @field_validator("run_name")
    @classmethod
    def _safe_run_name(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v, "ray.run_name")


class TrainConfig(StrictModel):
    model: str = Field(DEFAULT_MODEL, description="base model: embedded name, hub id or folder")
    name: str = Field(description="adapter family in the registry: versions are published as <name>-v<N>")
    data: Path | None = Field(None, description="curated folder (train.jsonl, val.jsonl); --data overrides")
    registry: Path = Field(DEFAULT_REGISTRY, description="adapter registry folder")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    optim: OptimSettings = Field(default_factory=OptimSettings)
    max_length: int = Field(1024, ge=32, description="tokens per example (and per packed row)")
    overlong: Literal["drop", "truncate"] = Field(
        "drop", description="examples longer than max_length: 'drop' them, or 'truncate' the start of the "
                            "prompt (the answer and its end-of-turn token are never cut; an answer that "
                            "alone is too long is dropped). Either way they are counted and reported")
    packing: bool = Field(False, description="pack examples into rows of max_length; attention never "
                                             "crosses examples (position_ids restart per example)")
    min_examples: int = Field(8, ge=1, description="fewer training examples than this is an error")
    deepspeed: Path | None = Field(None, description="DeepSpeed JSON (pipelines/deepspeed/zero2.json, zero3.json)")
    bf16: bool = Field(False, description="bfloat16 weights and autocast (GPUs)")
    gradient_checkpointing: bool = False
    merge: bool = Field(False, description="also write a merged full model to <output>/merged")
    logging_steps: int = Field(10, ge=1, description="a console line every N optimizer steps")
    ray: RaySettings = Field(default_factory=RaySettings)

    # Settings that do not change what is trained: a re-run may change them and still continue
    # the same Ray run (same run name).
    RUNTIME_FIELDS: ClassVar[dict[str, Any]] = {
        "name": True, "data": True, "registry": True, "merge": True, "logging_steps": True,
        "ray": {"address", "worker_resources", "shared_storage", "use_gpu", "cpus_per_worker", "storage_path",
                "run_name", "max_failures", "checkpoint_every_steps", "num_to_keep"},
    }

    @field_validator("name")
    @classmethod
    def _family(cls, v: str) -> str:
        return check_name(v, "adapter family")

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_json(cls, v: Path | None) -> Path | None:
        if v is not None:
            read_deepspeed(v)
        return v

    @model_validator(mode="after")
    def _batch_arithmetic(self) -> TrainConfig:
        o, workers = self.optim, self.ray.num_workers
        if o.effective_batch_size is not None:
            per_step = o.per_device_batch_size * workers
            if o.effective_batch_size % per_step:
                raise ValueError(f"optim.effective_batch_size {o.effective_batch_size} is not a multiple of "
                                 f"per_device_batch_size x ray.num_workers = {per_step}")
            if o.gradient_accumulation is not None and o.gradient_accumulation != o.effective_batch_size // per_step:
                raise ValueError(f"optim.gradient_accumulation {o.gradient_accumulation} disagrees with "
                                 f"effective_batch_size {o.effective_batch_size} / {per_step}")
        return self

    def gradient_accumulation(self) -> int:
        o = self.optim
        if o.gradient_accumulation is not None:
            return o.gradient_accumulation
        if o.effective_batch_size is not None:
            return o.effective_batch_size // (o.per_device_batch_size * self.ray.num_workers)
        return 1

    def effective_batch_size(self) -> int:
        return self.optim.per_device_batch_size * self.gradient_accumulation() * self.ray.num_workers

    def deepspeed_config(self) -> dict[str, Any] | None:
        return None if self.deepspeed is None else read_deepspeed(self.deepspeed)

    def zero_stage(self) -> int:
        ds = self.deepspeed_config() or {}
        return int(ds.get("zero_optimization", {}).get("stage", 0))

    def run_identity(self) -> dict[str, Any]:
        """What the trained weights depend on (besides the data): the run name hashes it. The
        DeepSpeed file's content counts, not its path."""
        identity = self.model_dump(mode="json", exclude=self.RUNTIME_FIELDS)
        identity["deepspeed"] = self.deepspeed_config()
        return identity

    def default_run_name(self, data_hash: str) -> str:
        return f"{self.name}-{fingerprint({'config': self.run_identity(), 'data': data_hash})[:12]}"


def read_deepspeed(path: Path) -> dict[str, Any]:
    """A DeepSpeed JSON config as a dict; ValueError (named by the recipe key) if unusable."""
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such DeepSpeed config file")
    try:
        ds = json.loads(Path(path).read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(ds, dict) or not isinstance(ds.get("zero_optimization"), dict):
        raise ValueError(f"{path}: expected a JSON object with a 'zero_optimization' section")
    return ds
