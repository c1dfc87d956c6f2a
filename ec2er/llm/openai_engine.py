"""``OpenAICompatibleEngine``: any OpenAI-compatible chat endpoint (a vLLM server, ec2er's own
Ray Serve app, a hosted API).

Bounded concurrency with an asyncio semaphore; retries with exponential backoff on 408/409/429/5xx
and connection errors come from the ``openai`` client itself (``max_retries``), which implements
exactly that policy; per-request timeouts; ``response_format`` JSON schema from the pydantic model.
A LoRA adapter is addressed as the model name, the convention of vLLM's server and ours.

A Serve replica lost with its node answers the requests it held with HTTP 500 through Serve's
proxy (a proxy lost with the node drops its connections): both are among what the client retries,
``max_retries`` times with backoff (0.5 s doubling, 8 s at most), long enough for Serve to route
the retry to a replica left (tests/test_multinode_serving.py counts every answer while a node is
lost). A request that still fails is a row error of kind "http", which generation tries again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from ec2er.config import read_secret
from ec2er.llm.kinds.openai import OpenAIEngineConfig
from ec2er.errors import ConfigError
from ec2er.llm.base import ChatEngine
from ec2er.llm.messages import FOLD_ALL, normalize
from ec2er.llm.types import ChatRequest, GenerationError, RawCompletion, response_model_schema


class OpenAICompatibleEngine(ChatEngine):
    def __init__(self, config: OpenAIEngineConfig):
        self.config = config
        self.model_name = config.model
        self.max_reasks = config.max_reasks

    def _client(self) -> Any:
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.config.base_url,
                           api_key=read_secret(self.config.api_key_env, self.config.api_key_file) or "EMPTY",
                           max_retries=self.config.max_retries, timeout=self.config.timeout_s)

    def served_name(self, adapter: str | None) -> str:
        """The model name a request carries: the base model's, or the name the endpoint serves an
        adapter under (``engine.adapters`` maps a label to it; by default the label itself)."""
        if adapter is None:
            return self.config.model
        return self.config.adapters.get(adapter, adapter)

    def check_adapters(self, names: Sequence[str]) -> None:
        """Adapters live on the server, addressed as model names: every name must be among the
        endpoint's ``/v1/models`` (ec2er's server lists every adapter of its registry)."""
        self.check_served([self.served_name(n) for n in names])

    def check_served(self, names: Sequence[str]) -> None:
        """Raise a ConfigError unless the endpoint serves every one of these model names."""
        if not names:
            return
        served = set(self.list_models())
        unknown = sorted(set(names) - served)
        if unknown:
            raise ConfigError(f"{self.config.base_url}: does not serve {', '.join(unknown)} "
                              f"(it serves {', '.join(sorted(served)) or 'nothing'})")

    def list_models(self) -> list[str]:
        """The model ids the endpoint serves (``GET /v1/models``); unreachable is a ConfigError."""
        import openai

        async def ids() -> list[str]:
            client = self._client()
            try:
                return [m.id async for m in client.models.list()]
            finally:
                await client.close()

        try:
            return _run_coroutine(ids())
        except openai.APIError as e:
            raise ConfigError(f"{self.config.base_url}: cannot list models ({e})") from None

    def _complete(self, requests: Sequence[ChatRequest]) -> list[RawCompletion]:
        return _run_coroutine(self._complete_all(requests))

    @property
    def max_in_flight(self) -> int:
        return self.config.max_concurrency

    async def _acomplete_one(self, request: ChatRequest) -> RawCompletion:
        """One request on a client (and a concurrency gate) kept for the running event loop."""
        loop = asyncio.get_running_loop()
        if getattr(self, "_loop", None) is not loop:
            self._loop, self._aclient = loop, self._client()
            self._gate = asyncio.Semaphore(self.config.max_concurrency)
        return await self._complete_one(self._aclient, self._gate, request)

    async def _complete_all(self, requests: Sequence[ChatRequest]) -> list[RawCompletion]:
        client = self._client()
        gate = asyncio.Semaphore(self.config.max_concurrency)
        try:
            return await asyncio.gather(*(self._complete_one(client, gate, r) for r in requests))
        finally:
            await client.close()

    def request_body(self, r: ChatRequest) -> dict[str, Any]:
        s = r.sampling
        messages = normalize(r.messages, FOLD_ALL) if self.folds_messages else r.messages
        body: dict[str, Any] = dict(model=self.served_name(r.adapter), messages=messages,
                                    temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens)
        if s.seed is not None:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = s.stop
        if s.presence_penalty:
            body["presence_penalty"] = s.presence_penalty
        if s.repetition_penalty != 1.0:
            body["extra_body"] = {"repetition_penalty": s.repetition_penalty}
        if r.response_model is not None and self.config.structured_outputs:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": r.response_model.__name__, "schema": response_model_schema(r.response_model)}}
        return body

    # False until the server refuses (HTTP 400) a conversation it accepts once normalised
    # (``ec2er.llm.messages``: its chat template rejects a system message or repeated roles); from
    # then on every request is sent normalised.
    folds_messages = False

    async def _create(self, client: Any, r: ChatRequest) -> Any:
        import openai

        try:
            return await client.chat.completions.create(**self.request_body(r))
        except openai.BadRequestError:
            if self.folds_messages or normalize(r.messages, FOLD_ALL) == r.messages:
                raise
        resp = await client.chat.completions.create(
            **(self.request_body(r) | {"messages": normalize(r.messages, FOLD_ALL)}))
        self.folds_messages = True
        return resp

    async def _complete_one(self, client: Any, gate: asyncio.Semaphore, r: ChatRequest) -> RawCompletion:
        import openai

        async with gate:
            try:
                resp = await self._create(client, r)
            except openai.APITimeoutError as e:
                return RawCompletion(text="", error=GenerationError(kind="timeout", message=str(e)))
            except openai.APIError as e:
                status = getattr(e, "status_code", None)
                msg = f"HTTP {status}: {e.message}" if status else str(e)
                # a 4xx the client does not retry is the request's own fault: no later run fixes it
                kind = "rejected" if status and 400 <= status < 500 and status not in (408, 409, 429) else "http"
                return RawCompletion(text="", error=GenerationError(kind=kind, message=msg))
        choice = resp.choices[0]
        usage = resp.usage
        return RawCompletion(text=choice.message.content or "", finish_reason=choice.finish_reason,
                             prompt_tokens=usage.prompt_tokens if usage else 0,
                             completion_tokens=usage.completion_tokens if usage else 0,
                             cached_tokens=_cached_tokens(usage))


def _cached_tokens(usage: Any) -> int:
    details = getattr(usage, "prompt_tokens_details", None)  # absent on servers that don't report it
    return getattr(details, "cached_tokens", None) or 0


def _run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even when the caller (a Ray Serve replica,
    a notebook) already runs an event loop on this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]
