"""Recipes: strict keys, errors that name the file and the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ec2er.config import StrictModel, load_config, parse_override
from ec2er.errors import ConfigError
from ec2er.llm import EngineConfig, VLLMEngineConfig


class Recipe(StrictModel):
    name: str
    engine: EngineConfig = VLLMEngineConfig()


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "recipe.yaml"
    p.write_text(text)
    return p


def test_valid_recipe_loads_with_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, "name: x\nengine:\n  max_model_len: 1024\n"), Recipe)
    assert cfg.engine.max_model_len == 1024 and cfg.engine.model == "smollm2-135m-instruct"


def test_unknown_nested_key_names_file_and_key(tmp_path):
    p = _write(tmp_path, "name: x\nengine:\n  max_model_lenn: 1024\n")
    with pytest.raises(ConfigError, match=rf"^{p}: engine\.max_model_lenn: unknown key$"):
        load_config(p, Recipe)


def test_bad_value_names_key(tmp_path):
    p = _write(tmp_path, "name: x\nengine:\n  kind: llama\n")
    with pytest.raises(ConfigError, match=r"engine\.kind: Input should be 'vllm' or 'openai'$"):
        load_config(p, Recipe)


def test_invalid_yaml_names_line(tmp_path):
    p = _write(tmp_path, "name: x\nengine: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{p}:\d+: invalid YAML"):
        load_config(p, Recipe)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml", Recipe)
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"), Recipe)


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    p = _write(tmp_path, "name: x\n")
    key, value = parse_override("engine.max_model_len=512")
    assert load_config(p, Recipe, {key: value}).engine.max_model_len == 512
    with pytest.raises(ConfigError, match="engine.max_model_len"):
        load_config(p, Recipe, {"engine.max_model_len": "huge"})
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("engine.max_model_len")


def test_every_shipped_recipe_validates():
    """Each pipelines/*.yaml against the model of its kind (named by its file name's first word);
    a chain recipe also loads every stage recipe it names, with its overrides."""
    from ec2er.run import RunConfig, chain, shared_overrides

    models = {stage.name: stage.config_model for stage in chain()}
    kinds = {"mads": models["generate"], "concise": models["generate"], "curate": models["curate"],
             "train": models["train"], "eval": models["evaluate"], "run": RunConfig}
    recipes = sorted((Path(__file__).parents[1] / "pipelines").glob("*.yaml"))
    assert len(recipes) >= 10
    for path in recipes:
        config = load_config(path, kinds[path.stem.split("-")[0]])
        if isinstance(config, RunConfig):
            for stage in chain():
                recipe = getattr(config, stage.name)
                for one in recipe if isinstance(recipe, list) else [recipe] if recipe else []:
                    stage.load(one.config, shared_overrides(config, stage) | one.set)


class Models(StrictModel):
    models: list[Recipe]


def test_overrides_index_into_lists(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("models:\n  - name: a\n  - name: b\n")
    cfg = load_config(p, Models, {"models.1.engine.model": "tiny-random-llama"})
    assert cfg.models[1].engine.model == "tiny-random-llama" and cfg.models[0].engine.model != "tiny-random-llama"
    with pytest.raises(ConfigError, match=r"--set models\.5\.name: '5' is not an index of a list of 2"):
        load_config(p, Models, {"models.5.name": "c"})


@pytest.mark.parametrize(("switch", "variable", "cores", "configured", "preset", "expected"), [
    ("_reserve_cpu_cores", "VLLM_CPU_NUM_OF_RESERVED_CPU", 2, None, None, "0"),  # small machine: every core computes
    ("_reserve_cpu_cores", "VLLM_CPU_NUM_OF_RESERVED_CPU", 16, None, None, None),  # big one: vLLM's own reservation
    ("_reserve_cpu_cores", "VLLM_CPU_NUM_OF_RESERVED_CPU", 16, 2, None, "2"),  # explicit setting
    ("_reserve_cpu_cores", "VLLM_CPU_NUM_OF_RESERVED_CPU", 2, None, "1", "1"),  # the environment wins
    # vLLM's worker in its engine's process only when asked (it decodes batches more slowly)
    ("_single_process", "VLLM_ENABLE_V1_MULTIPROCESSING", 2, False, None, None),
    ("_single_process", "VLLM_ENABLE_V1_MULTIPROCESSING", 2, True, None, "0"),
    ("_single_process", "VLLM_ENABLE_V1_MULTIPROCESSING", 2, True, "1", "1"),
    # the cores an engine's threads are pinned to: vLLM's own choice unless the recipe names them,
    # and then the recipe's (replicas of one server inherit one environment, each base needs its own)
    ("_bind_threads", "VLLM_CPU_OMP_THREADS_BIND", 2, None, None, None),
    ("_bind_threads", "VLLM_CPU_OMP_THREADS_BIND", 2, "1", None, "1"),
    ("_bind_threads", "VLLM_CPU_OMP_THREADS_BIND", 2, "1", "0-1", "1"),
])
def test_cpu_engine_switches_and_the_environment_that_wins(
        monkeypatch, switch, variable, cores, configured, preset, expected):
    from ec2er.llm import vllm_engine

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    monkeypatch.delenv(variable, raising=False)
    if preset is not None:
        monkeypatch.setenv(variable, preset)
    getattr(vllm_engine, switch)(configured)
    assert os.environ.get(variable) == expected
