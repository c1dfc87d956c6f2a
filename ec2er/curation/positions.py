"""Answer positions: place gold answers so every letter is gold equally often.

A plain shuffle is uniform only in expectation; here, within each option field and option count,
gold positions are dealt round-robin over a random order of the items (counts differ by at most
one), the distractors then shuffled around it. Stats record the histogram and a chi-square test.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from scipy.stats import chisquare

from ec2er.schemas import Item
from ec2er.schemas.facts import LETTERS


def balance_positions(items: list[Item], seed: int) -> list[Item]:
    """New items whose options are reordered so gold positions are uniform per field."""
    rng = np.random.default_rng(seed)
    updates: list[dict[str, list[str]]] = [{} for _ in items]
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    fields = {f.choices: f for item in items for f in item.OPTION_FIELDS}
    for i, item in enumerate(items):
        for f in item.OPTION_FIELDS:
            groups[(f.choices, len(getattr(item, f.choices)))].append(i)
    for (choices, n_options), members in sorted(groups.items()):
        targets = np.arange(len(members)) % n_options
        rng.shuffle(targets)
        for i, target in zip(members, targets, strict=True):
            gold = getattr(items[i], fields[choices].gold)
            others = [c for c in getattr(items[i], choices) if c != gold]
            others = [others[j] for j in rng.permutation(len(others))]
            updates[i][choices] = others[:target] + [gold] + others[target:]
    return [item.model_copy(update=u) for item, u in zip(items, updates, strict=True)]


def position_stats(items: list[Item]) -> dict[str, Any]:
    """Per option field: the gold-letter histogram and a chi-square test of uniformity (over items
    whose field has the most common option count, so the expected frequencies are well defined)."""
    out: dict[str, Any] = {}
    by_field: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for item in items:
        for f in item.OPTION_FIELDS:
            options, gold = getattr(item, f.choices), getattr(item, f.gold)
            by_field[f.choices].append((len(options), options.index(gold)))
    for field, rows in sorted(by_field.items()):
        counts = np.bincount([n for n, _ in rows])
        n_options = int(np.argmax(counts))
        hist = np.bincount([p for n, p in rows if n == n_options], minlength=n_options)
        test = chisquare(hist) if hist.sum() else None
        out[field] = {
            "options": n_options, "items": int(hist.sum()),
            "histogram": {LETTERS[k]: int(v) for k, v in enumerate(hist)},
            "chi2": round(float(test.statistic), 4) if test else None,
            "p_value": round(float(test.pvalue), 4) if test else None,
        }
    return out
