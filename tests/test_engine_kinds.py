"""Engine kinds: each declares what it can do (its config class's capabilities), and callers ask
those, never its type; each kind is one module of ``ec2er.llm.kinds`` registering its config and
builder, and a new module (a user's own, from an installed package) is all a new backend needs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import ec2er.llm.kinds
from ec2er.llm.kinds import ENTRY_POINT_GROUP
from ec2er.llm import ENGINE_KINDS, OpenAIEngineConfig, VLLMEngineConfig

REPO = Path(__file__).resolve().parents[1]


def test_every_module_of_the_kinds_package_is_one_registered_kind_with_its_builder():
    modules = sorted(p.stem for p in Path(ec2er.llm.kinds.__file__).parent.glob("*.py") if p.stem != "__init__")
    assert sorted(ENGINE_KINDS) == modules == ["openai", "vllm"]
    for name, kind in ENGINE_KINDS.items():
        assert kind.config.__module__ == f"ec2er.llm.kinds.{name}" and kind.config.model_fields["kind"].default == name
        assert callable(kind.build) and callable(kind.check)


def test_every_engine_kind_declares_its_capabilities():
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
    kinds = "|".join(k.config.__name__ for k in ENGINE_KINDS.values())
    asks = re.compile(rf"isinstance\([^)]*\b({kinds})\b")
    found = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "ec2er").rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if asks.search(line)]
    assert found == []


ECHO_KIND = """
from typing import Any, Literal

from ec2er.config import EngineBase
from ec2er.llm.base import ChatEngine
from ec2er.llm.kinds import register_engine
from ec2er.llm.types import RawCompletion


class EchoEngineConfig(EngineBase):
    kind: Literal["echo"] = "echo"
    prefix: str = "echo: "


class EchoEngine(ChatEngine):
    def __init__(self, config):
        self.config, self.model_name = config, config.model

    def _complete(self, requests):
        return [RawCompletion(text=self.config.prefix + r.messages[-1]["content"]) for r in requests]


def _check(config):
    if config.model != "echo-model":
        raise ValueError(f"{config.model}: not served")


register_engine(EchoEngineConfig, build=lambda config, asynchronous: EchoEngine(config), check=_check)
"""

USES_THE_ECHO_KIND = """
import json, sys
from pathlib import Path

from ec2er.config import ConfigError, load_config
from ec2er.evaluation.config import EvalConfig
from ec2er.llm import ChatRequest, SamplingConfig, build_engine, check_engine

recipe, bad = Path(sys.argv[1]), Path(sys.argv[2])
config = load_config(recipe, EvalConfig)
engine = config.models[0].engine
check_engine(engine)
reply = build_engine(engine).chat([ChatRequest(messages=[{"role": "user", "content": "hi"}],
                                               sampling=SamplingConfig())])[0]
try:
    load_config(bad, EvalConfig)
except ConfigError as e:
    error = str(e)
schema = json.dumps(EvalConfig.model_json_schema())
print(json.dumps({"type": type(engine).__name__, "text": reply.text, "error": error,
                  "schema_has_echo": "EchoEngineConfig" in schema}))
"""


def test_a_new_backend_is_one_module_even_from_an_installed_package(tmp_path: Path):
    """A package installed beside ec2er (here: a folder on PYTHONPATH with the metadata pip writes)
    names its module under the ``ec2er.engine_kinds`` entry points; recipes, schema, errors and
    ``build_engine`` take it with no change to ec2er."""
    plugin = tmp_path / "plugin"
    (plugin / "echo_kind-0.1.dist-info").mkdir(parents=True)
    (plugin / "echo_kind.py").write_text(textwrap.dedent(ECHO_KIND))
    (plugin / "echo_kind-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-kind\nVersion: 0.1\n")
    (plugin / "echo_kind-0.1.dist-info" / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\necho = echo_kind\n")
    base = {"name": "e", "data": {"benchmark": str(tmp_path)}}
    recipe, bad = tmp_path / "eval.yaml", tmp_path / "bad.yaml"
    recipe.write_text(json.dumps(base | {"models": [{"name": "m", "engine": {"kind": "echo", "model": "echo-model",
                                                                            "prefix": ">> "}}]}))
    bad.write_text(json.dumps(base | {"models": [{"name": "m", "engine": {"kind": "echo", "prefx": ">> "}}]}))
    script = tmp_path / "uses_echo.py"
    script.write_text(USES_THE_ECHO_KIND)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script), str(recipe), str(bad)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"type": "EchoEngineConfig", "text": ">> hi", "schema_has_echo": True,
                      "error": f"{bad}: models.0.engine.prefx: unknown key"}
