"""The engine protocol and the shared parse-and-re-ask loop.

Engines implement ``_complete`` (a batch of requests in, raw texts out). ``chat`` adds what
every engine needs on top: validation of structured outputs into the requested pydantic model,
JSON recovery, and bounded re-asks for the rows that failed, all batched.

What an engine can do beyond chat is declared here, with a default every backend inherits, so a
new backend cannot silently do less: token counting (exact or a stated estimate), prompt
log-likelihoods (``supports_loglikelihoods``) and LoRA adapters (``check_adapters`` at start).
"""

from __future__ import annotations

from collections.abc import Sequence

from ec2er.errors import ConfigError
from ec2er.llm.json_recovery import reask_message, recover_json
from ec2er.llm.types import ChatRequest, ChatResult, GenerationError, RawCompletion


class ChatEngine:
    """A chat model behind one of several backends (vLLM in-process, an OpenAI endpoint)."""

    model_name: str
    max_reasks: int = 1
    # True when count_tokens uses the model's own tokenizer, False when it estimates.
    exact_token_counts: bool = False
    supports_loglikelihoods: bool = False

    def _complete(self, requests: Sequence[ChatRequest]) -> list[RawCompletion]:
        """Run every request once, as one batch; per-row failures come back as
        ``RawCompletion.error``. Engines implement this, ``_acomplete_one``, or both."""
        raise NotImplementedError(f"{type(self).__name__} runs requests asynchronously: use achat_one")

    async def _acomplete_one(self, request: ChatRequest) -> RawCompletion:
        """Run one request once, concurrently with others (the engine batches whatever is in flight).
        A dead engine raises ``EngineDead``; anything the request itself causes is a row error."""
        raise NotImplementedError(f"{type(self).__name__} runs requests in batches: use chat")

    @property
    def max_in_flight(self) -> int:
        """How many requests keep this engine busy without queueing uselessly (async callers cap
        their concurrency at it)."""
        return 64

    # ---- capabilities ----
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes. Without a local tokenizer (remote endpoints): ~3 characters a
        token, pessimistic for English BPE vocabularies, so prompts err on the short side."""
        return len(text) // 3 + 1

    def loglikelihoods(self, prompts: Sequence[list[dict[str, str]]], continuations: Sequence[str],
                       adapter: str | None = None) -> list[tuple[float, int]]:
        """(sum of log-probabilities, token count) of each continuation as the reply to its chat
        prompt, under the base model or ``adapter``. Engines that can score set
        ``supports_loglikelihoods``."""
        raise ConfigError(f"{self.model_name}: {type(self).__name__} cannot score log-likelihoods "
                          "(the loglik protocol needs an in-process vLLM engine)")

    def check_adapters(self, names: Sequence[str]) -> None:
        """Raise a ConfigError naming every adapter in ``names`` this engine cannot serve; called
        when a stage starts, so an unknown adapter never turns into per-row errors."""
        if names:
            raise ConfigError(f"{self.model_name}: {type(self).__name__} serves no LoRA adapters "
                              f"(asked for {', '.join(names)})")

    def reset_prefix_cache(self) -> None:
        """Forget cached prompt prefixes (benchmarks compare contenders from a cold cache)."""

    def close(self) -> None:
        """Release the engine's resources (GPU memory, HTTP sessions)."""

    def __enter__(self) -> ChatEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Continue every conversation in one batched pass (plus re-ask passes for rows whose
        structured output failed to validate). Output order matches input order."""
        results = [ChatResult(text="") for _ in requests]
        pending = list(range(len(requests)))
        current = list(requests)
        for attempt in range(1, self.max_reasks + 2):
            raws = self._complete([current[i] for i in pending])
            retry = [i for i, raw in zip(pending, raws, strict=True)
                     if self._absorb(results[i], requests[i], raw, attempt)]
            if not retry or attempt > self.max_reasks:
                break
            for i in retry:
                current[i] = _with_reask(current[i], results[i])
            pending = retry
        return results

    async def achat_one(self, request: ChatRequest) -> ChatResult:
        """``chat`` for one conversation, as a coroutine: many of them share the engine at once."""
        result, current = ChatResult(text=""), request
        for attempt in range(1, self.max_reasks + 2):
            raw = await self._acomplete_one(current)
            if not self._absorb(result, request, raw, attempt) or attempt > self.max_reasks:
                break
            current = _with_reask(current, result)
        return result

    def _absorb(self, res: ChatResult, request: ChatRequest, raw: RawCompletion, attempt: int) -> bool:
        """Fold one attempt into the result; True when a re-ask could still fix it."""
        res.attempts = attempt
        res.prompt_tokens += raw.prompt_tokens
        res.completion_tokens += raw.completion_tokens
        res.cached_tokens += raw.cached_tokens
        res.text, res.finish_reason = raw.text, raw.finish_reason
        res.parsed, res.error = self._interpret(request, raw)
        return res.error is not None and not res.error.transient and res.error.kind != "rejected"

    @staticmethod
    def _interpret(request: ChatRequest, raw: RawCompletion) -> tuple[object, GenerationError | None]:
        if raw.error is not None:
            return None, raw.error
        if request.response_model is None:
            return None, None
        parsed = recover_json(raw.text, request.response_model)
        if isinstance(parsed, GenerationError):
            if raw.finish_reason == "length":
                parsed = GenerationError(kind="truncated", raw_text=raw.text,
                                         message=f"hit max_tokens before valid JSON ({parsed.message})")
            return None, parsed
        return parsed, None


def _with_reask(request: ChatRequest, failed: ChatResult) -> ChatRequest:
    assert failed.error is not None and request.response_model is not None
    messages = [*request.messages, {"role": "assistant", "content": failed.text},
                {"role": "user", "content": reask_message(failed.error, request.response_model)}]
    sampling = request.sampling
    if failed.error.kind == "truncated":  # give the retry room to finish the object
        sampling = sampling.model_copy(update={"max_tokens": sampling.max_tokens * 2})
    return ChatRequest(messages=messages, sampling=sampling, response_model=request.response_model,
                       adapter=request.adapter)
