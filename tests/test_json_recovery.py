"""JSON recovery over a corpus of malformed model outputs; failures are typed, never raised."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from ec2er.llm import GenerationError, recover_json
from ec2er.llm.json_recovery import outermost_object, strip_fences
from ec2er.schemas import ReasonedAnswer


class Verdict(BaseModel):
    ok: bool
    reason: str


RECOVERABLE = [
    ('{"reasoning": "r", "answer": "B"}', "B"),
    ('```json\n{"reasoning": "r", "answer": "C"}\n```', "C"),
    ('```\n{"reasoning": "r", "answer": "D"}\n```', "D"),
    ('Sure! Here is my answer:\n{"reasoning": "r", "answer": "A"}\nHope it helps.', "A"),
    ('{"reasoning": "r", "answer": "B",}', "B"),                      # trailing comma
    ("{'reasoning': 'r', 'answer': 'C'}", "C"),                       # single quotes
    ('{reasoning: "r", answer: "D"}', "D"),                           # unquoted keys
    ('{"reasoning": "she said {hi}", "answer": "E"}', "E"),           # braces inside strings
    ('{"reasoning": "r", "answer": "F"', "F"),                        # unclosed object
    ('```json\n{"reasoning": "cut off by the fence", "answer": "A"}', "A"),  # no closing fence
    ('  \n{"reasoning": "r",\n  "answer": "B"}  ', "B"),
    ('{"reasoning": "a \\"quoted\\" word", "answer": "C"}', "C"),
]


@pytest.mark.parametrize(("text", "answer"), RECOVERABLE)
def test_recoverable_outputs(text, answer):
    parsed = recover_json(text, ReasonedAnswer)
    assert isinstance(parsed, ReasonedAnswer), parsed
    assert parsed.answer == answer


@pytest.mark.parametrize(("text", "kind"), [
    ("", "empty"),
    ("   ", "empty"),
    ("The answer is B.", "parse"),
    ('{"reasoning": "r"}', "validation"),                  # missing field
    ('{"reasoning": "r", "answer": "banana"}', "validation"),  # fails the letter pattern
    ('["A"]', "validation"),
    ("{,,,}", "parse"),
])
def test_unrecoverable_outputs_are_typed_errors(text, kind):
    err = recover_json(text, ReasonedAnswer)
    assert isinstance(err, GenerationError)
    assert err.kind == kind
    if kind != "empty":
        assert err.raw_text == text


def test_validation_error_names_the_field():
    err = recover_json('{"ok": "maybe", "reason": "x"}', Verdict)
    assert isinstance(err, GenerationError) and err.message.startswith("ok:")


def test_helpers():
    assert strip_fences("```json\n{}\n```") == "{}"
    assert outermost_object('x {"a": {"b": 1}} y {"c": 2}') == '{"a": {"b": 1}}'
    assert outermost_object("no braces") is None
