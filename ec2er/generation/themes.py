"""Themes (``data/themes.yaml``), persona-theme compatibility, and spread sampling of pairs."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from ec2er.errors import ConfigError
from ec2er.io import format_validation_error, load_yaml
from ec2er.schemas.persona import Persona, Theme
from ec2er.schemas.taxonomy import ThemeCategory

BUILTIN_THEMES = Path(__file__).with_name("data") / "themes.yaml"


def load_themes(path: str | Path | None = None,
                categories: list[ThemeCategory] | None = None) -> list[Theme]:
    """Themes from a YAML mapping ``category -> [{id, name, description, min_age, max_age,
    keywords}]``; errors name the file, the category and the entry."""
    path = Path(path) if path else BUILTIN_THEMES
    if not path.is_file():
        raise ConfigError(f"{path}: no such themes file")
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of category -> list of themes")
    themes = []
    for category, entries in data.items():
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: {category}: expected a list of themes")
        for i, entry in enumerate(entries):
            try:
                entry = dict(entry)
                themes.append(Theme(theme_id=entry.pop("id"), category=category, **entry))
            except (ValidationError, KeyError, TypeError, ValueError) as e:
                why = (format_validation_error(e) if isinstance(e, ValidationError)
                       else f"missing {e}" if isinstance(e, KeyError) else "expected a mapping")
                raise ConfigError(f"{path}: {category}[{i}]: {why}") from None
    if categories:
        themes = [t for t in themes if t.category in categories]
    if not themes:
        raise ConfigError(f"{path}: no themes (after filtering by categories)")
    return themes


def compatible(persona: Persona, theme: Theme) -> bool:
    """A theme fits a persona whose (stated or estimated) age lies in the theme's age range;
    personas of unknown age fit themes open to most adults (no retirement for a mere description)."""
    if persona.age is not None:
        return theme.min_age <= persona.age <= theme.max_age
    return theme.min_age <= 30 and theme.max_age >= 60


def spread_pairs(personas: Iterator[Persona], themes: list[Theme], n: int, seed: int,
                 max_reuse: int = 1) -> list[tuple[Persona, Theme]]:
    """``n`` compatible (persona, theme) pairs spread evenly over theme categories (round robin
    in a seeded order) and, within a category, over its least-used themes; each persona serves
    at most ``max_reuse`` dialogues (the stream is read once, lazily, so huge files are fine)."""
    rng = random.Random(f"pairs:{seed}")
    by_category: dict[ThemeCategory, list[Theme]] = {}
    for t in themes:
        by_category.setdefault(t.category, []).append(t)
    order = sorted(by_category)
    rng.shuffle(order)
    uses: Counter[str] = Counter()
    pool: list[Persona] = []  # personas read but not yet used up
    pairs: list[tuple[Persona, Theme]] = []
    skipped = 0
    while len(pairs) < n:
        if not pool:
            persona = next(personas, None)
            if persona is None:
                raise ConfigError(f"personas: only {len(pairs)} dialogues possible from the persona source "
                                  f"(wanted {n}; raise personas.max_reuse or add personas)")
            pool.extend([persona] * max_reuse)
        persona = pool.pop(0)
        theme = _pick_theme(persona, by_category, order, len(pairs), uses, rng)
        if theme is None:  # no theme fits this persona at all
            skipped += 1
            continue
        uses[theme.theme_id] += 1
        pairs.append((persona, theme))
    return pairs


def _pick_theme(persona: Persona, by_category: dict[ThemeCategory, list[Theme]],
                order: list[ThemeCategory], k: int, uses: Counter[str],
                rng: random.Random) -> Theme | None:
    # the k-th dialogue targets category k mod 6; if nothing there fits, the next categories
    for shift in range(len(order)):
        fitting = [t for t in by_category[order[(k + shift) % len(order)]] if compatible(persona, t)]
        if fitting:
            least = min(uses[t.theme_id] for t in fitting)
            return rng.choice([t for t in fitting if uses[t.theme_id] == least])
    return None
