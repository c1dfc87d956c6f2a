"""TherapistAgent: phase-aware (clarify, explore beliefs, perspectives, options)."""

from __future__ import annotations

from ec2er.config import SamplingConfig
from ec2er.generation.agents.base import PromptTemplate, TokenBudget, session_system_text
from ec2er.llm import ChatRequest, Message
from ec2er.schemas.dialogue import Speaker, Turn

THERAPIST = PromptTemplate(  # follows SESSION_CONTEXT in the system prompt
    name="therapist", version="2",
    system=(
        "You are an experienced, warm therapist in a session with this client. Reply in 2-4 "
        "sentences: empathic listening, one reflective question or a gentle challenge. Never "
        "diagnose, never lecture. The client's latest message ends with the session phase your "
        "reply belongs to, in brackets."
    ),
    # The phase rides on the latest client message, not in the system prompt: a phase change
    # there would change the prompt ahead of the whole history and void its prefix cache.
    user="{message}\n\n[Phase of your reply: {phase}]",
)

PHASES = (
    "clarify: understand what happened, who was involved and when.",
    "explore beliefs: ask what the client believes about the situation and about themself.",
    "perspectives: invite the client to consider how the other people see it.",
    "options: help the client weigh concrete options and what each would cost them.",
)


def phase_for(turn_index: int, max_turns: int) -> str:
    """Phases spread evenly over the session's length."""
    return PHASES[min(len(PHASES) - 1, turn_index * len(PHASES) // max(max_turns, 1))]


class TherapistAgent:
    @staticmethod
    def request(background: str, turns: list[Turn], max_turns: int, sampling: SamplingConfig,
                budget: TokenBudget) -> ChatRequest:
        head: list[Message] = [{"role": "system", "content": session_system_text(background, THERAPIST)}]
        history = [{"role": "user" if t.speaker is Speaker.CLIENT else "assistant", "content": t.text}
                   for t in turns]
        latest = history.pop()["content"] if history and history[-1]["role"] == "user" else ""
        phase = phase_for(len(turns), max_turns)
        history.append({"role": "user", "content": THERAPIST.user_text(message=latest, phase=phase).strip()})
        return ChatRequest(budget.fit_conversation(head, history, sampling.max_tokens), sampling=sampling)
