"""CircularEval-style option rotations: rotation r shows the options shifted left by r places.

Shown letter j is the benchmark's option (j + r) mod n; every answer is mapped back to the
benchmark's own letters before it is stored, so rotation never leaks into scoring.
"""

from __future__ import annotations

from ec2er.schemas.facts import LETTERS


def rotate(choices: list[str], rotation: int) -> list[str]:
    r = rotation % len(choices)
    return choices[r:] + choices[:r]


def to_original(shown_letter: str, n: int, rotation: int) -> str:
    return LETTERS[(LETTERS.index(shown_letter) + rotation) % n]


def to_shown(original_letter: str, n: int, rotation: int) -> str:
    return LETTERS[(LETTERS.index(original_letter) - rotation) % n]
