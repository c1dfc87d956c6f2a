"""Curation's crisis-safety check: each dialogue's safety record (``ec2er.safety.dialogue``), computed
from its transcript, and the items of dialogues whose therapist turns handled a client's risk
unsafely rejected with reason ``unsafe_crisis_handling``. A risk that is expressed and handled
safely is kept: such dialogues are what a model should learn from. Counts go to stats.json and the
data card. Items with no dialogue in the input (eu.jsonl from elsewhere) are not checked.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ec2er.safety.dialogue import DialogueSafety, dialogue_safety
from ec2er.safety.rules import RULES_VERSION
from ec2er.schemas import normalize_speaker
from ec2er.schemas.checks import Reason
from ec2er.schemas.dialogue import Turn

UNSAFE_CRISIS_HANDLING = "unsafe_crisis_handling"


def _turns(raw: dict[str, Any]) -> list[Turn] | None:
    """A raw dialogue's turns, or None when they cannot be read (preprocessing reports those)."""
    try:
        return [Turn(index=t["index"], speaker=normalize_speaker(str(t["speaker"])), text=str(t["text"]))
                for t in raw.get("turns") or []]
    except (KeyError, TypeError, ValueError):
        return None


def safety_records(dialogue_rows: list[tuple[str, int, Any]] | None) -> dict[str, DialogueSafety]:
    """dialogue_id -> its safety record, for every readable dialogue of the input."""
    out = {}
    for _, _, obj in dialogue_rows or []:
        if isinstance(obj, dict) and isinstance(obj.get("dialogue_id"), str):
            turns = _turns(obj)
            if turns is not None:
                out[obj["dialogue_id"]] = dialogue_safety(turns)
    return out


def _dialogue_id(file: str, raw: dict[str, Any]) -> str | None:
    provenance = raw.get("provenance")
    if isinstance(provenance, dict) and isinstance(provenance.get("dialogue_id"), str):
        return provenance["dialogue_id"]
    if "#" in file:  # an item read from a run's results: "<file>#<dialogue_id>"
        return file.rpartition("#")[2] or None
    return None


def reject_unsafe_crisis_handling(records: list[Any], dialogue_rows: list[tuple[str, int, Any]] | None
                                  ) -> dict[str, Any]:
    """Add the reject reason to every record (curation's ``Record``) whose dialogue was handled
    unsafely; return the counts the data card shows."""
    safety = safety_records(dialogue_rows)
    rejected = 0
    for r in records:
        if r.raw is None:
            continue
        record = safety.get(_dialogue_id(r.file, r.raw) or "")
        if record is not None and record.unsafe:
            r.reasons.append(Reason(code=UNSAFE_CRISIS_HANDLING, detail=record.reason()))
            rejected += 1
    return crisis_stats(safety, rejected)


def crisis_stats(safety: dict[str, DialogueSafety], items_rejected: int) -> dict[str, Any]:
    at_risk = {i: s for i, s in safety.items() if s.client_risk.value != "none"}
    return {
        "rules_version": RULES_VERSION, "dialogues": len(safety), "items_rejected": items_rejected,
        "client_risk": dict(Counter(s.client_risk.value for s in safety.values())),
        "handling": dict(Counter(s.handling for s in safety.values())),
        "categories": dict(Counter(s.category.value for s in at_risk.values() if s.category)),
        "at_risk": [{"dialogue_id": i, "client_risk": s.client_risk.value,
                     "category": s.category.value if s.category else None, "handling": s.handling,
                     "turns": [t.turn for t in s.risk_turns], "reason": s.reason() or None}
                    for i, s in sorted(at_risk.items())],
    }


def datacard_lines(crisis: dict[str, Any] | None) -> list[str]:
    """The data card's "Crisis safety" section (nothing when the input had no dialogues)."""
    if not crisis or not crisis["dialogues"]:
        return []
    lines = ["## Crisis safety", "",
             f"Each dialogue's client turns screened by the crisis rules ({crisis['rules_version']}; a screen, "
             "not a clinical instrument); where a client expressed risk, the therapist turn that followed "
             "is checked (acknowledges, does not argue, gives no means information, and for high risk points "
             "to help or asks about safety). Items of dialogues handled unsafely are rejected "
             f"(`{UNSAFE_CRISIS_HANDLING}`): {crisis['items_rejected']} items.", "",
             "| client risk | dialogues |", "|---|---:|",
             *[f"| {k} | {v} |" for k, v in crisis["client_risk"].items()], "",
             "| handling | dialogues |", "|---|---:|", *[f"| {k} | {v} |" for k, v in crisis["handling"].items()], ""]
    if crisis["categories"]:
        lines += ["| risk category | dialogues |", "|---|---:|",
                  *[f"| {k} | {v} |" for k, v in crisis["categories"].items()], ""]
    return lines
