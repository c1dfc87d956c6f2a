"""The curation recipe (``pipelines/curate.yaml``): every threshold of the stage in one place."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ec2er.config import StrictModel
from ec2er.llm.kinds import EngineConfig
from ec2er.schemas.checks import ItemLimits


class ValidateConfig(ItemLimits, StrictModel):
    """Curation's checks: the structural limits every valid item meets (option counts, from
    ``ec2er.schemas.facts`` by default) and curation's quality thresholds."""

    min_words: int = Field(50, ge=1, description="scenario length bounds (CJK: one character = one word)")
    max_words: int = Field(500, ge=1)
    quality: Literal["reject", "flag", "skip"] = Field(
        "reject", description="curation's quality checks (scenario length, leaked emotion, subject, "
                              "explanation): reject failing items; flag them (kept, the codes in their "
                              "'flags', counted in the data card: for small demo generators whose items "
                              "almost all fail); or skip them (structural checks only: random plumbing models)")
    # The explanation must favour the gold option: a distractor scoring this much above the gold
    # (rapidfuzz token_set_ratio of content words, 0-100) fails the item.
    explanation_margin: float = Field(10.0, ge=0.0, le=100.0)
    # ...and only when the explanation does restate that distractor (below this, it restates none).
    explanation_min_support: float = Field(50.0, ge=0.0, le=100.0)
    # Reader checks (ec2er.curation.sense): is the item a question with answers at all?
    sense: Literal["reject", "flag", "skip"] = Field(
        "reject", description="the reader checks (options that are answers, a subject who is a person of the "
                              "dialogue, an explanation that is not a template): reject failing items (also "
                              "where `quality` only flags: such an item teaches nothing, whoever wrote it), "
                              "flag them, or skip them (random plumbing models)")
    option_min_words: int = Field(3, ge=2, description="words a sentence-like option (EA choices, EU causes) "
                                                       "needs at least (EmoBench's shortest have 3)")
    english_min_ascii: float = Field(0.9, ge=0.0, le=1.0, description="share of an English item's option's "
                                                                       "letters that must be ASCII")
    english_min_words: int = Field(5, ge=2, description="an English option of this many words or more has at "
                                                        "least one common English function word")
    copy_min_words: int = Field(8, ge=1, description="options of this many words or more are checked for copying a "
                                                     "dialogue turn")
    copy_similarity: float = Field(90.0, ge=0.0, le=100.0, description="rapidfuzz partial_ratio of an option "
                                                                       "within a turn at which it is a copy")
    explanation_template_similarity: float = Field(
        90.0, ge=0.0, le=100.0, description="rapidfuzz partial_ratio of an explanation within the instruction "
                                            "or question text at which it repeats that text")
    explanation_max_shared: int = Field(3, ge=2, description="an explanation (its subject aside) shared by this "
                                                             "many items or more is a template")


class DedupConfig(StrictModel):
    threshold: float = Field(0.85, gt=0.0, le=1.0, description="rapidfuzz ratio/100 of normalized scenarios")
    shingle_words: int = Field(2, ge=1, description="word n-grams hashed into MinHash signatures")
    bands: int = Field(25, ge=1)
    rows_per_band: int = Field(4, ge=1)
    window: int = Field(8, ge=1, description="in a band bucket, each item is compared with the next N")
    max_bucket: int = Field(64, ge=2, description="band buckets larger than this are boilerplate: skipped")
    batch_size: int = Field(20_000, ge=100)
    seed: int = 0
    backend: Literal["local", "ray"] = "local"


class DecontaminateConfig(StrictModel):
    benchmark: str | None = Field(None, description="folder with EU.jsonl/EA.jsonl, or a hub dataset id")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="rapidfuzz token_set_ratio/100")


class BalanceConfig(StrictModel):
    factor: float = Field(1.5, gt=1.0, description="reject once a category exceeds factor x its expected share")


class JudgeConfig(StrictModel):
    engine: EngineConfig
    samples: int = Field(3, ge=1, description="answers sampled per question")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    ambiguous_below: float = Field(0.5, ge=0.0, le=1.0, description="flag items with lower confidence")


class CurateConfig(StrictModel):
    checks: ValidateConfig = Field(default_factory=ValidateConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    decontaminate: DecontaminateConfig = Field(default_factory=DecontaminateConfig)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    judge: JudgeConfig | None = None
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    note: str | None = Field(None, description="said first in the data card (what the items' generator can "
                                               "and cannot do, thresholds relaxed for it)")
    seed: int = 0
    # Repeated dialogue turns: a turn this similar (rapidfuzz ratio/100) to an earlier one is dropped.
    repeat_turn_threshold: float = Field(0.9, gt=0.0, le=1.0)
