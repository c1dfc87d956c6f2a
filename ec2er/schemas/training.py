"""The training example: the source paper's instruction template and a JSON target.

An EU item yields two examples (emotion, then cause), an EA item one. The target puts the
reasoning before the answer so the model reasons first; the loss is on the target only.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from ec2er.schemas.facts import LETTERS
from ec2er.schemas.items import EAItem, EUItem, Item


# The scenario/question/options block: the paper's training prompt, and every other prompt
# that shows an item to a model (the curation judge) uses it as is.
QUESTION_BLOCK = """<scenario>
{scenario}
</scenario>

<question>
{question}
</question>

<options>
{options}
</options>"""

INSTRUCTION_TEMPLATE = QUESTION_BLOCK + """

Generate a JSON response with:
{{"reasoning": "<reasoning>", "answer": "{letters}"}}"""


def eu_emotion_question(subject: str) -> str:
    return f"What emotion(s) would {subject} ultimately feel in this situation?"


def eu_cause_question(subject: str, emotion: str) -> str:
    return f"Why would {subject} feel {emotion} in this situation?"


def ea_question(subject: str, question_type: str) -> str:
    noun = "action" if question_type == "Action" else "response"
    return f"In this scenario, what is the most effective {noun} for {subject}?"


def format_options(choices: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(choices))


def format_question_block(scenario: str, question: str, choices: list[str]) -> str:
    return QUESTION_BLOCK.format(scenario=scenario, question=question, options=format_options(choices))


def format_instruction(scenario: str, question: str, choices: list[str]) -> str:
    return INSTRUCTION_TEMPLATE.format(
        scenario=scenario, question=question, options=format_options(choices),
        letters="/".join(LETTERS[: len(choices)]),
    )


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
    options = item.options()
    if isinstance(item, EUItem):
        return [Question("emotion", eu_emotion_question(item.subject), *options["emotion"]),
                Question("cause", eu_cause_question(item.subject, item.emotion_label), *options["cause"])]
    assert isinstance(item, EAItem)
    return [Question("answer", ea_question(item.subject, item.question_type), *options["answer"])]


def training_examples(item: Item) -> list[TrainingExample]:
    """Instruction/target pairs for one curated item (its explanation is the reasoning); ids are
    ``<qid>:<part>``."""
    reasoning = item.explanation or ""
    return [TrainingExample.build(f"{item.qid}:{q.part}", item, q.text, q.options, q.gold, reasoning)
            for q in item_questions(item)]
