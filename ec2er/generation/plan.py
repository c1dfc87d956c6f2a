"""The run's plan: each dialogue's spec (persona, theme or attributes, the item categories it must
yield, its seed and ids) as a pure function of the config and one source row, so a plan streams
through Ray Data at any scale and is the same whatever the number of workers.

Two sources:
- the built-in sampler: row ``i`` of ``ray.data.range(num_dialogues)`` is dialogue ``i``; its
  persona is drawn from (seed, i), and themes and item categories are dealt round robin by ``i``,
  so every theme category and item category comes out balanced to within one;
- a persona file (PersonaHub JSONL or any JSONL/Parquet with a persona column): each persona row
  serves ``max_reuse`` dialogues, ids derive from the persona's text, and the same round-robin
  formulas run on a hash of the dialogue id, which spreads themes and categories evenly in
  expectation (at 100k dialogues each of the six theme categories gets 1/6 +- 0.4%).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from ec2er.generation.concise import sample_attributes
from ec2er.generation.config import GenerateConfig
from ec2er.generation.personas import persona_at
from ec2er.generation.themes import compatible, load_themes
from ec2er.schemas.persona import ConciseAttributes, Persona, Theme
from ec2er.schemas.taxonomy import (
    EU_FINE_TO_COARSE,
    EACategory,
    EAQuestionType,
    EUCoarseCategory,
    EUFineCategory,
    Task,
    ThemeCategory,
)


class ItemTarget(BaseModel):
    """One item a dialogue must yield: its id and the category the plan assigned."""

    model_config = ConfigDict(extra="forbid")

    qid: str
    task: Task
    fine: EUFineCategory | None = None
    category: EACategory | None = None
    question_type: EAQuestionType | None = None


class DialogueSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dialogue_id: str
    index: int | None = None  # the sampler's row; None for persona files
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


@functools.lru_cache(maxsize=8)
def _orders(seed: int) -> tuple[tuple[ThemeCategory, ...], tuple[EUCoarseCategory, ...], tuple[EACategory, ...]]:
    """The seeded orders the round robins deal in."""
    rng = random.Random(f"plan:{seed}")
    themes, coarse, ea = list(ThemeCategory), list(EUCoarseCategory), list(EACategory)
    rng.shuffle(themes)
    rng.shuffle(coarse)
    rng.shuffle(ea)
    return tuple(themes), tuple(coarse), tuple(ea)


@functools.lru_cache(maxsize=8)
def _themes(path: str | None, categories: tuple[ThemeCategory, ...] | None,
            crisis: str = "exclude") -> dict[ThemeCategory, list[Theme]]:
    by_category: dict[ThemeCategory, list[Theme]] = {}
    for t in load_themes(path, list(categories) if categories else None, crisis=crisis):
        by_category.setdefault(t.category, []).append(t)
    return by_category


def pick_theme(config: GenerateConfig, persona: Persona, slot: int) -> Theme | None:
    """The slot-th dialogue targets theme category ``slot mod 6`` (the next one if none fits the
    persona), and within it the compatible themes in turn; None if no theme fits at all."""
    themes = _themes(config.themes.path, tuple(config.themes.categories or ()) or None, config.themes.crisis)
    order = [c for c in _orders(config.seed)[0] if c in themes]
    for shift in range(len(order)):
        fitting = [t for t in themes[order[(slot + shift) % len(order)]] if compatible(persona, t)]
        if fitting:
            return fitting[(slot // len(order)) % len(fitting)]
    return None


def item_targets(config: GenerateConfig, dialogue_id: str, slot: int, rng: random.Random) -> list[ItemTarget]:
    """A dialogue's k-th EU item takes coarse category ``slot + k`` (mod 4) and EA item category
    ``slot + k``: whatever number of items each dialogue yields, any 4 consecutive slots give
    every category the same count. Fine categories and question types turn with ``slot // 4``."""
    _, coarse_order, ea_order = _orders(config.seed)
    items = config.items
    n_eu, n_ea = rng.randint(items.eu_min, items.eu_max), rng.randint(items.ea_min, items.ea_max)
    turn = slot // len(coarse_order)
    targets = []
    for k in range(n_eu):
        coarse = coarse_order[(slot + k) % len(coarse_order)]
        fines = [f for f, c in EU_FINE_TO_COARSE.items() if c == coarse]
        targets.append(ItemTarget(qid=f"{dialogue_id}-eu{k}", task=Task.EU, fine=fines[(turn + k) % len(fines)]))
    qtypes = list(EAQuestionType)
    for k in range(n_ea):
        targets.append(ItemTarget(qid=f"{dialogue_id}-ea{k}", task=Task.EA,
                                  category=ea_order[(slot + k) % len(ea_order)],
                                  question_type=qtypes[(turn + k) % len(qtypes)]))
    return targets


def dialogue_spec(config: GenerateConfig, dialogue_id: str, slot: int, persona: Persona,
                  index: int | None = None) -> DialogueSpec | None:
    """The spec of one dialogue; None when the pipeline needs a theme and none fits the persona."""
    rng = random.Random(f"spec:{config.seed}:{dialogue_id}")
    theme = pick_theme(config, persona, slot) if config.pipeline == "mads" else None
    if config.pipeline == "mads" and theme is None:
        return None
    return DialogueSpec(
        dialogue_id=dialogue_id, index=index, pipeline=config.pipeline, seed=stable_seed(config.seed, dialogue_id),
        persona=persona, theme=theme, targets=item_targets(config, dialogue_id, slot, rng),
        attributes=sample_attributes(random.Random(f"attributes:{config.seed}:{dialogue_id}"))
        if config.pipeline == "concise" else None)


def sampler_specs(config: GenerateConfig, indices: Iterable[int]) -> list[DialogueSpec]:
    """Rows of the built-in sampler: dialogue ``i`` with the sampler's ``i``-th persona. A persona
    no theme fits is re-drawn (the next draw for the same row), so row i always yields one."""
    specs = []
    for i in indices:
        dialogue_id = f"{config.pipeline}-s{config.seed}-{i:07d}"
        for attempt in range(100):
            spec = dialogue_spec(config, dialogue_id, i, persona_at(config.seed, i, attempt), index=i)
            if spec is not None:
                specs.append(spec)
                break
    return specs


def persona_specs(config: GenerateConfig, persona: Persona) -> list[DialogueSpec]:
    """The ``max_reuse`` dialogues a persona from a file serves (fewer if no theme fits it)."""
    specs = []
    for j in range(config.personas.max_reuse):
        dialogue_id = f"{config.pipeline}-s{config.seed}-{persona.persona_id}-r{j}"
        spec = dialogue_spec(config, dialogue_id, stable_seed(config.seed, dialogue_id), persona)
        if spec is not None:
            specs.append(spec)
    return specs
