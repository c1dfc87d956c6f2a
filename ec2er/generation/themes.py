"""Themes (``data/themes.yaml``) and persona-theme compatibility (the plan picks a theme per
dialogue: ``ec2er.generation.plan``).

Crisis themes (``data/crisis_themes.yaml``, and any theme marked ``crisis: true``) bring a client's
thoughts of suicide or self-harm in on purpose: the recipe's ``themes.crisis: include`` adds them,
``exclude`` (the default) keeps every one out. Dialogues on them are what the crisis-safety record
(``ec2er.safety.dialogue``) and curation's ``unsafe_crisis_handling`` check are for."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ec2er.errors import ConfigError
from ec2er.io import format_validation_error, load_yaml
from ec2er.schemas.persona import Persona, Theme
from ec2er.schemas.taxonomy import ThemeCategory

BUILTIN_THEMES = Path(__file__).with_name("data") / "themes.yaml"
CRISIS_THEMES = Path(__file__).with_name("data") / "crisis_themes.yaml"


def load_themes(path: str | Path | None = None, categories: list[ThemeCategory] | None = None,
                crisis: str = "exclude") -> list[Theme]:
    """Themes from a YAML mapping ``category -> [{id, name, description, min_age, max_age,
    keywords, crisis}]``; errors name the file, the category and the entry. ``crisis``: exclude
    drops every crisis theme; include adds the built-in crisis themes to the file's."""
    path = Path(path) if path else BUILTIN_THEMES
    themes = read_themes(path)
    if crisis == "include":
        themes += [t for t in read_themes(CRISIS_THEMES) if t.theme_id not in {x.theme_id for x in themes}]
    else:
        themes = [t for t in themes if not t.crisis]
    if categories:
        themes = [t for t in themes if t.category in categories]
    if not themes:
        raise ConfigError(f"{path}: no themes (after filtering by categories)")
    return themes


def read_themes(path: Path) -> list[Theme]:
    """Every theme of one YAML file."""
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
    return themes


def compatible(persona: Persona, theme: Theme) -> bool:
    """A theme fits a persona whose (stated or estimated) age lies in the theme's age range;
    personas of unknown age fit themes open to most adults (no retirement for a mere description)."""
    if persona.age is not None:
        return theme.min_age <= persona.age <= theme.max_age
    return theme.min_age <= 30 and theme.max_age >= 60
