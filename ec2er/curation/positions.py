"""Answer positions: place gold answers so every letter is gold equally often.

A plain shuffle is uniform only in expectation; here, within each option field and option count,
gold positions are dealt round-robin over a random order of the items (counts differ by at most
one), the distractors then shuffled around it. Stats record the histogram and a chi-square test.
"""

from __future__ import annotations

import string
from collections import defaultdict
from typing import Any

import numpy as np
from scipy.stats import chisquare

from ec2er.schemas import EUItem, Item

LETTERS = string.ascii_uppercase


def option_fields(item: Item) -> list[tuple[str, str]]:
    """(choices attribute, gold attribute) of an item."""
    if isinstance(item, EUItem):
        return [("emotion_choices", "emotion_label"), ("cause_choices", "cause_label")]
    return [("choices", "label")]


def gold_position(item: Item, field: str, gold_field: str) -> int:
    return getattr(item, field).index(getattr(item, gold_field))


def balance_positions(items: list[Item], seed: int) -> list[Item]:
    """New items whose options are reordered so gold positions are uniform per field."""
    rng = np.random.default_rng(seed)
    updates: list[dict[str, list[str]]] = [{} for _ in items]
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        for field, _ in option_fields(item):
            groups[(field, len(getattr(item, field)))].append(i)
    for (field, n_options), members in sorted(groups.items()):
        targets = np.arange(len(members)) % n_options
        rng.shuffle(targets)
        for i, target in zip(members, targets, strict=True):
            gold_field = dict(option_fields(items[i]))[field]
            gold = getattr(items[i], gold_field)
            others = [c for c in getattr(items[i], field) if c != gold]
            others = [others[j] for j in rng.permutation(len(others))]
            updates[i][field] = others[:target] + [gold] + others[target:]
    return [item.model_copy(update=u) for item, u in zip(items, updates, strict=True)]


def position_stats(items: list[Item]) -> dict[str, Any]:
    """Per option field: the gold-letter histogram and a chi-square test of uniformity (over items
    whose field has the most common option count, so the expected frequencies are well defined)."""
    out: dict[str, Any] = {}
    by_field: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for item in items:
        for field, gold_field in option_fields(item):
            by_field[field].append((len(getattr(item, field)), gold_position(item, field, gold_field)))
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
