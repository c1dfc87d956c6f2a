"""Grading and scoring: from a raw reply to answers (strict and lenient), from predictions and
the benchmark's gold letters to EmoBench's scores, with bootstrap intervals and rotation metrics.

Official rules: an EU item is right only when both its emotion and its cause letters are right;
"overall" is the mean over the language's items; categories are EU coarse_category and EA
category. An unparsed answer is wrong AND counted in ``parse_failure_rate``.
"""

from __future__ import annotations

import functools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy import optimize, stats

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
    """``{model: {protocol: {language: {"EU": {...}, "EA": {...}, "parse_failure_rate": x, "n": {...}}}}}``
    over the benchmark's own option order (rotation 0); ``n`` mirrors the numbers' keys with the
    number of items each is a mean over. Categories absent from the slice are absent."""
    out: dict[str, Any] = {}
    for (model, protocol, lang), rows in sorted(by_cell(preds).items()):
        cell: dict[str, Any] = {}
        counts: dict[str, Any] = {}
        for task in ("EU", "EA"):
            task_rows = [p for p in rows if p.task.value == task]
            if not task_rows:
                continue
            right = [p.lenient_correct if lenient else p.correct for p in task_rows]
            scores, n = {"overall": float(np.mean(right))}, {"overall": len(right)}
            cats = [index[(p.language.value, p.task.value, p.qid)].category for p in task_rows]
            for cat in categories(task):
                vals = [r for r, c in zip(right, cats, strict=True) if c == cat]
                if vals:
                    scores[cat], n[cat] = float(np.mean(vals)), len(vals)
            cell[task], counts[task] = scores, n
        cell["parse_failure_rate"] = float(np.mean([not (p.lenient_parsed if lenient else p.parsed) for p in rows]))
        cell["n"] = counts | {"parse_failure_rate": len(rows)}
        out.setdefault(model, {}).setdefault(protocol, {})[lang] = cell
    return out


def with_comparisons(tree: dict[str, Any], rows: list[ScoreRow], lenient: bool = False) -> dict[str, Any]:
    """``results()`` with each adapter's paired comparison against its base model added to its cell
    as ``vs_base``, keyed like the numbers: delta with its paired bootstrap interval (null, with the
    reason, where there is none), the paired n, the discordant counts, McNemar's p and the smallest
    difference that n could detect."""
    prefix = "lenient/" if lenient else ""
    for r in rows:
        if r.delta is None or r.lenient != lenient:
            continue
        path = r.metric.removeprefix(prefix).split("/")
        node = tree[r.model][r.protocol][r.language].setdefault("vs_base", {})
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = {
            "delta": r.delta, "ci": None if r.delta_low is None else [r.delta_low, r.delta_high],
            "no_conclusion": None if r.no_delta_interval is None else no_conclusion(r.paired_n or 0, r.no_delta_interval),
            "n": r.paired_n, "gained": r.gained, "lost": r.lost, "mcnemar_p": r.mcnemar_p, "mde": r.mde}
    return tree


# Below this many items no interval is computed and every line says "n = <n>: no conclusion": a
# percentile bootstrap of a mean of fewer than ~10 0/1 outcomes has so few distinct resamples that its
# "95%" interval covers far less than 95% (at n = 1 it is a point), so any interval there would mislead.
MIN_ITEMS_FOR_INTERVAL = 10
ALPHA, POWER = 0.05, 0.8  # of the McNemar test and of its minimum detectable difference
# Why a number has no interval: fewer than MIN_ITEMS_FOR_INTERVAL items; every outcome (or paired
# difference) alike, where a zero-width interval would claim certainty; bootstrap_samples 0.
NoInterval = Literal["too_few", "no_spread", "disabled"]


class ScoreRow(BaseModel):
    """One number of the Table 1-shaped report, with its interval and, for an adapter, its paired
    comparison with the base model on the same items."""

    model: str
    base_model: str
    adapter: str | None
    protocol: str
    language: str
    metric: str  # "EU/overall", "EU/complex_emotions", "EA/Social-Self", "parse_failure_rate", "lenient/EU/overall", ...
    n: int = Field(description="items the value is a mean over")
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    no_interval: NoInterval | None = Field(None, description="why ci_low/ci_high are absent")
    delta: float | None = Field(None, description="adapter minus base, over the items both answered")
    delta_low: float | None = None
    delta_high: float | None = None
    no_delta_interval: NoInterval | None = Field(None, description="why delta_low/delta_high are absent")
    paired_n: int | None = Field(None, description="items both the adapter and its base answered")
    gained: int | None = Field(None, description="paired items where the outcome is 1 for the adapter, 0 for the base")
    lost: int | None = Field(None, description="paired items where the outcome is 0 for the adapter, 1 for the base")
    mcnemar_p: float | None = Field(None, description="exact two-sided McNemar test of adapter vs base")
    mde: float | None = Field(None, description="smallest difference paired_n items detect (alpha 0.05, power "
                                                "0.8; see minimum_detectable_difference); None: none can be")

    @property
    def lenient(self) -> bool:
        return self.metric.startswith("lenient/")


def no_conclusion(n: int, why: NoInterval) -> str:
    """What a line says in place of a number without an interval."""
    reason = {"too_few": "", "no_spread": " (every item alike: nothing to resample)",
              "disabled": " (bootstrap_samples is 0)"}[why]
    return f"n = {n}: no conclusion{reason}"


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
        out["lenient/parse_failure_rate"][key] = float(not p.lenient_parsed)
    return out


def _ci(values: np.ndarray, samples: int, seed: int) -> tuple[float | None, float | None, NoInterval | None]:
    """Percentile bootstrap 95% interval of the mean (of 0/1 outcomes, or of paired differences),
    or (None, None, why not)."""
    if len(values) < MIN_ITEMS_FOR_INTERVAL:
        return None, None, "too_few"
    if samples == 0:
        return None, None, "disabled"
    if np.all(values == values[0]):  # every resample is the same: a zero-width interval would claim certainty
        return None, None, "no_spread"
    res = stats.bootstrap((values,), np.mean, n_resamples=samples, method="percentile",
                          random_state=seed, vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high), None


@functools.cache  # the detectable difference asks for every split of n discordant pairs
def mcnemar_p(gained: int, lost: int) -> float:
    """Exact two-sided McNemar test: under "no difference" each discordant pair is equally likely
    to favour either model, so the gained count is Binomial(gained + lost, 1/2)."""
    if gained + lost == 0:
        return 1.0
    return float(stats.binomtest(gained, gained + lost, 0.5).pvalue)


@functools.cache
def minimum_detectable_difference(n: int) -> float | None:
    """The smallest true difference in proportions that n paired items detect with power 0.8 by
    the exact McNemar test at alpha 0.05, computed exactly for the noisiest case: the two models
    disagree on every item (discordant share psi = 1), where Connor's (1987) normal approximation
    d = (z_a sqrt(psi) + z_b sqrt(psi - d^2)) / sqrt(n) is largest, about 2.80 / sqrt(n). With less
    disagreement smaller differences are detected too (about sqrt(psi) times it; the exact test's
    discreteness moves that by a few points of power). At psi = 1 the adapter wins each item with
    probability (1 + d) / 2, so the power is a binomial tail over the test's rejection region.
    None where no difference can be detected (n <= 5: even n items all won give p >= 0.0625)."""
    region = [k for k in range(n + 1) if mcnemar_p(k, n - k) < ALPHA]

    def power(d: float) -> float:
        return float(stats.binom.pmf(region, n, (1 + d) / 2).sum()) - POWER

    if not region or power(1.0) < 0:
        return None
    root = optimize.brentq(power, 0.0, 1.0, xtol=1e-7)
    return math.ceil(root * 1000) / 1000  # rounded up: the power there is at least 0.8, not a hair below


def score_rows(preds: list[Prediction], index: dict[ItemKey, Item], samples: int = 1000,
               seed: int = 0) -> list[ScoreRow]:
    cells = by_cell(preds)
    return outcome_rows({cell: OutcomeCell(base_model=rows[0].base_model, adapter=rows[0].adapter,
                                           metrics=_metric_vectors(rows, index))
                         for cell, rows in cells.items()}, samples, seed)


@dataclass(frozen=True)
class OutcomeCell:
    """One (model, protocol, language)'s per-item 0/1 outcomes: metric -> {item key: outcome}.
    EmoBench's accuracies and the crisis protocol's safe-handling shares are both means of these."""

    base_model: str
    adapter: str | None
    metrics: dict[str, dict[Any, float]]


def outcome_rows(cells: dict[Cell, OutcomeCell], samples: int = 1000, seed: int = 0) -> list[ScoreRow]:
    """A ScoreRow per cell and metric: the mean with its bootstrap interval and n, and for an
    adapter its paired comparison with its base model's cell on the items both have."""
    out = []
    for (model, protocol, lang), cell in sorted(cells.items()):
        base_cell = cells.get((cell.base_model, protocol, lang)) if cell.adapter else None
        base_metrics = base_cell.metrics if base_cell else None
        for metric, outcomes in cell.metrics.items():
            vals = np.array(list(outcomes.values()))
            low, high, why = _ci(vals, samples, seed)
            row = ScoreRow(model=model, base_model=cell.base_model, adapter=cell.adapter,
                           protocol=protocol, language=lang, metric=metric, n=len(vals),
                           value=float(vals.mean()), ci_low=low, ci_high=high, no_interval=why)
            base = (base_metrics or {}).get(metric)
            shared = [k for k in outcomes if base and k in base]
            if shared:
                _compare(row, np.array([outcomes[k] for k in shared]),
                         np.array([base[k] for k in shared]), samples, seed)  # type: ignore[index]
            out.append(row)
    return out


def _compare(row: ScoreRow, adapter: np.ndarray, base: np.ndarray, samples: int, seed: int) -> None:
    """Fill the row's paired comparison: adapter and base outcomes on the same items, in one order."""
    row.paired_n = len(adapter)
    row.gained = int(np.sum((adapter == 1) & (base == 0)))
    row.lost = int(np.sum((adapter == 0) & (base == 1)))
    row.delta = float(adapter.mean() - base.mean())
    row.delta_low, row.delta_high, row.no_delta_interval = _ci(adapter - base, samples, seed)  # paired by item
    row.mcnemar_p = mcnemar_p(row.gained, row.lost)
    row.mde = minimum_detectable_difference(row.paired_n)


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
