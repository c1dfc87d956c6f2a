"""ExtractorAgent: EU and EA items from a finished dialogue, one request per targeted item."""

from __future__ import annotations

from ec2er.config import SamplingConfig
from ec2er.generation.agents.base import PromptTemplate, TokenBudget
from ec2er.generation.extraction import EADraft, EUDraft, for_persons
from ec2er.llm import ChatRequest, Message
from ec2er.schemas.dialogue import Turn
from ec2er.schemas.taxonomy import EACategory, EAQuestionType, EUFineCategory

EXTRACTOR_SYSTEM = ("You turn therapy dialogues into multiple-choice test items of emotional "
                    "intelligence, in the style of the EmoBench benchmark.")

# "{client}" is the client's name (ec2er.generation.persons), the item's subject: the schema
# opens every sentence field with a name (extraction.for_persons). The instructions ask for
# answers as short sentences of the model's own: a small model otherwise copies turns. Curation's
# reader checks reject an explanation that echoes these texts (ec2er.curation.sense).
EU_EXTRACTOR = PromptTemplate(
    name="extractor_eu", version="6", system=EXTRACTOR_SYSTEM,
    user=(
        "Client background:\n{background}\n\nDialogue:\n{transcript}\n\n"
        "The subject is the client, {client}. Begin the scenario, each cause and the explanation "
        "with {client}'s name.\n"
        "Write ONE Emotional Understanding item of the type '{category}': {category_hint}\n"
        "{focus}"
        "scenario: 2-4 sentences of your own on what happened to the subject, never mentioning "
        "therapy or the emotion. "
        "correct_emotion: what the subject feels; wrong_emotions: 5 other guesses. correct_cause: "
        "a short sentence on why; wrong_causes: 3-5 short sentences, plausible but wrong causes. "
        "explanation: the reasoning to the correct answers, how the events lead to the feeling. "
        "evidence_turns: turn numbers used."
    ),
)

EA_EXTRACTOR = PromptTemplate(
    name="extractor_ea", version="6", system=EXTRACTOR_SYSTEM,
    user=(
        "Client background:\n{background}\n\nDialogue:\n{transcript}\n\n"
        "The subject is the client, {client}. Begin the scenario, each choice and the explanation "
        "with {client}'s name.\n"
        "Write ONE Emotional Application item: category {category} ({category_hint}), question "
        "type {question_type} ({question_hint}).\n{focus}"
        "scenario: 2-4 sentences of your own on the subject's situation, never mentioning "
        "therapy. best_choice: a short sentence, the most effective thing to do or say; "
        "worse_choices: 3-5 short "
        "sentences, things that help less. explanation: why the best choice is best, what it "
        "achieves for the subject. evidence_turns: turn numbers used."
    ),
)

EU_HINTS: dict[EUFineCategory, str] = {
    EUFineCategory.emotion_transition: "the emotion changes as the situation unfolds",
    EUFineCategory.mixture_of_emotions: "the subject feels two emotions at once",
    EUFineCategory.unexpected_outcome: "an outcome triggers a feeling one would not expect",
    EUFineCategory.visual_cues: "the emotion must be read from what the subject does or looks like",
    EUFineCategory.vocal_cues: "the emotion must be read from how the subject speaks",
    EUFineCategory.cultural_value: "the emotion depends on the subject's cultural values",
    EUFineCategory.persona: "the emotion depends on the subject's personality",
    EUFineCategory.sentimental_value: "an object or place carries personal meaning",
    EUFineCategory.false_belief: "the subject believes something untrue the reader knows",
    EUFineCategory.faux_pas: "someone says something hurtful without meaning to",
    EUFineCategory.strange_story: "a non-literal statement (irony, a white lie) must be understood",
}
EA_HINTS: dict[EACategory, str] = {
    EACategory.personal_others: "a close relationship, the problem lies with the other person",
    EACategory.personal_self: "a close relationship, the problem lies with the subject",
    EACategory.social_others: "work or acquaintances, the problem lies with the other person",
    EACategory.social_self: "work or acquaintances, the problem lies with the subject",
}
QUESTION_HINTS: dict[EAQuestionType, str] = {
    EAQuestionType.action: "what should the subject do",
    EAQuestionType.response: "what should the subject say",
}


class ExtractorAgent:
    """``client``: the client's name (``ec2er.generation.persons``), the items' subject: the
    schema makes it the subject and the first word of every sentence field. (With the run's whole
    roster of names allowed, one schema for all dialogues, the 135M model wrote other clients'
    names: 2 items kept of 10 instead of 7 of 24, measured on mads-tiny.)"""

    @staticmethod
    def _prompt(template: PromptTemplate, background: str, turns: list[Turn], sampling: SamplingConfig,
                budget: TokenBudget, client: str, **fields: str) -> list[Message]:
        fields |= {"client": client}
        fixed = template.user_text(background=background, transcript="", **fields)
        room = budget.room(sampling.max_tokens) - budget.count(template.system + fixed) - 32
        user = template.user_text(background=background, transcript=budget.fit_transcript(turns, room),
                                  **fields)
        return [{"role": "system", "content": template.system}, {"role": "user", "content": user}]

    @classmethod
    def eu_request(cls, background: str, turns: list[Turn], client: str, fine: EUFineCategory,
                   focus: str, sampling: SamplingConfig, budget: TokenBudget) -> ChatRequest:
        messages = cls._prompt(EU_EXTRACTOR, background, turns, sampling, budget, client,
                               category=fine.value, category_hint=EU_HINTS[fine], focus=focus)
        return ChatRequest(messages, sampling=sampling, response_model=for_persons(EUDraft, (client,)))

    @classmethod
    def ea_request(cls, background: str, turns: list[Turn], client: str, category: EACategory,
                   question_type: EAQuestionType, focus: str, sampling: SamplingConfig,
                   budget: TokenBudget) -> ChatRequest:
        messages = cls._prompt(EA_EXTRACTOR, background, turns, sampling, budget, client,
                               category=category.value, category_hint=EA_HINTS[category],
                               question_type=question_type.value,
                               question_hint=QUESTION_HINTS[question_type], focus=focus)
        return ChatRequest(messages, sampling=sampling, response_model=for_persons(EADraft, (client,)))
