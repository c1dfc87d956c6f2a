"""The client's name: personas carry none (PersonaHub's have none either), so the run gives each
client one from a roster, drawn by the persona's id. The background is asked to use it, the same
persona is the same person in every dialogue, and the extractor's schema makes an item's subject
(and the first word of its scenario, answers and explanation) that name (extraction.for_persons),
so even a 135M model cannot put a clause ("I'm so glad"), a body part ("the client's eyes") or a
schema word where the person belongs.
"""

from __future__ import annotations

from ec2er.generation.plan import stable_seed

# Given names from many cultures, none of them also an English word or emotion ("Joy", "Hope"):
# a name that is a word would be read as one.
CLIENT_NAMES = (
    "Amira", "Tomas", "Keiko", "Daniel", "Priya", "Mateo", "Leila", "Jonas", "Ananya", "Kofi",
    "Sofia", "Ravi", "Elena", "Omar", "Ingrid", "Wei", "Carmen", "Tariq", "Nadia", "Lucas",
    "Yuki", "Samuel", "Fatima", "Diego", "Hana", "Marcus", "Zainab", "Pavel", "Lucia", "Kwame",
    "Mei", "Andre", "Noor", "Felix", "Rosa", "Arjun", "Greta", "Malik", "Ines", "Kenji",
)


def client_name(persona_id: str) -> str:
    return CLIENT_NAMES[stable_seed("client_name", persona_id) % len(CLIENT_NAMES)]
