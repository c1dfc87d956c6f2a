"""Facts every stage shares, defined once: answer letters, item option counts, dialogue length
limits, and the names of the files stages exchange.

Generation shapes its extraction schemas from the option counts, curation's checks default to
them and ``ec2er validate`` applies them, so the three cannot drift apart.
"""

from __future__ import annotations

import string

# Option letters, in order: A is the first option shown.
LETTERS = string.ascii_uppercase

# Options per question in EmoBench's layout (what generation writes and curation keeps).
EU_EMOTION_OPTIONS = 6
EU_CAUSE_OPTIONS = (4, 6)  # EmoBench uses 4 or 6 cause options
EA_OPTIONS = 4

# Dialogue length, in messages (a client or a therapist turn), as the source method bounds it.
MIN_TURNS = 4
MAX_TURNS = 14


class GenerationFiles:
    """A generation run's folder."""

    EU = "eu.jsonl"
    EA = "ea.jsonl"
    DIALOGUES = "dialogues.jsonl"
    METADATA = "metadata.jsonl"
    STATS = "stats.json"
    FINGERPRINT = "fingerprint.json"  # what a resumed run must match
    ITEMS = (EU, EA)


class CuratedFiles:
    """A curation run's folder (the training stage reads TRAIN and VAL)."""

    TRAIN = "train.jsonl"
    VAL = "val.jsonl"
    REJECTS = "rejects.jsonl"
    STATS = "stats.json"
    DATACARD = "DATACARD.md"
    DIALOGUES = "dialogues.jsonl"


class BenchmarkFiles:
    """EmoBench's own files (a benchmark folder holds one or both)."""

    EU = "EU.jsonl"
    EA = "EA.jsonl"
    ALL = (EU, EA)


# The summary ``ec2er run`` writes at the top of a chain's folder.
CHAIN_SUMMARY = "chain.json"
