"""Persona sources: PersonaHub JSONL (a file, or the hub file when online), any JSONL/Parquet
with a persona column, and a seeded combinatorial sampler that streams distinct personas."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator
from pathlib import Path

from ec2er.errors import ConfigError, DataError
from ec2er.generation.config import PersonaSourceConfig
from ec2er.io import hub_download, iter_jsonl
from ec2er.schemas.persona import Persona
from ec2er.schemas.taxonomy import Disposition, RelationshipStatus

OCCUPATIONS = (
    "university student", "graduate student", "nurse", "doctor", "paramedic", "teacher",
    "software engineer", "civil engineer", "artist", "musician", "retail worker", "chef",
    "accountant", "lawyer", "small business owner", "farmer", "factory worker", "social worker",
    "journalist", "police officer", "truck driver", "pharmacist", "architect", "graphic designer",
    "researcher", "sales manager", "stay-at-home parent", "electrician", "retiree", "freelance writer",
)
# Cultural backgrounds across the world's major regions.
CULTURES = (
    "Nigerian", "Kenyan", "Ghanaian", "South African", "Egyptian", "Moroccan", "Brazilian",
    "Mexican", "Argentinian", "Colombian", "American", "Canadian", "British", "German", "French",
    "Italian", "Polish", "Swedish", "Turkish", "Iranian", "Lebanese", "Indian", "Pakistani",
    "Bangladeshi", "Chinese", "Japanese", "Korean", "Vietnamese", "Filipino", "Indonesian",
    "Australian", "Maori New Zealander",
)
RETIREMENT_AGE = 62
STUDENT_MAX_AGE = 35


def persona_id_for(text: str) -> str:
    """Stable id of a free-text persona: the same text gets the same id in every run."""
    return "ph-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def persona_at(seed: int, index: int, attempt: int = 0) -> Persona:
    """The sampler's persona for row ``index``: a pure function of (seed, index), so any worker
    can draw any row. Occupations respect age (no 20-year-old retirees). The space holds about
    1.7M combinations; past that (and by chance before) two rows may draw the same one, which
    only means two dialogues share a persona description (their themes and seeds differ)."""
    rng = random.Random(f"personas:{seed}:{index}:{attempt}")
    age = rng.randint(18, 75)
    occupation = rng.choice([o for o in OCCUPATIONS if _occupation_fits(o, age)])
    statuses = list(RelationshipStatus)
    status = rng.choice(statuses if age >= 30 else statuses[:3])
    culture, disposition = rng.choice(CULTURES), rng.choice(list(Disposition))
    return Persona(
        persona_id=f"s{seed}-{index:07d}", source="sampler", age=age, occupation=occupation,
        relationship_status=status, cultural_background=culture, disposition=disposition,
        description=(f"{'An' if age in (18, 80) or 80 <= age < 90 else 'A'} {age}-year-old {culture} "
                     f"{occupation}, {status.value}, with a generally {disposition.value} disposition."))


def _occupation_fits(occupation: str, age: int) -> bool:
    if occupation == "retiree":
        return age >= RETIREMENT_AGE
    if occupation == "graduate student":
        return 22 <= age <= STUDENT_MAX_AGE
    if "student" in occupation:
        return age <= STUDENT_MAX_AGE
    return age < 70


def persona_from_text(text: object, source: str) -> Persona | None:
    """A persona from a file's persona column (None for an empty or non-text value)."""
    if not isinstance(text, str) or not text.strip():
        return None
    return Persona(persona_id=persona_id_for(text), description=text.strip(), source=source,
                   age=estimate_age(text))


def check_persona_file(path: str | Path, column: str = "persona") -> None:
    """Fail in one line, before anything runs, if the persona file cannot serve: missing, not
    readable, no such column, or a first row without a persona. Later rows are read by the job,
    which skips (and counts) rows without one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such persona file")
    if path.suffix == ".parquet":
        first = next(_read_parquet(path, column), None)
    else:
        first = None
        for lineno, obj in iter_jsonl(path):
            if isinstance(obj, DataError):
                raise obj
            first = persona_from_text(obj.get(column), str(path))
            if first is None:
                raise DataError(f"{path}:{lineno}: no non-empty {column!r} field")
            break
    if first is None:
        raise DataError(f"{path}: no personas")


def _read_parquet(path: Path, column: str) -> Iterator[Persona]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    if column not in pf.schema_arrow.names:
        raise DataError(f"{path}: no column {column!r} (columns: {', '.join(pf.schema_arrow.names)})")
    for batch in pf.iter_batches(columns=[column], batch_size=4096):
        for text in batch.column(0).to_pylist():
            persona = persona_from_text(text, str(path))
            if persona is not None:
                yield persona


_AGE = re.compile(r"\b(\d{2})[- ]year[- ]old\b", re.IGNORECASE)
# Words that place a free-text persona in an age band when it states no age (a heuristic that
# only has to keep obviously mismatched themes away, e.g. retirement planning for a student).
_YOUNG = re.compile(r"\b(student|undergrad\w*|freshman|teen\w*|young|intern)\b", re.IGNORECASE)
_OLD = re.compile(r"\b(retired|retiree|grandparent|grandmother|grandfather|elderly|pensioner)\b",
                  re.IGNORECASE)


def estimate_age(text: str) -> int | None:
    m = _AGE.search(text)
    if m and 18 <= int(m.group(1)) <= 100:
        return int(m.group(1))
    if _OLD.search(text):
        return 68
    if _YOUNG.search(text):
        return 21
    return None


def persona_file(config: PersonaSourceConfig) -> str:
    """The persona file a file or hub source reads (the hub file is downloaded once)."""
    if config.source == "file":
        assert config.path is not None
        return config.path
    # PersonaHub is CC BY-NC-SA 4.0: downloaded by the user, never bundled
    return str(hub_download(config.hub_dataset, "personas:", filename=config.hub_file,
                            hint="download it and use source: file"))
