"""Fresh LoRA adapters (peft), for evaluation and serving before any training has run.

``random_b=True`` initialises both LoRA matrices randomly, so the adapter visibly changes the
model's output: the only way a test can tell whether an adapter was applied to a row.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def init_lora_adapter(base_model: str, out: str | Path, *, rank: int = 8, alpha: int = 16,
                      target_modules: tuple[str, ...] = DEFAULT_TARGETS, random_b: bool = False,
                      seed: int = 0) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ec2er.models.registry import resolve_model

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(base_model), dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules),
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
