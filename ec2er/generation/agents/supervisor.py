"""SupervisorAgent: a structured verdict on whether the dialogue holds enough to stop."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from ec2er.config import SamplingConfig
from ec2er.generation.agents.base import PromptTemplate, TokenBudget
from ec2er.llm import ChatRequest
from ec2er.schemas.dialogue import SupervisorVerdict, Turn

SUPERVISOR = PromptTemplate(
    name="supervisor", version="1",
    system="You supervise therapy role-plays that will become emotional-intelligence test items.",
    user=(
        "Transcript so far:\n{transcript}\n\n"
        "Judge each criterion strictly: scenario_clear (situation, people and stakes are clear), "
        "emotions_present (the client shows authentic emotions), causes_present (their causes were "
        "explored), dilemma_present (there is a genuine dilemma or decision), rich_enough (material "
        "for several questions). Answer with the JSON object only."
    ),
)


class SupervisorCheck(BaseModel):
    """The verdict as the model writes it: the reason comes first (reasoning before the flags)
    and is bounded so a rambling model still closes the object."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=200)]
    scenario_clear: bool
    emotions_present: bool
    causes_present: bool
    dilemma_present: bool
    rich_enough: bool

    def verdict(self) -> SupervisorVerdict:
        return SupervisorVerdict(**self.model_dump())


class SupervisorAgent:
    @staticmethod
    def request(turns: list[Turn], sampling: SamplingConfig, budget: TokenBudget) -> ChatRequest:
        room = budget.room(sampling.max_tokens) - budget.count(SUPERVISOR.system + SUPERVISOR.user) - 32
        user = SUPERVISOR.user_text(transcript=budget.fit_transcript(turns, room))
        return ChatRequest([{"role": "system", "content": SUPERVISOR.system},
                            {"role": "user", "content": user}],
                           sampling=sampling, response_model=SupervisorCheck)
