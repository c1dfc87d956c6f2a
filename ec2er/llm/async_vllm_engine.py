"""``AsyncVLLMEngine``: vLLM's ``AsyncLLM`` in-process, for callers that run many conversations
as coroutines (generation: one coroutine per dialogue). The engine's scheduler batches whatever
requests are in flight, so a dialogue waiting on its supervisor never holds up another's turn.

Same engine settings, sampling and structured outputs as ``VLLMEngine`` (shared helpers); a dead
engine core raises ``EngineDead`` so the worker owning it can end and be replaced, while what a
request itself causes (a prompt over the context limit) stays an error of its row.
"""

from __future__ import annotations

import itertools
import logging

from ec2er.llm.kinds.vllm import VLLMEngineConfig
from ec2er.llm.types import ChatRequest, EngineDead, GenerationError, RawCompletion
from ec2er.llm.vllm_engine import LocalVLLMEngine, engine_kwargs, error_kind, sampling_params

log = logging.getLogger(__name__)


class AsyncVLLMEngine(LocalVLLMEngine):
    def __init__(self, config: VLLMEngineConfig):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.config = config
        self.model_name = config.model
        self.max_reasks = config.max_reasks
        args = AsyncEngineArgs(**engine_kwargs(config))
        log.info("starting vLLM async engine for %s (%s)", config.model, args.model)
        self.engine = AsyncLLM.from_engine_args(args)
        self._attach(config, self.engine.get_tokenizer())
        self._ids = itertools.count()
        self._dead_errors = _fatal_errors()

    @property
    def max_in_flight(self) -> int:
        """The scheduler's batch size (``max_num_seqs``), and a tenth more queued so that a
        finished sequence is replaced at once (the margin ``ray.data.llm`` uses)."""
        return int(self.engine.vllm_config.scheduler_config.max_num_seqs * 1.1) + 1

    async def _acomplete_one(self, request: ChatRequest) -> RawCompletion:
        from vllm.inputs import TokensPrompt

        if request.adapter is not None:
            self.check_adapters([request.adapter])
        # rendered, then tokenised without extra special tokens: what vLLM's own chat() does
        text = self._tokenizer.apply_chat_template(self.template_messages(request.messages), tokenize=False,
                                                    add_generation_prompt=True)
        ids = self._tokenizer.encode(text, add_special_tokens=False)
        params = sampling_params(request.sampling, request.response_model, self.config.structured_outputs)
        final = None
        try:
            async for out in self.engine.generate(TokensPrompt(prompt_token_ids=ids), params,
                                                  f"ec2er-{next(self._ids)}",
                                                  lora_request=self._adapters.get(request.adapter or "")):
                final = out
        except self._dead_errors as e:
            raise EngineDead(f"vLLM engine died: {e}") from e
        except Exception as e:  # this request's own failure: its row only
            log.warning("request failed: %s: %s", type(e).__name__, e)
            return RawCompletion(text="", prompt_tokens=len(ids),
                                 error=GenerationError(kind=error_kind(e), message=f"{type(e).__name__}: {e}"))
        assert final is not None
        choice = final.outputs[0]
        return RawCompletion(text=choice.text, prompt_tokens=len(ids), completion_tokens=len(choice.token_ids),
                             finish_reason=choice.finish_reason, cached_tokens=final.num_cached_tokens or 0)

    async def reset_prefix_cache_async(self) -> None:
        await self.engine.reset_prefix_cache()

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()
            self.engine = None


def _fatal_errors() -> tuple[type[BaseException], ...]:
    """vLLM's own 'the engine core is dead' errors (what ``ray.data.llm`` treats as fatal)."""
    try:
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:  # an older or newer layout: nothing known to be fatal
        return ()
    return (EngineDeadError,)
