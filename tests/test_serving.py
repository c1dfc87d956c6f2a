"""Serving: the recipe, the batch gate, registry resolution, and one live server (tiny random Llama,
random adapters in a temporary registry, an API key) exercised with the official ``openai``
client over 127.0.0.1. The live tests share one server (module-scoped: ~40 s to start here).
SmolLM2 through ``ec2er serve`` and clean shutdown: tests/test_serving_cli.py."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path

import pytest

from ec2er.config import load_config
from ec2er.errors import ConfigError
from ec2er.serving.config import ServeConfig
from ec2er.serving.gate import BatchGate

REPO = Path(__file__).resolve().parents[1]
API_KEY = "test-key-123"
USER = [{"role": "user", "content": "How did the client feel about work?"}]


# ---- the recipe ----

def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    return path


def test_demo_recipe_loads():
    config = load_config(REPO / "serve/demo.yaml", ServeConfig)
    assert config.served_name == "smollm2-135m-instruct"
    assert config.registry == Path("runs/adapters")
    assert config.engine.engine_config(config.model).enable_lora


@pytest.mark.parametrize("text, message", [
    ("engine: {max_lora_rnak: 8}\n", "engine.max_lora_rnak: unknown key"),
    ("scaling: {num_replicas: 2, autoscaling_config: {max_replicas: 3}}\n", "not both"),
    ("scaling: {autoscaling_config: {min_replicas: 3, max_replicas: 2}}\n", "min_replicas (3) > max_replicas (2)"),
    ("api_key: a\napi_key_env: B\n", "api_key or api_key_env"),
    ("engine: {max_loras: 4, max_cpu_loras: 2}\n", "must be at least max_loras"),
    ("ray_serve_llm: {adapters_uri: runs/adapters}\n", "ray.serve.llm loads adapters only from s3://"),
    ("ray_serve_llm: {adapters_uri: 's3://b/a'}\napi_key_env: K\n", "checks no API key"),
])
def test_bad_recipes_fail_in_one_line_naming_the_key(tmp_path, text, message):
    path = _recipe(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, ServeConfig)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_api_key_from_the_environment(monkeypatch):
    config = ServeConfig(api_key_env="EC2ER_TEST_SERVE_KEY")
    monkeypatch.delenv("EC2ER_TEST_SERVE_KEY", raising=False)
    with pytest.raises(ConfigError, match="EC2ER_TEST_SERVE_KEY is not set"):
        config.resolve_api_key()
    monkeypatch.setenv("EC2ER_TEST_SERVE_KEY", "k1")
    assert config.resolve_api_key() == "k1"


def test_scaling_becomes_serve_deployment_options():
    fixed = ServeConfig(scaling={"num_replicas": 3, "max_ongoing_requests": 8,
                                 "resources_per_replica": {"cpus": 2}})
    assert fixed.scaling.deployment_options(gpus=1) == {
        "max_ongoing_requests": 8, "num_replicas": 3, "ray_actor_options": {"num_cpus": 2.0, "num_gpus": 1}}
    auto = ServeConfig(scaling={"autoscaling_config": {"min_replicas": 0, "max_replicas": 4,
                                                       "target_ongoing_requests": 16}})
    options = auto.scaling.deployment_options(gpus=0)
    assert options["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "target_ongoing_requests": 16}
    assert "num_replicas" not in options


def test_gpus_per_replica_follow_tensor_parallelism_on_gpu_builds(monkeypatch):
    import ec2er.llm.vllm_engine as vllm_engine
    from ec2er.serving.deployment import replica_gpus

    config = ServeConfig(engine={"tensor_parallel_size": 4})
    monkeypatch.setattr(vllm_engine, "is_cpu_build", lambda: False)
    assert replica_gpus(config) == 4
    monkeypatch.setattr(vllm_engine, "is_cpu_build", lambda: True)
    assert replica_gpus(config) == 0
    assert replica_gpus(ServeConfig(scaling={"resources_per_replica": {"gpus": 0.5}})) == 0.5


def test_app_builder_takes_a_recipe_path_and_overrides(tmp_path):
    from ec2er.serving.deployment import app_builder

    with pytest.raises(ConfigError, match="expected config"):
        app_builder({"model": "x"})
    with pytest.raises(ConfigError, match="no such config file"):
        app_builder({"config": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match="engine.max_loras"):
        app_builder({"config": str(REPO / "serve/demo.yaml"), "set": {"engine.max_loras": 0}})


def test_serve_app_yaml_names_the_builder_and_a_recipe():
    import yaml

    spec = yaml.safe_load((REPO / "serve/serve-app.yaml").read_text())
    app = spec["applications"][0]
    module, func = app["import_path"].split(":")
    import importlib

    assert callable(getattr(importlib.import_module(module), func))
    assert (REPO / app["args"]["config"]).is_file()


def test_ray_serve_llm_config_for_object_storage(tiny_model):
    """What this machine allows of ray.serve.llm: our recipe builds its LLMConfig (object-storage
    adapters, our engine settings); starting it needs object storage, which is not here."""
    from ray.serve import Application

    from ec2er.serving.deployment import build_application
    from ec2er.serving.ray_serve_llm import llm_config

    config = ServeConfig(model=tiny_model, served_model_name="tiny", engine={"max_loras": 2, "max_cpu_loras": 6},
                         ray_serve_llm={"adapters_uri": "s3://bucket/adapters/"},
                         scaling={"autoscaling_config": {"min_replicas": 1, "max_replicas": 2}})
    llm = llm_config(config)
    assert llm.model_id == "tiny"
    assert llm.lora_config.dynamic_lora_loading_path == "s3://bucket/adapters"
    assert llm.lora_config.max_num_adapters_per_replica == 6
    assert llm.engine_kwargs["enable_lora"] and "model" not in llm.engine_kwargs
    assert llm.deployment_config["autoscaling_config"]["max_replicas"] == 2
    assert isinstance(build_application(config), Application)  # Ray's OpenAI app, built (not run)


# ---- the batch gate (vLLM-CPU mixed-batch workaround) ----

def test_gate_never_lets_both_kinds_in_and_serves_everyone():
    async def main() -> list[str]:
        gate, inside, order = BatchGate(), {"base": 0, "adapter": 0}, []
        rng = random.Random(0)

        async def request(kind: str) -> None:
            await asyncio.sleep(rng.random() * 0.02)
            async with gate.admit(kind):
                inside[kind] += 1
                assert inside["base"] == 0 or inside["adapter"] == 0, "base and adapter requests overlapped"
                order.append(kind)
                await asyncio.sleep(rng.random() * 0.01)
                inside[kind] -= 1

        await asyncio.wait_for(asyncio.gather(*(request(rng.choice(["base", "adapter"])) for _ in range(300))), 30)
        assert gate.inside == 0 and gate.kind is None
        return order

    order = asyncio.run(main())
    assert len(order) == 300
    switches = sum(a != b for a, b in zip(order, order[1:]))
    assert 2 <= switches < 150  # kinds take turns, in groups rather than one by one


def test_gate_lets_one_kind_through_without_waiting():
    async def main() -> int:
        gate, peak, inside = BatchGate(), 0, 0

        async def request() -> None:
            nonlocal peak, inside
            async with gate.admit("adapter"):
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(request() for _ in range(20)))
        return peak

    assert asyncio.run(main()) == 20


def test_gate_survives_cancelled_waiters():
    async def main() -> None:
        gate = BatchGate()
        release = asyncio.Event()

        async def hold(kind: str) -> None:
            async with gate.admit(kind):
                await release.wait()

        base = asyncio.create_task(hold("base"))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(hold("adapter")) for _ in range(3)]
        await asyncio.sleep(0.01)
        for task in waiting:
            task.cancel()
        release.set()
        await base
        await asyncio.gather(*waiting, return_exceptions=True)
        # nobody left inside or queued: the next request of either kind enters at once
        await asyncio.wait_for(hold_briefly(gate, "adapter"), 1)
        await asyncio.wait_for(hold_briefly(gate, "base"), 1)

    async def hold_briefly(gate: BatchGate, kind: str) -> None:
        async with gate.admit(kind):
            pass

    asyncio.run(main())


# ---- registry resolution ----

def _publish_random(registry: Path, base: str, family: str, seed: int, tmp: Path):
    from ec2er.adapters import AdapterRegistry
    from ec2er.models.random_lora import init_lora_adapter

    folder = init_lora_adapter(base, tmp / f"{family}-{seed}", rank=8, random_b=True, seed=seed)
    return AdapterRegistry(registry).publish(family, folder, base_model=base)


def test_servable_adapters_are_this_base_models_and_names_are_checked_first(tiny_model, tmp_path, monkeypatch):
    from ec2er.adapters import AdapterRegistry
    from ec2er.serving.resolver import ServableAdapters

    registry = tmp_path / "registry"
    ours = _publish_random(registry, tiny_model, "mine", 1, tmp_path)
    # an adapter recorded for another base model is neither listed nor served
    other = AdapterRegistry(registry).publish("theirs", registry / ours.path, base_model="some-org/other-model")
    adapters = ServableAdapters(registry, tiny_model)
    assert [e.name for e in adapters.entries()] == [ours.name]
    assert adapters.folder(ours.name) == (registry / ours.path).absolute()
    assert adapters.folder(other.name) is None
    assert adapters.folder("mine-v2") is None
    shutil.copytree(registry / ours.path, tmp_path / "outside")  # a real adapter outside the registry

    def no_file_access(*args, **kwargs):
        raise AssertionError("the registry was read for a name that could escape it")

    monkeypatch.setattr(AdapterRegistry, "entries", no_file_access)
    for name in ["../outside", "..", "/etc/passwd", str(tmp_path / "outside"), "%2e%2e%2foutside",
                 "..%2Foutside", "mine-v1/../../outside", ".hidden-v1", ""]:
        assert adapters.folder(name) is None, name


def test_stand_in_family_names_are_registry_names():
    from ec2er.adapters import check_name
    from ec2er.models.random_lora import stand_in_family

    for base in ["smollm2-135m-instruct", "/root/.cache/ec2er/models/tiny-random-llama/", "Qwen/Qwen2.5-7B-Instruct"]:
        assert check_name(stand_in_family(base, 1)).endswith("-random-1")
    assert stand_in_family("Qwen/Qwen2.5-7B-Instruct", 2) == "Qwen2.5-7B-Instruct-random-2"


# ---- one live server ----

@pytest.fixture(scope="module")
def registry(tiny_model, tmp_path_factory) -> Path:
    from ec2er.models.random_lora import publish_stand_ins

    root = tmp_path_factory.mktemp("serve") / "registry"
    publish_stand_ins(root, tiny_model, 2)
    return root


@pytest.fixture(scope="module")
def server(tiny_model, registry):
    """The tiny model with two registry adapters behind Ray Serve; at most 2 adapters per batch and
    2 in host memory, so the later tests (4+ adapters) make vLLM evict and reload."""
    from ray import serve

    from ec2er.serving.server import _serve_running, serving

    config = ServeConfig(model=tiny_model, served_model_name="tiny", registry=registry, port=free_port(),
                         api_key=API_KEY, engine={"max_model_len": 512, "kv_cache_gib": 1, "max_lora_rank": 8,
                                                  "max_loras": 2, "max_cpu_loras": 2})
    with serving(config) as url:
        yield url
    # serving() leaves Serve to a local Ray of this process (it ends with the process): the
    # suite's shared Ray runs on, so stop Serve's controller and proxies here
    if _serve_running():
        serve.shutdown()


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server, api_key=API_KEY, max_retries=0, timeout=60)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chat(client, model: str, max_tokens: int = 12, **kwargs) -> str:
    reply = client.chat.completions.create(model=model, messages=USER, max_tokens=max_tokens, temperature=0.0, **kwargs)
    return reply.choices[0].message.content


def _adapter_names(registry: Path) -> list[str]:
    from ec2er.adapters import AdapterRegistry

    return AdapterRegistry(registry).names()


@pytest.fixture(scope="module")
def first_answers(client, registry) -> dict[str, str]:
    """Each model's greedy answer, asked alone: the reference the later tests compare with."""
    return {model: _chat(client, model) for model in ["tiny", *_adapter_names(registry)]}


@pytest.mark.slow
def test_models_lists_the_base_and_every_registry_adapter_before_use(client, registry):
    listed = [m.id for m in client.models.list()]  # before any adapter was requested
    assert listed == ["tiny", *_adapter_names(registry)]


@pytest.mark.slow
def test_base_and_two_adapters_answer_and_differ(first_answers):
    assert len(first_answers) == 3 and all(first_answers.values())
    assert len(set(first_answers.values())) == 3, first_answers


@pytest.mark.slow
def test_streaming_gives_the_same_text(client, first_answers):
    adapter = list(first_answers)[1]
    stream = client.chat.completions.create(model=adapter, messages=USER, max_tokens=12, temperature=0.0, stream=True)
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(chunks) > 2 and "".join(chunks) == first_answers[adapter]


@pytest.mark.slow
def test_completions_route(client, first_answers):
    adapter = list(first_answers)[2]
    reply = client.completions.create(model=adapter, prompt="The client said", max_tokens=5, temperature=0.0)
    assert reply.model == adapter and reply.usage.completion_tokens == 5


@pytest.mark.slow
def test_json_schema_response_format_is_honoured(client, first_answers):
    import json

    schema = {"type": "object", "properties": {"emotion": {"enum": ["joy", "anger", "fear"]},
                                               "intensity": {"type": "integer", "minimum": 1, "maximum": 3}},
              "required": ["emotion", "intensity"], "additionalProperties": False}
    for model in list(first_answers)[:2]:  # a random model obeys only because decoding is constrained
        text = _chat(client, model, max_tokens=64,
                     response_format={"type": "json_schema", "json_schema": {"name": "E", "schema": schema}})
        answer = json.loads(text)
        assert answer["emotion"] in {"joy", "anger", "fear"} and answer["intensity"] in {1, 2, 3}, text


@pytest.mark.slow
@pytest.mark.parametrize("body, status", [
    ({"model": "no-such-adapter-v1", "messages": USER}, 404),
    ({"model": "tiny"}, 400),                                        # schema-invalid: no messages
    ({"model": "tiny", "messages": USER, "max_tokens": "many"}, 400),
    ({"model": "tiny", "messages": [{"role": "user", "content": "word " * 2000}]}, 400),  # over max_model_len
    ({"model": "../outside", "messages": USER}, 400),
    ({"model": "/etc/passwd", "messages": USER}, 400),
    ({"model": "%2e%2e%2foutside", "messages": USER}, 400),
    ({"model": "..%2Foutside", "messages": USER}, 400),
])
def test_bad_requests_get_openai_errors(server, client, first_answers, body, status):
    import httpx

    reply = httpx.post(f"{server}/chat/completions", json=body, timeout=60,
                       headers={"Authorization": f"Bearer {API_KEY}"})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["code"] == status and error["message"] and error["type"]
    assert _chat(client, "tiny") == first_answers["tiny"]  # and the server still answers


@pytest.mark.slow
def test_malformed_json_is_400(server, client, first_answers):
    import httpx

    reply = httpx.post(f"{server}/chat/completions", content=b'{"model": "tiny", "messages": [', timeout=60,
                       headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == 400
    assert _chat(client, "tiny") == first_answers["tiny"]


@pytest.mark.slow
def test_api_key_is_required(server, client, first_answers):
    import httpx
    import openai

    stranger = openai.OpenAI(base_url=server, api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        stranger.chat.completions.create(model="tiny", messages=USER, max_tokens=4)
    assert err.value.status_code == 401
    missing = httpx.get(f"{server}/models")  # no Authorization header at all
    assert missing.status_code == 401 and missing.json()["error"]["code"] == 401
    assert httpx.get(server.removesuffix("/v1") + "/health").status_code == 200  # health needs no key
    assert _chat(client, "tiny") == first_answers["tiny"]


@pytest.mark.slow
def test_mixed_base_and_adapter_batches_match_each_request_alone(client, server, first_answers):
    """vLLM-CPU 0.32 applies an adapter to base rows batched with adapter rows (measured with
    AsyncLLM: a base request sent beside an adapter request came back with adapter tokens). All
    at once here, each answer must equal the one asked alone."""
    import openai

    models = list(first_answers) * 3
    random.Random(1).shuffle(models)

    async def all_at_once() -> list[str]:
        async with openai.AsyncOpenAI(base_url=server, api_key=API_KEY, max_retries=0, timeout=120) as aclient:
            replies = await asyncio.gather(*(aclient.chat.completions.create(
                model=m, messages=USER, max_tokens=12, temperature=0.0) for m in models))
        return [r.choices[0].message.content for r in replies]

    answers = asyncio.run(all_at_once())
    assert [(m, a) for m, a in zip(models, answers) if a != first_answers[m]] == []


@pytest.mark.slow
def test_hot_added_and_retrained_adapters(client, registry, tiny_model, first_answers, tmp_path):
    """Published while the server runs: listed and served at once. A retrained family gets a new
    version name, which never answers with the old version's weights; after 4+ adapters went
    through 2 host-memory slots, the first adapter (evicted, reloaded) still answers as before."""
    first = list(first_answers)[1]
    family = first.rsplit("-v", 1)[0]
    added = _publish_random(registry, tiny_model, "hot", 7, tmp_path)
    retrained = _publish_random(registry, tiny_model, family, 8, tmp_path)
    assert retrained.name == f"{family}-v2"
    listed = [m.id for m in client.models.list()]
    assert added.name in listed and retrained.name in listed
    hot, v2 = _chat(client, added.name), _chat(client, retrained.name)
    assert hot and v2 and v2 != first_answers[first] and hot not in first_answers.values()
    assert _chat(client, first) == first_answers[first]
