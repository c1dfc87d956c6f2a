"""The persons of a dialogue: the client's name and the people its background names.

An item's subject must be one of them: the extractor's schema makes ``subject`` an enum of these
names, so even a 135M model cannot put a clause ("I'm so glad"), a body part ("the client's
eyes") or a schema word where the person belongs. Personas carry no name (PersonaHub's have
none), so the run gives each client one, drawn from the persona's id: the background is asked to
use it, and the same persona is the same person in every dialogue.
"""

from __future__ import annotations

import re

from ec2er.generation.plan import stable_seed

# Given names from many cultures, none of them also an English word or emotion ("Joy", "Hope"):
# a name that is a word would be read as one.
CLIENT_NAMES = (
    "Amira", "Tomas", "Keiko", "Daniel", "Priya", "Mateo", "Leila", "Jonas", "Ananya", "Kofi",
    "Sofia", "Ravi", "Elena", "Omar", "Ingrid", "Wei", "Carmen", "Tariq", "Nadia", "Lucas",
    "Yuki", "Samuel", "Fatima", "Diego", "Hana", "Marcus", "Zainab", "Pavel", "Lucia", "Kwame",
    "Mei", "Andre", "Noor", "Felix", "Rosa", "Arjun", "Greta", "Malik", "Ines", "Kenji",
)
# "a woman named Aisha", "his sister, called Mira": how a background introduces the others.
_NAMED = re.compile(r"\b(?:named|called)\s+([A-Z][a-z]{1,19})\b")
MAX_OTHERS = 3


def client_name(persona_id: str) -> str:
    return CLIENT_NAMES[stable_seed("client_name", persona_id) % len(CLIENT_NAMES)]


def dialogue_persons(client: str, background: str) -> tuple[str, ...]:
    """The client first, then up to ``MAX_OTHERS`` people the background introduces by name."""
    others = dict.fromkeys(n for n in _NAMED.findall(background) if n != client)
    return (client, *list(others)[:MAX_OTHERS])
