"""The one definition of a valid item: its schema, its categories and emotion labels, and its
options (how many, none empty or repeated, the gold among them).

``ec2er validate`` applies exactly these checks; curation applies them and then its quality
checks (scenario length, leaked emotion words, explanations). Checks run on the raw JSON object,
not only on the parsed model, so that an item failing its schema still gets every other reason
it deserves (a wrong option count AND an unknown emotion).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ec2er.schemas.facts import EA_OPTIONS, EU_CAUSE_OPTIONS, EU_EMOTION_OPTIONS
from ec2er.schemas.items import ITEM_MODELS, Item, OptionField, detect_task
from ec2er.schemas.taxonomy import Task, unknown_emotion_atoms


class Reason(BaseModel):
    """Why an item fails: a stable code (rejects.jsonl, stats and the data card count them)."""

    code: str
    detail: str = ""


# Reason codes of the structural checks (curation adds its own quality codes).
MALFORMED_LINE = "malformed_line"
SCHEMA = "schema_invalid"
CATEGORY = "category_not_in_taxonomy"
EMOTION_OOV = "emotion_not_in_taxonomy"
OPTION_COUNT = "option_count"
GOLD_MISSING = "gold_not_in_choices"
DUPLICATE_OPTIONS = "duplicate_options"
EMPTY_OPTION = "empty_option"

_CATEGORY_FIELDS = {"coarse_category", "finegrained_category", "category", "question type", "question_type"}


class ItemLimits(BaseModel):
    """Options per question. The defaults are EmoBench's layout, which generation writes."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    eu_emotion_options: int = Field(EU_EMOTION_OPTIONS, ge=2)
    eu_cause_options: tuple[int, int] = EU_CAUSE_OPTIONS
    ea_options: int = Field(EA_OPTIONS, ge=2)

    def bounds(self, field: OptionField) -> tuple[int, int]:
        if field.choices == "emotion_choices":
            return self.eu_emotion_options, self.eu_emotion_options
        if field.choices == "cause_choices":
            return self.eu_cause_options
        return self.ea_options, self.ea_options


def normalized(option: str) -> str:
    """The form two options are compared in: case and spacing do not make them different."""
    return " ".join(option.lower().split())


def str_list(value: Any) -> list[str] | None:
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _schema_reasons(obj: dict[str, Any]) -> tuple[Item | None, list[Reason]]:
    try:
        return ITEM_MODELS[detect_task(obj)].model_validate(obj), []
    except ValidationError as e:
        reasons = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            detail = f"{loc}: {msg}" if loc else msg
            if "is not among the choices" in msg:
                continue  # the option checks report it as gold_not_in_choices
            if (err["loc"] and err["loc"][0] in _CATEGORY_FIELDS) or "does not belong to" in msg:
                reasons.append(Reason(code=CATEGORY, detail=detail))
            elif not (err["loc"] and str(err["loc"][0]).endswith("choices")):  # option checks cover these
                reasons.append(Reason(code=SCHEMA, detail=detail))
        return None, reasons


def _option_reasons(obj: dict[str, Any], task: Task, limits: ItemLimits) -> list[Reason]:
    reasons = []
    for field in ITEM_MODELS[task].OPTION_FIELDS:
        choices = str_list(obj.get(field.choices))
        if choices is None:
            reasons.append(Reason(code=SCHEMA, detail=f"{field.choices}: expected a list of strings"))
            continue
        lo, hi = limits.bounds(field)
        if not lo <= len(choices) <= hi:
            want = str(lo) if lo == hi else f"{lo}-{hi}"
            reasons.append(Reason(code=OPTION_COUNT,
                                  detail=f"{field.choices}: {len(choices)} options, expected {want}"))
        if any(not c.strip() for c in choices):
            reasons.append(Reason(code=EMPTY_OPTION, detail=f"{field.choices}: an option is empty"))
        keys = [normalized(c) for c in choices]
        if len(set(keys)) != len(keys):
            reasons.append(Reason(code=DUPLICATE_OPTIONS, detail=f"{field.choices}: repeated options"))
        gold = obj.get(field.gold)
        if not isinstance(gold, str) or gold not in choices:
            reasons.append(Reason(code=GOLD_MISSING, detail=f"{field.gold} {gold!r} is not among {field.choices}"))
    if task is Task.EU:
        lang = obj.get("language", "en")
        labels = [obj.get("emotion_label")] + (str_list(obj.get("emotion_choices")) or [])
        unknown = sorted({a for lab in labels if isinstance(lab, str) for a in unknown_emotion_atoms(lab, lang)})
        if unknown:
            reasons.append(Reason(code=EMOTION_OOV, detail=f"not in the taxonomy: {', '.join(unknown)}"))
    return reasons


def check_item(obj: dict[str, Any], limits: ItemLimits | None = None) -> tuple[Item | None, list[Reason]]:
    """The parsed item (None when it is not valid) and every structural reason it fails."""
    try:
        task = detect_task(obj)
    except ValueError as e:
        return None, [Reason(code=SCHEMA, detail=str(e))]
    item, reasons = _schema_reasons(obj)
    reasons += _option_reasons(obj, task, limits or ItemLimits())
    if item is None and not reasons:  # a schema error no check above names still fails the item
        reasons.append(Reason(code=SCHEMA, detail="does not validate as an item"))
    return (item if not reasons else None), unique(reasons)


def valid_item(obj: dict[str, Any], limits: ItemLimits | None = None) -> Item:
    """The item, if it passes every check; else a ValueError naming its first reason (readers
    such as ``ec2er.io.read_records`` put the file and line before it)."""
    item, reasons = check_item(obj, limits)
    if item is None:
        raise ValueError(describe(reasons))
    return item


def describe(reasons: list[Reason]) -> str:
    """'option_count: choices: 3 options, expected 4 (and 1 more)'."""
    more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
    return f"{reasons[0].code}: {reasons[0].detail}{more}"


def unique(reasons: list[Reason]) -> list[Reason]:
    seen, out = set(), []
    for r in reasons:
        if (r.code, r.detail) not in seen:
            seen.add((r.code, r.detail))
            out.append(r)
    return out


class FileReport(BaseModel):
    """``ec2er validate`` over files: valid lines per (file, task, language), and each bad line."""

    counts: dict[str, int] = Field(default_factory=dict, description="'file task language' -> valid lines")
    errors: list[str] = Field(default_factory=list, description="'file:line: code: detail', one per bad line")

    @property
    def ok(self) -> bool:
        return not self.errors


def check_files(paths: list[Any], limits: ItemLimits | None = None) -> FileReport:
    """Every line of every file through ``check_item``; a missing or unreadable file raises."""
    from pathlib import Path

    from ec2er.io import iter_jsonl

    report = FileReport()
    for path in map(Path, paths):
        for lineno, obj in iter_jsonl(path):
            if not isinstance(obj, dict):  # a DataError naming the file and line
                report.errors.append(str(obj))
                continue
            item, reasons = check_item(obj, limits)
            if item is None:
                report.errors.append(f"{path}:{lineno}: {describe(reasons)}")
            else:
                key = f"{path} {item.task.value} {item.language.value}"
                report.counts[key] = report.counts.get(key, 0) + 1
    return report
