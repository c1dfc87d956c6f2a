"""One dialogue as one coroutine: background, client and therapist turns, supervisor checks
every 2 turns from turn 4, then extraction of its items (all at once), each step an
``await engine.achat_one(...)``.

Many dialogues run at once on one engine (vLLM's AsyncLLM batches whatever requests are in
flight), so a dialogue waiting on its supervisor or ending early never holds up another: the
engine stays full, unlike lock-step turns where each call waits for the longest reply in it.
Written by hand because no library offers multi-turn, multi-agent generation over an engine
(``ray.data.llm`` is one request per row); verl, OpenRLHF and SkyRL run agent loops the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
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
from ec2er.generation.agents.extractor import EA_EXTRACTOR, EU_EXTRACTOR
from ec2er.generation.config import GenerateConfig
from ec2er.generation.extraction import ea_item, eu_item
from ec2er.generation.persons import client_name
from ec2er.generation.plan import DialogueSpec, ItemTarget, stable_seed
from ec2er.llm import ChatEngine, ChatRequest, ChatResult
from ec2er.schemas.dialogue import Dialogue, Speaker, SupervisorVerdict, Turn
from ec2er.schemas.items import Provenance
from ec2er.schemas.taxonomy import Task

log = logging.getLogger(__name__)

Stage = Literal["turn", "supervise", "extract"]


class DialogueResult(BaseModel):
    """What one dialogue produced: the transcript, its valid items and its metadata line.
    ``transient``: a step failed for the engine's or network's sake, not the model's; such a
    result is not written, so a re-run does the dialogue again."""

    model_config = ConfigDict(extra="forbid")

    dialogue: Dialogue | None
    eu: list[dict[str, Any]]
    ea: list[dict[str, Any]]
    metadata: dict[str, Any]
    transient: bool = False


@dataclass
class DialogueState:
    spec: DialogueSpec
    background: str = ""
    turns: list[Turn] = field(default_factory=list)
    verdicts: list[SupervisorVerdict] = field(default_factory=list)
    supervisor_errors: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    error: str | None = None
    eu: list[dict[str, Any]] = field(default_factory=list)
    ea: list[dict[str, Any]] = field(default_factory=list)
    item_failures: list[dict[str, str]] = field(default_factory=list)
    transient: bool = False  # failed (in part) for the engine's or network's sake: redo on a re-run
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    engine_calls: int = 0
    seconds: float = 0.0


class DialogueRunner:
    """Runs dialogues on an engine with an async path (``achat_one``)."""

    def __init__(self, engine: ChatEngine, config: GenerateConfig,
                 on_progress: Callable[[dict[str, int]], None] | None = None):
        self.engine = engine
        self.config = config
        # hears each turn, each reply's completion tokens and its request's max_tokens (the unit of
        # the progress a person sees) as they happen
        self.on_progress = on_progress or (lambda delta: None)
        self.budget = TokenBudget(config.engine.max_model_len, engine.count_tokens)
        self.model_name = config.engine.model

    async def run(self, spec: DialogueSpec) -> DialogueResult:
        """The dialogue's result; a dead engine (``EngineDead``) propagates, ending the worker."""
        s = DialogueState(spec)
        start = time.perf_counter()
        if await self._converse(s):
            await self._extract(s)
        s.seconds = time.perf_counter() - start
        return dialogue_result(s, self.model_name)

    async def _ask(self, s: DialogueState, request: ChatRequest) -> ChatResult:
        result = await self.engine.achat_one(request)
        s.engine_calls += 1
        s.prompt_tokens += result.prompt_tokens
        s.cached_prompt_tokens += result.cached_tokens
        s.completion_tokens += result.completion_tokens
        self.on_progress({"completion_tokens": result.completion_tokens, "budget": request.sampling.max_tokens})
        return result

    def _sampling(self, base: SamplingConfig, s: DialogueState, label: str) -> SamplingConfig:
        """Per-request seeds: the same dialogue gets the same text whatever runs beside it."""
        return base.model_copy(update={"seed": stable_seed(s.spec.seed, label)})

    # ---- the conversation ----
    async def _converse(self, s: DialogueState) -> bool:
        """Background, then turns until the supervisor is satisfied or the limit; False on failure."""
        spec, cfg = s.spec, self.config.sampling
        sampling = self._sampling(cfg.background, s, "background")
        if spec.attributes is not None:
            request = BackgroundGeneratorAgent.condensed_request(spec.persona, spec.attributes, sampling)
        else:
            assert spec.theme is not None
            request = BackgroundGeneratorAgent.request(spec.persona, spec.theme, sampling)
        s.background = self._text_or_fail(s, "background", await self._ask(s, request))
        while s.error is None:
            n = len(s.turns)
            text = self._text_or_fail(s, "turn", await self._ask(s, self._turn_request(s, n)))
            if s.error is not None:
                break
            s.turns.append(Turn(index=n, speaker=Speaker.CLIENT if n % 2 == 0 else Speaker.THERAPIST, text=text))
            self.on_progress({"turns": 1})
            nxt = self._after_turn(len(s.turns))
            if nxt == "extract":
                s.stop_reason = "max_turns"
                return True
            if nxt == "supervise" and await self._supervise(s):
                s.stop_reason = "all_met"
                return True
        s.stop_reason = "failed"
        return False

    def _turn_request(self, s: DialogueState, n: int) -> ChatRequest:
        sampling = self._sampling(self.config.sampling.turn, s, f"turn{n}")
        if n % 2 == 0:
            return ClientAgent.request(s.spec.persona.description, s.background, s.turns, sampling, self.budget)
        return TherapistAgent.request(s.background, s.turns, self.config.turns.max_turns, sampling, self.budget)

    async def _supervise(self, s: DialogueState) -> bool:
        """True when the supervisor finds every criterion met; its failures only continue the talk."""
        n = len(s.turns)
        r = await self._ask(s, SupervisorAgent.request(
            s.turns, self._sampling(self.config.sampling.supervisor, s, f"sup{n}"), self.budget))
        if not r.ok:
            s.supervisor_errors.append(f"turn {n}: {r.error.kind}: {r.error.message}")
            s.transient |= r.error.transient
            return False
        s.verdicts.append(r.parsed.verdict())
        return s.verdicts[-1].all_met

    def _text_or_fail(self, s: DialogueState, step: str, r: ChatResult) -> str:
        if not r.ok:
            s.error, s.transient = f"{step}: {r.error.kind}: {r.error.message}", r.error.transient
            return ""
        text = r.text.strip()
        if not text:  # an empty background or turn would leave a hollow dialogue
            s.error = f"{step}: empty"
        return text

    def _after_turn(self, n: int) -> Stage:
        if n >= self.config.turns.max_turns:
            return "extract"
        return "supervise" if self.config.supervises_after(n) else "turn"

    # ---- extraction ----
    async def _extract(self, s: DialogueState) -> None:
        targets = s.spec.targets
        results = await asyncio.gather(*(self._ask(s, self._extract_request(s, t)) for t in targets))
        for target, result in zip(targets, results, strict=True):
            self._apply_item(s, target, result)

    def _extract_request(self, s: DialogueState, t: ItemTarget) -> ChatRequest:
        sampling = self._sampling(self.config.sampling.extraction, s, t.qid)
        a = s.spec.attributes
        client = client_name(s.spec.persona.persona_id)
        if t.task is Task.EU:
            focus = (f"Focus the question on {a.eu_area.value.replace('_', ' ')}, seen from the "
                     f"{a.viewpoint.value.replace('_', ' ')}.\n") if a else ""
            assert t.fine is not None
            return ExtractorAgent.eu_request(s.background, s.turns, client, t.fine, focus, sampling,
                                             self.budget)
        focus = f"Focus the question on {a.ea_area.value.replace('_', ' ')}.\n" if a else ""
        assert t.category is not None and t.question_type is not None
        return ExtractorAgent.ea_request(s.background, s.turns, client, t.category, t.question_type,
                                         focus, sampling, self.budget)

    def _apply_item(self, s: DialogueState, t: ItemTarget, r: ChatResult) -> None:
        if not r.ok:
            s.item_failures.append({"qid": t.qid, "error": f"{r.error.kind}: {r.error.message}"})
            s.transient |= r.error.transient
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
    return DialogueResult(dialogue=dialogue, eu=s.eu, ea=s.ea, metadata=metadata, transient=s.transient)


def _row(item: BaseModel) -> dict[str, Any]:
    """An item as its JSONL line (EmoBench's keys and aliases, unset optional fields left out)."""
    return item.model_dump(mode="json", by_alias=True, exclude_none=True)
