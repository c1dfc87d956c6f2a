"""Every architecture the recipes name (Llama elsewhere; Qwen2, Mistral, Gemma 3 here), with its
family's real chat template: every prompt ec2er sends survives it, LoRA targets follow the
architecture, an unknown architecture or a mismatched adapter is refused in one line, and (slow)
each family trains an adapter through the training stage, serves base + adapters in one vLLM
engine, and is evaluated by the evaluation runner."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fakes import FakeEngine
from test_evaluation import write_benchmark

from ec2er.llm import VLLMEngineConfig
from ec2er.errors import ConfigError, Ec2erError
from ec2er.llm.messages import TemplateNeeds, fit_template, template_needs
from ec2er.models import check_model, prepare_model
from ec2er.models.families import ATTENTION, lora_targets, missing_targets, read_model_config

REPO = Path(__file__).resolve().parents[1]
CURATED = REPO / "tests" / "fixtures" / "curated"
BENCH = REPO / "tests" / "fixtures" / "items_emobench_layout.jsonl"
TINY_FAMILIES = ["tiny-random-qwen2", "tiny-random-mistral", "tiny-random-gemma3"]
ARCHITECTURES = {"tiny-random-qwen2": "Qwen2ForCausalLM", "tiny-random-mistral": "MistralForCausalLM",
                 "tiny-random-gemma3": "Gemma3ForCausalLM"}


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def family_model(request) -> tuple[str, str]:
    return request.param, str(prepare_model(request.param))


def _tokenizer(folder: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _generation_prompts() -> list[list[dict[str, str]]]:
    """Every request both generation pipelines send (all agents, on a fake engine)."""
    from ec2er.generation.config import GenerateConfig
    from ec2er.generation.dialogue import DialogueRunner
    from ec2er.generation.plan import sampler_specs

    prompts = []
    for pipeline, turns in (("mads", None), ("concise", {"min_turns": 10, "max_turns": 10})):
        data = {"pipeline": pipeline, "num_dialogues": 1, "seed": 3,
                "engine": VLLMEngineConfig(model="fake", max_model_len=4096).model_dump()}
        if turns:
            data["turns"] = turns
        config = GenerateConfig.model_validate(data)
        engine = FakeEngine()
        runner = DialogueRunner(engine, config)
        asyncio.run(runner.run(sampler_specs(config, [0])[0]))
        prompts += [r.messages for r in engine.calls]
    return prompts


def _evaluation_prompts() -> list[list[dict[str, str]]]:
    """Every evaluation protocol's prompts (official, cot, loglik) for the fixture items, and a
    re-ask after an unparsable answer."""
    from ec2er.evaluation.prompts import constrained_answer_model, cot_messages, loglik_requests, official_messages
    from ec2er.llm.base import _with_reask
    from ec2er.llm.types import ChatRequest, ChatResult, GenerationError
    from ec2er.schemas.benchmark import load_benchmark
    from ec2er.schemas.items import EUItem

    prompts = []
    for item in load_benchmark(BENCH):
        prompts.append(official_messages(item, 0))
        for part in item.options():
            prompts.append(cot_messages(item, 0, part))
        prompts += [messages for messages, _ in loglik_requests(item).values()]
        if isinstance(item, EUItem):
            prompts.append(cot_messages(item, 1, "cause", item.emotion_label))
    failed = ChatResult(text="not json", error=GenerationError(kind="parse", message="no JSON"))
    reask = _with_reask(ChatRequest(prompts[0], response_model=constrained_answer_model(load_benchmark(BENCH)[0])),
                        failed)
    return prompts + [reask.messages]


@pytest.fixture(scope="module")
def every_prompt() -> dict[str, list[list[dict[str, str]]]]:
    return {"generation": _generation_prompts(), "evaluation": _evaluation_prompts()}


def test_each_familys_real_template_refuses_what_its_model_refuses(family_model):
    name, folder = family_model
    tok = _tokenizer(folder)
    needs = template_needs(tok)
    assert needs == {"tiny-random-qwen2": TemplateNeeds(False, False),
                     "tiny-random-mistral": TemplateNeeds(True, True),
                     "tiny-random-gemma3": TemplateNeeds(False, True)}[name]
    from jinja2.exceptions import TemplateError

    system_first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    if needs.fold_system:
        with pytest.raises(TemplateError, match="roles must alternate"):
            tok.apply_chat_template(system_first, tokenize=False)
    text = tok.apply_chat_template(fit_template(system_first, tok), tokenize=False, add_generation_prompt=True)
    assert "Be brief." in text and "Hi" in text
    if name == "tiny-random-qwen2":  # Qwen's default system prompt where none is given
        assert "You are Qwen" in tok.apply_chat_template([system_first[1]], tokenize=False)
    if name in ("tiny-random-mistral", "tiny-random-gemma3"):  # BOS written by the template itself
        assert text.startswith(tok.bos_token) and tok("x")["input_ids"][0] == tok.bos_token_id


def test_every_generation_and_evaluation_prompt_renders_with_every_family(family_model, every_prompt):
    _, folder = family_model
    tok = _tokenizer(folder)
    assert len(every_prompt["generation"]) > 20 and len(every_prompt["evaluation"]) > 10
    for kind, prompts in every_prompt.items():
        for messages in prompts:
            fitted = fit_template(messages, tok)
            text = tok.apply_chat_template(fitted, tokenize=False, add_generation_prompt=True)
            for m in messages:  # nothing lost by folding or merging (Gemma trims each turn)
                assert m["content"].strip() in text, (kind, m["role"])


def test_training_examples_render_with_every_family_and_learn_the_end_of_turn(family_model):
    from ec2er.training.data import ChatFormat, preview, read_examples

    _, folder = family_model
    fmt = ChatFormat.load(folder)
    _, examples = read_examples(CURATED / "train.jsonl")
    for example in examples:
        shown = preview(fmt, example)
        assert shown["eos_trained"] and shown["trained_tokens"] > 2, shown["text"][-80:]
        assert shown["trained_text"].startswith(example.target.strip()[:10])


def test_lora_targets_follow_the_architecture(family_model, tmp_path):
    from ec2er.models.random_lora import init_lora_adapter

    name, folder = family_model
    assert ARCHITECTURES[name] in read_model_config(folder)["architectures"]
    assert check_model(name) == folder  # vLLM runs this architecture
    assert lora_targets(ATTENTION, read_model_config(folder), name) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert lora_targets(["gate_proj"], read_model_config(folder), name) == ["gate_proj"]
    assert missing_targets(folder, ["q_proj", "o_proj", "c_attn"]) == ["c_attn"]  # GPT-2's name
    adapter = init_lora_adapter(name, tmp_path / "a")
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_an_architecture_vllm_cannot_run_is_refused_in_one_line(tmp_path, capsys):
    from ec2er.cli import main

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["FooForCausalLM"], "model_type": "foo"}))
    with pytest.raises(Ec2erError, match=r"architecture FooForCausalLM is not supported by this vLLM"):
        check_model(str(tmp_path))
    bench = write_benchmark(tmp_path / "bench", n=2, languages=("en",))  # its own: ../shared may be absent
    assert main(["evaluate", "--config", str(REPO / "pipelines" / "eval-tiny.yaml"), "--set", f"data.benchmark={bench}",
                 "--set", f"models.0.engine.model={tmp_path}", "--output", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "FooForCausalLM is not supported" in err[-1]
    with pytest.raises(Ec2erError, match="no LoRA target modules known for model_type 'foo'"):
        lora_targets(ATTENTION, {"model_type": "foo"}, "foo-model")


def test_training_refuses_target_modules_the_model_does_not_have(tmp_path):
    from ec2er.training.config import TrainConfig
    from ec2er.training.stage import check_training

    config = TrainConfig.model_validate({"model": "tiny-random-qwen2", "name": "t", "registry": str(tmp_path),
                                         "lora": {"target_modules": ["c_attn"]}})
    with pytest.raises(ConfigError, match="lora.target_modules c_attn are not modules of this model"):
        check_training(config)
    assert TrainConfig.model_validate({"name": "t"}).lora.target_modules == ATTENTION


def test_an_adapter_of_modules_the_base_lacks_is_not_published(tmp_path):
    """vLLM would serve it as the base model without a word (vllm-project/vllm#34186)."""
    from ec2er.adapters import AdapterRegistry
    from ec2er.models.random_lora import init_lora_adapter

    adapter = init_lora_adapter("tiny-random-mistral", tmp_path / "a")
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"target_modules": ["c_attn", "q_proj"]}))
    registry = AdapterRegistry(tmp_path / "reg")
    with pytest.raises(ConfigError, match="adapts c_attn, which tiny-random-mistral does not have"):
        registry.publish("m", adapter, base_model="tiny-random-mistral")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert registry.publish("m", adapter, base_model="tiny-random-mistral").name == "m-v1"


def test_an_endpoint_whose_template_refuses_system_messages_gets_them_folded():
    """A server whose chat template refuses a system message (vLLM's answers 400) is asked again
    with the conversation normalised, and from then on always so."""
    from http.server import BaseHTTPRequestHandler

    from fakes import LoopbackServer, send_json

    from ec2er.llm import OpenAIEngineConfig
    from ec2er.llm import ChatRequest
    from ec2er.llm.openai_engine import OpenAICompatibleEngine

    seen: list[list[str]] = []

    class Strict(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            roles = [m["role"] for m in body["messages"]]
            seen.append(roles)
            if "system" in roles:
                return send_json(self, 400, {"error": {"message": "Only user and assistant roles are supported!"}})
            return send_json(self, 200, {"id": "1", "object": "chat.completion", "created": 0, "model": "m",
                                         "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": "ok"}}]})

        def log_message(self, *args):
            pass

    with LoopbackServer(Strict) as server:
        engine = OpenAICompatibleEngine(OpenAIEngineConfig(model="m", base_url=server.base_url, max_retries=0))
        request = ChatRequest([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
        assert [r.text for r in engine.chat([request])] == ["ok"]
        assert [r.text for r in engine.chat([request])] == ["ok"]
    assert seen == [["system", "user"], ["user"], ["user"]]


# ------------------------------------------------------------------ train, serve, evaluate (slow)


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_each_family_trains_serves_its_adapters_and_is_evaluated(name, ray_local, tmp_path):
    from ec2er.evaluation.config import EvalConfig
    from ec2er.evaluation.runner import predict
    from ec2er.llm import ChatRequest, build_engine
    from ec2er.models.random_lora import init_lora_adapter
    from ec2er.schemas.benchmark import load_benchmark
    from ec2er.stage import StageInputs
    from ec2er.training.config import TrainConfig
    from ec2er.training.stage import STAGE

    registry = tmp_path / "registry"
    train = TrainConfig.model_validate({
        "model": name, "name": "arch", "registry": str(registry), "lora": {"rank": 8, "alpha": 16, "dropout": 0.0},
        "optim": {"learning_rate": 5e-3, "lr_scheduler": "constant", "warmup_steps": 0, "max_steps": 2,
                  "per_device_batch_size": 2},
        "min_examples": 4, "logging_steps": 1, "ray": {"num_workers": 1, "checkpoint_every_steps": 2}})
    STAGE(train, StageInputs(data=CURATED), tmp_path / "train")
    trained = registry / "arch-v1"
    assert sorted(json.loads((trained / "adapter_config.json").read_text())["target_modules"]) == \
        ["k_proj", "o_proj", "q_proj", "v_proj"]
    random_b = init_lora_adapter(name, tmp_path / "random", random_b=True, seed=1)

    engine = build_engine(VLLMEngineConfig(model=name, max_model_len=2048, kv_cache_gib=1, max_lora_rank=8,
                                           max_loras=2, adapters={"trained": str(trained), "random": str(random_b)}))
    try:
        from ec2er.config import SamplingConfig

        greedy = SamplingConfig(temperature=0.0, max_tokens=8, seed=0)
        agent_like = [{"role": "system", "content": "You are a therapist."},
                      {"role": "user", "content": "The client said that she felt anxious about work."}]
        replies = {adapter: engine.chat([ChatRequest(agent_like, greedy, adapter=adapter)])[0]
                   for adapter in (None, "random", "trained")}
        assert all(r.ok and r.completion_tokens > 0 for r in replies.values()), replies
        assert replies["random"].text != replies[None].text  # the adapter was applied

        items = [i for i in load_benchmark(BENCH) if i.language.value == "en"][:2]
        config = EvalConfig.model_validate({
            "data": {"benchmark": str(BENCH)}, "protocols": ["constrained"], "models": [{"name": name, "engine": {}}],
            "sampling": {"constrained": {"temperature": 0.0, "max_tokens": 48}}})
        preds = predict(engine, name, [None, "trained"], items, config)
        assert {p.model for p in preds} == {name, f"{name}+trained"} and len(preds) == 2 * len(items)
        assert all(p.parsed for p in preds), [p.response for p in preds]  # schema-constrained
    finally:
        engine.close()
