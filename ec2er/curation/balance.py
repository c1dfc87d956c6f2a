"""Category balancing: the source paper's 1.5x rule, per EU coarse category and EA category.

Expected share = 1 / number of categories of the task. Items are visited in a seeded random order
and a category's items beyond ``factor`` x its expected share of the kept total are rejected;
since rejecting shrinks the total, the cap is recomputed until no category exceeds it.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from ec2er.schemas import EACategory, EUCoarseCategory, Item, Task

N_CATEGORIES = {Task.EU: len(EUCoarseCategory), Task.EA: len(EACategory)}


def over_quota(items: list[Item], factor: float, seed: int) -> dict[int, str]:
    """Indices of ``items`` to reject -> a detail naming the category and its cap."""
    rejected: dict[int, str] = {}
    order = np.random.default_rng(seed).permutation(len(items))
    for task, n_cats in N_CATEGORIES.items():
        members = [int(i) for i in order if items[i].task is task]
        while members:
            counts = Counter(items[i].category for i in members)
            cap = max(1, math.floor(factor * len(members) / n_cats))
            over = {c for c, n in counts.items() if n > cap}
            if not over:
                break
            seen: Counter = Counter()
            kept = []
            for i in members:
                cat = items[i].category
                seen[cat] += 1
                if cat in over and seen[cat] > cap:
                    rejected[i] = f"{task.value} {cat}: over {cap} = {factor}x its expected share of {len(members)}"
                else:
                    kept.append(i)
            members = kept
    return rejected


def distribution(items: list[Item]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for task in Task:
        counts = Counter(i.category for i in items if i.task is task)
        out[task.value] = dict(sorted(counts.items()))
    return out
