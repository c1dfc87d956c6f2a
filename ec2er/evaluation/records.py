"""The audit records: one ``Prediction`` per model x protocol x item x rotation.

Answers are stored as letters of the benchmark's OWN option order whatever the rotation shown,
so ``ec2er evaluate rescore`` compares them with the gold letters directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ec2er.evaluation.config import Protocol
from ec2er.io import write_jsonl
from ec2er.llm.types import ChatResult
from ec2er.schemas.taxonomy import Language, Task

Letter = Annotated[str, Field(pattern=r"^[A-Z]$")]
Variant = str | None  # None = the base model, else an adapter name


def model_label(base: str, variant: Variant) -> str:
    """A record's ``model``: '<base>' or '<base>+<adapter>'."""
    return base if variant is None else f"{base}+{variant}"


def error_text(result: ChatResult) -> str | None:
    """A failed request's error as a record keeps it; None when it succeeded."""
    return None if result.error is None else f"{result.error.kind}: {result.error.message}"


class EUAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    emotion: Letter | None = None
    cause: Letter | None = None

    @property
    def complete(self) -> bool:
        return self.emotion is not None and self.cause is not None


Answer = EUAnswer | Letter | None


def answer_parsed(task: Task, answer: Answer) -> bool:
    """An EA answer is parsed when it has a letter; an EU answer only when it has both."""
    if task is Task.EU:
        return isinstance(answer, EUAnswer) and answer.complete
    return answer is not None


class Prediction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="'<base>' or '<base>+<adapter>'")
    base_model: str = Field("", description="derived from model when absent")
    adapter: str | None = Field(None, description="derived from model when absent")
    protocol: Protocol
    language: Language
    task: Task
    qid: str
    rotation: int = Field(ge=0, description="options shifted left by this many places when shown")
    response: str = Field(description="raw model text ('' for loglik)")
    answer: Answer = Field(description="strict parse, in the benchmark's own letters")
    parsed: bool
    correct: bool
    lenient_answer: Answer = None
    lenient_parsed: bool = False
    lenient_correct: bool = False
    parts: dict[str, str] | None = Field(None, description="raw texts of multi-request protocols "
                                                           "(cot EU: emotion, cause)")
    option_scores: dict[str, list[float]] | None = Field(
        None, description="loglik: length-normalised log-likelihood per option, benchmark order")
    error: str | None = Field(None, description="engine error for this row, if any")
    gold: Answer = Field(None, description="the gold answer in the benchmark's letters, for people reading "
                                           "this file (scoring reads the benchmark itself)")
    prompts: dict[str, list[dict[str, str]]] | None = Field(
        None, description="the messages each request sent: 'answer', or per part (cot EU: emotion, cause; "
                          "loglik: the prompt each option was scored after)")

    @model_validator(mode="before")
    @classmethod
    def _derive_base_and_adapter(cls, data: Any) -> Any:
        """Files from other tools carry only ``model``: '<base>+<adapter>' splits into the two."""
        if isinstance(data, dict) and not data.get("base_model") and isinstance(data.get("model"), str):
            base, _, adapter = data["model"].partition("+")
            data = {**data, "base_model": base, "adapter": data.get("adapter") or adapter or None}
        return data

    @model_validator(mode="after")
    def _answer_shape(self) -> Prediction:
        for ans in (self.answer, self.lenient_answer, self.gold):
            if ans is not None and isinstance(ans, EUAnswer) != (self.task is Task.EU):
                raise ValueError(f"answer {ans!r} does not fit task {self.task.value}")
        return self

    @property
    def variant_key(self) -> tuple[str, str, str]:
        return self.model, self.protocol, self.language.value


# What ``ec2er evaluate rescore`` reads from a predictions line of any tool (the audit contract).
ROW_KEYS = ("model", "protocol", "language", "task", "qid", "rotation")
COT_EU_PARTS = ("emotion", "cause")
# Stored results an audit compares with its own, on the lines that carry them.
STORED_KEYS = ("answer", "parsed", "correct", "lenient_answer", "lenient_parsed", "lenient_correct")
# Read when present; any other key is ignored.
OPTIONAL_KEYS = ("base_model", "adapter", "error")
AUDIT_CONTRACT = (
    f"Each line needs {', '.join(ROW_KEYS)}, and what its answers are read from: response (the raw "
    f"reply); for cot EU rows parts.emotion and parts.cause (the two replies) instead; for loglik rows "
    f"option_scores (per part, one score per option in the benchmark's order). Optional: "
    f"{', '.join(STORED_KEYS)} (compared with the recomputed ones where present), base_model and "
    f"adapter (else split from model '<base>+<adapter>'), error. Other keys are ignored.")


def write_predictions(path: Path, preds: Iterable[Prediction]) -> None:
    """Atomically. model_dump, not ec2er.io.dumps: unparsed answers must stay in the file as null."""
    write_jsonl(path, (p.model_dump(mode="json") for p in preds))
