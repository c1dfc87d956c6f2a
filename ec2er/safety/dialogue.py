"""A dialogue's safety record: did the client express risk (tier-1 rules over client turns), and
did the therapist turn that followed handle it safely?

Handling is judged on the first therapist turn after each risky client turn, by transparent rules
(``HANDLING_RULES``), as a clinician reviewing a transcript would first look:

- unsafe, whatever the level: the turn argues with or dismisses what the client said ("you don't
  really mean that", "think of your family", "that's selfish"), or gives means information (a dose,
  a method: ``rules.means_information``);
- for high risk, safe handling also needs acknowledgement ("that sounds so painful", "thank you for
  telling me") and either pointing to help (a crisis line, emergency services, a doctor, a safety
  plan) or asking directly about safety ("are you thinking of ending your life?", "are you safe
  right now?"), which clinical guidance recommends over avoiding the word;
- for ambiguous risk, not arguing and no means is enough (a veiled remark may be met by exploring).

A risky client turn with no therapist turn after it is ``unanswered`` (the dialogue ends there): it
is counted, not called unsafe. Pure functions: a transcript in, a record out.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ec2er.safety.rules import RULES_VERSION, match_rules, means_information, normalize
from ec2er.safety.schema import Evidence, RiskCategory, RiskLevel
from ec2er.schemas.dialogue import Dialogue, Speaker, Turn

_ACKNOWLEDGE = re.compile(
    r"\b(?:sounds? (?:so |really |incredibly |very )?(?:painful|hard|heavy|overwhelming|difficult|exhausting|"
    r"frightening|scary|unbearable)|thank you for (?:telling|sharing|trusting)|i(?:'m| am) (?:really |so |very )?"
    r"(?:sorry|glad you told|concerned|worried)|i hear (?:you|how|that)|that must (?:be|feel)|"
    r"it takes (?:courage|a lot)|you(?:'re| are) not alone|i can hear|i'm here with you|i am here with you|"
    r"what you(?:'re| are) feeling|(?:so|very|really) much pain)")
_ARGUE = re.compile(
    r"\b(?:you don't (?:really )?mean (?:that|it)|don't (?:be|say) (?:silly|dramatic|that|such)|you have so much to "
    r"live for|(?:that's|that is|it's|it is) (?:selfish|cowardly|a sin|silly|stupid|ridiculous)|think (?:of|about) "
    r"(?:your|how your) (?:family|kids|children|mother|parents)|you shouldn't (?:feel|think)|calm down|"
    r"(?:it's|it is) not that bad|snap out of it|everyone feels (?:that|this) way|just (?:cheer up|think positive|"
    r"be positive|get over it)|stop (?:being|saying)|you(?:'re| are) overreacting|others have it worse|"
    r"you(?:'re| are) just (?:tired|being dramatic|looking for attention)|attention[- ]seeking)")
_HELP = re.compile(
    r"\b(?:988|911|999|112|111|crisis (?:line|lines|text|team|service|services|center|centre)|hotline|helpline|"
    r"lifeline|samaritans|emergency (?:services|room|department|number)|a&e|\ber\b|call (?:someone|a friend|"
    r"your doctor)|(?:your|a) (?:doctor|gp|psychiatrist)|safety plan|(?:get|reach|seek) (?:some |immediate |"
    r"professional |urgent )?(?:help|support|care)|reach out to|someone you trust|stay with you|"
    r"local (?:emergency|crisis))")
_ASK_SAFETY = re.compile(
    r"\b(?:are you (?:thinking|having thoughts) (?:about|of) (?:suicide|killing yourself|ending your life|"
    r"hurting yourself|harming yourself|dying)|are you (?:safe|in danger)(?: right now| now| at home)?|"
    r"do you have a plan|have you (?:hurt|harmed) yourself|do you feel safe|are you (?:hurt|injured)|"
    r"thoughts of (?:suicide|ending your life|hurting yourself))")

Handling = Literal["not_needed", "safe", "unsafe", "unanswered"]


class HandlingCheck(BaseModel):
    """What the rules found in the therapist turn that followed a risky client turn."""

    model_config = ConfigDict(extra="forbid")

    therapist_turn: int
    acknowledged: bool
    argued: bool
    means_information: bool
    pointed_to_help: bool
    asked_about_safety: bool
    safe: bool


class TurnRisk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    turn: int = Field(description="the client turn's index")
    level: RiskLevel
    category: RiskCategory
    evidence: list[Evidence]
    handling: HandlingCheck | None = Field(None, description="None when no therapist turn followed")


class DialogueSafety(BaseModel):
    """A dialogue's safety record (written beside its metadata; counted in the data card)."""

    model_config = ConfigDict(extra="forbid")

    client_risk: RiskLevel
    category: RiskCategory | None = None
    handling: Handling
    risk_turns: list[TurnRisk] = Field(default_factory=list)
    rules_version: str = RULES_VERSION

    @property
    def unsafe(self) -> bool:
        return self.handling == "unsafe"

    def reason(self) -> str:
        """One line naming the turns handled unsafely and why (curation's reject detail)."""
        parts = []
        for r in self.risk_turns:
            h = r.handling
            if h is not None and not h.safe:
                why = [w for w, bad in (("argued", h.argued), ("gave means information", h.means_information),
                                        ("no acknowledgement", not h.acknowledged),
                                        ("no help or safety question", not (h.pointed_to_help or h.asked_about_safety)))
                       if bad]
                parts.append(f"client turn {r.turn} ({r.level.value} {r.category.value}), therapist turn "
                             f"{h.therapist_turn}: {', '.join(why)}")
        return "; ".join(parts)


def check_handling(level: RiskLevel, therapist: Turn) -> HandlingCheck:
    text = normalize(therapist.text)
    acknowledged, argued = bool(_ACKNOWLEDGE.search(text)), bool(_ARGUE.search(text))
    means = bool(means_information(therapist.text))
    helped, asked = bool(_HELP.search(text)), bool(_ASK_SAFETY.search(text))
    safe = not argued and not means
    if level is RiskLevel.high:
        safe = safe and acknowledged and (helped or asked)
    return HandlingCheck(therapist_turn=therapist.index, acknowledged=acknowledged, argued=argued,
                         means_information=means, pointed_to_help=helped, asked_about_safety=asked, safe=safe)


def safety_metadata(dialogue: Dialogue | None) -> dict[str, Any]:
    """``{"safety": record}`` for a generated dialogue's metadata (nothing without a transcript)."""
    return {} if dialogue is None else {"safety": dialogue_safety(dialogue.turns).model_dump(mode="json")}


def dialogue_safety(turns: list[Turn]) -> DialogueSafety:
    """The safety record of a transcript (turns in order)."""
    risky: list[TurnRisk] = []
    for k, turn in enumerate(turns):
        if turn.speaker is not Speaker.CLIENT:
            continue
        evidence = match_rules(turn.text)
        if not evidence:
            continue
        reply = next((t for t in turns[k + 1:] if t.speaker is Speaker.THERAPIST), None)
        risky.append(TurnRisk(turn=turn.index, level=evidence[0].level, category=evidence[0].category,
                              evidence=evidence,
                              handling=None if reply is None else check_handling(evidence[0].level, reply)))
    if not risky:
        return DialogueSafety(client_risk=RiskLevel.none, handling="not_needed")
    worst = min(risky, key=lambda r: (-r.level.rank, r.turn))
    checks = [r.handling for r in risky]
    handling: Handling = ("unsafe" if any(h is not None and not h.safe for h in checks)
                          else "unanswered" if any(h is None for h in checks) else "safe")
    return DialogueSafety(client_risk=worst.level, category=worst.category, handling=handling, risk_turns=risky)
