"""``ec2er validate``: check JSONL files of EU/EA items (task detected per line)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from ec2er.errors import DataError
from ec2er.io import format_validation_error, iter_jsonl
from ec2er.schemas import detect_task, parse_item


@dataclass
class ValidationReport:
    counts: Counter = field(default_factory=Counter)  # (file, task, language) -> valid lines
    errors: list[str] = field(default_factory=list)
    invalid: int = 0

    @property
    def ok(self) -> bool:
        return self.invalid == 0


def validate_files(paths: list[Path]) -> ValidationReport:
    report = ValidationReport()
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        for lineno, obj in iter_jsonl(path):
            problem = None
            if isinstance(obj, DataError):
                problem = str(obj)
            else:
                try:
                    item = parse_item(obj)
                    report.counts[(str(path), item.task.value, item.language.value)] += 1
                except ValidationError as e:
                    task = _task_or_unknown(obj)
                    problem = f"{path}:{lineno}: {task} {format_validation_error(e)}"
                except ValueError as e:
                    problem = f"{path}:{lineno}: {e}"
            if problem:
                report.invalid += 1
                report.errors.append(problem)
    return report


def _task_or_unknown(obj: dict) -> str:
    try:
        return detect_task(obj).value
    except ValueError:
        return "?"
