"""The one reader of a benchmark: EmoBench's files (``EU.jsonl``, ``EA.jsonl``) in a folder or a
hub dataset, or one JSONL file of EU/EA items (such as a curated held-out split).

Evaluation scores on its items; curation decontaminates against their scenarios. Each task asked
for must have its file: a folder that lacks one is an error naming the missing file, never a task
silently dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from ec2er.errors import DataError
from ec2er.io import hub_download, read_records
from ec2er.schemas.facts import BenchmarkFiles
from ec2er.schemas.items import Item, parse_item
from ec2er.schemas.taxonomy import Task

log = logging.getLogger(__name__)

ItemKey = tuple[str, str, str]  # (language, task, qid)
TASK_FILES = {Task.EU: BenchmarkFiles.EU, Task.EA: BenchmarkFiles.EA}


def item_key(item: Item) -> ItemKey:
    return item.language.value, item.task.value, item.qid


def benchmark_files(source: str | Path, tasks: Iterable[Task | str] = tuple(Task)) -> list[Path]:
    """The files to read: an items file as it is; in a folder (or a hub dataset, downloaded
    once) every copy of each task's file, found recursively as hub snapshots nest them, in path
    order."""
    path = Path(source)
    if path.is_file():
        return [path]
    folder = path if path.is_dir() else hub_download(str(source), "benchmark",
                                                      patterns=[f"*{name}" for name in BenchmarkFiles.ALL])
    files = []
    for task in map(Task, tasks):
        found = sorted(folder.rglob(TASK_FILES[task]))
        if not found:
            raise DataError(f"{folder}: no {TASK_FILES[task]} (the {task.value} items asked for); an "
                            f"EmoBench folder holds {' and '.join(BenchmarkFiles.ALL)}")
        files += found
    return sorted(files)


def load_benchmark(source: str | Path, tasks: Iterable[Task | str] = tuple(Task)) -> list[Item]:
    """Every item of the benchmark's files for ``tasks`` (an items file: all of its items), in
    file order. A line that is no EU/EA item, or a (language, task, qid) seen twice, is an error
    naming the file and line."""
    items: list[Item] = []
    seen: set[ItemKey] = set()
    for path in benchmark_files(source, tasks):
        for item in read_records(path, parse_item):
            if item_key(item) in seen:
                raise DataError(f"{path}: duplicate item {item_key(item)}")
            seen.add(item_key(item))
            items.append(item)
    log.info("loaded %d items from %s", len(items), source)
    return items
