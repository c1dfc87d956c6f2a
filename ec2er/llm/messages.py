"""Conversations a model's chat template accepts: the one normalisation every path that renders
a chat template applies (in-process vLLM engines, training's rendering, requests to an
OpenAI-compatible server).

ec2er's prompts open with a ``system`` message (every generation agent, evaluation's official
and loglik protocols). Some real templates refuse that: Mistral-7B-Instruct's raises on any
``system`` role and on roles that do not strictly alternate user/assistant from a user turn;
Gemma's folds a system message into the first user turn itself but requires alternation. So the
template is tried once (per template text, cached) on two probes, and only what it refuses is
changed: a system message is folded into the first user message (as Gemma's own template does),
and consecutive messages of one role are merged. A template that accepts both sees the messages
exactly as built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Message = dict[str, str]
SEPARATOR = "\n\n"  # between folded or merged contents (Gemma's own template folds with it)


@dataclass(frozen=True)
class TemplateNeeds:
    fold_system: bool  # the template refuses a system message
    merge_roles: bool  # the template refuses two consecutive messages of one role


def fold_system(messages: list[Message]) -> list[Message]:
    """System messages' contents joined to the start of the first user message after them (or
    made a user message where none follows)."""
    out: list[Message] = []
    pending: list[str] = []
    for m in messages:
        if m["role"] == "system":
            pending.append(m["content"])
        elif m["role"] == "user" and pending:
            out.append({**m, "content": SEPARATOR.join([*pending, m["content"]])})
            pending = []
        else:
            out.append(m)
    if pending:
        out.append({"role": "user", "content": SEPARATOR.join(pending)})
    return out


def merge_roles(messages: list[Message]) -> list[Message]:
    """Consecutive messages of one role as one message."""
    out: list[Message] = []
    for m in messages:
        if out and out[-1]["role"] == m["role"]:
            out[-1] = {**out[-1], "content": out[-1]["content"] + SEPARATOR + m["content"]}
        else:
            out.append(dict(m))
    return out


def normalize(messages: list[Message], needs: TemplateNeeds) -> list[Message]:
    if needs.fold_system:
        messages = fold_system(messages)
    if needs.merge_roles:
        messages = merge_roles(messages)
    return messages


_NEEDS: dict[str, TemplateNeeds] = {}  # chat template text -> what it refuses


def _renders(tokenizer: Any, messages: list[Message]) -> bool:
    from jinja2.exceptions import TemplateError  # what a template's raise_exception raises

    try:
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except TemplateError:
        return False
    return True


def template_needs(tokenizer: Any) -> TemplateNeeds:
    """What this tokenizer's chat template refuses, found by rendering two probes once."""
    template = tokenizer.chat_template
    if not isinstance(template, str):  # no template (vLLM refuses chat) or several named ones
        return TemplateNeeds(False, False)
    if template not in _NEEDS:
        _NEEDS[template] = TemplateNeeds(
            fold_system=not _renders(tokenizer, [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]),
            merge_roles=not _renders(tokenizer, [{"role": "user", "content": "u"}, {"role": "user", "content": "u"}]))
    return _NEEDS[template]


def fit_template(messages: list[Message], tokenizer: Any) -> list[Message]:
    """``messages`` as this tokenizer's chat template accepts them."""
    return normalize(messages, template_needs(tokenizer))


# What a remote server's template accepts cannot be probed without its tokenizer: a request it
# refuses (HTTP 400) is sent once more in this form, which every known template accepts.
FOLD_ALL = TemplateNeeds(fold_system=True, merge_roles=True)
