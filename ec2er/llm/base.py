"""The engine protocol and the shared parse-and-re-ask loop.

Engines implement ``_complete`` (a batch of requests in, raw texts out). ``chat`` adds what
every engine needs on top: validation of structured outputs into the requested pydantic model,
JSON recovery, and bounded re-asks for the rows that failed, all batched.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from ec2er.llm.json_recovery import reask_message, recover_json
from ec2er.llm.types import ChatRequest, ChatResult, GenerationError, RawCompletion


class ChatEngine(abc.ABC):
    """A chat model behind one of several backends (vLLM in-process, an OpenAI endpoint)."""

    model_name: str
    max_reasks: int = 1

    @abc.abstractmethod
    def _complete(self, requests: Sequence[ChatRequest]) -> list[RawCompletion]:
        """Run every request once; per-row failures come back as ``RawCompletion.error``."""

    def add_adapter(self, name: str, path: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not load LoRA adapters")

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
            retry = []
            for i, raw in zip(pending, raws, strict=True):
                res = results[i]
                res.attempts = attempt
                res.prompt_tokens += raw.prompt_tokens
                res.completion_tokens += raw.completion_tokens
                res.cached_tokens += raw.cached_tokens
                res.text, res.finish_reason = raw.text, raw.finish_reason
                res.parsed, res.error = self._interpret(requests[i], raw)
                if res.error is not None and res.error.kind not in ("engine", "http", "timeout"):
                    retry.append(i)
            if not retry or attempt > self.max_reasks:
                break
            for i in retry:
                current[i] = _with_reask(current[i], results[i])
            pending = retry
        return results

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
