"""The questions an item asks a model, worded once, and the paper's instruction around them.

Training teaches the instruction (``instruction``: the question block, then the JSON answer
line) and evaluation's ``cot`` protocol asks exactly the same text, so an adapter is asked at
evaluation what it learned; the curation judge and human review show the same question block.
EmoBench's own prompt (evaluation's ``official`` protocol) frames the same questions in its own
template and in Chinese too, from the wordings below. Both stages import this module; neither
imports the other.

``TEMPLATE_VERSION`` names the wording: change any text here and bump it (training records it in
``training.json``, evaluation keys its resumable parts on it).
"""

from __future__ import annotations

from ec2er.schemas.facts import LETTERS
from ec2er.schemas.items import EAItem, EUItem, Item

TEMPLATE_VERSION = "t2"

# EmoBench's question wordings (its prompts.yaml), per language. The paper's instruction uses the
# English ones for every item.
EU_EMOTION_Q = {"en": "What emotion(s) would {subject} ultimately feel in this situation?",
                "zh": "在这种情况下，{subject}最终会感受到什么情绪？"}
EU_CAUSE_Q = {"en": "Why would {subject} feel these emotions in this situation?",
              "zh": "{subject}为什么会在这种情况下感受到这些情绪？"}
EA_Q = {"en": "In this scenario, what is the most effective {q_type} for {subject}?",
        "zh": "在这个场景中，{subject}最有效的{q_type}是什么？"}
# The paper asks the cause of the emotion itself (training: the gold; evaluation: the one chosen).
EU_CAUSE_OF_Q = "Why would {subject} feel {emotion} in this situation?"

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
    return EU_EMOTION_Q["en"].format(subject=subject)


def eu_cause_question(subject: str, emotion: str | None) -> str:
    """The cause of ``emotion``; EmoBench's own neutral wording when no emotion is known (a model
    that chose none in the first turn)."""
    if emotion:
        return EU_CAUSE_OF_Q.format(subject=subject, emotion=emotion)
    return EU_CAUSE_Q["en"].format(subject=subject)


def ea_question(subject: str, question_type: str) -> str:
    """EmoBench's question with its type as a noun in the sentence ("action", "response");
    EmoBench's own prompt shows the type as the data spells it ("Action")."""
    return EA_Q["en"].format(q_type=str(question_type).lower(), subject=subject)


def question_text(item: Item, part: str, emotion: str | None = None) -> str:
    """The question of one part of an item: "emotion" or "cause" (EU), "answer" (EA)."""
    if isinstance(item, EAItem):
        return ea_question(item.subject, item.question_type)
    assert isinstance(item, EUItem)
    return eu_emotion_question(item.subject) if part == "emotion" else eu_cause_question(item.subject, emotion)


def format_options(choices: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(choices))


def format_question_block(scenario: str, question: str, choices: list[str]) -> str:
    return QUESTION_BLOCK.format(scenario=scenario, question=question, options=format_options(choices))


def format_instruction(scenario: str, question: str, choices: list[str]) -> str:
    return INSTRUCTION_TEMPLATE.format(
        scenario=scenario, question=question, options=format_options(choices),
        letters="/".join(LETTERS[: len(choices)]),
    )


def instruction(item: Item, part: str, choices: list[str], emotion: str | None = None) -> str:
    """The user turn training teaches and evaluation's cot protocol sends: one part's question
    over ``choices`` (the item's own order in training, a rotation of it in evaluation)."""
    return format_instruction(item.scenario, question_text(item, part, emotion), choices)
