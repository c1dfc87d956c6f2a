"""Curation's quality checks, on top of the structural ones every valid item passes
(``ec2er.schemas.checks``). Each failure is a ``Reason`` with a stable code; an item collects all.
"""

from __future__ import annotations

from typing import Any

from rapidfuzz import fuzz

from ec2er.curation.config import ValidateConfig
from ec2er.curation.dedup import tokenize
from ec2er.curation.lexicon import named_emotions
from ec2er.schemas import Item, Task, detect_task
from ec2er.schemas.items import ITEM_MODELS
from ec2er.schemas.checks import (  # noqa: F401  (codes re-exported: curation reports them all)
    CATEGORY,
    DUPLICATE_OPTIONS,
    EMOTION_OOV,
    EMPTY_OPTION,
    GOLD_MISSING,
    MALFORMED_LINE,
    OPTION_COUNT,
    SCHEMA,
    Reason,
    str_list,
    check_item,
    unique,
)

# Reason codes of curation's own checks (stable: rejects.jsonl, stats.json, the data card); the
# reader checks' codes are in ec2er.curation.sense.
SCENARIO_LENGTH = "scenario_length"
EMOTION_LEAK = "gold_emotion_in_scenario"
NO_EXPLANATION = "explanation_missing"
EXPLANATION_DISTRACTOR = "explanation_favors_distractor"
SUBJECT_MISSING = "subject_not_in_scenario"
NEAR_DUPLICATE = "near_duplicate"
CONTAMINATED = "benchmark_contamination"
OVER_QUOTA = "category_over_quota"
DUPLICATE_QID = "duplicate_qid"

# Function words carry no evidence of which option an explanation argues for.
_STOPWORDS = frozenset(
    "a an the and or but of to in on at for with by from as is are was were be been being it its "
    "this that these those he she they them his her their him i you we our your my me not no so "
    "would will could should can may might has have had do does did about into than then just very "
    "because while when what which who whom how all any some more most also only even".split()
)


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
        gold, choices = obj.get("emotion_label"), str_list(obj.get("emotion_choices")) or []
        if isinstance(gold, str) and not named_emotions(gold, explanation):
            named = [c for c in choices if c != gold and named_emotions(c, explanation)]
            if named:
                reasons.append(Reason(code=EXPLANATION_DISTRACTOR,
                                      detail=f"names {', '.join(named)} but not the gold {gold}"))
    text_field = ITEM_MODELS[task].OPTION_FIELDS[-1]  # the free-text options: causes (EU), choices (EA)
    gold, choices = obj.get(text_field.gold), str_list(obj.get(text_field.choices)) or []
    if isinstance(gold, str) and gold in choices:
        gold_score = option_support(explanation, gold)
        best = max(((option_support(explanation, c), c) for c in choices if c != gold), default=(0.0, ""))
        if best[0] >= cfg.explanation_min_support and best[0] > gold_score + cfg.explanation_margin:
            reasons.append(Reason(code=EXPLANATION_DISTRACTOR,
                                  detail=f"{text_field.choices}: supports {best[1]!r} ({best[0]:.0f}) over the "
                                         f"gold ({gold_score:.0f})"))
    return reasons


def validate_item(obj: dict[str, Any], cfg: ValidateConfig) -> tuple[Item | None, list[Reason]]:
    """The parsed item (None if it fails) and every reason it fails: structural, then quality."""
    item, reasons = check_item(obj, cfg)
    try:
        task = detect_task(obj)
    except ValueError:
        return None, reasons
    if cfg.quality == "skip":
        return item, reasons
    quality = _scenario_reasons(obj, task, cfg) + _explanation_reasons(obj, task, cfg)
    if cfg.quality == "flag" and item is not None:  # structurally valid: kept, marked with its failures
        flags = sorted({*(item.flags or []), *(r.code for r in quality)})
        return item.model_copy(update={"flags": flags or None}), []
    reasons = unique(reasons + quality)
    return (item if not reasons else None), reasons
