"""The run's plan: which dialogues to generate, each with its persona, theme or attributes and
the item categories it must yield. Everything derives from the config and its seed, so a
resumed run plans exactly the same dialogues, with the same ids, as the original run."""

from __future__ import annotations

import hashlib
import itertools
import random

from pydantic import BaseModel, ConfigDict

from ec2er.generation.concise import sample_attributes
from ec2er.generation.config import GenerateConfig
from ec2er.generation.personas import persona_stream
from ec2er.generation.themes import load_themes, spread_pairs
from ec2er.schemas.persona import ConciseAttributes, Persona, Theme
from ec2er.schemas.taxonomy import (
    EU_FINE_TO_COARSE,
    EACategory,
    EAQuestionType,
    EUCoarseCategory,
    EUFineCategory,
    Task,
)


class ItemTarget(BaseModel):
    """One item a dialogue must yield: its id and the category the balancer assigned."""

    model_config = ConfigDict(extra="forbid")

    qid: str
    task: Task
    fine: EUFineCategory | None = None
    category: EACategory | None = None
    question_type: EAQuestionType | None = None


class DialogueSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dialogue_id: str
    index: int
    pipeline: str
    seed: int
    persona: Persona
    theme: Theme | None = None
    attributes: ConciseAttributes | None = None
    targets: list[ItemTarget]


def stable_seed(*parts: object) -> int:
    """A 31-bit seed from any parts, identical across processes (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class CategoryBalancer:
    """Assigns item categories round robin, so EU's four coarse categories (and their fine
    categories within) and EA's four categories and two question types come out balanced."""

    def __init__(self, rng: random.Random):
        coarse = list(EUCoarseCategory)
        rng.shuffle(coarse)
        self._coarse = itertools.cycle(coarse)
        self._fine = {c: itertools.cycle([f for f, cc in EU_FINE_TO_COARSE.items() if cc == c])
                      for c in coarse}
        ea = list(EACategory)
        rng.shuffle(ea)
        self._ea = itertools.cycle(ea)
        self._qtype = itertools.cycle(list(EAQuestionType))

    def eu(self) -> EUFineCategory:
        return next(self._fine[next(self._coarse)])

    def ea(self) -> tuple[EACategory, EAQuestionType]:
        return next(self._ea), next(self._qtype)


def plan_dialogues(config: GenerateConfig) -> list[DialogueSpec]:
    rng = random.Random(f"plan:{config.seed}")
    personas = persona_stream(config.personas, config.seed)
    if config.pipeline == "mads":
        themes = load_themes(config.themes.path, config.themes.categories)
        pairs: list[tuple[Persona, Theme | None]] = list(spread_pairs(
            personas, themes, config.num_dialogues, config.seed, config.personas.max_reuse))
    else:  # concise: one dialogue per persona, n = min(num_dialogues, personas available)
        pairs = [(p, None) for p in itertools.islice(personas, config.num_dialogues)]
    balancer = CategoryBalancer(rng)
    specs = []
    for index, (persona, theme) in enumerate(pairs):
        dialogue_id = f"{config.pipeline}-s{config.seed}-{index:06d}"
        n_eu = rng.randint(config.items.eu_min, config.items.eu_max)
        n_ea = rng.randint(config.items.ea_min, config.items.ea_max)
        targets = [ItemTarget(qid=f"{dialogue_id}-eu{k}", task=Task.EU, fine=balancer.eu())
                   for k in range(n_eu)]
        for k in range(n_ea):
            category, qtype = balancer.ea()
            targets.append(ItemTarget(qid=f"{dialogue_id}-ea{k}", task=Task.EA, category=category,
                                      question_type=qtype))
        attributes = sample_attributes(rng) if config.pipeline == "concise" else None
        specs.append(DialogueSpec(dialogue_id=dialogue_id, index=index, pipeline=config.pipeline,
                                  seed=stable_seed(config.seed, dialogue_id), persona=persona,
                                  theme=theme, attributes=attributes, targets=targets))
    return specs
