"""Tiny random models of the other architectures the recipes name: Qwen2, Mistral, Gemma 3.

Each is built offline in about a second like ``tiny-random-llama`` (a local byte-level BPE and a
2-layer config, head_dim 64 for vLLM-CPU's attention), but with its family's real chat template
(``ec2er.models.families``) and the special tokens that template writes, placed where the real
tokenizer has them (Mistral's ``<s>``/``</s>``, Gemma's ``<bos>`` added on encoding). Output
quality is nil; what they prove is that training, serving and evaluation run on each architecture
and survive its template.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ec2er.models.families import FAMILIES, ModelFamily
from ec2er.models.tiny import byte_level_bpe

# the shape every tiny model shares: vLLM-CPU's attention wants head_dim 64 (a multiple of 32)
_SHAPE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
              head_dim=64, max_position_embeddings=4096, tie_word_embeddings=True)


@dataclass(frozen=True)
class TinySpec:
    family: ModelFamily
    special_tokens: list[str]  # first in the vocabulary, in this order
    eos: str
    pad: str | None
    bos: str | None = None
    unk: str | None = None
    add_bos: bool = False  # the real tokenizer prepends BOS when encoding plain text
    stop: list[str] = field(default_factory=list)  # generation_config's EOS ids besides ``eos``
    config: Callable[[dict[str, Any]], Any] = lambda kw: None  # token ids -> transformers config

    @property
    def name(self) -> str:
        return f"tiny-random-{self.family.name}"


def _qwen2(kw: dict[str, Any]) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(**_SHAPE, num_key_value_heads=2, **kw)


def _mistral(kw: dict[str, Any]) -> Any:
    from transformers import MistralConfig

    return MistralConfig(**_SHAPE, num_key_value_heads=1, sliding_window=None, **kw)  # v0.2 on: no window


def _gemma3(kw: dict[str, Any]) -> Any:
    from transformers import Gemma3TextConfig

    # one local (sliding-window) layer and one global, as Gemma 3 interleaves them (5:1)
    return Gemma3TextConfig(**_SHAPE, num_key_value_heads=1, query_pre_attn_scalar=64, sliding_window=64,
                            layer_types=["sliding_attention", "full_attention"], **kw)


TINY_SPECS: dict[str, TinySpec] = {s.name: s for s in (
    # Qwen2.5-Instruct pads with <|endoftext|>, which its generation config also lists as an EOS:
    # training fills with the real vocabulary's <|vision_pad|> instead (ec2er.training.data)
    TinySpec(FAMILIES["qwen2"], ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_pad|>"], eos="<|im_end|>",
             pad="<|endoftext|>", stop=["<|endoftext|>"], config=_qwen2),
    TinySpec(FAMILIES["mistral"], ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], eos="</s>", pad=None,
             bos="<s>", unk="<unk>", add_bos=True, config=_mistral),
    TinySpec(FAMILIES["gemma3"], ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
             eos="<eos>", pad="<pad>", bos="<bos>", unk="<unk>", add_bos=True, stop=["<end_of_turn>"],
             config=_gemma3),
)}


def build_tiny(spec: TinySpec, out: str | Path, vocab_size: int = 512, seed: int = 0) -> Path:
    import torch
    from tokenizers import processors
    from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bpe = byte_level_bpe(spec.special_tokens, vocab_size)
    if spec.add_bos:
        bos_id = bpe.token_to_id(spec.bos)
        bpe.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A $B", special_tokens=[(spec.bos, bos_id)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=spec.bos, eos_token=spec.eos,
                                  pad_token=spec.pad, unk_token=spec.unk)
    tok.chat_template = spec.family.template_text()
    tok.save_pretrained(out)

    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(spec.config({"vocab_size": len(tok), **ids})).to(torch.bfloat16)
    model.save_pretrained(out)
    eos = [tok.eos_token_id, *tok.convert_tokens_to_ids(spec.stop)]
    GenerationConfig(**(ids | {"eos_token_id": eos if len(eos) > 1 else eos[0]})).save_pretrained(out)
    return out


def builder(spec: TinySpec) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        build_tiny(spec, out)
    return build
