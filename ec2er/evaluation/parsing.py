"""Reading answers out of model text, two ways, never mixed up.

- strict: the JSON the prompt asked for (the whole reply, or one ```json fenced block as EmoBench's
  own parser accepts), each value exactly one letter within range. This is what the official
  score uses; anything else is unparsed.
- lenient: what a reader would accept: repaired JSON, a bare letter, "C)", "(C)", "Answer: C",
  or the option's text. Ambiguous text (two different letters at the same level) stays unparsed:
  lenient means forgiving about form, never guessing.

All letters here are SHOWN letters; callers map them back through the rotation.
"""

from __future__ import annotations

import json
import re

import json_repair
from rapidfuzz import fuzz, process

from ec2er.schemas.facts import LETTERS

FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)
STRICT_LETTER = re.compile(r"^[A-Z]$")
# Lenient letter patterns, most explicit first; the first level with one distinct letter wins.
LETTER_LEVELS = (
    re.compile(r"^\s*[\(\[]?([A-Z])[\)\]]?[.:]?\s*$"),                # C / (C) / C) / C.
    re.compile(r"^\s*[\(\[]?([A-Z])[\)\].:]\s"),                      # "C) option text"
    re.compile(r"(?i:answer|option|choice|答案|选项)\s*(?i:is)?\s*[:：=]?\s*[\"'\(\[]?([A-Z])\b"),
    re.compile(r"\(([A-Z])\)"),                                       # ... (C) ...
    re.compile(r"(?<![A-Za-z])([A-Z])\)"),                            # ... C) ...
)
# Free-text EU answers that label their two sub-answers ("Question 1: B", "answer_q2": "C", 问题2：D)
SUB_LABELS = {
    1: re.compile(r"(?i:answer_?q|question\s*|q|问题\s*)1\b[^A-Za-z0-9]{0,12}([A-Z])\b"),
    2: re.compile(r"(?i:answer_?q|question\s*|q|问题\s*)2\b[^A-Za-z0-9]{0,12}([A-Z])\b"),
}
FUZZY_CUTOFF = 90  # rapidfuzz ratio for a reply that is an option's text, give or take a typo


def extract_json(text: str) -> dict | None:
    """The reply as a JSON object, or its single fenced JSON block; nothing else is strict JSON."""
    candidates = [text.strip()]
    fenced = FENCED.findall(text)
    if len(fenced) == 1:
        candidates.append(fenced[0])
    for c in candidates:
        try:
            obj = json.loads(c)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


def strict_letter(value: object, n: int) -> str | None:
    if isinstance(value, str) and STRICT_LETTER.match(value.strip()) and LETTERS.index(value.strip()) < n:
        return value.strip()
    return None


def strict_parse(text: str, keys: dict[str, str], sizes: dict[str, int]) -> dict[str, str | None]:
    """part -> letter from the JSON keys the prompt named (e.g. emotion -> "answer_q1")."""
    obj = extract_json(text) or {}
    return {part: strict_letter(obj.get(key), sizes[part]) for part, key in keys.items()}


def _unique(letters: list[str], n: int) -> str | None:
    found = {x for x in letters if LETTERS.index(x) < n}
    return found.pop() if len(found) == 1 else None


def letter_in_text(text: str, choices: list[str]) -> str | None:
    """One answer's letter from free text: letter patterns, then the option's own text."""
    n = len(choices)
    for pattern in LETTER_LEVELS:
        found = set(pattern.findall(text))
        if found:
            letter = _unique(list(found), n)
            if letter is not None or len(found) > 1:
                return letter  # one letter, or an ambiguous level: do not look further
    return option_in_text(text, choices)


def option_in_text(text: str, choices: list[str]) -> str | None:
    folded = text.casefold()
    hits = [i for i, c in enumerate(choices) if c.casefold() in folded]
    # "Anger" inside "Anger & Sadness" is one mention of the longer option, not two
    hits = [i for i in hits if not any(i != j and choices[i].casefold() in choices[j].casefold() for j in hits)]
    if len(hits) == 1:
        return LETTERS[hits[0]]
    if not hits:
        best = process.extractOne(text.strip(), choices, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF)
        if best is not None:
            return LETTERS[best[2]]
    return None


def _repaired_json(text: str) -> dict | None:
    try:
        obj = json_repair.loads(text)
    except Exception:  # json_repair raises assorted errors on hopeless input; treat as no JSON
        return None
    if isinstance(obj, list):
        obj = next((o for o in obj if isinstance(o, dict)), None)
    return obj if isinstance(obj, dict) and obj else None


def lenient_parse(text: str, keys: dict[str, str], choices: dict[str, list[str]]) -> dict[str, str | None]:
    """part -> letter, accepting any recognisable form; parts are read from (repaired) JSON
    first, then from labelled or lone mentions in the text."""
    obj = {str(k).casefold(): v for k, v in (_repaired_json(text) or {}).items()}
    out: dict[str, str | None] = {}
    for index, (part, key) in enumerate(keys.items(), start=1):
        value = obj.get(key.casefold())
        letter = letter_in_text(str(value), choices[part]) if value not in (None, "") else None
        if letter is None and len(keys) > 1:
            labelled = SUB_LABELS[index].findall(text)
            letter = _unique(labelled, len(choices[part])) if labelled else option_in_text(text, choices[part])
        elif letter is None:
            letter = letter_in_text(text, choices[part])
        out[part] = letter
    return out
