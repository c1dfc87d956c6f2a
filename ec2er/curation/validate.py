"""Per-item checks. Each failure is a ``Reason`` with a stable code; an item collects all of them.

Checks run on the raw JSON object, not only on the parsed model, so that an item failing its
schema still gets every other reason it deserves (a wrong option count AND a leaked emotion word).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from rapidfuzz import fuzz

from ec2er.curation.config import ValidateConfig
from ec2er.curation.dedup import tokenize
from ec2er.curation.lexicon import named_emotions
from ec2er.schemas import Item, Task, detect_task, parse_item
from ec2er.schemas.taxonomy import unknown_emotion_atoms


class Reason(BaseModel):
    code: str
    detail: str = ""


# Reason codes (stable: rejects.jsonl, stats.json and the data card use them).
MALFORMED_LINE = "malformed_line"
SCHEMA = "schema_invalid"
CATEGORY = "category_not_in_taxonomy"
EMOTION_OOV = "emotion_not_in_taxonomy"
OPTION_COUNT = "option_count"
GOLD_MISSING = "gold_not_in_choices"
DUPLICATE_OPTIONS = "duplicate_options"
EMPTY_OPTION = "empty_option"
SCENARIO_LENGTH = "scenario_length"
EMOTION_LEAK = "gold_emotion_in_scenario"
NO_EXPLANATION = "explanation_missing"
EXPLANATION_DISTRACTOR = "explanation_favors_distractor"
SUBJECT_MISSING = "subject_not_in_scenario"
NEAR_DUPLICATE = "near_duplicate"
CONTAMINATED = "benchmark_contamination"
OVER_QUOTA = "category_over_quota"
DUPLICATE_QID = "duplicate_qid"

_CATEGORY_FIELDS = {"coarse_category", "finegrained_category", "category", "question type", "question_type"}
# Function words carry no evidence of which option an explanation argues for.
_STOPWORDS = frozenset(
    "a an the and or but of to in on at for with by from as is are was were be been being it its "
    "this that these those he she they them his her their him i you we our your my me not no so "
    "would will could should can may might has have had do does did about into than then just very "
    "because while when what which who whom how all any some more most also only even".split()
)


def _option_fields(task: Task) -> list[tuple[str, str]]:
    """(choices field, gold field) pairs of a task."""
    return [("emotion_choices", "emotion_label"), ("cause_choices", "cause_label")] if task is Task.EU \
        else [("choices", "label")]


def _count_bounds(task: Task, field: str, cfg: ValidateConfig) -> tuple[int, int]:
    if field == "emotion_choices":
        return cfg.eu_emotion_options, cfg.eu_emotion_options
    if field == "cause_choices":
        return cfg.eu_cause_options
    return cfg.ea_options, cfg.ea_options


def _str_list(value: Any) -> list[str] | None:
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _schema_reasons(obj: dict[str, Any]) -> tuple[Item | None, list[Reason]]:
    try:
        return parse_item(obj), []
    except ValidationError as e:
        reasons = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if "is not among the choices" in msg:
                continue  # reported by the option checks as gold_not_in_choices
            if err["loc"] and err["loc"][0] in _CATEGORY_FIELDS or "does not belong to" in msg:
                reasons.append(Reason(code=CATEGORY, detail=f"{loc}: {msg}" if loc else msg))
            elif not (err["loc"] and str(err["loc"][0]).endswith("choices")):  # option checks cover these
                reasons.append(Reason(code=SCHEMA, detail=f"{loc}: {msg}" if loc else msg))
        return None, reasons
    except ValueError as e:
        return None, [Reason(code=SCHEMA, detail=str(e))]


def _option_reasons(obj: dict[str, Any], task: Task, cfg: ValidateConfig) -> list[Reason]:
    reasons = []
    for field, gold_field in _option_fields(task):
        choices = _str_list(obj.get(field))
        if choices is None:
            reasons.append(Reason(code=SCHEMA, detail=f"{field}: expected a list of strings"))
            continue
        lo, hi = _count_bounds(task, field, cfg)
        if not lo <= len(choices) <= hi:
            want = str(lo) if lo == hi else f"{lo}-{hi}"
            reasons.append(Reason(code=OPTION_COUNT, detail=f"{field}: {len(choices)} options, expected {want}"))
        if any(not c.strip() for c in choices):
            reasons.append(Reason(code=EMPTY_OPTION, detail=f"{field}: an option is empty"))
        normalized = [" ".join(c.lower().split()) for c in choices]
        if len(set(normalized)) != len(normalized):
            reasons.append(Reason(code=DUPLICATE_OPTIONS, detail=f"{field}: repeated options"))
        gold = obj.get(gold_field)
        if not isinstance(gold, str) or gold not in choices:
            reasons.append(Reason(code=GOLD_MISSING, detail=f"{gold_field} {gold!r} is not among {field}"))
    if task is Task.EU:
        lang = obj.get("language", "en")
        labels = [obj.get("emotion_label")] + (_str_list(obj.get("emotion_choices")) or [])
        unknown = sorted({a for lab in labels if isinstance(lab, str) for a in unknown_emotion_atoms(lab, lang)})
        if unknown:
            reasons.append(Reason(code=EMOTION_OOV, detail=f"not in the taxonomy: {', '.join(unknown)}"))
    return reasons


def _scenario_reasons(obj: dict[str, Any], task: Task, cfg: ValidateConfig) -> list[Reason]:
    scenario, subject = obj.get("scenario"), obj.get("subject")
    if not isinstance(scenario, str):
        return [Reason(code=SCHEMA, detail="scenario: expected a string")]
    reasons = []
    words = len(tokenize(scenario))
    if not cfg.min_words <= words <= cfg.max_words:
        reasons.append(Reason(code=SCENARIO_LENGTH,
                              detail=f"{words} words, expected {cfg.min_words}-{cfg.max_words}"))
    label = obj.get("emotion_label")
    if task is Task.EU and isinstance(label, str):
        leaked = named_emotions(label, scenario)
        if leaked:
            reasons.append(Reason(code=EMOTION_LEAK, detail=f"scenario names {', '.join(leaked)}"))
    if isinstance(subject, str) and subject.strip() and not subject_in(subject, scenario):
        reasons.append(Reason(code=SUBJECT_MISSING, detail=f"subject {subject!r} not found in the scenario"))
    return reasons


def subject_in(subject: str, scenario: str) -> bool:
    """The subject, or every name word of it ("Dorea's daughter": "Dorea", "daughter"), appears."""
    if subject.lower() in scenario.lower():
        return True
    words = [w for w in tokenize(subject) if w not in _STOPWORDS and w != "s"]
    present = set(tokenize(scenario))
    return bool(words) and all(w in present for w in words)


def content_words(text: str) -> str:
    return " ".join(w for w in tokenize(text) if w not in _STOPWORDS)


def option_support(explanation: str, option: str) -> float:
    """How much of an option's content the explanation restates (rapidfuzz token_set_ratio, 0-100)."""
    return fuzz.token_set_ratio(content_words(option), content_words(explanation))


def _explanation_reasons(obj: dict[str, Any], task: Task, cfg: ValidateConfig) -> list[Reason]:
    explanation = obj.get("explanation")
    if not isinstance(explanation, str) or not explanation.strip():
        return [Reason(code=NO_EXPLANATION, detail="no explanation to train the reasoning on")]
    reasons = []
    if task is Task.EU:
        gold, choices = obj.get("emotion_label"), _str_list(obj.get("emotion_choices")) or []
        if isinstance(gold, str) and not named_emotions(gold, explanation):
            named = [c for c in choices if c != gold and named_emotions(c, explanation)]
            if named:
                reasons.append(Reason(code=EXPLANATION_DISTRACTOR,
                                      detail=f"names {', '.join(named)} but not the gold {gold}"))
    text_field = ("cause_choices", "cause_label") if task is Task.EU else ("choices", "label")
    gold, choices = obj.get(text_field[1]), _str_list(obj.get(text_field[0])) or []
    if isinstance(gold, str) and gold in choices:
        gold_score = option_support(explanation, gold)
        best = max(((option_support(explanation, c), c) for c in choices if c != gold), default=(0.0, ""))
        if best[0] >= cfg.explanation_min_support and best[0] > gold_score + cfg.explanation_margin:
            reasons.append(Reason(code=EXPLANATION_DISTRACTOR,
                                  detail=f"{text_field[0]}: supports {best[1]!r} ({best[0]:.0f}) over the "
                                         f"gold ({gold_score:.0f})"))
    return reasons


def validate_item(obj: dict[str, Any], cfg: ValidateConfig) -> tuple[Item | None, list[Reason]]:
    """The parsed item (None if it does not parse) and every reason it fails."""
    try:
        task = detect_task(obj)
    except ValueError as e:
        return None, [Reason(code=SCHEMA, detail=str(e))]
    item, reasons = _schema_reasons(obj)
    reasons += _option_reasons(obj, task, cfg)
    reasons += _scenario_reasons(obj, task, cfg)
    reasons += _explanation_reasons(obj, task, cfg)
    if item is None and not reasons:  # a schema error no check above names still rejects the item
        reasons.append(Reason(code=SCHEMA, detail="does not validate as an item"))
    return (item if not reasons else None), _dedupe(reasons)


def _dedupe(reasons: list[Reason]) -> list[Reason]:
    seen, out = set(), []
    for r in reasons:
        if (r.code, r.detail) not in seen:
            seen.add((r.code, r.detail))
            out.append(r)
    return out

