"""Decontamination: drop items whose scenario is near a scenario of a held-out benchmark.

The benchmark (EmoBench EU/EA by default) is read at run time from a folder holding EU.jsonl and
EA.jsonl, or downloaded from the dataset hub by id; it is never copied into the repository. A
benchmark is small (hundreds of scenarios), so every item is scored against every benchmark
scenario with rapidfuzz's multi-threaded ``process.cdist``. The scorer is ``token_set_ratio`` on
content words: a paraphrase keeps most content words but reorders, pads and reworks the rest,
which Levenshtein on the raw strings (the dedup scorer) would miss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rapidfuzz import fuzz, process

from ec2er.curation.quality import content_words
from ec2er.errors import DataError
from ec2er.io import read_jsonl

log = logging.getLogger(__name__)
BENCHMARK_FILES = ("EU.jsonl", "EA.jsonl")


@dataclass(frozen=True)
class BenchmarkScenario:
    ref: str       # "EU.jsonl:en:17": file, language and qid
    scenario: str


def load_benchmark(source: str | Path) -> list[BenchmarkScenario]:
    """Scenarios of EU.jsonl and EA.jsonl in a folder, or in a hub dataset (downloaded once)."""
    folder = Path(source)
    if not folder.is_dir():
        folder = _download(str(source))
    out = []
    for name in BENCHMARK_FILES:
        matches = sorted(folder.rglob(name))
        if not matches:
            raise DataError(f"{folder}: no {name} (expected EmoBench's EU.jsonl and EA.jsonl)")
        for row in read_jsonl(matches[0]):
            if isinstance(row.get("scenario"), str):
                out.append(BenchmarkScenario(f"{name}:{row.get('language', '?')}:{row.get('qid', '?')}",
                                             row["scenario"]))
    log.info("decontamination: %d benchmark scenarios from %s", len(out), folder)
    return out


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=["*EU.jsonl", "*EA.jsonl"]))
    except Exception as e:  # offline, unknown id: one clear line
        raise DataError(f"benchmark {repo_id!r}: not a folder, and the hub download failed ({e})") from None


def contamination(scenarios: list[str], benchmark: list[BenchmarkScenario], threshold: float,
                  workers: int = -1) -> dict[int, tuple[str, float]]:
    """Index of each contaminated scenario -> (nearest benchmark ref, score 0-100)."""
    if not scenarios or not benchmark:
        return {}
    cutoff = threshold * 100
    scores = process.cdist([content_words(s) for s in scenarios], [content_words(b.scenario) for b in benchmark],
                           scorer=fuzz.token_set_ratio, score_cutoff=cutoff, dtype=np.uint8, workers=workers)
    best = scores.argmax(axis=1)
    hits = np.nonzero(scores[np.arange(len(scenarios)), best] >= cutoff)[0]
    return {int(i): (benchmark[best[i]].ref, float(scores[i, best[i]])) for i in hits}
