"""ec2er.llm.vllm_fixes without an engine: the plugin is registered, each prompt row's logits see
that row's own LoRA slot, and base-model rows (slot -1) get no adapter delta. (On a live engine, against transformers + peft:
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


# ---- base-model rows (LoRA slot -1) in a mixed batch get no adapter delta ----
SLOTS = torch.tensor([0, -1, 1, -1, 1])  # adapter rows in slots 0 and 1, base rows between them


def _stacked(slots: int, out: int, inp: int) -> torch.Tensor:
    return torch.randn(slots, 1, out, inp)  # vLLM's stacked LoRA weights: (slot, 1, out, in)


def _ops():
    from vllm.lora.ops.torch_ops import lora_ops

    apply_vllm_fixes()
    return lora_ops


def test_vllm_cpus_own_op_gives_a_base_row_the_last_slots_adapter():
    """The bug the fix is for (if vLLM stops reading -1 as the last slot, the fix can go)."""
    unfixed = _ops().bgmv_shrink.__wrapped__
    x, a = torch.randn(5, 6), _stacked(2, 3, 6)
    out = torch.zeros(5, 3)
    unfixed(x, a, out, SLOTS, 1.0)
    assert torch.allclose(out[1], a[1, 0] @ x[1])  # slot -1 read as slot 1, the last


# Each op's cases: few and many rows over several slots (one product against every slot), every row
# in one slot (one product), and base rows only.
SLOT_CASES = {"few rows": SLOTS, "many rows": SLOTS.repeat(13), "one slot": torch.ones(60, dtype=torch.long),
              "base only": torch.full((6,), -1)}


@pytest.mark.parametrize("slots", SLOT_CASES.values(), ids=SLOT_CASES.keys())
def test_shrink_gives_base_rows_a_zero_buffer_and_adapter_rows_their_own_slot(slots):
    n = slots.shape[0]
    x, a = torch.randn(n, 6), _stacked(2, 3, 6)
    out = torch.full((n, 3), 9.0)  # stale numbers in the buffer must not survive in any row
    _ops().bgmv_shrink(x, a, out, slots, 0.5)
    for row, slot in enumerate(slots.tolist()):
        want = torch.zeros(3) if slot < 0 else 0.5 * a[slot, 0] @ x[row]
        assert torch.allclose(out[row], want, atol=1e-6), row


@pytest.mark.parametrize("add_inputs", [True, False])
@pytest.mark.parametrize("slots", SLOT_CASES.values(), ids=SLOT_CASES.keys())
def test_expand_and_expand_slice_leave_base_rows_as_they_were(slots, add_inputs):
    ops = _ops()
    n = slots.shape[0]
    x, b = torch.randn(n, 3), _stacked(2, 4, 3)
    y = torch.randn(n, 8)
    added = y.clone()
    ops.bgmv_expand(x, b, added, slots, add_inputs)
    sliced = y.clone()
    ops.bgmv_expand_slice(x, b, sliced, slots, 2, 4, add_inputs)
    for row, slot in enumerate(slots.tolist()):
        if slot < 0:  # no delta, not even an overwrite
            assert torch.equal(added[row], y[row]) and torch.equal(sliced[row], y[row]), row
            continue
        delta = b[slot, 0] @ x[row]
        base = y[row] if add_inputs else torch.cat([torch.zeros(4), y[row, 4:]])
        assert torch.allclose(added[row], base + torch.cat([delta, torch.zeros(4)]), atol=1e-6), row
        base = y[row] if add_inputs else torch.cat([y[row, :2], torch.zeros(4), y[row, 6:]])
        assert torch.allclose(sliced[row], base + torch.cat([torch.zeros(2), delta, torch.zeros(2)]), atol=1e-6), row


def test_the_ops_equal_vllms_own_where_every_row_has_a_slot():
    """Where vLLM's own op is right (no base rows), ours gives its numbers."""
    ops = _ops()
    slots = torch.tensor([0, 1, 1, 0]).repeat(20)
    x, a, b = torch.randn(80, 6), _stacked(2, 3, 6), _stacked(2, 5, 3)
    ours, theirs = torch.zeros(80, 3), torch.zeros(80, 3)
    ops.bgmv_shrink(x, a, ours, slots, 0.25)
    ops.bgmv_shrink.__wrapped__(x, a, theirs, slots, 0.25)
    assert torch.allclose(ours, theirs, atol=1e-5)
    h, y = torch.randn(80, 3), torch.randn(80, 5)
    ours, theirs = y.clone(), y.clone()
    ops.bgmv_expand(h, b, ours, slots, True)
    ops.bgmv_expand.__wrapped__(h, b, theirs, slots, True)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_the_prefill_ops_and_the_cpu_wrapper_use_the_fixed_ops():
    from vllm.lora.ops import torch_ops
    from vllm.lora.punica_wrapper import punica_cpu

    from ec2er.llm.vllm_fixes import mixed_lora_batches_are_exact

    ops = _ops()
    assert mixed_lora_batches_are_exact()
    assert punica_cpu.bgmv_expand is torch_ops.bgmv_expand is ops.bgmv_expand
    # sgmv (prefill): per-request slots over sequence lengths; the base request's 2 tokens stay 0
    x, a = torch.randn(5, 6), _stacked(2, 3, 6)
    out = torch.full((5, 3), 9.0)
    ops.sgmv_shrink(x, a, out, torch.tensor([0, 1, 3]), torch.tensor([1, 2, 2]), torch.tensor([0, -1, 1]),
                    3, 2, 5, 1.0)
    assert torch.equal(out[1:3], torch.zeros(2, 3))
    assert torch.allclose(out[3:], x[3:] @ a[1, 0].T, atol=1e-6)
    apply_vllm_fixes()  # again: no second wrapper around the first
    assert not hasattr(ops.bgmv_shrink.__wrapped__, "__wrapped__")


# The CPU punica wrapper (what every LoRA layer calls) computes each step's slot plan once; its
# steps: a prefill mixing base and two adapters, decodes of few and many rows (expand computes
# these two ways), one adapter alone, base rows only; each after the one before, so a stale plan
# would give the earlier step's slots.
WRAPPER_STEPS = [([1, 1, 0, 2, 2, 0], True), ([2, 0, 1], False), ([1, 0, 2, 2, 1] * 9, False), ([2] * 7, True),
                 ([0, 0, 0], False), ([1, 2, 0, 1], True)]


def test_the_cpu_wrappers_layers_get_each_rows_own_slot_with_one_plan_per_step(monkeypatch):
    from vllm.lora.layers.utils import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    from ec2er.llm import vllm_fixes

    apply_vllm_fixes()
    plans, plan = [], vllm_fixes._SlotPlan
    monkeypatch.setattr(vllm_fixes, "_SlotPlan", lambda indices: plans.append(indices.tolist()) or plan(indices))
    wrapper = PunicaWrapperCPU(max_num_batched_tokens=64, max_batches=8, device="cpu")
    a = (_stacked(2, 3, 6), _stacked(2, 3, 6))  # two slices (as q and k of a merged projection)
    b = (_stacked(2, 4, 3), _stacked(2, 5, 3))
    for step, (lora_ids, is_prefill) in enumerate(WRAPPER_STEPS):
        wrapper.update_metadata(LoRAMapping(lora_ids, lora_ids, is_prefill=is_prefill), [1, 2], 2, 100)
        for _layer in range(3):  # a step's layers share its plan
            x, y = torch.randn(len(lora_ids), 6), torch.randn(len(lora_ids), 9)
            want = y.clone()
            wrapper.add_lora_linear(y, x, a, b, 0.5, (4, 5))
            for row, lora_id in enumerate(lora_ids):  # id 0: the base model; ids 1, 2 in slots 0, 1
                if lora_id:
                    slot = lora_id - 1
                    want[row, :4] += b[0][slot, 0] @ (0.5 * a[0][slot, 0] @ x[row])
                    want[row, 4:] += b[1][slot, 0] @ (0.5 * a[1][slot, 0] @ x[row])
            assert torch.allclose(y, want, atol=1e-5), (step, lora_ids)
        assert plans[step:] == [[lora_id - 1 for lora_id in lora_ids]], step  # one plan, this step's slots


def test_a_model_class_is_inspected_in_this_process_on_cpu_builds(monkeypatch):
    """vLLM's first look at an architecture (cache cold, as on a fresh machine) imports the class
    here instead of in a subprocess that imports vLLM and torch again."""
    from vllm.model_executor.models import registry

    def no_subprocess(*args, **kwargs):
        raise AssertionError("vLLM started a subprocess to inspect a model class")

    apply_vllm_fixes()
    monkeypatch.setattr(registry.subprocess, "run", no_subprocess)
    lazy = registry._LazyRegisteredModel("vllm.model_executor.models.llama", "LlamaForCausalLM")
    monkeypatch.setattr(registry._LazyRegisteredModel, "_load_modelinfo_from_cache", lambda self, module_hash: None)
    monkeypatch.setattr(registry._LazyRegisteredModel, "_save_modelinfo_to_cache", lambda self, mi, module_hash: None)
    info = lazy.inspect_model_cls()
    assert info.architecture == "LlamaForCausalLM" and info.is_text_generation_model and not info.is_pooling_model
