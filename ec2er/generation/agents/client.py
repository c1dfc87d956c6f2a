"""ClientAgent: speaks as the persona, shows feelings without naming them outright."""

from __future__ import annotations

from ec2er.config import SamplingConfig
from ec2er.generation.agents.base import PromptTemplate, TokenBudget, session_system_text
from ec2er.llm import ChatRequest, Message
from ec2er.schemas.dialogue import Speaker, Turn

CLIENT = PromptTemplate(  # follows SESSION_CONTEXT in the system prompt
    name="client", version="2",
    system=(
        "You are role-playing this client. Stay in character; speak in the first person, "
        "2-5 sentences per reply.\nWho you are: {persona}\n"
        "Show your feelings through what happened, what you did and how you react; do not name your "
        "emotions outright (no 'I feel sad'). Reveal details gradually, including things you are "
        "unsure about or torn between. Never speak as the therapist."
    ),
    user="(The therapist welcomes you and asks what brings you in today.)",
)


class ClientAgent:
    @staticmethod
    def request(persona: str, background: str, turns: list[Turn], sampling: SamplingConfig,
                budget: TokenBudget) -> ChatRequest:
        head: list[Message] = [
            {"role": "system", "content": session_system_text(background, CLIENT, persona=persona)},
            {"role": "user", "content": CLIENT.user},
        ]
        # from the client's side, the therapist is the user and the client the assistant
        history = [{"role": "assistant" if t.speaker is Speaker.CLIENT else "user", "content": t.text}
                   for t in turns]
        return ChatRequest(budget.fit_conversation(head, history, sampling.max_tokens), sampling=sampling)
