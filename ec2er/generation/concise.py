"""The concise pipeline's own parts: attribute sampling with realistic co-occurrence, and its
final files (``personas_final.json``, ``items_final.jsonl``, ``summary.json``).

Everything else (condensed background, the 5-round conversation without a supervisor, inline
extraction into the same EmoBench layout as MADS, resume) runs through the shared dialogue loop
and output layout with ``pipeline: concise``.
"""

from __future__ import annotations

import json
import random
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from ec2er.io import atomic_open, write_json
from ec2er.schemas.facts import GenerationFiles as Files
from ec2er.schemas.persona import ConciseAttributes
from ec2er.schemas.taxonomy import (
    CommunicationStyle as Comm,
)
from ec2er.schemas.taxonomy import (
    ConflictDomain as Domain,
)
from ec2er.schemas.taxonomy import (
    CopingStyle as Coping,
)
from ec2er.schemas.taxonomy import (
    EAArea,
    EmotionMix,
    EUArea,
    InsightLevel,
    ProblemFocus,
    RelationshipType,
    Stakes,
    Viewpoint,
)

E = TypeVar("E", bound=StrEnum)
BASE_WEIGHT = 0.3  # every combination stays possible; the tables below make some far likelier

# Co-occurrence tables: option -> extra weight, given the attribute sampled before it.
COPING_GIVEN_INSIGHT: dict[InsightLevel, dict[Coping, float]] = {
    InsightLevel.low: {Coping.avoidance: 3, Coping.venting: 2, Coping.self_blame: 2, Coping.people_pleasing: 2},
    InsightLevel.medium: {Coping.people_pleasing: 2, Coping.venting: 1, Coping.self_blame: 1,
                          Coping.overfixing_problem_solving: 1},
    InsightLevel.high: {Coping.overfixing_problem_solving: 3, Coping.intellectualizing: 3},
}
COMM_GIVEN_COPING: dict[Coping, dict[Comm, float]] = {
    Coping.avoidance: {Comm.withdrawn_indirect: 3, Comm.conflict_avoidant_compliant: 2},
    Coping.people_pleasing: {Comm.apologetic_soft: 3, Comm.conflict_avoidant_compliant: 3},
    Coping.venting: {Comm.blunt_critical: 3, Comm.sarcastic_deflecting: 2},
    Coping.overfixing_problem_solving: {Comm.blunt_critical: 3},
    Coping.intellectualizing: {Comm.sarcastic_deflecting: 2, Comm.blunt_critical: 2},
    Coping.self_blame: {Comm.apologetic_soft: 3, Comm.withdrawn_indirect: 2},
}
RELATIONSHIP_GIVEN_DOMAIN: dict[Domain, dict[RelationshipType, float]] = {
    Domain.career_performance: {RelationshipType.work: 5},
    Domain.money_finances: {RelationshipType.family: 2, RelationshipType.romantic: 2, RelationshipType.friend: 1},
    Domain.caregiving_burden: {RelationshipType.family: 5},
    Domain.friendship_drift: {RelationshipType.friend: 5},
    Domain.romantic_trust_jealousy: {RelationshipType.romantic: 6},
    Domain.inlaw_family_tension: {RelationshipType.family: 6},
    Domain.online_miscommunication: {RelationshipType.friend: 2, RelationshipType.social: 3},
    Domain.cross_cultural_misunderstanding: {RelationshipType.social: 2, RelationshipType.work: 2,
                                             RelationshipType.romantic: 1},
}
MIX_GIVEN_DOMAIN: dict[Domain, dict[EmotionMix, float]] = {
    Domain.career_performance: {EmotionMix.envy_plus_admiration: 3, EmotionMix.worry_plus_excitement: 2,
                                EmotionMix.shame_plus_defiance: 2},
    Domain.money_finances: {EmotionMix.shame_plus_defiance: 2, EmotionMix.anger_plus_hurt: 2},
    Domain.caregiving_burden: {EmotionMix.love_plus_resentment: 4, EmotionMix.relief_plus_guilt: 3},
    Domain.friendship_drift: {EmotionMix.anger_plus_hurt: 3, EmotionMix.envy_plus_admiration: 1},
    Domain.romantic_trust_jealousy: {EmotionMix.anger_plus_hurt: 3, EmotionMix.love_plus_resentment: 3},
    Domain.inlaw_family_tension: {EmotionMix.love_plus_resentment: 3, EmotionMix.anger_plus_hurt: 2},
    Domain.online_miscommunication: {EmotionMix.anger_plus_hurt: 2, EmotionMix.shame_plus_defiance: 2},
    Domain.cross_cultural_misunderstanding: {EmotionMix.shame_plus_defiance: 2, EmotionMix.worry_plus_excitement: 2},
}
FOCUS_GIVEN_COPING: dict[Coping, dict[ProblemFocus, float]] = {
    Coping.self_blame: {ProblemFocus.self: 3}, Coping.venting: {ProblemFocus.others: 2},
    Coping.people_pleasing: {ProblemFocus.others: 1},
}


def _draw(rng: random.Random, enum: type[E], extra: dict[E, float] | None = None) -> E:
    options = list(enum)
    weights = [BASE_WEIGHT + (extra or {}).get(o, 0.0) for o in options]
    return rng.choices(options, weights=weights)[0]


def sample_attributes(rng: random.Random) -> ConciseAttributes:
    """One draw of the attribute space; later attributes are conditioned on earlier ones
    (low insight + avoidance -> withdrawn talk, caregiving -> family and love + resentment)."""
    insight = _draw(rng, InsightLevel)
    coping = _draw(rng, Coping, COPING_GIVEN_INSIGHT[insight])
    domain = _draw(rng, Domain)
    return ConciseAttributes(
        eu_area=_draw(rng, EUArea), ea_area=_draw(rng, EAArea),
        relationship_type=_draw(rng, RelationshipType, RELATIONSHIP_GIVEN_DOMAIN[domain]),
        problem_focus=_draw(rng, ProblemFocus, FOCUS_GIVEN_COPING.get(coping)),
        conflict_domain=domain, stakes=_draw(rng, Stakes),
        emotion_mix=_draw(rng, EmotionMix, MIX_GIVEN_DOMAIN[domain]),
        insight_level=insight, coping_style=coping,
        communication_style=_draw(rng, Comm, COMM_GIVEN_COPING[coping]),
        viewpoint=_draw(rng, Viewpoint),
    )


def write_concise_files(out: Path, stats: dict[str, Any]) -> dict[str, Any]:
    """The concise pipeline's final files, once at the end of a run: personas with their
    attributes (``personas_final.json``), every item, EU then EA (``items_final.jsonl``), and
    ``summary.json``. Streamed from the results, a few thousand rows at a time."""
    from ec2er.generation.outputs import iter_result_batches

    personas: list[dict[str, Any]] = []
    with atomic_open(out / Files.ITEMS_FINAL) as items:
        n_items = 0
        for task in ("eu", "ea"):
            for _, batch in iter_result_batches(str(out), [task, "metadata"]):
                for lines, meta in zip(batch.column(task).to_pylist(), batch.column("metadata").to_pylist(), strict=True):
                    items.writelines(line + "\n" for line in lines)
                    n_items += len(lines)
                    if task == "eu":
                        m = json.loads(meta)
                        personas.append({k: m[k] for k in ("dialogue_id", "persona_id", "persona", "attributes", "status")})
    write_json(out / Files.PERSONAS_FINAL, personas)
    summary = {"personas": str(out / Files.PERSONAS_FINAL), "items": str(out / Files.ITEMS_FINAL),
               "counts": {"personas": len(personas), "items": n_items},
               "distributions": stats.get("distributions", {})}
    write_json(out / Files.SUMMARY, summary)
    return summary
