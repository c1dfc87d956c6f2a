"""Several base models behind one endpoint (``more_models``): a tiny random Llama and a tiny random
Qwen2, each with registry adapters, behind one Ray Serve application whose router sends each
request to its base by ``model``. The single-base path (the replica is its own ingress) is
tests/test_serving.py; this module proves the router keeps what a base's app answers (errors,
limits, keys, streaming) and routes adapters to the base they were trained on."""

from __future__ import annotations

from pathlib import Path

import pytest

from ec2er.io import free_port
from ec2er.serving.config import ServeConfig

API_KEY = "bases-key"
USER = [{"role": "user", "content": "How did the client feel?"}]
UNSERVED = "tiny-random-mistral"
CRISIS_RESPONSE = "You matter. Call or text 988 (US) now, or your local emergency number."
ENGINE = {"max_model_len": 512, "kv_cache_gib": 1, "max_lora_rank": 8, "max_loras": 1}


def test_more_models_are_bases_of_their_own_and_none_is_served_twice(tmp_path):
    config = ServeConfig(model="tiny-random-llama", more_models=[{"model": "tiny-random-qwen2", "served_model_name": "q",
                                                                  "scaling": {"num_replicas": 2}}])
    first, second = config.bases()
    assert (first.served_name, second.served_name, second.model) == ("tiny-random-llama", "q", "tiny-random-qwen2")
    assert second.scaling.num_replicas == 2 and first.scaling.num_replicas is None and second.more_models == []
    with pytest.raises(ValueError, match="served twice"):
        ServeConfig(model="a", more_models=[{"model": "b", "served_model_name": "a"}])


def test_an_application_of_two_bases_is_a_router_over_two_deployments():
    from ec2er.serving.deployment import build_application

    config = ServeConfig(model="tiny-random-llama", more_models=[{"model": "tiny-random-qwen2",
                                                                  "scaling": {"num_replicas": 2}}])
    app = build_application(config)
    router = app._bound_deployment
    assert router.name == "OpenAIRouter" and router.ray_actor_options["num_cpus"] == 0
    servers = router.init_args[1]
    assert list(servers) == ["tiny-random-llama", "tiny-random-qwen2"]
    assert [s._bound_deployment.num_replicas for s in servers.values()] == [1, 2]


@pytest.fixture(scope="module")
def models() -> dict[str, str]:
    from ec2er.models import prepare_model

    return {name: str(prepare_model(f"tiny-random-{name}")) for name in ("llama", "qwen2")}


@pytest.fixture(scope="module")
def registry(models, tmp_path_factory) -> Path:
    """One random adapter per base, and one of a base this endpoint does not serve."""
    from ec2er.models.random_lora import publish_stand_ins

    root = tmp_path_factory.mktemp("bases") / "registry"
    for name in ("llama", "qwen2", "mistral"):  # no base serves the mistral one
        publish_stand_ins(root, f"tiny-random-{name}", 1)
    return root


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    from ray import serve

    from ec2er.serving.server import _serve_running, serving

    key = tmp_path_factory.mktemp("key") / "key"
    key.write_text(API_KEY)
    config = ServeConfig(model="tiny-random-llama", served_model_name="llama", registry=registry, port=free_port(),
                         api_key_file=key, engine=ENGINE, limits={"max_tokens": 64},
                         safety={"crisis_response": CRISIS_RESPONSE},
                         more_models=[{"model": "tiny-random-qwen2", "served_model_name": "qwen2", "engine": ENGINE}])
    with serving(config) as url:
        yield url
    if _serve_running():
        serve.shutdown()


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server, api_key=API_KEY, max_retries=0, timeout=60)


def _chat(client, model: str, **kwargs) -> str:
    reply = client.chat.completions.create(model=model, messages=USER, max_tokens=8, temperature=0.0, **kwargs)
    return reply.choices[0].message.content


def _adapters(registry: Path) -> dict[str, str]:
    from ec2er.adapters import AdapterRegistry

    return {e.name: e.base_model for e in AdapterRegistry(registry).entries()}


@pytest.mark.slow
def test_one_endpoint_answers_two_bases_and_their_adapters(server, client, registry):
    import httpx

    adapters = _adapters(registry)
    listed = {m.id: m.parent for m in client.models.list()}
    served = {name: base for name, base in adapters.items() if base != UNSERVED}
    assert listed == {"llama": None, "qwen2": None,
                      **{name: base.removeprefix("tiny-random-") for name, base in served.items()}}
    answers = {model: _chat(client, model) for model in listed}
    assert all(answers.values())
    for name, base in served.items():  # each adapter on its own base (random B: visibly changed)
        assert answers[name] != answers[base.removeprefix("tiny-random-")], answers
    # each base renders its own chat template: Qwen2's adds its default system prompt
    prompt_tokens = {base: client.chat.completions.create(model=base, messages=USER, max_tokens=1).usage.prompt_tokens
                     for base in ("llama", "qwen2")}
    assert prompt_tokens["qwen2"] > prompt_tokens["llama"] + 10, prompt_tokens
    # streamed through the router: the same text, in several chunks
    stream = client.chat.completions.create(model="qwen2", messages=USER, max_tokens=8, temperature=0.0, stream=True)
    chunks = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(chunks) == answers["qwen2"] and len(chunks) > 1
    completion = client.completions.create(model="llama", prompt="The client", max_tokens=4, temperature=0.0)
    assert completion.choices[0].text
    assert httpx.get(server.removesuffix("/v1") + "/health").status_code == 200


@pytest.mark.slow
def test_the_router_keeps_each_bases_errors_and_the_key(server, client, registry):
    import httpx
    import openai

    headers = {"Authorization": f"Bearer {API_KEY}"}
    unserved = next(name for name, base in _adapters(registry).items() if base == UNSERVED)
    reply = httpx.post(f"{server}/chat/completions", headers=headers,
                       json={"model": unserved, "messages": USER, "max_tokens": 4})
    assert reply.status_code == 404 and UNSERVED in reply.json()["error"]["message"]
    for body, status in [({"model": "nope", "messages": USER}, 404), ({"model": "../x", "messages": USER}, 400),
                         ({"model": "qwen2", "messages": USER, "max_tokens": 65}, 400)]:
        reply = httpx.post(f"{server}/chat/completions", headers=headers, json=body)
        assert reply.status_code == status, (body, reply.text)
        assert reply.json()["error"]["message"]
    malformed = httpx.post(f"{server}/chat/completions", headers=headers | {"Content-Type": "application/json"},
                           content=b"{not json")
    assert malformed.status_code == 400
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server, api_key="wrong", max_retries=0).models.list()
    assert _chat(client, "qwen2")  # and it goes on serving


@pytest.mark.slow
def test_an_adapter_behind_the_rail_answers_a_high_risk_message_with_the_crisis_response(server, client, registry):
    """The recipe's crisis rail (``safety``) in front of every base: a high-risk message to an
    adapter gets the deployer's crisis response, marked, never silently; an idiom reaches the model."""
    import httpx

    adapter = next(name for name, base in _adapters(registry).items() if base == "tiny-random-qwen2")
    risky = [{"role": "user", "content": "I don't see the point of going on anymore, I want to end it all."}]
    reply = httpx.post(f"{server}/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                       json={"model": adapter, "messages": risky, "max_tokens": 8})
    assert reply.status_code == 200 and reply.headers["x-ec2er-safety"] == "crisis_response"
    assert reply.json()["choices"][0]["message"]["content"] == CRISIS_RESPONSE
    idiom = [{"role": "user", "content": "This exam is killing me, I'm dying to see it over."}]
    answered = client.chat.completions.create(model=adapter, messages=idiom, max_tokens=4, temperature=0.0)
    assert answered.choices[0].message.content != CRISIS_RESPONSE


def test_the_demos_recipe_serves_smollm2_and_gemma3():
    from ec2er.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "serve" / "two-bases.yaml", ServeConfig)
    assert [b.served_name for b in config.bases()] == ["smollm2-135m-instruct", "gemma3-270m"]
    # each base's engine on a core of its own (jobs/bench_bases.py: on shared cores both together
    # serve a quarter of what either serves alone)
    assert [b.engine.engine_config(b.model).cpu_threads_bind for b in config.bases()] == ["0", "1"]
