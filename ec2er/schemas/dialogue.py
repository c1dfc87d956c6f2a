"""Dialogues between agents and the supervisor's structured verdict on them."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Speaker(StrEnum):
    CLIENT = "CLIENT"
    THERAPIST = "THERAPIST"
    SUPERVISOR = "SUPERVISOR"


# Tags other tools write for the same roles; ``normalize_speaker`` maps them onto ours.
SPEAKER_ALIASES: dict[str, Speaker] = {
    "client": Speaker.CLIENT, "patient": Speaker.CLIENT, "user": Speaker.CLIENT,
    "therapist": Speaker.THERAPIST, "counselor": Speaker.THERAPIST, "counsellor": Speaker.THERAPIST,
    "assistant": Speaker.THERAPIST, "supervisor": Speaker.SUPERVISOR,
}


def normalize_speaker(tag: str) -> Speaker:
    """'Patient:', '[therapist]', 'THERAPIST' -> Speaker; unknown tags raise ValueError."""
    key = tag.strip().strip("[]():*# ").lower()
    if key in SPEAKER_ALIASES:
        return SPEAKER_ALIASES[key]
    raise ValueError(f"unknown speaker tag {tag!r}")


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    speaker: Speaker
    text: str


class SupervisorVerdict(BaseModel):
    """The supervisor's check of a dialogue so far (asked from turn 4, every 2 turns)."""

    model_config = ConfigDict(extra="forbid")

    scenario_clear: bool = Field(description="the situation, people and stakes are clear")
    emotions_present: bool = Field(description="the client expresses authentic emotions")
    causes_present: bool = Field(description="the causes of those emotions have been explored")
    dilemma_present: bool = Field(description="there is a genuine dilemma or decision point")
    rich_enough: bool = Field(description="enough material for several benchmark questions")
    reason: str = Field(description="one or two sentences justifying the verdict")

    @property
    def all_met(self) -> bool:
        return all((self.scenario_clear, self.emotions_present, self.causes_present,
                    self.dilemma_present, self.rich_enough))


class Dialogue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dialogue_id: str
    pipeline: str
    persona_id: str
    theme_id: str | None = None
    background: str
    turns: list[Turn] = Field(default_factory=list)
    verdicts: list[SupervisorVerdict] = Field(default_factory=list)

    def transcript(self, *, numbered: bool = False) -> str:
        lines = []
        for t in self.turns:
            prefix = f"[{t.index}] " if numbered else ""
            lines.append(f"{prefix}{t.speaker.value}: {t.text}")
        return "\n".join(lines)
