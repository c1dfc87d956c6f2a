"""Records and configs of crisis safety: a risk assessment, its evidence, the guard's verdict, and
the recipe that says when the guard model is asked."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ec2er.config import StrictModel
from ec2er.llm.kinds.openai import OpenAIEngineConfig


class RiskLevel(StrEnum):
    """none: nothing found. ambiguous: words that may be risk (hopelessness, a veiled wish to be
    gone, a negated or third-person mention): a person, or tier 2, should look. high: an explicit
    statement of suicidal ideation (passive or active), a plan or means, self-harm, intent to harm
    someone, or ongoing abuse: the reply must handle it safely."""

    none = "none"
    ambiguous = "ambiguous"
    high = "high"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {RiskLevel.none: 0, RiskLevel.ambiguous: 1, RiskLevel.high: 2}


class RiskCategory(StrEnum):
    """Llama Guard 3's S11 ("suicide & self-harm") split in its two parts, plus what a therapy
    dialogue must also notice: the client's intent to harm others (S1's violent intent) and abuse
    the client suffers (safeguarding; S3/S4 on the guard's side)."""

    suicide = "suicide"
    self_harm = "self_harm"
    harm_to_others = "harm_to_others"
    abuse = "abuse"


class Evidence(BaseModel):
    """Where a rule matched: ``text[start:end]`` of the assessed text (of ``message``, the index in
    the conversation, when a conversation was assessed)."""

    model_config = ConfigDict(extra="forbid")

    rule: str = Field(description="the tier-1 rule id (ec2er/safety/rules.py)")
    level: RiskLevel
    category: RiskCategory
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    text: str
    message: int | None = Field(None, description="index of the message in the conversation")


class GuardVerdict(BaseModel):
    """What the tier-2 guard model answered (Llama Guard 3's format: "safe", or "unsafe" and a line
    of category codes such as "S11"); ``error`` when it could not be asked or understood."""

    model_config = ConfigDict(extra="forbid")

    model: str
    safe: bool | None = None
    codes: list[str] = Field(default_factory=list)
    raw: str = ""
    error: str | None = None


class RiskAssessment(BaseModel):
    """The assessment of one text or conversation. ``evidence`` lists every tier-1 match, the
    decisive one (highest level, earliest) first; ``decided_by`` says which tier set the level."""

    model_config = ConfigDict(extra="forbid")

    level: RiskLevel
    category: RiskCategory | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    tier1_level: RiskLevel
    guard: GuardVerdict | None = None
    decided_by: Literal["rules", "guard"] = "rules"
    rules_version: str

    @property
    def at_risk(self) -> bool:
        return self.level is not RiskLevel.none


class GuardConfig(StrictModel):
    """Tier 2: a guard model behind any OpenAI-compatible endpoint (vLLM serving Llama Guard 3,
    ``ec2er serve``, a hosted API). ``prompt: explicit`` sends a Llama Guard 3 style prompt (the
    task, the category list, the conversation) as one user message, for any instruct model;
    ``prompt: template`` sends the conversation as it is, for Llama Guard models whose chat template
    writes that prompt itself."""

    mode: Literal["ambiguous_only", "always", "off"] = Field(
        "ambiguous_only", description="ask the guard only where the rules are not sure, always, or never")
    engine: OpenAIEngineConfig | None = None
    prompt: Literal["explicit", "template"] = "explicit"
    max_tokens: int = Field(12, ge=1, description="the verdict is two short lines")

    @model_validator(mode="after")
    def _engine_when_on(self) -> GuardConfig:
        if self.mode != "off" and self.engine is None:
            raise ValueError(f"guard.engine is required when guard.mode is {self.mode!r}")
        return self


class SafetyConfig(StrictModel):
    """How ``assess`` runs: which roles of a conversation are assessed, and the guard."""

    roles: list[str] = Field(["user"], description="roles whose messages are assessed (a dialogue's client "
                                                  "turns are 'user' here)")
    guard: GuardConfig = Field(default_factory=lambda: GuardConfig(mode="off"))
