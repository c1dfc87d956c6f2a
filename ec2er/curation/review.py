"""Human review: a sample sheet for two annotators, and Cohen's kappa of their judgments.

Each annotator gets the same items in the same order, one row per question, with the item's gold
letter shown, and fills ``judgment`` with "ok" (the gold is right and the item unambiguous) or
"bad". Kappa is computed over the rows both filled in.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np

from ec2er.errors import DataError
from ec2er.io import atomic_open, read_records, write_text
from ec2er.schemas import parse_item
from ec2er.schemas.facts import LETTERS
from ec2er.schemas.prompts import format_options
from ec2er.schemas.training import item_questions

SHEET_COLUMNS = ("row_id", "qid", "task", "scenario", "question", "options", "gold", "explanation", "judgment",
                 "comment")
JUDGMENTS = ("ok", "bad")
ANNOTATORS = ("A", "B")
SHEET = "annotator_{}.csv"  # one per annotator
README = "README.md"  # how to fill the sheets


def export_sample(train_path: Path, n: int, out_dir: Path, seed: int = 0) -> list[Path]:
    items = read_records(train_path, parse_item)
    if not items:
        raise DataError(f"{train_path}: no items to sample")
    chosen = sorted(np.random.default_rng(seed).choice(len(items), size=min(n, len(items)), replace=False))
    rows = []
    for i in chosen:
        item = items[i]
        for q, (_, question, options, gold) in enumerate(item_questions(item)):
            rows.append({"row_id": f"{item.qid}:{q}", "qid": item.qid, "task": item.task.value,
                         "scenario": item.scenario, "question": question, "options": format_options(options),
                         "gold": LETTERS[options.index(gold)], "explanation": item.explanation or "",
                         "judgment": "", "comment": ""})
    paths = []
    for annotator in ANNOTATORS:
        path = out_dir / SHEET.format(annotator)
        with atomic_open(path) as f:
            writer = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        paths.append(path)
    write_text(out_dir / README, f"# Review sample\n\n{len(chosen)} items ({len(rows)} questions) drawn "
               f"with seed {seed} from {train_path}.\nEach annotator fills `judgment` with one of "
               f"{', '.join(JUDGMENTS)} in their own CSV, independently;\nthen run "
               f"`ec2er review kappa {' '.join(SHEET.format(a) for a in ANNOTATORS)}`.\n")
    return paths


def read_judgments(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"row_id", "judgment"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected columns row_id and judgment")
        out = {}
        for line, row in enumerate(reader, start=2):
            judgment = (row["judgment"] or "").strip().lower()
            if judgment and judgment not in JUDGMENTS:
                raise DataError(f"{path}:{line}: judgment {judgment!r} is not one of {', '.join(JUDGMENTS)}")
            if judgment:
                out[row["row_id"]] = judgment
    return out


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa, (p_o - p_e) / (1 - p_e). Ten lines rather than scikit-learn (not installed,
    and a large dependency for one formula)."""
    n = len(a)
    if n == 0:
        raise DataError("no rows judged by both annotators")
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    return 1.0 if expected == 1.0 else (observed - expected) / (1 - expected)


def kappa_from_files(path_a: Path, path_b: Path) -> dict[str, float | int]:
    ja, jb = read_judgments(path_a), read_judgments(path_b)
    shared = sorted(set(ja) & set(jb))
    a, b = [ja[k] for k in shared], [jb[k] for k in shared]
    return {"rows": len(shared), "agreement": round(sum(x == y for x, y in zip(a, b, strict=True)) / max(len(shared), 1), 4),
            "kappa": round(cohen_kappa(a, b), 4)}
