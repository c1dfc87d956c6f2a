"""ec2er.llm.vllm_fixes without an engine: the plugin is registered, and each prompt row's logits
see that row's own LoRA slot. (On a live engine, against transformers + peft:
tests/test_engine_vllm.py; through the server with lm-eval: tests/test_serving.py.)"""

from __future__ import annotations

import types
from importlib.metadata import entry_points

import pytest
import torch

from ec2er.llm.vllm_fixes import _per_row_lora_logits, apply_vllm_fixes


def test_the_fix_is_a_vllm_general_plugin_so_vllms_own_processes_load_it():
    plugins = {ep.name: ep for ep in entry_points(group="vllm.general_plugins")}
    assert "ec2er_fixes" in plugins, "reinstall ec2er (pip install -e .): its vllm.general_plugins entry point is missing"
    assert plugins["ec2er_fixes"].load() is apply_vllm_fixes


class _Model:
    """Records the LoRA slots the logits processor would read at each compute_logits call."""

    def __init__(self, wrapper: types.SimpleNamespace):
        self.wrapper, self.seen = wrapper, []

    def compute_logits(self, rows: torch.Tensor) -> torch.Tensor:
        n = self.wrapper.indices_len[1]
        self.seen.append(self.wrapper._sampler_indices[:n].tolist())
        return rows.sum(dim=-1)


def _wrapper(token_slots: list[int], sampled_slots: list[int]) -> types.SimpleNamespace:
    sampler = torch.full((32,), -7, dtype=torch.long)
    sampler[:len(sampled_slots)] = torch.tensor(sampled_slots)
    return types.SimpleNamespace(token_lora_indices=torch.tensor(token_slots), _sampler_indices=sampler,
                                 indices_len=[len(token_slots), len(sampled_slots), None, None])


def test_each_requests_prompt_rows_get_their_own_slots_and_the_steps_mapping_comes_back():
    # three requests of 3, 2 and 4 tokens: base (-1), adapter slot 0, adapter slot 1
    wrapper = _wrapper([-1, -1, -1, 0, 0, 1, 1, 1, 1], [-1, 0, 1])
    before = wrapper._sampler_indices.clone()
    model = _Model(wrapper)
    hidden = torch.randn(10, 4)  # one padding row past the 9 scheduled tokens
    with _per_row_lora_logits(model, wrapper, hidden):
        for start, n in [(0, 2), (3, 1), (5, 3)]:  # each request's prompt rows but its last
            assert torch.equal(model.compute_logits(hidden[start:start + n]), hidden[start:start + n].sum(-1))
    assert model.seen == [[-1, -1], [0], [1, 1, 1]]
    assert torch.equal(wrapper._sampler_indices, before) and wrapper.indices_len[1] == 3
    assert "compute_logits" not in vars(model)  # the class's method again
    model.compute_logits(hidden[:1])
    assert model.seen[-1] == [-1, 0, 1]


def test_rows_that_are_not_a_slice_of_the_steps_hidden_states_are_refused():
    wrapper = _wrapper([0, 0, 1, 1], [0, 1])
    model = _Model(wrapper)
    hidden = torch.randn(4, 4)
    with _per_row_lora_logits(model, wrapper, hidden), pytest.raises(RuntimeError, match="not a slice"):
        model.compute_logits(hidden[1:3].clone())  # a copy: its place in the step cannot be known
    assert "compute_logits" not in vars(model)
