"""Grading and scoring: from a raw reply to answers (strict and lenient), from predictions and
the benchmark's gold letters to EmoBench's scores, with bootstrap intervals and rotation metrics.

Official rules: an EU item is right only when both its emotion and its cause letters are right;
"overall" is the mean over the language's items; categories are EU coarse_category and EA
category. An unparsed answer is wrong AND counted in ``parse_failure_rate``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
from pydantic import BaseModel
from scipy import stats

from ec2er.evaluation.config import Protocol
from ec2er.schemas.benchmark import ItemKey
from ec2er.evaluation.parsing import lenient_parse, strict_parse
from ec2er.evaluation.prompts import OFFICIAL_KEYS
from ec2er.evaluation.records import Answer, EUAnswer, Prediction, answer_parsed
from ec2er.evaluation.rotation import rotate, to_original, to_shown
from ec2er.schemas.items import EUItem, Item
from ec2er.schemas.taxonomy import EACategory, EUCoarseCategory
from ec2er.schemas.facts import LETTERS

# ---------------------------------------------------------------- per item


def option_lists(item: Item) -> dict[str, list[str]]:
    """part -> choices in the benchmark's order (EU: emotion, cause; EA: answer)."""
    return {part: options for part, (options, _) in item.options().items()}


def gold(item: Item) -> Answer:
    return _as_answer(item, {part: LETTERS[options.index(g)] for part, (options, g) in item.options().items()})


def is_correct(item: Item, answer: Answer) -> bool:
    return answer_parsed(item.task, answer) and answer == gold(item)


def _as_answer(item: Item, letters: dict[str, str | None]) -> Answer:
    return EUAnswer(**letters) if isinstance(item, EUItem) else letters["answer"]


def read_answers(item: Item, protocol: Protocol, rotation: int, response: str,
                 parts: dict[str, str] | None = None,
                 option_scores: dict[str, list[float]] | None = None) -> tuple[Answer, Answer]:
    """(strict, lenient) answers in the benchmark's own letters, from what the model produced."""
    options = option_lists(item)
    if protocol == "loglik":
        best = {part: LETTERS[int(np.argmax(option_scores[part]))] for part in options} if option_scores else \
            dict.fromkeys(options)
        return _as_answer(item, best), _as_answer(item, best)
    shown = {part: rotate(choices, rotation) for part, choices in options.items()}
    if protocol == "cot":  # one {"reasoning", "answer"} reply per part: EU's two in parts, EA's in response
        texts = parts if parts is not None and isinstance(item, EUItem) else {"answer": response}
        strict: dict[str, str | None] = {}
        lenient: dict[str, str | None] = {}
        for part in options:
            one = {part: "answer"}
            strict |= strict_parse(texts.get(part, ""), one, {part: len(shown[part])})
            lenient |= lenient_parse(texts.get(part, ""), one, {part: shown[part]})
    else:
        keys = OFFICIAL_KEYS[item.task.value]
        strict = strict_parse(response, keys, {p: len(c) for p, c in shown.items()})
        lenient = lenient_parse(response, keys, shown)

    def back(letters: dict[str, str | None]) -> Answer:
        return _as_answer(item, {p: None if x is None else to_original(x, len(options[p]), rotation)
                                 for p, x in letters.items()})

    return back(strict), back(lenient)


def grade(item: Item, pred: Prediction) -> Prediction:
    """The prediction with answers and correctness recomputed from its raw output and the gold."""
    strict, lenient = read_answers(item, pred.protocol, pred.rotation, pred.response, pred.parts,
                                   pred.option_scores)
    return pred.model_copy(update=dict(
        answer=strict, parsed=answer_parsed(item.task, strict), correct=is_correct(item, strict),
        lenient_answer=lenient, lenient_parsed=answer_parsed(item.task, lenient),
        lenient_correct=is_correct(item, lenient)))


# ---------------------------------------------------------------- aggregates

Cell = tuple[str, str, str]  # (model, protocol, language)


def categories(task: str) -> list[str]:
    return [c.value for c in (EUCoarseCategory if task == "EU" else EACategory)]


def by_cell(preds: Iterable[Prediction], rotation: int | None = 0) -> dict[Cell, list[Prediction]]:
    cells: dict[Cell, list[Prediction]] = defaultdict(list)
    for p in preds:
        if rotation is None or p.rotation == rotation:
            cells[p.variant_key].append(p)
    return dict(cells)


def results(preds: list[Prediction], index: dict[ItemKey, Item], lenient: bool = False) -> dict[str, Any]:
    """``{model: {protocol: {language: {"EU": {...}, "EA": {...}, "parse_failure_rate": x}}}}``
    over the benchmark's own option order (rotation 0). Categories absent from the slice are absent."""
    out: dict[str, Any] = {}
    for (model, protocol, lang), rows in sorted(by_cell(preds).items()):
        cell: dict[str, Any] = {}
        for task in ("EU", "EA"):
            task_rows = [p for p in rows if p.task.value == task]
            if not task_rows:
                continue
            right = [p.lenient_correct if lenient else p.correct for p in task_rows]
            scores = {"overall": float(np.mean(right))}
            cats = [index[(p.language.value, p.task.value, p.qid)].category for p in task_rows]
            for cat in categories(task):
                vals = [r for r, c in zip(right, cats, strict=True) if c == cat]
                if vals:
                    scores[cat] = float(np.mean(vals))
            cell[task] = scores
        cell["parse_failure_rate"] = float(np.mean([not (p.lenient_parsed if lenient else p.parsed) for p in rows]))
        out.setdefault(model, {}).setdefault(protocol, {})[lang] = cell
    return out


class ScoreRow(BaseModel):
    """One number of the Table 1-shaped report, with its interval and its delta against the base."""

    model: str
    base_model: str
    adapter: str | None
    protocol: str
    language: str
    metric: str  # "EU/overall", "EU/complex_emotions", "EA/Social-Self", "parse_failure_rate", "lenient/EU/overall"
    n: int
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    delta: float | None = None
    delta_low: float | None = None
    delta_high: float | None = None


def _metric_vectors(rows: list[Prediction], index: dict[ItemKey, Item]) -> dict[str, dict[tuple[str, str], float]]:
    """metric -> {(task, qid): 0/1}: the per-item outcomes every score is a mean of."""
    out: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for p in rows:
        key = (p.task.value, p.qid)
        cat = index[(p.language.value, p.task.value, p.qid)].category
        for prefix, right in (("", p.correct), ("lenient/", p.lenient_correct)):
            out[f"{prefix}{p.task.value}/overall"][key] = float(right)
            out[f"{prefix}{p.task.value}/{cat}"][key] = float(right)
        out["parse_failure_rate"][key] = float(not p.parsed)
    return out


def _ci(values: np.ndarray, samples: int, seed: int) -> tuple[float | None, float | None]:
    """Percentile bootstrap 95% interval of the mean (of 0/1 outcomes, or of paired differences)."""
    if samples == 0 or len(values) < 2:
        return None, None
    if np.all(values == values[0]):  # no spread to resample; scipy would warn and return nan
        return float(values[0]), float(values[0])
    res = stats.bootstrap((values,), np.mean, n_resamples=samples, method="percentile",
                          random_state=seed, vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def score_rows(preds: list[Prediction], index: dict[ItemKey, Item], samples: int = 1000,
               seed: int = 0) -> list[ScoreRow]:
    cells = by_cell(preds)
    vectors = {cell: _metric_vectors(rows, index) for cell, rows in cells.items()}
    out = []
    for (model, protocol, lang), metrics in sorted(vectors.items()):
        first = cells[(model, protocol, lang)][0]
        base_metrics = vectors.get((first.base_model, protocol, lang)) if first.adapter else None
        for metric, outcomes in metrics.items():
            vals = np.array(list(outcomes.values()))
            low, high = _ci(vals, samples, seed)
            row = ScoreRow(model=model, base_model=first.base_model, adapter=first.adapter,
                           protocol=protocol, language=lang, metric=metric, n=len(vals),
                           value=float(vals.mean()), ci_low=low, ci_high=high)
            base = (base_metrics or {}).get(metric)
            shared = [k for k in outcomes if base and k in base]
            if shared:
                a = np.array([outcomes[k] for k in shared])
                b = np.array([base[k] for k in shared])  # type: ignore[index]
                row.delta = float(a.mean() - b.mean())
                row.delta_low, row.delta_high = _ci(a - b, samples, seed)  # paired by item
            out.append(row)
    return out


# ---------------------------------------------------------------- rotations


def robustness(preds: list[Prediction], index: dict[ItemKey, Item]) -> dict[str, Any]:
    """Per model/protocol/language/task: accuracy per rotation, CircularEval accuracy (right under
    every rotation evaluated) and position bias: how often each SHOWN letter is picked versus how
    often it holds the gold, with their total-variation distance (0 = no preference)."""
    out: dict[str, Any] = {}
    for (model, protocol, lang), rows in sorted(by_cell(preds, rotation=None).items()):
        rotations = sorted({p.rotation for p in rows})
        if len(rotations) < 2:
            continue
        cell: dict[str, Any] = {}
        for task in ("EU", "EA"):
            task_rows = [p for p in rows if p.task.value == task]
            if not task_rows:
                continue
            per_item: dict[str, list[bool]] = defaultdict(list)
            for p in task_rows:
                per_item[p.qid].append(p.correct)
            cell[task] = {
                "per_rotation": {str(r): float(np.mean([p.correct for p in task_rows if p.rotation == r]))
                                 for r in rotations},
                "circular": float(np.mean([all(v) and len(v) == len(rotations) for v in per_item.values()])),
                "position_bias": _position_bias(task_rows, index),
            }
        out.setdefault(model, {}).setdefault(protocol, {})[lang] = cell
    return out


def _position_bias(rows: list[Prediction], index: dict[ItemKey, Item]) -> dict[str, Any]:
    picks: dict[str, Counter] = defaultdict(Counter)
    golds: dict[str, Counter] = defaultdict(Counter)
    for p in rows:
        item = index[(p.language.value, p.task.value, p.qid)]
        sizes = {part: len(c) for part, c in option_lists(item).items()}
        answer, right = p.answer, gold(item)
        for part, n in sizes.items():
            chosen = getattr(answer, part) if isinstance(answer, EUAnswer) else answer
            truth = getattr(right, part) if isinstance(right, EUAnswer) else right
            golds[part][to_shown(truth, n, p.rotation)] += 1
            if chosen is not None:
                picks[part][to_shown(chosen, n, p.rotation)] += 1
    out = {}
    for part in golds:
        letters = sorted(set(golds[part]) | set(picks[part]))
        n_pick, n_gold = sum(picks[part].values()), sum(golds[part].values())
        pick = {x: picks[part][x] / n_pick if n_pick else 0.0 for x in letters}
        gold_share = {x: golds[part][x] / n_gold for x in letters}
        out[part] = {"pick_share": pick, "gold_share": gold_share,
                     "tvd": 0.5 * sum(abs(pick[x] - gold_share[x]) for x in letters) if n_pick else None}
    return out
