"""The training example: the source paper's instruction (``ec2er.schemas.prompts``) and a JSON
target.

An EU item yields two examples (emotion, then cause), an EA item one. The target puts the
reasoning before the answer so the model reasons first; the loss is on the target only.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from ec2er.schemas.facts import LETTERS
from ec2er.schemas.items import EUItem, Item
from ec2er.schemas.prompts import format_instruction, question_text


class ReasonedAnswer(BaseModel):
    """The JSON a trained model emits: reasoning first, then the letter."""

    model_config = ConfigDict(extra="forbid")

    reasoning: str
    answer: str = Field(pattern=r"^[A-Z]$")


class TrainingExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    example_id: str
    qid: str
    task: str
    prompt: str
    target: str

    @classmethod
    def build(cls, example_id: str, item: Item, question: str, choices: list[str], gold: str,
              reasoning: str) -> TrainingExample:
        target = ReasonedAnswer(reasoning=reasoning, answer=LETTERS[choices.index(gold)])
        return cls(example_id=example_id, qid=item.qid, task=item.task.value,
                   prompt=format_instruction(item.scenario, question, choices),
                   target=json.dumps(target.model_dump(), ensure_ascii=False))


class Question(NamedTuple):
    """One multiple-choice question an item asks (EU: emotion, then cause; EA: one)."""

    part: str
    text: str
    options: list[str]
    gold: str


def item_questions(item: Item) -> list[Question]:
    """Every question of an item, as training, the judge and human review show it."""
    emotion = item.emotion_label if isinstance(item, EUItem) else None
    return [Question(part, question_text(item, part, emotion), *options) for part, options in item.options().items()]


def training_examples(item: Item) -> list[TrainingExample]:
    """Instruction/target pairs for one curated item (its explanation is the reasoning); ids are
    ``<qid>:<part>``."""
    reasoning = item.explanation or ""
    return [TrainingExample.build(f"{item.qid}:{q.part}", item, q.text, q.options, q.gold, reasoning)
            for q in item_questions(item)]
