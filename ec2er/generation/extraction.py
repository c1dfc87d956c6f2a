"""Constrained-decoding schemas for extracted items, and their conversion to EUItem/EAItem.

The drafts are what the model is asked to write; their JSON schemas (derived by pydantic) are
shaped so that constrained decoding cannot produce an invalid item, even from a random model:
emotions are an enum of the taxonomy, the right answers are named fields beside lists of wrong
ones (wrong emotions, causes and worse EA options), strings and lists are bounded
(so a rambling model still closes the object within max_tokens), and the categories are not the
model's to choose: the run assigns them to balance the dataset. What a schema cannot say (all
options different) is repaired on conversion where that is sound (repeated distractor emotions
are replaced from the taxonomy) and otherwise makes the row fail with its reason, never written.
"""

from __future__ import annotations

import random
import re
from copy import copy
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_origin

from pydantic import BaseModel, ConfigDict, Field, create_model

from ec2er.schemas.checks import normalized
from ec2er.schemas.facts import EA_OPTIONS, EU_CAUSE_OPTIONS, EU_EMOTION_OPTIONS, MAX_TURNS
from ec2er.schemas.items import EAItem, EUItem, Provenance
from ec2er.schemas.taxonomy import (
    EMOTIONS,
    EU_FINE_TO_COARSE,
    EACategory,
    EAQuestionType,
    EUFineCategory,
)

EmotionLabel = StrEnum("EmotionLabel", {e: e for e in EMOTIONS})
TurnIndex = Literal[tuple(range(MAX_TURNS))]  # type: ignore[valid-type]


def _decoded_as(pattern: str, min_length: int) -> Any:
    """A string of at least ``min_length`` characters whose schema, for the decoder, is
    ``pattern`` instead: conversion accepts what EmoBench's layout does ("say yes"), decoding is
    steered to sentences. The pattern replaces the length bound in the schema: xgrammar cannot
    combine them (vLLM refuses such a schema)."""

    def schema(json_schema: dict[str, Any]) -> None:
        json_schema.pop("minLength", None)
        json_schema["pattern"] = pattern

    return Annotated[str, Field(min_length=min_length, json_schema_extra=schema)]


# Sentences of words: a capital, words of letters separated by single spaces (a comma allowed),
# a full stop. A small model otherwise answers with schema words ("worst_choices"), one word
# ("furthermore"), timestamps, runs of letters or cut-off fragments, none of them an answer. No
# quotes, braces or newlines, so it cannot wander out of the string either. Words and sentences
# are bounded so that any model (a random one too) closes the object within max_tokens; those
# bounds make each dialogue's schema (for_persons) take a few seconds to compile.
_NEXT_WORD = r"(,? [A-Za-z0-9][a-z0-9'-]{0,14})"
_CAPITALIZED = r"[A-Z][a-z']{0,14}"


@dataclass(frozen=True)
class Sentences:
    """The shape of a sentence-like field: ``count`` sentences of ``words`` words each."""

    words: tuple[int, int]
    count: tuple[int, int]
    min_chars: int  # what conversion requires (the pattern is for the decoder only)

    def pattern(self, opener: str = _CAPITALIZED) -> str:
        """``opener``: the first sentence's first word (for_persons: one of the persons)."""
        tail = rf"{_NEXT_WORD}{{{self.words[0] - 1},{self.words[1] - 1}}}[.!?]"
        more = rf"( {_CAPITALIZED}{tail}){{{self.count[0] - 1},{self.count[1] - 1}}}" if self.count[1] > 1 else ""
        return f"^{opener}{tail}{more}$"

    def annotation(self, opener: str = _CAPITALIZED) -> Any:
        return _decoded_as(self.pattern(opener), self.min_chars)


SCENARIO = Sentences((3, 20), (2, 4), 20)
OPTION = Sentences((4, 16), (1, 1), 3)  # "She calls her sister first."
# 8 words at least: more than an echo of the instruction's own phrase ("Why the best choice is best.")
EXPLANATION = Sentences((8, 25), (1, 2), 10)

Scenario = SCENARIO.annotation()
# EmoBench's subjects are a name or a short noun phrase ("Kai", "Jane's mother", "the waitress"):
# one to three words of letters, so a small model cannot put a clause (or a brace) where the name
# belongs. The pattern bounds the length itself: xgrammar cannot combine a pattern with
# minLength/maxLength (vLLM refuses such a schema). A dialogue's own schema narrows it to the
# dialogue's persons (for_persons).
Subject = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z'-]{0,19}( [A-Za-z'-]{1,20}){0,2}$")]
Option = OPTION.annotation()
Explanation = EXPLANATION.annotation()


WRONG_EMOTIONS = EU_EMOTION_OPTIONS - 1
WRONG_CAUSES = (EU_CAUSE_OPTIONS[0] - 1, EU_CAUSE_OPTIONS[1] - 1)
WORSE_CHOICES = EA_OPTIONS - 1


class _Draft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # field -> its sentence shape, which a dialogue's schema opens with one of its persons
    SENTENCE_FIELDS: ClassVar[dict[str, Sentences]]


class EUDraft(_Draft):
    """One Emotional Understanding item as the extractor writes it. The right answers are named
    fields, not indices into lists: a small model names the right emotion far more reliably than
    it counts positions (the run shuffles the options afterwards)."""

    # the subject first: the scenario is then written about the person already named
    subject: Subject = Field(description="the person whose emotion is asked about")
    scenario: Scenario = Field(description="third-person scenario, self-contained, from the dialogue")
    correct_emotion: EmotionLabel
    wrong_emotions: list[EmotionLabel] = Field(min_length=WRONG_EMOTIONS, max_length=WRONG_EMOTIONS)
    correct_cause: Option
    wrong_causes: list[Option] = Field(min_length=WRONG_CAUSES[0], max_length=WRONG_CAUSES[1])
    explanation: Explanation = Field(description="the emotional reasoning that leads to the answers")
    evidence_turns: list[TurnIndex] = Field(default_factory=list, max_length=4)

    SENTENCE_FIELDS = {"scenario": SCENARIO, "correct_cause": OPTION, "wrong_causes": OPTION,
                       "explanation": EXPLANATION}


class EADraft(_Draft):
    """One Emotional Application item as the extractor writes it (the best option by name)."""

    subject: Subject = Field(description="the person who must act or speak")
    scenario: Scenario
    best_choice: Option
    worse_choices: list[Option] = Field(min_length=WORSE_CHOICES, max_length=WORSE_CHOICES + 2)
    explanation: Explanation
    evidence_turns: list[TurnIndex] = Field(default_factory=list, max_length=4)

    SENTENCE_FIELDS = {"scenario": SCENARIO, "best_choice": OPTION, "worse_choices": OPTION,
                       "explanation": EXPLANATION}


Draft = TypeVar("Draft", bound=_Draft)


@lru_cache(maxsize=1024)
def for_persons(draft: type[Draft], persons: tuple[str, ...]) -> type[Draft]:
    """``draft`` with ``subject`` one of ``persons`` and every answer, scenario and explanation
    opening with one of them ("Amira tells her sister ...", "Amira's boss ..."), for constrained
    decoding (same name, so logs and engines see EUDraft/EADraft). A small model otherwise fills
    these with the instruction's own phrases ("A sentence or two on ...") or the therapist's
    lines, none of them about anyone. The generator passes the client's name
    (``ec2er.generation.persons``)."""
    opener = "(" + "|".join(re.escape(p) for p in persons) + ")('s)?"
    fields: dict[str, Any] = {"subject": (Literal[persons], Field(description=draft.model_fields["subject"].description))}
    for name, shape in draft.SENTENCE_FIELDS.items():
        field, sentence = draft.model_fields[name], shape.annotation(opener)
        if get_origin(field.annotation) is list:  # the list's bounds stay, its items change
            fields[name] = (list[sentence], copy(field))
        else:  # a new field: the old one's schema would set the old pattern again
            fields[name] = (sentence, Field(description=field.description))
    return create_model(draft.__name__, __base__=draft, __doc__=draft.__doc__, **fields)


def _distinct_wrong(gold: str, wrong: list[str], need: int, field: str) -> list[str]:
    """The wrong options that differ from the gold and from each other, in order; at least
    ``need`` of them or ValueError (a schema cannot say "all different", and small models repeat
    themselves, which is why they may write more than needed)."""
    seen, out = {normalized(gold)}, []
    for option in (o.strip() for o in wrong):
        if normalized(option) and normalized(option) not in seen:
            seen.add(normalized(option))
            out.append(option)
    if not normalized(gold) or len(out) < need:
        raise ValueError(f"{field}: only {len(out)} distinct wrong options, {need} needed")
    return out


def _wrong_emotions(gold: str, wrong: list[str], rng: random.Random) -> list[str]:
    """Distinct distractor emotions: the model's, then (for repeats) emotions drawn from the
    taxonomy with the item's seed, so a repetitive model still yields a valid item."""
    out = [e for i, e in enumerate(wrong) if e != gold and e not in wrong[:i]]
    pool = [e for e in EMOTIONS if e != gold and e not in out]
    return out + rng.sample(pool, WRONG_EMOTIONS - len(out))


def _shuffled(gold: str, wrong: list[str], rng: random.Random) -> list[str]:
    """Options in a seeded random order: models put the gold first far too often."""
    options = [gold, *wrong]
    rng.shuffle(options)
    return options


def _evidence(turns: list[int], n_turns: int) -> list[int]:
    return sorted({t for t in turns if t < n_turns})


def eu_item(draft: EUDraft, qid: str, fine: EUFineCategory, provenance: Provenance,
            n_turns: int) -> EUItem:
    """Raises ValueError when fewer than 3 distinct wrong causes remain."""
    rng = random.Random(qid)
    gold_emotion = draft.correct_emotion.value
    wrong_emotions = _wrong_emotions(gold_emotion, [e.value for e in draft.wrong_emotions], rng)
    gold_cause = draft.correct_cause.strip()
    wrong_causes = _distinct_wrong(gold_cause, draft.wrong_causes, WRONG_CAUSES[0], "wrong_causes")
    return EUItem(
        qid=qid, language="en", coarse_category=EU_FINE_TO_COARSE[fine], finegrained_category=fine,
        scenario=draft.scenario.strip(), subject=draft.subject.strip(),
        emotion_choices=_shuffled(gold_emotion, wrong_emotions, rng), emotion_label=gold_emotion,
        cause_choices=_shuffled(gold_cause, wrong_causes, rng), cause_label=gold_cause,
        explanation=draft.explanation.strip(),
        provenance=provenance.model_copy(update={"turn_indices": _evidence(draft.evidence_turns, n_turns)}),
    )


def ea_item(draft: EADraft, qid: str, category: EACategory, question_type: EAQuestionType,
            provenance: Provenance, n_turns: int) -> EAItem:
    gold = draft.best_choice.strip()
    wrong = _distinct_wrong(gold, draft.worse_choices, WORSE_CHOICES, "worse_choices")[:WORSE_CHOICES]
    return EAItem(
        qid=qid, language="en", category=category, question_type=question_type,
        scenario=draft.scenario.strip(), subject=draft.subject.strip(),
        choices=_shuffled(gold, wrong, random.Random(qid)), label=gold,
        explanation=draft.explanation.strip(),
        provenance=provenance.model_copy(update={"turn_indices": _evidence(draft.evidence_turns, n_turns)}),
    )
