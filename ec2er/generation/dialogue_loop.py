"""The turn-synchronous dialogue loop: every dialogue of a batch advances one step per ONE
batched ``engine.chat`` call (background, a turn, a supervisor check or extraction, whatever
each needs next); finished and failed dialogues drop out of the next call.

This is the speed-up over the paper's one-dialogue-at-a-time loop: the engine decodes all
dialogues of a batch together. It is a hand-written state machine because no library offers
multi-turn, multi-agent generation over a batched engine (ray.data.llm is single-turn per row).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ec2er.config import SamplingConfig
from ec2er.generation.agents import (
    BackgroundGeneratorAgent,
    ClientAgent,
    ExtractorAgent,
    SupervisorAgent,
    TherapistAgent,
    TokenBudget,
)
from ec2er.generation.agents.base import chars_estimate
from ec2er.generation.agents.extractor import EA_EXTRACTOR, EU_EXTRACTOR
from ec2er.generation.config import GenerateConfig
from ec2er.generation.extraction import ea_item, eu_item
from ec2er.generation.plan import DialogueSpec, ItemTarget, stable_seed
from ec2er.llm import ChatEngine, ChatRequest, ChatResult
from ec2er.schemas.dialogue import Dialogue, Speaker, SupervisorVerdict, Turn
from ec2er.schemas.items import Provenance
from ec2er.schemas.taxonomy import Task

log = logging.getLogger(__name__)

Stage = Literal["background", "turn", "supervise", "extract", "done"]


class DialogueResult(BaseModel):
    """What one dialogue produced: the transcript, its valid items and its metadata line."""

    model_config = ConfigDict(extra="forbid")

    dialogue: Dialogue | None
    eu: list[dict[str, Any]]
    ea: list[dict[str, Any]]
    metadata: dict[str, Any]


@dataclass
class DialogueState:
    spec: DialogueSpec
    stage: Stage = "background"
    background: str = ""
    turns: list[Turn] = field(default_factory=list)
    verdicts: list[SupervisorVerdict] = field(default_factory=list)
    supervisor_errors: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    error: str | None = None
    eu: list[dict[str, Any]] = field(default_factory=list)
    ea: list[dict[str, Any]] = field(default_factory=list)
    item_failures: list[dict[str, str]] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    engine_calls: int = 0
    seconds: float = 0.0


def token_budget(engine: ChatEngine, max_model_len: int) -> TokenBudget:
    """Counts with the engine's own tokenizer when it has one in-process (vLLM)."""
    llm = getattr(engine, "llm", None)
    if llm is not None:
        tokenizer = llm.get_tokenizer()
        return TokenBudget(max_model_len, lambda s: len(tokenizer.encode(s, add_special_tokens=False)))
    return TokenBudget(max_model_len, chars_estimate)


class DialogueLoop:
    def __init__(self, engine: ChatEngine, config: GenerateConfig, budget: TokenBudget | None = None):
        self.engine = engine
        self.config = config
        self.budget = budget or token_budget(engine, config.engine.max_model_len)
        self.model_name = config.engine.model

    def run(self, specs: list[DialogueSpec]) -> list[DialogueResult]:
        states = [DialogueState(spec) for spec in specs]
        start = time.perf_counter()
        while active := [s for s in states if s.stage != "done"]:
            owners: list[tuple[DialogueState, ItemTarget | None]] = []
            requests: list[ChatRequest] = []
            for s in active:
                for target, request in self._requests(s):
                    owners.append((s, target))
                    requests.append(request)
            extracting = [s for s in active if s.stage == "extract"]
            log.debug("step: %d requests for %d dialogues (%s)", len(requests), len(active),
                      dict(Counter(s.stage for s in active)))
            results = self.engine.chat(requests) if requests else []  # the step's one batched call
            for s in active:
                s.engine_calls += 1
            for (s, target), result in zip(owners, results, strict=True):
                s.prompt_tokens += result.prompt_tokens
                s.cached_prompt_tokens += result.cached_tokens
                s.completion_tokens += result.completion_tokens
                self._apply(s, target, result)
            for s in extracting:
                s.stage = "done"
            for s in active:
                if s.stage == "done":
                    s.seconds = time.perf_counter() - start
        return [self._result(s) for s in states]

    # ---- what each dialogue asks next ----
    def _sampling(self, base: SamplingConfig, s: DialogueState, label: str) -> SamplingConfig:
        """Per-request seeds: the same dialogue gets the same text whatever batch it runs in."""
        return base.model_copy(update={"seed": stable_seed(s.spec.seed, label)})

    def _requests(self, s: DialogueState) -> list[tuple[ItemTarget | None, ChatRequest]]:
        cfg, spec = self.config.sampling, s.spec
        n = len(s.turns)
        if s.stage == "background":
            sampling = self._sampling(cfg.background, s, "background")
            if spec.attributes is not None:
                return [(None, BackgroundGeneratorAgent.condensed_request(spec.persona, spec.attributes, sampling))]
            assert spec.theme is not None
            return [(None, BackgroundGeneratorAgent.request(spec.persona, spec.theme, sampling))]
        if s.stage == "turn":
            sampling = self._sampling(cfg.turn, s, f"turn{n}")
            if n % 2 == 0:
                return [(None, ClientAgent.request(spec.persona.description, s.background, s.turns,
                                                   sampling, self.budget))]
            return [(None, TherapistAgent.request(s.background, s.turns, self.config.turns.max_turns,
                                                  sampling, self.budget))]
        if s.stage == "supervise":
            return [(None, SupervisorAgent.request(s.turns, self._sampling(cfg.supervisor, s, f"sup{n}"),
                                                   self.budget))]
        return [(t, self._extract_request(s, t)) for t in spec.targets]

    def _extract_request(self, s: DialogueState, t: ItemTarget) -> ChatRequest:
        sampling = self._sampling(self.config.sampling.extraction, s, t.qid)
        a = s.spec.attributes
        if t.task is Task.EU:
            focus = (f"Focus the question on {a.eu_area.value.replace('_', ' ')}, seen from the "
                     f"{a.viewpoint.value.replace('_', ' ')}.\n") if a else ""
            assert t.fine is not None
            return ExtractorAgent.eu_request(s.background, s.turns, t.fine, focus, sampling, self.budget)
        focus = f"Focus the question on {a.ea_area.value.replace('_', ' ')}.\n" if a else ""
        assert t.category is not None and t.question_type is not None
        return ExtractorAgent.ea_request(s.background, s.turns, t.category, t.question_type, focus,
                                         sampling, self.budget)

    # ---- applying results ----
    def _apply(self, s: DialogueState, target: ItemTarget | None, r: ChatResult) -> None:
        if s.stage == "extract":
            assert target is not None
            self._apply_item(s, target, r)
            return
        if s.stage == "supervise":
            if r.ok:
                s.verdicts.append(r.parsed.verdict())
            else:
                s.supervisor_errors.append(f"turn {len(s.turns)}: {r.error.kind}: {r.error.message}")
            if s.verdicts and s.verdicts[-1].all_met and r.ok:
                s.stop_reason, s.stage = "all_met", "extract"
            else:
                s.stage = "turn"
            return
        if not r.ok:
            s.error = f"{s.stage}: {r.error.kind}: {r.error.message}"
            s.stop_reason, s.stage = "failed", "done"
            return
        text = r.text.strip()
        if not text:  # an empty background or turn would leave a hollow dialogue
            s.error, s.stop_reason, s.stage = f"{s.stage}: empty", "failed", "done"
            return
        if s.stage == "background":
            s.background, s.stage = text, "turn"
            return
        speaker = Speaker.CLIENT if len(s.turns) % 2 == 0 else Speaker.THERAPIST
        s.turns.append(Turn(index=len(s.turns), speaker=speaker, text=text))
        s.stage = self._after_turn(len(s.turns))
        if s.stage == "extract":
            s.stop_reason = "max_turns"

    def _after_turn(self, n: int) -> Stage:
        t = self.config.turns
        if n >= t.max_turns:
            return "extract"
        if (self.config.uses_supervisor and n >= max(t.supervisor_from, t.min_turns)
                and (n - t.supervisor_from) % t.supervisor_every == 0):
            return "supervise"
        return "turn"

    def _apply_item(self, s: DialogueState, t: ItemTarget, r: ChatResult) -> None:
        if not r.ok:
            s.item_failures.append({"qid": t.qid, "error": f"{r.error.kind}: {r.error.message}"})
            return
        spec = s.spec
        template = EU_EXTRACTOR if t.task is Task.EU else EA_EXTRACTOR
        provenance = Provenance(pipeline=spec.pipeline, dialogue_id=spec.dialogue_id,
                                generator_model=self.model_name, prompt_version=template.tag,
                                persona_id=spec.persona.persona_id,
                                theme_id=spec.theme.theme_id if spec.theme else None)
        try:
            if t.task is Task.EU:
                assert t.fine is not None
                s.eu.append(_row(eu_item(r.parsed, t.qid, t.fine, provenance, len(s.turns))))
            else:
                assert t.category is not None and t.question_type is not None
                s.ea.append(_row(ea_item(r.parsed, t.qid, t.category, t.question_type, provenance,
                                         len(s.turns))))
        except ValueError as e:  # duplicated options and other residual invalidity
            s.item_failures.append({"qid": t.qid, "error": f"invalid: {e}"})

    def _result(self, s: DialogueState) -> DialogueResult:
        return dialogue_result(s, self.model_name)


def dialogue_result(s: DialogueState, model: str) -> DialogueResult:
    """A dialogue's outputs and its ``metadata.jsonl`` line, finished or failed."""
    spec = s.spec
    dialogue = None
    if s.error is None:
        dialogue = Dialogue(dialogue_id=spec.dialogue_id, pipeline=spec.pipeline,
                            persona_id=spec.persona.persona_id,
                            theme_id=spec.theme.theme_id if spec.theme else None,
                            background=s.background, turns=s.turns, verdicts=s.verdicts)
    metadata = {
        "dialogue_id": spec.dialogue_id, "index": spec.index, "pipeline": spec.pipeline,
        "status": "failed" if s.error else "ok", "error": s.error,
        "persona_id": spec.persona.persona_id, "persona": spec.persona.description,
        "theme_id": spec.theme.theme_id if spec.theme else None,
        "theme_category": spec.theme.category.value if spec.theme else None,
        "attributes": spec.attributes.model_dump(mode="json") if spec.attributes else None,
        "turns": len(s.turns), "stop_reason": s.stop_reason,
        "verdicts": [v.model_dump() for v in s.verdicts], "supervisor_errors": s.supervisor_errors,
        "eu": len(s.eu), "ea": len(s.ea), "item_failures": s.item_failures,
        "prompt_tokens": s.prompt_tokens, "cached_prompt_tokens": s.cached_prompt_tokens,
        "completion_tokens": s.completion_tokens, "engine_calls": s.engine_calls,
        "seconds": round(s.seconds, 3), "model": model,
    }
    return DialogueResult(dialogue=dialogue, eu=s.eu, ea=s.ea, metadata=metadata)


def _row(item: BaseModel) -> dict[str, Any]:
    """An item as its JSONL line (EmoBench's keys and aliases, unset optional fields left out)."""
    return item.model_dump(mode="json", by_alias=True, exclude_none=True)
