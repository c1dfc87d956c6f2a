"""Personas (who the client is), themes (what the session is about), concise attributes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ec2er.schemas.taxonomy import (
    CommunicationStyle,
    ConflictDomain,
    CopingStyle,
    Disposition,
    EAArea,
    EmotionMix,
    EUArea,
    InsightLevel,
    ProblemFocus,
    RelationshipStatus,
    RelationshipType,
    Stakes,
    ThemeCategory,
    Viewpoint,
)


class Persona(BaseModel):
    """A persona: a free-text description (PersonaHub's one field) and optional structure."""

    model_config = ConfigDict(extra="forbid")

    persona_id: str
    description: str = Field(min_length=1)
    source: str = Field("sampler", description="sampler | personahub | file path")
    age: int | None = Field(None, ge=18, le=100)
    occupation: str | None = None
    relationship_status: RelationshipStatus | None = None
    cultural_background: str | None = None
    disposition: Disposition | None = None


class Theme(BaseModel):
    model_config = ConfigDict(extra="forbid")

    theme_id: str
    name: str
    category: ThemeCategory
    description: str
    min_age: int = Field(18, ge=18)
    max_age: int = Field(100, le=100)
    keywords: list[str] = Field(default_factory=list)
    crisis: bool = Field(False, description="brings thoughts of suicide or self-harm in on purpose "
                                            "(kept out unless generation's themes.crisis is include)")


class ConciseAttributes(BaseModel):
    """One draw from the concise pipeline's attribute space."""

    model_config = ConfigDict(extra="forbid")

    eu_area: EUArea
    ea_area: EAArea
    relationship_type: RelationshipType
    problem_focus: ProblemFocus
    conflict_domain: ConflictDomain
    stakes: Stakes
    emotion_mix: EmotionMix
    insight_level: InsightLevel
    coping_style: CopingStyle
    communication_style: CommunicationStyle
    viewpoint: Viewpoint
