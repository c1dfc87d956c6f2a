"""Model families by architecture: what ec2er must know of each, defined once per family.

A family names the ``model_type`` values of its configs, the attention projections a LoRA
adapts by default (``target_modules: attention``), and its real chat template
(``templates/<family>.jinja``), which the tiny random test model of the family ships so that the
suite meets what the real models do (Mistral's template rejects a system message; Mistral's and
Gemma's require strictly alternating roles).

``check_architecture`` refuses, in one line and before any work, a model whose architecture vLLM
cannot run; ``lora_targets`` one whose LoRA targets neither a family here nor PEFT knows.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ec2er.errors import Ec2erError

ATTENTION = "attention"  # target_modules value: the family's attention projections
ALL_LINEAR = "all-linear"  # PEFT's own value: every linear layer but the output head


@dataclass(frozen=True)
class ModelFamily:
    name: str
    model_types: tuple[str, ...]  # config.json's model_type values of this family
    attention_modules: tuple[str, ...]  # module names of the attention projections
    chat_template: str | None = None  # templates/<name>.jinja: the family's real template

    def template_text(self) -> str:
        if self.chat_template is None:
            raise Ec2erError(f"family {self.name} ships no chat template")
        return resources.files("ec2er.models").joinpath("templates", f"{self.chat_template}.jinja").read_text("utf-8")


_QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (
    ModelFamily("llama", ("llama",), _QKVO),
    ModelFamily("qwen2", ("qwen2",), _QKVO, chat_template="qwen2"),
    ModelFamily("mistral", ("mistral",), _QKVO, chat_template="mistral"),
    ModelFamily("gemma3", ("gemma3_text",), _QKVO, chat_template="gemma3"),
)}


def family_of(model_type: str) -> ModelFamily | None:
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def read_model_config(path: str) -> dict[str, Any] | None:
    """A model's config.json: from its folder, or from the local Hugging Face cache for a hub id;
    None where neither holds it (a hub id not downloaded yet)."""
    if os.path.isdir(path):
        file: str | None = os.path.join(path, "config.json")
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
        file = cached if isinstance(cached, str) else None
    if file is None or not os.path.isfile(file):
        return None
    with open(file, encoding="utf-8") as f:
        return json.load(f)


def lora_targets(target_modules: list[str] | str, config: dict[str, Any], model: str) -> list[str] | str:
    """The module names (or PEFT's ``all-linear``) a LoRA of this model adapts: ``attention`` is
    the family's attention projections, or PEFT's default targets for a model_type of no family
    here; an explicit list or ``all-linear`` passes through."""
    if target_modules != ATTENTION:
        return target_modules
    model_type = config.get("model_type", "")
    family = family_of(model_type)
    if family is not None:
        return list(family.attention_modules)
    peft_targets = _peft_targets().get(model_type)
    if peft_targets:
        return list(peft_targets)
    raise Ec2erError(f"{model}: no LoRA target modules known for model_type {model_type!r} (neither an "
                     f"ec2er family nor PEFT's mapping): name lora.target_modules, or use 'all-linear'")


@functools.cache
def _peft_targets() -> dict[str, Any]:
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    return dict(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)


@functools.cache
def vllm_architectures() -> frozenset[str] | None:
    """Architectures this vLLM runs; None without vLLM (a training-only node), where nothing can
    be said."""
    try:
        from vllm.model_executor.models import ModelRegistry
    except ImportError:
        return None
    return frozenset(ModelRegistry.get_supported_archs())


def check_architecture(model: str, config: dict[str, Any]) -> None:
    """Refuse a model whose config names no architecture, or only ones vLLM cannot run. (What
    PEFT cannot adapt is refused where a LoRA is made: ``lora_targets`` in training's check.)"""
    archs = config.get("architectures") or []
    if not archs:
        raise Ec2erError(f"{model}: config.json names no architectures, so no engine can load it")
    supported = vllm_architectures()
    if supported is not None and not set(archs) & supported:
        raise Ec2erError(f"{model}: architecture {', '.join(archs)} is not supported by this vLLM")


@functools.cache
def module_names(folder: str) -> frozenset[str]:
    """The last parts of every module name of a model (``q_proj``, ``mlp``...), from its config on
    the meta device: no weights are read, so it costs the same for 135M or 70B parameters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return frozenset(name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name)


def missing_targets(folder: str, target_modules: list[str] | str) -> list[str]:
    """Module names among ``target_modules`` the model does not have (none for ``all-linear``).
    vLLM serves an adapter whose modules the model lacks as if it were the base model
    (vllm-project/vllm#34186), so what cannot apply is refused before training or publishing."""
    if isinstance(target_modules, str) or not target_modules:  # a regex (PEFT allows one) or nothing
        return []
    try:
        present = module_names(folder)
    except ValueError:  # no causal-LM class for this config (a vision-language model): nothing to say
        return []
    return sorted(t for t in set(target_modules) if t.rsplit(".", 1)[-1] not in present)
