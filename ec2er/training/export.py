"""From a final training checkpoint to what engines load: the adapter folder (peft weights and
config naming the base model as the engines load it, plus the tokenizer), and optionally a merged
full model."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ec2er.adapters import ADAPTER_CONFIG
from ec2er.errors import Ec2erError
from ec2er.io import write_json

WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # peft's file names


def export_adapter(checkpoint: Path, dest: Path, base_folder: str) -> dict[str, Any]:
    """Copy the adapter of an HF checkpoint to ``dest`` (replaced atomically); its
    ``base_model_name_or_path`` becomes ``base_folder``. Returns the weights' statistics and
    refuses an empty adapter (ZeRO-3 without 16-bit gathering on save writes empty tensors)."""
    from transformers import AutoTokenizer

    weights = next((checkpoint / w for w in WEIGHTS if (checkpoint / w).is_file()), None)
    if weights is None or not (checkpoint / ADAPTER_CONFIG).is_file():
        raise Ec2erError(f"{checkpoint}: no peft adapter in the final checkpoint")
    stats = adapter_stats(weights)
    if not stats["tensors"] or not stats["parameters"] or not stats["nonzero_b"]:
        raise Ec2erError(f"{weights}: the adapter is empty or untrained ({stats}); with ZeRO-3, set "
                         f"stage3_gather_16bit_weights_on_model_save in the DeepSpeed config")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copy2(weights, tmp / weights.name)
        adapter_config = json.loads((checkpoint / ADAPTER_CONFIG).read_text("utf-8"))
        adapter_config["base_model_name_or_path"] = base_folder
        write_json(tmp / ADAPTER_CONFIG, adapter_config)
        AutoTokenizer.from_pretrained(base_folder).save_pretrained(tmp)  # the base's, unchanged
        _replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stats


def adapter_stats(weights: Path) -> dict[str, int]:
    """LoRA tensors, their parameters, and how many lora_B matrices are non-zero (peft starts
    every B at zero: an all-zero B is an adapter that learned nothing)."""
    from peft.utils import load_peft_weights

    tensors = load_peft_weights(str(weights.parent), device="cpu")  # safetensors or .bin, as peft wrote it
    lora = {k: t for k, t in tensors.items() if "lora_" in k}
    return {"tensors": len(lora), "parameters": sum(t.numel() for t in lora.values()),
            "nonzero_b": sum(1 for k, t in lora.items() if "lora_B" in k and t.numel() and bool(t.abs().sum() > 0))}


def merge_adapter(base_folder: str, adapter: Path, dest: Path, bf16: bool) -> Path:
    """A full model with the adapter folded into its weights, saved with the tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.bfloat16 if bf16 else torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base_folder).save_pretrained(tmp)
        _replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _replace(tmp: Path, dest: Path) -> None:
    """Move a finished folder into place; an older one at ``dest`` (a previous run's) goes."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dest, old)
        os.rename(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, dest)
