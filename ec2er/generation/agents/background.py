"""BackgroundGeneratorAgent: the client's life story both dialogue agents share."""

from __future__ import annotations

from ec2er.config import SamplingConfig
from ec2er.generation.agents.base import PromptTemplate
from ec2er.generation.persons import client_name
from ec2er.llm import ChatRequest
from ec2er.schemas.persona import ConciseAttributes, Persona, Theme

MADS_BACKGROUND = PromptTemplate(
    name="background", version="2",
    system="You are a novelist who writes realistic, specific life backgrounds for therapy role-play.",
    user=(
        "Write a 200-400 word background narrative, in the third person, for a therapy client.\n"
        "Persona: {persona}\n"
        "The client's name is {name}; use it.\n"
        "Theme of the session: {theme} ({category}): {description}\n\n"
        "Cover: personal history; key relationships (give the people names); the recent event that "
        "triggered seeking help; ongoing stressors; how the client usually copes. Be concrete. "
        "Write only the narrative."
    ),
)

CONCISE_BACKGROUND = PromptTemplate(
    name="concise_background", version="2",
    system="You write short, concrete backgrounds for therapy role-play.",
    user=(
        "Write a condensed background (80-150 words, third person) for a therapy client.\n"
        "Persona: {persona}\n"
        "The client's name is {name}; use it.\n"
        "Situation: a {stakes}-stakes {domain} problem in a {relationship} relationship, focused on "
        "{focus}. The client feels a mix of {mix}; insight into their feelings is {insight}; they "
        "cope by {coping} and communicate in a {communication} way.\n"
        "Name the other person involved and the event that brought the client in. Write only the "
        "background."
    ),
)


class BackgroundGeneratorAgent:
    @staticmethod
    def request(persona: Persona, theme: Theme, sampling: SamplingConfig) -> ChatRequest:
        t = MADS_BACKGROUND
        user = t.user_text(persona=persona.description, name=client_name(persona.persona_id), theme=theme.name,
                           category=theme.category.value, description=theme.description)
        return ChatRequest([{"role": "system", "content": t.system}, {"role": "user", "content": user}],
                           sampling=sampling)

    @staticmethod
    def condensed_request(persona: Persona, a: ConciseAttributes, sampling: SamplingConfig) -> ChatRequest:
        t = CONCISE_BACKGROUND
        user = t.user_text(
            persona=persona.description, name=client_name(persona.persona_id), stakes=a.stakes.value, domain=_words(a.conflict_domain),
            relationship=a.relationship_type.value,
            focus="the client themself" if a.problem_focus.value == "self" else "another person",
            mix=_words(a.emotion_mix), insight=a.insight_level.value, coping=_words(a.coping_style),
            communication=_words(a.communication_style),
        )
        return ChatRequest([{"role": "system", "content": t.system}, {"role": "user", "content": user}],
                           sampling=sampling)


def _words(value: object) -> str:
    return str(getattr(value, "value", value)).replace("_plus_", " and ").replace("_", " ")
