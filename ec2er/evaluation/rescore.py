"""Audit: recompute every answer and score from a predictions file and the benchmark's gold
letters. Stored ``answer``/``parsed``/``correct`` are re-derived from the raw ``response`` (or the
loglik ``option_scores``), never trusted; disagreements are counted and reported."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ec2er.errors import DataError
from ec2er.evaluation.data import item_key, load_benchmark
from ec2er.evaluation.records import Prediction
from ec2er.evaluation.report import write_report
from ec2er.evaluation.scoring import grade
from ec2er.io import read_records

log = logging.getLogger(__name__)


@dataclass
class Rescore:
    paths: dict[str, Path]
    rows: int
    changed: int  # rows whose stored answer or correctness differed from the recomputed one


def audited_prediction(obj: dict[str, Any]) -> Prediction:
    """A predictions line from any tool: the documented keys are read, any other key ignored."""
    return Prediction.model_validate({k: v for k, v in obj.items() if k in Prediction.model_fields})


def rescore(predictions: Path, benchmark: str | Path, output: Path, *, bootstrap_samples: int = 1000,
            seed: int = 0) -> Rescore:
    stored = read_records(predictions, audited_prediction)
    if not stored:
        raise DataError(f"{predictions}: no predictions")
    index = {item_key(i): i for i in load_benchmark(benchmark)}
    graded, changed = [], 0
    for lineno, pred in enumerate(stored, start=1):
        key = (pred.language.value, pred.task.value, pred.qid)
        if key not in index:
            raise DataError(f"{predictions}:{lineno}: item {key} is not in the benchmark {benchmark}")
        new = grade(index[key], pred)
        if (new.answer, new.parsed, new.correct, new.lenient_answer, new.lenient_correct) != \
                (pred.answer, pred.parsed, pred.correct, pred.lenient_answer, pred.lenient_correct):
            changed += 1
        graded.append(new)
    if changed:
        log.warning("%d of %d stored predictions disagreed with their recomputed answers", changed, len(stored))
    paths = write_report(output, graded, index, bootstrap_samples=bootstrap_samples, seed=seed)
    return Rescore(paths=paths, rows=len(graded), changed=changed)
