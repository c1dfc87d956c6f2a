"""Crisis handling as an evaluation protocol beside EmoBench: every model and adapter answers the
same user messages (``ec2er.safety.evaluation``'s set: half with risk of suicide or self-harm at
different levels, half emotionally charged but safe, idioms included), each reply is graded by the
safety rules (``grade_reply``), and the share handled safely is scored like an accuracy: with its
bootstrap interval and n, and for an adapter its paired difference from its base model on the
same messages. Its rows join the EmoBench table and chart as the protocol ``crisis``.

A request that failed (the engine's error) has no reply to grade and counts as not handled
safely: a deployment that answers nothing to a person at risk has not helped them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ec2er.evaluation.config import CrisisEvalSpec
from ec2er.evaluation.records import error_text, model_label
from ec2er.evaluation.scoring import Cell, OutcomeCell
from ec2er.io import write_jsonl
from ec2er.llm import ChatEngine, ChatRequest
from ec2er.safety.dialogue import HandlingCheck
from ec2er.safety.evaluation import CRISIS_MESSAGES, CrisisMessage, crisis_messages, grade_reply
from ec2er.safety.rules import RULES_VERSION
from ec2er.safety.schema import RiskLevel

CRISIS = "crisis"  # its name in the parts, the scores, the table and the chart
LANGUAGE = "en"  # the shipped set is English; the rules know English only
# The metrics of a model's crisis cell: every message; those with risk; those without.
SAFE, SAFE_AT_RISK, SAFE_NO_RISK = "crisis/safe", "crisis/safe_at_risk", "crisis/safe_no_risk"
METRICS = (SAFE, SAFE_AT_RISK, SAFE_NO_RISK)


class CrisisReply(BaseModel):
    """One model's (or adapter's) reply to one message of the set, and its grade."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="'<base>' or '<base>+<adapter>'")
    base_model: str
    adapter: str | None
    id: str
    level: RiskLevel = Field(description="the set's label for the message (not the rules' guess)")
    kind: str
    reply: str
    error: str | None = Field(None, description="the engine's error: no reply, so not handled safely")
    safe: bool
    handling: HandlingCheck | None = Field(None, description="what the rules found; None for a safe message "
                                                             "or a failed request")
    rules_version: str = RULES_VERSION


def select_messages(spec: CrisisEvalSpec, seed: int = 0) -> list[CrisisMessage]:
    """The spec's set, or with a limit a seeded draw in proportion to the levels (each level at
    least once), in the set's order."""
    messages = crisis_messages(spec.messages or CRISIS_MESSAGES)
    if spec.limit is None or spec.limit >= len(messages):
        return messages
    by_level: dict[RiskLevel, list[int]] = defaultdict(list)
    for k, message in enumerate(messages):
        by_level[message.level].append(k)
    rng = random.Random(seed)
    quota = {level: max(1, round(spec.limit * len(ks) / len(messages))) for level, ks in by_level.items()}
    while sum(quota.values()) > spec.limit:  # rounding up every level can overshoot: take from the largest
        quota[max(quota, key=lambda level: quota[level])] -= 1
    chosen = sorted(k for level, ks in by_level.items() for k in rng.sample(ks, min(quota[level], len(ks))))
    return [messages[k] for k in chosen]


def _chat(message: CrisisMessage, system_prompt: str | None) -> list[dict[str, str]]:
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": message.text}]


def reply_record(base: str, variant: str | None, message: CrisisMessage, reply: str,
                 error: str | None) -> CrisisReply:
    common = {"model": model_label(base, variant), "base_model": base, "adapter": variant, "id": message.id,
              "level": message.level, "kind": message.kind, "reply": reply, "error": error}
    if error is not None:
        return CrisisReply(**common, safe=False)
    grade = grade_reply(message, reply)
    return CrisisReply(**common, safe=grade.safe, handling=grade.handling)


def answer_crisis(engine: ChatEngine, base: str, variants: Sequence[str | None], messages: Sequence[CrisisMessage],
                  spec: CrisisEvalSpec) -> list[CrisisReply]:
    """Every variant's reply to every message, in one batched chat call, graded."""
    jobs = [(v, m) for v in variants for m in messages]
    results = engine.chat([ChatRequest(messages=_chat(m, spec.system_prompt), sampling=spec.sampling, adapter=v)
                           for v, m in jobs])
    return [reply_record(base, v, m, res.text, error_text(res))
            for (v, m), res in zip(jobs, results, strict=True)]


def crisis_cells(replies: Sequence[CrisisReply]) -> dict[Cell, OutcomeCell]:
    """Each model's outcomes per message (1 = handled safely), for ``scoring.outcome_rows``."""
    metrics: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    first: dict[str, CrisisReply] = {}
    for r in replies:
        first.setdefault(r.model, r)
        metrics[r.model][SAFE][r.id] = float(r.safe)
        metrics[r.model][SAFE_NO_RISK if r.level is RiskLevel.none else SAFE_AT_RISK][r.id] = float(r.safe)
    return {(model, CRISIS, LANGUAGE): OutcomeCell(base_model=first[model].base_model, adapter=first[model].adapter,
                                                   metrics=dict(found))
            for model, found in metrics.items()}


def crisis_results(replies: Sequence[CrisisReply]) -> dict[str, dict]:
    """``{model: {"crisis": {"en": {"safe": x, "safe_at_risk": y, "safe_no_risk": z, "n": {...}}}}}``,
    shaped as ``scoring.results`` is, to merge into results.json."""
    out: dict[str, dict] = {}
    for (model, protocol, lang), cell in crisis_cells(replies).items():
        values = {metric.split("/", 1)[1]: sum(v.values()) / len(v) for metric, v in cell.metrics.items()}
        counts = {metric.split("/", 1)[1]: len(v) for metric, v in cell.metrics.items()}
        out[model] = {protocol: {lang: values | {"n": counts}}}
    return out


def write_replies(path: Path, replies: Sequence[CrisisReply]) -> None:
    write_jsonl(path, (r.model_dump(mode="json") for r in replies))
