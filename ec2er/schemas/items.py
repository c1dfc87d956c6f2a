"""Benchmark items in EmoBench's exact field layout, plus ec2er's own optional fields.

EmoBench rows validate into these models and serialize back to the same JSON (our own fields
are omitted when unset; EA's key "question type" keeps its space through an alias).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from ec2er.schemas.taxonomy import (
    EU_FINE_TO_COARSE,
    EACategory,
    EAQuestionType,
    EUCoarseCategory,
    EUFineCategory,
    Language,
    Task,
)

NonEmpty = Annotated[str, Field(min_length=1)]


class Provenance(BaseModel):
    """Where a generated item came from: enough to find the turns it rests on and rerun it."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(description="mads | concise | external")
    dialogue_id: str
    turn_indices: list[int] = Field(default_factory=list)
    generator_model: str
    prompt_version: str
    persona_id: str | None = None
    theme_id: str | None = None


OWN_FIELDS = ("explanation", "provenance", "confidence", "flags")


class OptionField(NamedTuple):
    """One multiple-choice question of an item: its name and the fields holding its options and
    its gold answer (EU asks two questions, EA one)."""

    part: str     # "emotion" | "cause" | "answer"
    choices: str  # the field with the options, e.g. "emotion_choices"
    gold: str     # the field with the gold option's text, e.g. "emotion_label"


class ItemBase(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    qid: NonEmpty
    language: Language
    # ec2er's own fields (absent from EmoBench rows)
    explanation: str | None = Field(None, description="emotional chain-of-thought behind the gold")
    provenance: Provenance | None = None
    confidence: float | None = Field(None, ge=0.0, le=1.0)
    flags: list[str] | None = Field(None, description="curation flags, e.g. 'ambiguous'")

    OPTION_FIELDS: ClassVar[tuple[OptionField, ...]] = ()

    def options(self) -> dict[str, tuple[list[str], str]]:
        """part -> (options in this item's order, the gold option's text)."""
        return {f.part: (getattr(self, f.choices), getattr(self, f.gold)) for f in self.OPTION_FIELDS}

    @model_serializer(mode="wrap")
    def _own_fields_last(self, handler: Any) -> dict[str, Any]:
        """EmoBench's fields in its order first, ours after (pydantic puts base fields first)."""
        data = handler(self)
        own = [k for k in OWN_FIELDS if k in data]
        return {**{k: v for k, v in data.items() if k not in OWN_FIELDS}, **{k: data[k] for k in own}}


def _gold_among(label: str, choices: list[str], field: str) -> None:
    if label not in choices:
        raise ValueError(f"{field} {label!r} is not among the choices")


class EUItem(ItemBase):
    """Emotional Understanding: which emotion the subject feels, and why (two gold answers)."""

    task: ClassVar[Task] = Task.EU
    OPTION_FIELDS: ClassVar[tuple[OptionField, ...]] = (
        OptionField("emotion", "emotion_choices", "emotion_label"),
        OptionField("cause", "cause_choices", "cause_label"),
    )
    coarse_category: EUCoarseCategory
    finegrained_category: EUFineCategory
    scenario: NonEmpty
    subject: NonEmpty
    emotion_choices: list[NonEmpty] = Field(min_length=2)
    emotion_label: NonEmpty
    cause_choices: list[NonEmpty] = Field(min_length=2)
    cause_label: NonEmpty

    @model_validator(mode="after")
    def _consistent(self) -> EUItem:
        if EU_FINE_TO_COARSE[self.finegrained_category] != self.coarse_category:
            raise ValueError(
                f"finegrained_category {self.finegrained_category.value!r} does not belong to "
                f"coarse_category {self.coarse_category.value!r}"
            )
        _gold_among(self.emotion_label, self.emotion_choices, "emotion_label")
        _gold_among(self.cause_label, self.cause_choices, "cause_label")
        return self

    @property
    def category(self) -> str:
        return self.coarse_category.value


class EAItem(ItemBase):
    """Emotional Application: the most effective action or response for the subject."""

    task: ClassVar[Task] = Task.EA
    OPTION_FIELDS: ClassVar[tuple[OptionField, ...]] = (OptionField("answer", "choices", "label"),)
    category: EACategory
    question_type: EAQuestionType = Field(alias="question type")
    scenario: NonEmpty
    subject: NonEmpty
    choices: list[NonEmpty] = Field(min_length=2)
    label: NonEmpty

    @model_validator(mode="after")
    def _consistent(self) -> EAItem:
        _gold_among(self.label, self.choices, "label")
        return self


# Field order of EmoBench's own files; our fields follow.
EU_FIELDS = ("qid", "language", "coarse_category", "finegrained_category", "scenario", "subject",
             "emotion_choices", "emotion_label", "cause_choices", "cause_label")
EA_FIELDS = ("qid", "language", "category", "question type", "scenario", "subject", "choices", "label")

Item = EUItem | EAItem
ITEM_MODELS: dict[Task, type[EUItem] | type[EAItem]] = {Task.EU: EUItem, Task.EA: EAItem}


def detect_task(obj: dict[str, Any]) -> Task:
    """EU rows carry emotion_choices, EA rows carry choices; anything else is neither."""
    if "emotion_choices" in obj or "cause_choices" in obj:
        return Task.EU
    if "choices" in obj or "question type" in obj:
        return Task.EA
    raise ValueError("cannot tell EU from EA: no 'emotion_choices' or 'choices' field")


def parse_item(obj: dict[str, Any]) -> Item:
    """Validate one JSON object as an EU or EA item (detected from its fields).

    Raises ``ValueError`` (or pydantic's ``ValidationError``, a subclass) on invalid input.
    """
    return ITEM_MODELS[detect_task(obj)].model_validate(obj)


__all__ = [
    "EAItem", "EUItem", "EA_FIELDS", "EU_FIELDS", "ITEM_MODELS", "Item", "ItemBase", "OptionField", "Provenance",
    "ValidationError", "detect_task", "parse_item",
]
