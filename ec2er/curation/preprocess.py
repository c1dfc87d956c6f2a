"""Dialogue preprocessing: canonical speaker tags, and no turn that only repeats an earlier one.

Turns keep their original ``index`` (items' provenance.turn_indices point at them); a dropped
turn is one whose words add nothing to an earlier turn of the same speaker: its content words are
all already there, or it is a near-verbatim repeat (rapidfuzz ratio at or above the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from rapidfuzz import fuzz

from ec2er.curation.dedup import normalize
from ec2er.curation.quality import content_words
from ec2er.io import format_validation_error
from ec2er.schemas import Dialogue, normalize_speaker


@dataclass
class DialogueReport:
    dialogues: int = 0
    turns_dropped: int = 0
    speakers_renamed: int = 0
    invalid: list[str] = field(default_factory=list)  # "file:line: why"


def repeats_earlier(text: str, earlier: list[str], threshold: float) -> bool:
    words = set(content_words(text).split())
    norm = normalize(text)
    for prev in earlier:
        if (words and words <= set(content_words(prev).split())) or \
                fuzz.ratio(norm, normalize(prev)) >= threshold * 100:
            return True
    return not norm  # an empty turn adds nothing either


def clean_dialogue(obj: dict[str, Any], threshold: float, report: DialogueReport) -> Dialogue:
    """Validate one raw dialogue after normalizing its speaker tags and dropping repeats.

    Raises ValueError (unknown speaker tag) or pydantic's ValidationError."""
    turns, said_by = [], {}
    for raw in obj.get("turns") or []:
        speaker = normalize_speaker(str(raw.get("speaker", "")))
        report.speakers_renamed += speaker.value != raw.get("speaker")
        earlier = said_by.setdefault(speaker, [])
        if repeats_earlier(str(raw.get("text", "")), earlier, threshold):
            report.turns_dropped += 1
            continue
        earlier.append(str(raw.get("text", "")))
        turns.append({**raw, "speaker": speaker.value})
    return Dialogue.model_validate({**obj, "turns": turns})


def clean_dialogues(rows: list[tuple[str, int, dict[str, Any] | Exception]], threshold: float
                    ) -> tuple[list[Dialogue], DialogueReport]:
    """rows: (file, line, object or the error reading it)."""
    report, out = DialogueReport(), []
    for path, line, obj in rows:
        if isinstance(obj, Exception):
            report.invalid.append(str(obj))
            continue
        try:
            out.append(clean_dialogue(obj, threshold, report))
        except ValidationError as e:
            report.invalid.append(f"{path}:{line}: {format_validation_error(e)}")
        except (ValueError, AttributeError) as e:
            report.invalid.append(f"{path}:{line}: {e}")
    report.dialogues = len(out)
    return out, report
