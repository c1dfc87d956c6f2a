"""The slice of a benchmark an evaluation runs on (the benchmark is read by
``ec2er.schemas.benchmark``, the reader curation's decontamination shares)."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from ec2er.errors import DataError
from ec2er.evaluation.config import DataSpec
from ec2er.schemas.items import Item
from ec2er.schemas.taxonomy import Language, Task

log = logging.getLogger(__name__)


def select_items(items: Iterable[Item], spec: DataSpec) -> list[Item]:
    """The slice to evaluate, per language and task: items in file order [offset, offset+limit),
    or a stratified draw of ``limit`` items (kept in file order)."""
    items = list(items)
    out = []
    for lang in spec.languages:
        for task in spec.tasks:
            group = [i for i in items if i.language == Language(lang) and i.task is Task(task)]
            if not group:
                _no_items(spec, lang, task)
                continue
            if spec.sample == "stratified" and spec.limit is not None:
                out.extend(stratified_sample(group, spec.limit, spec.seed))
            else:
                end = None if spec.limit is None else spec.offset + spec.limit
                out.extend(group[spec.offset:end])
    if not out:
        raise DataError(f"{spec.benchmark}: no items for languages {[str(x) for x in spec.languages]} "
                        f"and tasks {[str(x) for x in spec.tasks]} in this slice")
    return out


def _no_items(spec: DataSpec, language: str, task: str) -> None:
    """A language and task the recipe asks for that the benchmark lacks: an error for an EmoBench
    folder (a task is never silently dropped); a warning for an items file such as a small curated
    held-out split, which may hold only one task (the results then show the other as absent)."""
    what = f"{spec.benchmark}: no {Task(task).value} items in language {Language(language).value}"
    if not Path(spec.benchmark).is_file():
        raise DataError(f"{what}; the recipe's data.tasks and data.languages ask for them")
    log.warning("%s: evaluating without them", what)


def stratified_sample(group: list[Item], limit: int, seed: int) -> list[Item]:
    """``limit`` items in proportion to the categories. Each pick goes to the category with the
    smallest share taken so far, so every category is drawn once before any is drawn twice;
    within a category the order is a seeded shuffle. Returned in file order."""
    by_category: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(group):
        by_category[item.category].append(index)  # EA's StrEnum keys alike with EU's str
    rng = random.Random(seed)
    for indices in by_category.values():
        rng.shuffle(indices)
    taken = dict.fromkeys(by_category, 0)
    chosen: list[int] = []
    for _ in range(min(limit, len(group))):
        category = min((c for c in taken if taken[c] < len(by_category[c])),
                       key=lambda c: (taken[c] / len(by_category[c]), c))
        chosen.append(by_category[category][taken[category]])
        taken[category] += 1
    return [group[i] for i in sorted(chosen)]
