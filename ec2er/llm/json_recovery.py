"""Recover a pydantic object from a model's text when constrained decoding was not available.

Order of attempts: the text as is; the text without Markdown fences; the outermost JSON
object found in it; that object after ``json_repair`` (a maintained library for trailing
commas, single quotes, unquoted keys, unclosed brackets). Each failure is a typed
``GenerationError``, never an exception, so one bad row cannot kill a batch.
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

import json_repair
from pydantic import BaseModel, ValidationError

from ec2er.llm.types import GenerationError

M = TypeVar("M", bound=BaseModel)

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def strip_fences(text: str) -> str:
    """Content of the first ```json ... ``` block, or the text itself."""
    m = _FENCE.search(text)
    if m:
        return m.group(1).strip()
    # an opening fence whose closing fence was cut off by max_tokens
    return re.sub(r"^```(?:json|JSON)?\s*", "", text.strip())


def outermost_object(text: str) -> str | None:
    """The first balanced {...} in ``text`` (string-aware), or its unbalanced tail if the text
    was truncated (``json_repair`` can close it)."""
    start = text.find("{")
    if start < 0:
        return None
    depth, in_str, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]


def _validate(obj: object, model: type[M]) -> M | GenerationError:
    try:
        return model.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        return GenerationError(kind="validation", message=f"{loc}: {err['msg']}")


def recover_json(text: str, model: type[M]) -> M | GenerationError:
    """Parse ``text`` into ``model`` as leniently as is safe; a GenerationError otherwise."""
    if not text or not text.strip():
        return GenerationError(kind="empty", message="empty response", raw_text=text)
    body = strip_fences(text)
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        candidate = outermost_object(body)
        if candidate is None:
            return GenerationError(kind="parse", message="no JSON object in response", raw_text=text)
        try:
            obj = json.loads(candidate)
        except json.JSONDecodeError:
            obj = json_repair.loads(candidate)
            if not isinstance(obj, dict) or not obj:
                return GenerationError(kind="parse", message="unrecoverable JSON", raw_text=text)
    result = _validate(obj, model)
    if isinstance(result, GenerationError):
        result.raw_text = text
    return result


def reask_message(error: GenerationError, model: type[BaseModel]) -> str:
    """The follow-up user turn that asks the model to fix its previous answer."""
    fields = ", ".join(model.model_json_schema().get("properties", {}))
    return (f"Your previous reply could not be used ({error.kind}: {error.message}). "
            f"Reply again with only one JSON object with the fields: {fields}.")
