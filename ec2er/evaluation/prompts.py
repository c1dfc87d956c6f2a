"""Evaluation prompts, one place, versioned (``PROMPT_VERSION``).

- ``official``: EmoBench's own prompts (github.com/Sahandfer/EmoBench, src/configs/prompts.yaml and
  response.yaml, MIT): system instructions + JSON answer format, then scenario, question(s) and
  lettered choices; EU asks the emotion (Question 1) then the cause (Question 2) in one prompt.
- ``constrained``: the same messages, decoded under a JSON schema whose letters are enums.
- ``cot``: the source paper's instruction (``ec2er.schemas.prompts.instruction``, the very text
  training teaches), {"reasoning","answer"}; EU is asked in two turns like training: emotion, then
  the cause of the emotion the model chose.
- ``loglik``: scenario + question, each option's text scored as the assistant's reply.
"""

from __future__ import annotations

from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, create_model

from ec2er.evaluation.rotation import rotate
from ec2er.schemas.items import EAItem, EUItem, Item
from ec2er.schemas.facts import LETTERS
from ec2er.schemas.prompts import EA_Q, EU_CAUSE_Q, EU_EMOTION_Q, TEMPLATE_VERSION, format_options, instruction

# eval-v2: the question wordings come from ec2er.schemas.prompts, shared with training
PROMPT_VERSION = f"eval-v2+{TEMPLATE_VERSION}"

Messages = list[dict[str, str]]

SYSTEM = {
    "en": ("# Instructions\n\n"
           "In this task, you are presented with a scenario, a question, and multiple choices.\n"
           "Carefully analyze the scenario and take the perspective of the individual involved.\n"
           "Then, select the option that best reflects their perspective or emotional response.\n"),
    "zh": ("# 说明\n在这个任务中，你会面临一个场景、一个问题和多个选项。\n"
           "仔细分析场景，并从相关人员的角度进行思考。\n然后，选择最能反映他们的观点或情绪反应的选项。\n"),
}
OUTPUT_HEADER = {"en": "\n# Output\n", "zh": "\n# 输出\n"}
ANSWER_ONLY = {
    "en": ("Provide only one single correct answer to this question. Do not provide any additional "
           "information or explanations. The response should be in the following JSON format:"),
    "zh": "只提供一个正确的答案。 不要提供任何额外的信息或解释。 回复应采用以下JSON格式：",
}
ANSWER_KEYS = {
    "EA": {"en": '"answer": "<Respond with the corresponding letter numbering>"',
           "zh": '"answer": "<用相应的字母进行回答>"'},
    "EU": {"en": ('"answer_q1": "<Respond to the Question 1 with the corresponding letter numbering>",\n'
                  '"answer_q2": "<Respond to the Question 2 with the corresponding letter numbering>"'),
           "zh": '"answer_q1": "<用相应的字母进行回答问题1>",\n"answer_q2": "<用相应的字母进行回答问题2>"'},
}
EA_USER = {
    "en": "## Scenario\n{scenario}\n\n## Question\n" + EA_Q["en"] + "\n\n## Choices\n{choices}",
    "zh": "## 场景\n{scenario}\n\n## 问题\n" + EA_Q["zh"] + "\n\n## 选项\n{choices}",
}
EU_USER = {
    "en": ("## Scenario\n{scenario}\n\n## Question 1\n" + EU_EMOTION_Q["en"] + "\n\n"
           "## Choices for Question 1\n{emo_choices}\n\n## Question 2\n" + EU_CAUSE_Q["en"] + "\n\n"
           "## Choices for Question 2\n{cause_choices}"),
    "zh": ("## 场景\n{scenario}\n\n## 问题 1\n" + EU_EMOTION_Q["zh"] + "\n\n## 问题 1 的选项\n{emo_choices}"
           "\n\n## 问题 2\n" + EU_CAUSE_Q["zh"] + "\n\n## 问题 2 的选项\n{cause_choices}"),
}
LOGLIK_USER = "{scenario}\n\n{question}"

# JSON keys of each protocol's answer, per task and sub-question
OFFICIAL_KEYS = {"EA": {"answer": "answer"}, "EU": {"emotion": "answer_q1", "cause": "answer_q2"}}


def official_messages(item: Item, rotation: int) -> Messages:
    lang = item.language.value
    task = item.task.value
    system = (SYSTEM[lang] + OUTPUT_HEADER[lang] + "\n" + ANSWER_ONLY[lang] + "\n```json\n{\n"
              + ANSWER_KEYS[task][lang] + "\n}\n```\n")
    if isinstance(item, EUItem):
        user = EU_USER[lang].format(
            scenario=item.scenario, subject=item.subject,
            emo_choices=format_options(rotate(item.emotion_choices, rotation)),
            cause_choices=format_options(rotate(item.cause_choices, rotation)))
    else:
        assert isinstance(item, EAItem)
        user = EA_USER[lang].format(scenario=item.scenario, subject=item.subject,
                                    q_type=item.question_type.value,  # raw, as EmoBench does
                                    choices=format_options(rotate(item.choices, rotation)))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _letters(n: int) -> type:
    return Literal[tuple(LETTERS[:n])]  # type: ignore[return-value]


@cache
def official_answer_model(task: str, *sizes: int) -> type[BaseModel]:
    """The official JSON answer with letters as enums (for schema-constrained decoding)."""
    cfg = ConfigDict(extra="forbid")
    if task == "EU":
        emotions, causes = sizes
        return create_model(f"EUAnswer{emotions}x{causes}", __config__=cfg,
                            answer_q1=(_letters(emotions), ...), answer_q2=(_letters(causes), ...))
    return create_model(f"EAAnswer{sizes[0]}", __config__=cfg, answer=(_letters(sizes[0]), ...))


def constrained_answer_model(item: Item) -> type[BaseModel]:
    if isinstance(item, EUItem):
        return official_answer_model("EU", len(item.emotion_choices), len(item.cause_choices))
    return official_answer_model("EA", len(item.choices))


def cot_messages(item: Item, rotation: int, part: str, emotion_text: str | None = None) -> Messages:
    """The paper's instruction, as training teaches it. ``part`` is "answer" (EA), "emotion" or
    "cause" (EU); the cause question names the emotion the model chose (or EmoBench's neutral
    wording if it chose none)."""
    choices, _ = item.options()[part]
    return [{"role": "user", "content": instruction(item, part, rotate(choices, rotation), emotion_text)}]


def loglik_requests(item: Item) -> dict[str, tuple[Messages, list[str]]]:
    """part -> (prompt, option texts in the benchmark's order)."""
    lang = item.language.value
    system = {"role": "system", "content": SYSTEM[lang]}

    def prompt(question: str) -> Messages:
        return [system, {"role": "user", "content": LOGLIK_USER.format(scenario=item.scenario, question=question)}]

    if isinstance(item, EUItem):
        return {"emotion": (prompt(EU_EMOTION_Q[lang].format(subject=item.subject)), item.emotion_choices),
                "cause": (prompt(EU_CAUSE_Q[lang].format(subject=item.subject)), item.cause_choices)}
    assert isinstance(item, EAItem)
    question = EA_Q[lang].format(q_type=item.question_type.value, subject=item.subject)
    return {"answer": (prompt(question), item.choices)}
