"""Facts every stage shares, defined once: answer letters, item option counts, dialogue length
limits, and the names of the files stages exchange.

Generation shapes its extraction schemas from the option counts, curation's checks default to
them and ``ec2er validate`` applies them, so the three cannot drift apart.
"""

from __future__ import annotations

import string

# The model every recipe and command uses when none is named: embedded, so it runs offline.
DEFAULT_MODEL = "smollm2-135m-instruct"
GEMMA3_MODEL = "gemma3-270m"  # the second embedded model: another architecture, a base model

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
    PROGRESS = "progress.json"  # live counters while a session runs (ec2er.generation.progress)
    ITEMS = (EU, EA)
    # Ray Data's folders: the plan, the results (Parquet), the ids already written
    PLAN = "plan"
    RESULTS = "results"
    CHECKPOINTS = "checkpoints"
    PLAN_RECORD = "plan.json"  # beside plan/: what the plan was made from, and its size
    # the concise pipeline's final files
    PERSONAS_FINAL = "personas_final.json"
    ITEMS_FINAL = "items_final.jsonl"
    SUMMARY = "summary.json"


class CuratedFiles:
    """A curation run's folder (the training stage reads TRAIN and VAL)."""

    TRAIN = "train.jsonl"
    VAL = "val.jsonl"
    REJECTS = "rejects.jsonl"
    STATS = "stats.json"
    DATACARD = "DATACARD.md"
    DIALOGUES = "dialogues.jsonl"
    PLOTS = "plots"  # the data card's figures (ec2er.curation.datacard names them)


class BenchmarkFiles:
    """EmoBench's own files, one per task (``ec2er.schemas.benchmark`` reads them)."""

    EU = "EU.jsonl"
    EA = "EA.jsonl"
    ALL = (EU, EA)


class TrainingFiles:
    """A training run's folder (the adapter registry's own names are in ``ec2er.adapters``)."""

    ADAPTER = "adapter"  # the adapter as published (a copy lands in the registry)
    CHECKPOINT = "checkpoint"  # the final checkpoint's small files
    MERGED = "merged"  # with merge: true, the full model with the adapter merged in
    RAY = "ray"  # Ray Train's run storage unless the recipe puts it elsewhere
    PREVIEW = "preview.jsonl"  # what the first examples teach


class EvaluationFiles:
    """An evaluation run's folder."""

    PREDICTIONS = "predictions.jsonl"  # every reply and its answers: what ``evaluate rescore`` audits
    RESULTS = "results.json"
    RESULTS_LENIENT = "results_lenient.json"
    ROBUSTNESS = "robustness.json"  # only with rotations > 1
    SCORES = "scores.csv"
    TABLE_MD = "table.md"
    TABLE_CSV = "table.csv"
    CHART = "chart.png"
    CRISIS = "crisis.jsonl"  # every crisis-handling reply and its grade, where the recipe asks for them
    PARTS = "parts"  # one file per (model, protocol): what a re-run resumes from


# Where every stage's logs go, inside its output folder.
LOGS = "logs"


# The summary ``ec2er run`` writes at the top of a chain's folder, and the record the chain keeps
# in each stage's folder (its summary and what it was run on).
CHAIN_SUMMARY = "chain.json"
STAGE_RECORD = "stage.json"

# In every output folder while a run writes there: who holds it (``ec2er.io.output_lock``).
OUTPUT_LOCK = ".ec2er.lock"
