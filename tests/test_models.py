"""Model registry: embedded models build once into loadable folders; other names pass through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ec2er.errors import Ec2erError
from ec2er.models import list_models, prepare_model, resolve_model


def test_tiny_model_is_a_complete_hf_folder(tiny_model):
    folder = Path(tiny_model)
    config = json.loads((folder / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["head_dim"] == 64
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_prepare_is_idempotent_and_listed(tiny_model):
    assert str(prepare_model("tiny-random-llama")) == tiny_model
    status = {m["name"]: m["status"] for m in list_models()}
    assert status["tiny-random-llama"] == "ready"


def test_prepare_builds_atomically_in_a_custom_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EC2ER_CACHE_DIR", str(tmp_path))
    path = prepare_model("tiny-random-llama")
    assert path == tmp_path / "tiny-random-llama" and (path / ".ec2er-ready").exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["tiny-random-llama"]  # no temp leftovers


def test_resolution_of_folders_and_hub_ids(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(Ec2erError, match="model folder does not exist"):
        resolve_model("./no/such/folder")


@pytest.mark.slow
def test_smollm2_converts_from_the_wheel_gguf(smollm2_model):
    config = json.loads((Path(smollm2_model) / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert (Path(smollm2_model) / "model.safetensors").stat().st_size > 200_000_000
