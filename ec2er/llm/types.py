"""Requests, results and typed errors shared by every engine."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from ec2er.config import SamplingConfig

Message = dict[str, str]


@functools.cache
def response_model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A response model's JSON schema, built once per model: pydantic rebuilds it on every call,
    and every structured request sends it."""
    return model.model_json_schema()  # {"role": "system" | "user" | "assistant", "content": "..."}


class GenerationError(BaseModel):
    """Why a request produced no usable output. Returned, never raised, per row."""

    kind: Literal["empty", "parse", "validation", "truncated", "rejected", "engine", "http", "timeout"]
    message: str
    raw_text: str | None = None

    @property
    def transient(self) -> bool:
        """An error of the engine or the network, not of the model's reply nor of the request
        ("rejected": a prompt over the context limit, a schema the grammar engine refuses):
        asking again in the same conversation cannot fix it, a later run may."""
        return self.kind in ("engine", "http", "timeout")


class EngineDead(RuntimeError):
    """The engine itself is gone (its process died): nothing sent to it can succeed. Raised, never
    returned per row, so the worker owning the engine can end and be replaced."""


@dataclass
class ChatRequest:
    """One conversation to continue. ``response_model`` asks for a validated object (with
    schema-constrained decoding where the engine supports it); ``adapter`` names a LoRA."""

    messages: list[Message]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    response_model: type[BaseModel] | None = None
    adapter: str | None = None


@dataclass
class RawCompletion:
    """What an engine backend returns for one request, before parsing."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: GenerationError | None = None
    cached_tokens: int = 0  # prompt tokens served from the engine's prefix cache


@dataclass
class ChatResult:
    text: str
    parsed: Any = None
    error: GenerationError | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    attempts: int = 1
    cached_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None
