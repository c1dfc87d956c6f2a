"""Decontamination: drop items whose scenario is near a scenario of a held-out benchmark.

The benchmark (EmoBench EU/EA by default) is read at run time by the one benchmark reader
(``ec2er.schemas.benchmark``) from a folder holding EU.jsonl and EA.jsonl, or downloaded from the
dataset hub by id; it is never copied into the repository. Both files are required: every item,
EU or EA, is checked against every benchmark scenario, so a missing file would let its
scenarios leak unchecked. A benchmark is small (hundreds of scenarios), so every item is scored against every benchmark
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
from ec2er.schemas.benchmark import TASK_FILES, load_benchmark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkScenario:
    ref: str       # "EU.jsonl:en:17": file, language and qid
    scenario: str


def benchmark_ref(ref: str) -> dict[str, str]:
    """A ``BenchmarkScenario.ref`` as its parts: the file, the language and the qid."""
    file, language, qid = ref.split(":", 2)
    return {"ref": ref, "file": file, "language": language, "qid": qid}


def benchmark_scenarios(source: str | Path) -> list[BenchmarkScenario]:
    """The scenario of every item of the benchmark (both tasks), each with its reference."""
    out = [BenchmarkScenario(f"{TASK_FILES[item.task]}:{item.language.value}:{item.qid}", item.scenario)
           for item in load_benchmark(source)]
    log.info("decontamination: %d benchmark scenarios from %s", len(out), source)
    return out


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
