"""The data model of ec2er: every record and its JSON schema come from here."""

from ec2er.schemas.dialogue import Dialogue, Speaker, SupervisorVerdict, Turn, normalize_speaker
from ec2er.schemas.items import (
    EA_FIELDS, EU_FIELDS, EAItem, EUItem, Item, Provenance, detect_task, parse_item,
)
from ec2er.schemas.persona import ConciseAttributes, Persona, Theme
from ec2er.schemas.taxonomy import (
    EMOTIONS, EACategory, EAQuestionType, EUCoarseCategory, EUFineCategory, Language, Task,
)
from ec2er.schemas.prompts import format_instruction
from ec2er.schemas.training import ReasonedAnswer, TrainingExample, training_examples

__all__ = [
    "EA_FIELDS", "EMOTIONS", "EU_FIELDS", "ConciseAttributes", "Dialogue", "EACategory", "EAItem",
    "EAQuestionType", "EUCoarseCategory", "EUFineCategory", "EUItem", "Item", "Language", "Persona",
    "Provenance", "ReasonedAnswer", "Speaker", "SupervisorVerdict", "Task", "Theme",
    "TrainingExample", "Turn", "detect_task", "format_instruction", "normalize_speaker",
    "parse_item", "training_examples",
]
