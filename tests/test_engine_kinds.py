"""Engine kinds: each declares what it can do (its config class's capabilities), and callers ask
those, never its type; each kind's config has a builder registered."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ec2er.config import ENGINE_KINDS, OpenAIEngineConfig, VLLMEngineConfig
from ec2er.llm import ENGINE_BUILDERS

REPO = Path(__file__).resolve().parents[1]


def test_every_engine_kind_has_a_builder_and_declares_its_capabilities():
    assert set(ENGINE_KINDS.values()) == set(ENGINE_BUILDERS)
    local, endpoint = VLLMEngineConfig(), OpenAIEngineConfig(base_url="http://127.0.0.1:8000/v1")
    assert (local.runs_locally, local.adapters_in_process, local.prompt_logprobs) == (True, True, True)
    assert (endpoint.runs_locally, endpoint.adapters_in_process, endpoint.prompt_logprobs) == (False, False, False)
    assert endpoint.only_reachable_from_this_machine() and not local.only_reachable_from_this_machine()
    assert not OpenAIEngineConfig(base_url="http://10.0.0.7:8000/v1").only_reachable_from_this_machine()
    assert endpoint.gpus() == 0


def test_adapters_get_the_room_their_kind_needs(tmp_path: Path):
    big = tmp_path / "big"
    big.mkdir()
    (big / "adapter_config.json").write_text(json.dumps({"r": 24}))
    adapters = {"a": str(big), "b": str(tmp_path / "no-config"), "c": str(tmp_path / "other")}
    local = VLLMEngineConfig(max_lora_rank=16, max_loras=2).with_adapters(adapters)
    assert (local.enable_lora, local.max_loras, local.max_lora_rank, local.adapters) == (True, 3, 32, adapters)
    assert not VLLMEngineConfig().with_adapters({}).enable_lora
    endpoint = OpenAIEngineConfig(base_url="http://h/v1").with_adapters({"a": "served-name"})
    assert endpoint.adapters == {"a": "served-name"} and endpoint.model_dump(exclude={"adapters"}) == \
        OpenAIEngineConfig(base_url="http://h/v1").model_dump(exclude={"adapters"})


def test_no_code_outside_the_registry_asks_an_engine_configs_type():
    kinds = "|".join(c.__name__ for c in ENGINE_KINDS.values())
    asks = re.compile(rf"isinstance\([^)]*\b({kinds})\b")
    found = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "ec2er").rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if asks.search(line)]
    assert found == []
