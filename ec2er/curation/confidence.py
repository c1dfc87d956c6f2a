"""Confidence: agreement of an independent LLM judge with each kept item's gold answers.

The judge answers every question of the item (EU: emotion and cause; EA: one) ``samples`` times,
its output constrained to one option letter (a JSON schema with an enum of letters, so vLLM's
structured decoding cannot produce anything else). Confidence = mean over questions of the share
of samples that chose the gold letter. Items below ``ambiguous_below`` are kept and flagged
"ambiguous". Without a configured judge no confidence is invented: stats say so.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, create_model

from ec2er.config import SamplingConfig
from ec2er.curation.config import JudgeConfig
from ec2er.llm import ChatEngine, ChatRequest
from ec2er.schemas import Item
from ec2er.schemas.facts import LETTERS
from ec2er.schemas.prompts import format_question_block
from ec2er.schemas.training import item_questions

log = logging.getLogger(__name__)

JUDGE_PROMPT_VERSION = "judge-v1"
JUDGE_SYSTEM = "You are an expert in emotional intelligence. Read the scenario and pick the best option."
JUDGE_USER = """{block}

Answer with a JSON object {{"answer": "<letter>"}}."""
AMBIGUOUS = "ambiguous"
JUDGE_FAILED = "judge_failed"


@cache
def letter_model(n_options: int) -> type[BaseModel]:
    """{"answer": one of the first n letters}: the schema constrained decoding follows."""
    letters = Literal[tuple(LETTERS[:n_options])]  # type: ignore[valid-type]
    return create_model(f"JudgeAnswer{n_options}", answer=(letters, ...))


def judge_confidence(items: list[Item], engine: ChatEngine, cfg: JudgeConfig) -> tuple[list[Item], dict[str, Any]]:
    """Items with ``confidence`` (and flags) set from one batched engine call."""
    requests, slots = [], []
    for i, item in enumerate(items):
        for q, (_, question, options, gold) in enumerate(item_questions(item)):
            prompt = JUDGE_USER.format(block=format_question_block(item.scenario, question, options))
            for s in range(cfg.samples):
                requests.append(ChatRequest(
                    messages=[{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}],
                    sampling=SamplingConfig(temperature=cfg.temperature, max_tokens=16, seed=s),
                    response_model=letter_model(len(options))))
                slots.append((i, q, LETTERS[options.index(gold)]))
    results = engine.chat(requests)
    votes: dict[tuple[int, int], list[bool]] = {}
    failed = 0
    for (i, q, gold), res in zip(slots, results, strict=True):
        if res.ok:
            votes.setdefault((i, q), []).append(res.parsed.answer == gold)
        else:
            failed += 1
    out = []
    for i, item in enumerate(items):
        rates = [sum(v) / len(v) for (j, _), v in votes.items() if j == i]
        flags = list(item.flags or [])
        confidence = round(sum(rates) / len(rates), 4) if rates else None
        if confidence is None:
            flags.append(JUDGE_FAILED)
        elif confidence < cfg.ambiguous_below:
            flags.append(AMBIGUOUS)
        out.append(item.model_copy(update={"confidence": confidence, "flags": flags or None}))
    stats = {"method": "llm_judge", "judge_model": engine.model_name, "prompt_version": JUDGE_PROMPT_VERSION,
             "samples": cfg.samples, "requests": len(requests), "failed_requests": failed,
             "ambiguous": sum(AMBIGUOUS in (it.flags or []) for it in out),
             "mean_confidence": _mean([it.confidence for it in out if it.confidence is not None])}
    log.info("judge: %s", stats)
    return out, stats


def no_judge_stats() -> dict[str, Any]:
    return {"method": "none", "note": "no judge configured (judge: in the recipe); confidence left unset, "
                                      "not invented"}


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
