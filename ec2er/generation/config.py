"""``GenerateConfig``: the recipe of one generation run (``pipelines/mads*.yaml``, ``concise*.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ec2er.config import RayJobConfig, SamplingConfig, StrictModel
from ec2er.llm.kinds import EngineConfig
from ec2er.llm.kinds.vllm import VLLMEngineConfig
from ec2er.schemas.facts import MAX_TURNS, MIN_TURNS
from ec2er.schemas.taxonomy import ThemeCategory


class PersonaSourceConfig(StrictModel):
    """Where personas come from. ``file``: PersonaHub JSONL or any JSONL/Parquet with a persona
    column; ``hub``: a PersonaHub-format file downloaded from the hub (online machines only);
    ``sampler``: the built-in combinatorial sampler (any number, reproducible from the seed)."""

    source: Literal["sampler", "file", "hub"] = "sampler"
    path: str | None = None
    column: str = "persona"
    hub_dataset: str = "proj-persona/PersonaHub"
    hub_file: str = "persona.jsonl"
    max_reuse: int = Field(1, ge=1, description="dialogues each persona of a file serves (file/hub sources; "
                                                "the sampler draws a persona per dialogue)")

    @model_validator(mode="after")
    def _path_for_file(self) -> PersonaSourceConfig:
        if self.source == "file" and not self.path:
            raise ValueError("personas.path is required when personas.source is 'file'")
        return self


class ThemesConfig(StrictModel):
    path: str | None = Field(None, description="themes YAML; default: the built-in ~90 themes")
    categories: list[ThemeCategory] | None = Field(None, description="restrict to these categories")
    crisis: Literal["exclude", "include"] = Field(
        "exclude", description="crisis themes (thoughts of suicide or self-harm): kept out altogether, or "
                               "added on purpose (the built-in crisis_themes.yaml and any theme marked crisis)")


class TurnsConfig(StrictModel):
    """A turn is one message (client or therapist). The supervisor looks from ``supervisor_from``
    turns on, every ``supervisor_every`` turns; the dialogue never stops before ``min_turns``."""

    min_turns: int = Field(MIN_TURNS, ge=2)
    max_turns: int = Field(MAX_TURNS, ge=2, le=MAX_TURNS)
    supervisor_from: int = Field(MIN_TURNS, ge=2)
    supervisor_every: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> TurnsConfig:
        if self.min_turns > self.max_turns:
            raise ValueError("min_turns must not exceed max_turns")
        return self


class AgentSampling(StrictModel):
    background: SamplingConfig = SamplingConfig(temperature=0.8, max_tokens=400)
    turn: SamplingConfig = SamplingConfig(temperature=0.8, max_tokens=160)
    supervisor: SamplingConfig = SamplingConfig(temperature=0.2, max_tokens=160)
    extraction: SamplingConfig = SamplingConfig(temperature=0.5, max_tokens=700)


class ItemsConfig(StrictModel):
    eu_min: int = Field(3, ge=0, le=6)
    eu_max: int = Field(4, ge=0, le=6)
    ea_min: int = Field(3, ge=0, le=6)
    ea_max: int = Field(4, ge=0, le=6)

    @model_validator(mode="after")
    def _ordered(self) -> ItemsConfig:
        if self.eu_min > self.eu_max or self.ea_min > self.ea_max:
            raise ValueError("items: *_min must not exceed *_max")
        return self


class ActorRange(StrictModel):
    """An autoscaling pool: Ray Data starts ``min`` engine actors and adds up to ``max`` while
    there is work (a cluster autoscaler adds GPU nodes for them)."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ActorRange:
        if self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class RayConfig(RayJobConfig):
    """The Ray Data job: joins RAY_ADDRESS under ``ray job submit`` (or ``address``), else starts
    a local Ray. Each actor owns one engine and runs many dialogues on it at once."""

    actors: int | ActorRange = Field(1, description="engine actors: a fixed number, or {min, max} to autoscale")
    batch_size: int = Field(16, ge=1, description="dialogues per map_batches call")
    max_concurrent_batches: int = Field(4, ge=1, description="batches one actor works on at once, so a "
                                                             "batch's slowest dialogue never idles the engine")
    max_in_flight: int | None = Field(None, ge=1, description="dialogues one actor runs at once; default: "
                                                             "what keeps its engine full (vLLM's max_num_seqs, "
                                                             "an endpoint's max_concurrency)")
    cpus_per_actor: float = Field(0.5, gt=0, description="fractional on CPU machines: an actor asking for a "
                                                          "whole CPU on a small machine leaves Ray Data's read "
                                                          "tasks none, and the pipeline hangs")
    num_cpus: int | None = Field(None, description="logical CPUs of a locally started Ray")
    dialogue_tries: int = Field(3, ge=1, description="tries a dialogue gets when the engine or the network "
                                                     "fails it (an error reply, a dead engine, a lost node); "
                                                     "one that fails them all ends the run, naming it")

    @property
    def pool(self) -> tuple[int, int]:
        return (self.actors, self.actors) if isinstance(self.actors, int) else (self.actors.min, self.actors.max)


class GenerateConfig(StrictModel):
    pipeline: Literal["mads", "concise"]
    num_dialogues: int = Field(ge=1, description="dialogues (mads) or personas (concise)")
    seed: int = 0
    language: Literal["en"] = "en"
    personas: PersonaSourceConfig = PersonaSourceConfig()
    themes: ThemesConfig = ThemesConfig()
    turns: TurnsConfig = TurnsConfig()
    sampling: AgentSampling = AgentSampling()
    items: ItemsConfig = ItemsConfig()
    engine: EngineConfig = VLLMEngineConfig()
    ray: RayConfig = RayConfig()

    @model_validator(mode="after")
    def _concise_rounds(self) -> GenerateConfig:
        if self.pipeline == "concise" and self.turns.max_turns > 10:
            raise ValueError("turns.max_turns: the concise pipeline has at most 10 messages (5 rounds)")
        return self

    @property
    def uses_supervisor(self) -> bool:
        return self.pipeline == "mads"

    def supervises_after(self, turns: int) -> bool:
        """Whether the supervisor looks at a dialogue of ``turns`` turns (one that goes on)."""
        t = self.turns
        return (self.uses_supervisor and turns < t.max_turns and turns >= max(t.supervisor_from, t.min_turns)
                and (turns - t.supervisor_from) % t.supervisor_every == 0)

    def token_budget(self, turns: float) -> float:
        """The reply tokens a dialogue of ``turns`` turns may ask for (each request's max_tokens):
        its background, its turns, the supervisor's looks and its items' extraction. The progress
        a person sees is measured in these, so the long extraction replies count as the work they are."""
        s, items = self.sampling, self.items
        looks = sum(self.supervises_after(n) for n in range(1, int(turns) + 1))
        mean_items = (items.eu_min + items.eu_max + items.ea_min + items.ea_max) / 2
        return (s.background.max_tokens + turns * s.turn.max_tokens + looks * s.supervisor.max_tokens
                + mean_items * s.extraction.max_tokens)
