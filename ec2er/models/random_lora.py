"""Fresh random LoRA adapters (peft) for plumbing tests and benchmarks: adapters that training did
not make. ``publish_stand_ins`` puts some into a registry (families ``<base>-random-<i>``, never
mistaken for trained ones) for tests and the serving benchmark.

``random_b=True`` initialises both LoRA matrices randomly, so the adapter visibly changes the
model's output: the only way a test can tell whether an adapter was applied to a row.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from ec2er.models.families import ATTENTION, lora_targets, read_model_config

DEFAULT_TARGETS = ATTENTION  # the base model family's attention projections, as training's default


def init_lora_adapter(base_model: str, out: str | Path, *, rank: int = 8, alpha: int = 16,
                      target_modules: tuple[str, ...] | str = DEFAULT_TARGETS, random_b: bool = False,
                      seed: int = 0) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ec2er.models.embedded import resolve_model

    torch.manual_seed(seed)
    folder = resolve_model(base_model)
    targets = lora_targets(target_modules if isinstance(target_modules, str) else list(target_modules),
                           read_model_config(folder) or {}, base_model)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets,
                     init_lora_weights=not random_b, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    if random_b:  # peft's init_lora_weights=False leaves B random too, but scale it up to be visible
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.5)
    out = Path(out)
    peft_model.save_pretrained(out)
    return out


def stand_in_family(base_model: str, index: int) -> str:
    """``smollm2-135m-instruct`` -> ``smollm2-135m-instruct-random-1`` (a folder's or hub id's last
    part for other models, so the family is a valid registry name)."""
    from ec2er.adapters import NAME_CHARACTERS

    stem = re.sub(rf"[^{NAME_CHARACTERS}]+", "-", Path(base_model.rstrip("/")).name).strip("._-") or "model"
    return f"{stem[:80]}-random-{index}"


def publish_stand_ins(registry: str | Path, base_model: str, count: int, rank: int = 8) -> list[str]:
    """Make sure families ``<base>-random-1..count`` each have a version in the registry; publish
    the missing ones. Returns the latest name of each family (``...-random-<i>-v<N>``)."""
    from ec2er.adapters import AdapterRegistry

    reg = AdapterRegistry(registry)
    names = []
    for i in range(1, count + 1):
        family = stand_in_family(base_model, i)
        entry = reg.latest(family)
        if entry is None:
            with tempfile.TemporaryDirectory() as tmp:
                init_lora_adapter(base_model, Path(tmp) / family, rank=rank, random_b=True, seed=i)
                entry = reg.publish(family, Path(tmp) / family, base_model=base_model,
                                    summary={"stand_in": "random LoRA, not trained"})
        names.append(entry.name)
    return names
