"""Constrained-decoding schemas for extracted items, and their conversion to EUItem/EAItem.

The drafts are what the model is asked to write; their JSON schemas (derived by pydantic) are
shaped so that constrained decoding cannot produce an invalid item, even from a random model:
emotions are an enum of the taxonomy, there are exactly 6 emotion choices, 4-6 cause choices and
exactly 4 EA choices, golds are indices into the choices, strings and lists are bounded (so a
rambling model still closes the object within max_tokens), and the categories are not the model's
to choose: the run assigns them to balance the dataset. What a schema cannot say (no duplicated
options) is checked on conversion; such a row is recorded as failed, never written.
"""

from __future__ import annotations

import random
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ec2er.schemas.items import EAItem, EUItem, Provenance
from ec2er.schemas.taxonomy import (
    EMOTIONS,
    EU_FINE_TO_COARSE,
    EACategory,
    EAQuestionType,
    EUFineCategory,
)

EmotionLabel = StrEnum("EmotionLabel", {e: e for e in EMOTIONS})
MAX_TURNS = 14
TurnIndex = Literal[tuple(range(MAX_TURNS))]  # type: ignore[valid-type]


def _bounded(min_length: int, max_length: int) -> Any:
    """A string whose schema caps its length for the decoder (an item at its bounds still fits
    ~1000 tokens) without making a longer one invalid: xgrammar does not always enforce
    maxLength, and EmoBench's layout has no such limit."""
    return Annotated[str, Field(min_length=min_length, json_schema_extra={"maxLength": max_length})]


Scenario = _bounded(20, 450)  # 2-5 sentences
Subject = _bounded(1, 30)
Option = _bounded(3, 100)
Explanation = _bounded(10, 300)


class _Draft(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EUDraft(_Draft):
    """One Emotional Understanding item as the extractor writes it."""

    scenario: Scenario = Field(description="third-person scenario, self-contained, from the dialogue")
    subject: Subject = Field(description="the person whose emotion is asked about")
    emotion_choices: list[EmotionLabel] = Field(min_length=6, max_length=6)
    cause_choices: list[Option] = Field(min_length=4, max_length=6)
    explanation: Explanation = Field(description="the emotional reasoning that leads to the answers")
    emotion_answer: Literal[0, 1, 2, 3, 4, 5] = Field(description="index of the correct emotion")
    cause_answer: Literal[0, 1, 2, 3] = Field(description="index of the correct cause")
    evidence_turns: list[TurnIndex] = Field(default_factory=list, max_length=4)


class EADraft(_Draft):
    """One Emotional Application item as the extractor writes it."""

    scenario: Scenario
    subject: Subject
    choices: list[Option] = Field(min_length=4, max_length=4)
    explanation: Explanation
    answer: Literal[0, 1, 2, 3] = Field(description="index of the most effective choice")
    evidence_turns: list[TurnIndex] = Field(default_factory=list, max_length=4)


def _distinct(options: list[str], field: str) -> None:
    keys = [" ".join(o.lower().split()) for o in options]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{field}: duplicated options")
    if any(not k for k in keys):
        raise ValueError(f"{field}: blank option")


def _shuffled(options: list[str], gold: int, rng: random.Random) -> tuple[list[str], str]:
    """Options in a seeded random order: models put the gold first far too often."""
    order = list(range(len(options)))
    rng.shuffle(order)
    return [options[i] for i in order], options[gold]


def _evidence(turns: list[int], n_turns: int) -> list[int]:
    return sorted({t for t in turns if t < n_turns})


def eu_item(draft: EUDraft, qid: str, fine: EUFineCategory, provenance: Provenance,
            n_turns: int) -> EUItem:
    """Raises ValueError when the draft has duplicated options (the schema cannot forbid it)."""
    emotions = [e.value for e in draft.emotion_choices]
    _distinct(emotions, "emotion_choices")
    _distinct(draft.cause_choices, "cause_choices")
    rng = random.Random(qid)
    emotion_choices, emotion_label = _shuffled(emotions, draft.emotion_answer, rng)
    cause_choices, cause_label = _shuffled([c.strip() for c in draft.cause_choices], draft.cause_answer, rng)
    return EUItem(
        qid=qid, language="en", coarse_category=EU_FINE_TO_COARSE[fine], finegrained_category=fine,
        scenario=draft.scenario.strip(), subject=draft.subject.strip(),
        emotion_choices=emotion_choices, emotion_label=emotion_label,
        cause_choices=cause_choices, cause_label=cause_label, explanation=draft.explanation.strip(),
        provenance=provenance.model_copy(update={"turn_indices": _evidence(draft.evidence_turns, n_turns)}),
    )


def ea_item(draft: EADraft, qid: str, category: EACategory, question_type: EAQuestionType,
            provenance: Provenance, n_turns: int) -> EAItem:
    _distinct(draft.choices, "choices")
    choices, label = _shuffled([c.strip() for c in draft.choices], draft.answer, random.Random(qid))
    return EAItem(
        qid=qid, language="en", category=category, question_type=question_type,
        scenario=draft.scenario.strip(), subject=draft.subject.strip(), choices=choices, label=label,
        explanation=draft.explanation.strip(),
        provenance=provenance.model_copy(update={"turn_indices": _evidence(draft.evidence_turns, n_turns)}),
    )
