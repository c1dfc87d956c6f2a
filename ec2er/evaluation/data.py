"""Benchmark items: EmoBench's EU.jsonl / EA.jsonl from a folder (or the hub dataset when online),
or a JSONL file of EU/EA items such as the held-out split of our own curated data."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path


from ec2er.errors import DataError
from ec2er.evaluation.config import DataSpec
from ec2er.io import read_records
from ec2er.schemas.items import Item, parse_item
from ec2er.schemas.taxonomy import Language, Task

log = logging.getLogger(__name__)

ItemKey = tuple[str, str, str]  # (language, task, qid)


def item_key(item: Item) -> ItemKey:
    return item.language.value, item.task.value, item.qid


def _hub_folder(dataset_id: str) -> Path:
    """Download the dataset's JSONL files (needs network to the hub; none on our CPU machines)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(dataset_id, repo_type="dataset", allow_patterns=["*.jsonl"]))
    except Exception as e:  # offline, unknown id, auth: one line for the user
        raise DataError(f"benchmark {dataset_id!r}: not a local folder or file, and the hub "
                        f"download failed ({type(e).__name__}: {e})") from None


def load_benchmark(source: str | Path) -> list[Item]:
    """Every item of a benchmark folder (EU.jsonl + EA.jsonl, found recursively for hub
    snapshots), an items file, or a hub dataset id. Duplicate (language, task, qid) is an error."""
    path = Path(source)
    if path.is_file():
        files = [path]
    else:
        folder = path if path.is_dir() else _hub_folder(str(source))
        files = sorted(p for name in ("EU.jsonl", "EA.jsonl") for p in folder.rglob(name))
        if not files:
            raise DataError(f"{folder}: no EU.jsonl or EA.jsonl in this folder")
    items: list[Item] = []
    seen: set[ItemKey] = set()
    for f in files:
        for item in read_records(f, parse_item):
            if item_key(item) in seen:
                raise DataError(f"{f}: duplicate item {item_key(item)}")
            seen.add(item_key(item))
            items.append(item)
    log.info("loaded %d items from %s", len(items), source)
    return items


def select_items(items: Iterable[Item], spec: DataSpec) -> list[Item]:
    """The slice to evaluate, per language and task: items in file order [offset, offset+limit),
    or a stratified draw of ``limit`` items (kept in file order)."""
    items = list(items)
    out = []
    for lang in spec.languages:
        for task in spec.tasks:
            group = [i for i in items if i.language == Language(lang) and i.task is Task(task)]
            if spec.sample == "stratified" and spec.limit is not None:
                out.extend(stratified_sample(group, spec.limit, spec.seed))
            else:
                end = None if spec.limit is None else spec.offset + spec.limit
                out.extend(group[spec.offset:end])
    if not out:
        raise DataError(f"{spec.benchmark}: no items for languages {[str(x) for x in spec.languages]} "
                        f"and tasks {[str(x) for x in spec.tasks]} in this slice")
    return out


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
