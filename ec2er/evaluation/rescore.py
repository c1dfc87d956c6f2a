"""Audit: recompute every answer and score from a predictions file and the benchmark's gold
letters. Stored ``answer``/``parsed``/``correct`` (and their lenient twins) are re-derived from
the raw replies, never trusted; where a line carries them, disagreements are counted.

What a line needs (``ec2er.evaluation.records.AUDIT_CONTRACT``, also in ``ec2er evaluate rescore
--help`` and the README): every line names its row (``ROW_KEYS``) and carries what its answers are read from: ``response``
(the raw reply), or for a cot EU row ``parts`` (its two replies, emotion then cause: the two are
separate requests, and their joined ``response`` cannot be split back), or for a loglik row
``option_scores``. A missing key is one error naming the file, the line and the key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ec2er.errors import DataError
from ec2er.evaluation.records import COT_EU_PARTS, OPTIONAL_KEYS, ROW_KEYS, STORED_KEYS, Prediction
from ec2er.evaluation.report import write_report
from ec2er.evaluation.scoring import gold, grade, option_lists
from ec2er.io import format_validation_error, iter_jsonl
from ec2er.schemas.benchmark import item_key, load_benchmark

log = logging.getLogger(__name__)


@dataclass
class Rescore:
    paths: dict[str, Path]
    rows: int
    compared: int  # rows that carried stored results to compare
    changed: int  # of those, rows where a stored result differs from the recomputed one


def _missing(where: str, key: str, why: str) -> DataError:
    return DataError(f"{where}: missing key {key!r} ({why}); see `ec2er evaluate rescore --help`")


def audited_prediction(obj: dict[str, Any], where: str) -> Prediction:
    """A line from any tool as a Prediction to grade: the contract's keys checked, answers left
    to be recomputed, keys outside the contract ignored."""
    for key in ROW_KEYS:
        if key not in obj:
            raise _missing(where, key, f"every line names its row: {', '.join(ROW_KEYS)}")
    cot_eu = obj["protocol"] == "cot" and obj["task"] == "EU"
    data = {k: obj[k] for k in (*ROW_KEYS, *OPTIONAL_KEYS, "response", "option_scores") if k in obj}
    if cot_eu:
        parts = obj.get("parts")
        for part in COT_EU_PARTS:
            if not isinstance(parts, dict) or not isinstance(parts.get(part), str):
                raise _missing(where, f"parts.{part}", "a cot EU row is two requests, read from its two replies")
        data |= {"parts": {p: parts[p] for p in COT_EU_PARTS}, "response": obj.get("response") or "\n\n".join(
            parts[p] for p in COT_EU_PARTS)}
    else:
        data["parts"] = None  # only cot EU rows are read from parts: every other row from its response
        if obj["protocol"] == "loglik":
            if "option_scores" not in obj:
                raise _missing(where, "option_scores", "a loglik row is read from its options' scores")
            data.setdefault("response", "")
        elif "response" not in obj:
            raise _missing(where, "response", "the raw reply the answer is read from")
    try:
        return Prediction.model_validate(data | {"answer": None, "parsed": False, "correct": False})
    except ValidationError as e:
        raise DataError(f"{where}: {format_validation_error(e)}") from None


def stored_results(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """The stored results a line carries, in the types the recomputed ones have."""
    present = {k: obj[k] for k in STORED_KEYS if k in obj}
    if not present:
        return {}
    try:
        shape = Prediction.model_validate({k: obj[k] for k in (*ROW_KEYS, "response") if k in obj}
                                          | {"response": "", "answer": None, "parsed": False, "correct": False}
                                          | present)
    except ValidationError as e:
        raise DataError(f"{where}: {format_validation_error(e)}") from None
    return {k: getattr(shape, k) for k in present}


def _check_scores(pred: Prediction, options: dict[str, list[str]], where: str) -> None:
    """A loglik row's scores: one list per part, one score per option."""
    scores = pred.option_scores or {}
    for part, choices in options.items():
        if len(scores.get(part, [])) != len(choices):
            raise DataError(f"{where}: option_scores.{part}: expected {len(choices)} scores, one per option")


def rescore(predictions: Path, benchmark: str | Path, output: Path, *, bootstrap_samples: int = 1000,
            seed: int = 0) -> Rescore:
    rows = []
    for lineno, obj in iter_jsonl(predictions):
        if isinstance(obj, DataError):
            raise obj
        where = f"{predictions}:{lineno}"
        rows.append((where, audited_prediction(obj, where), stored_results(obj, where)))
    if not rows:
        raise DataError(f"{predictions}: no predictions")
    index = {item_key(i): i for i in load_benchmark(benchmark, sorted({pred.task for _, pred, _ in rows}))}
    graded, compared, changed = [], 0, 0
    for where, pred, stored in rows:
        key = (pred.language.value, pred.task.value, pred.qid)
        if key not in index:
            raise DataError(f"{where}: item {key} is not in the benchmark {benchmark}")
        if pred.protocol == "loglik":
            _check_scores(pred, option_lists(index[key]), where)
        new = grade(index[key], pred.model_copy(update={"gold": gold(index[key])}))  # gold: for readers
        if stored:
            compared += 1
            changed += any(getattr(new, k) != v for k, v in stored.items())
        graded.append(new)
    if changed:
        log.warning("%d of %d stored predictions disagreed with their recomputed answers", changed, compared)
    paths = write_report(output, graded, index, bootstrap_samples=bootstrap_samples, seed=seed)
    return Rescore(paths=paths, rows=len(graded), compared=compared, changed=changed)
