"""Closed vocabularies: EmoBench categories, the emotion taxonomy, the concise attribute space.

Everything here is data the schemas and constrained decoding derive from; nothing is repeated
elsewhere. The emotion taxonomy covers every atomic label EmoBench uses (its labels join atoms
with " & ") in English and Chinese, plus the emotions named by the source paper's emotion-mix
profiles and a few common clinical terms our generators need.
"""

from __future__ import annotations

from enum import StrEnum


class Language(StrEnum):
    en = "en"
    zh = "zh"


class Task(StrEnum):
    EU = "EU"
    EA = "EA"


class EUCoarseCategory(StrEnum):
    complex_emotions = "complex_emotions"
    emotional_cues = "emotional_cues"
    personal_beliefs_and_experiences = "personal_beliefs_and_experiences"
    perspective_taking = "perspective_taking"


class EUFineCategory(StrEnum):
    emotion_transition = "emotion_transition"
    mixture_of_emotions = "mixture_of_emotions"
    unexpected_outcome = "unexpected_outcome"
    visual_cues = "visual_cues"
    vocal_cues = "vocal_cues"
    cultural_value = "cultural_value"
    persona = "persona"
    sentimental_value = "sentimental_value"
    false_belief = "false_belief"
    faux_pas = "faux_pas"
    strange_story = "strange_story"


EU_FINE_TO_COARSE: dict[EUFineCategory, EUCoarseCategory] = {
    EUFineCategory.emotion_transition: EUCoarseCategory.complex_emotions,
    EUFineCategory.mixture_of_emotions: EUCoarseCategory.complex_emotions,
    EUFineCategory.unexpected_outcome: EUCoarseCategory.complex_emotions,
    EUFineCategory.visual_cues: EUCoarseCategory.emotional_cues,
    EUFineCategory.vocal_cues: EUCoarseCategory.emotional_cues,
    EUFineCategory.cultural_value: EUCoarseCategory.personal_beliefs_and_experiences,
    EUFineCategory.persona: EUCoarseCategory.personal_beliefs_and_experiences,
    EUFineCategory.sentimental_value: EUCoarseCategory.personal_beliefs_and_experiences,
    EUFineCategory.false_belief: EUCoarseCategory.perspective_taking,
    EUFineCategory.faux_pas: EUCoarseCategory.perspective_taking,
    EUFineCategory.strange_story: EUCoarseCategory.perspective_taking,
}


class EACategory(StrEnum):
    personal_others = "Personal-Others"
    personal_self = "Personal-Self"
    social_others = "Social-Others"
    social_self = "Social-Self"


class EAQuestionType(StrEnum):
    action = "Action"
    response = "Response"


# Atomic emotion labels of EmoBench (English), in its spelling ("Hopeless", "Oblivious").
EMOBENCH_EMOTIONS: tuple[str, ...] = (
    "Acceptance", "Admiration", "Amusement", "Anger", "Annoyance", "Anticipation", "Boredom",
    "Caring", "Curiosity", "Delight", "Disappointment", "Disapproval", "Disgust", "Embarrassment",
    "Excitement", "Fear", "Gratitude", "Grief", "Guilt", "Hopeful", "Hopeless", "Horror",
    "Indifferent", "Jealousy", "Joy", "Loathe", "Love", "Nervousness", "Oblivious", "Pessimism",
    "Pride", "Relief", "Remorse", "Sadness", "Sentimental", "Surprise", "Trust", "Unbothered",
)

# Emotions the paper's emotion-mix profiles name, and a few more a therapy dialogue needs.
EXTRA_EMOTIONS: tuple[str, ...] = (
    "Anxiety", "Betrayal", "Confusion", "Contentment", "Defiance", "Envy", "Frustration",
    "Helplessness", "Hurt", "Insecurity", "Loneliness", "Overwhelm", "Regret", "Resentment",
    "Shame", "Worry",
)

EMOTIONS: tuple[str, ...] = EMOBENCH_EMOTIONS + EXTRA_EMOTIONS

# EmoBench's Chinese labels -> English atoms (read off its aligned en/zh rows).
ZH_EMOTIONS: dict[str, str] = {
    "包容": "Acceptance", "钦佩": "Admiration", "娱乐": "Amusement", "生气": "Anger",
    "气恼": "Annoyance", "期待": "Anticipation", "厌倦": "Boredom", "爱护": "Caring",
    "好奇": "Curiosity", "惊喜": "Delight", "失望": "Disappointment", "反对": "Disapproval",
    "反感": "Disgust", "尴尬": "Embarrassment", "激动": "Excitement", "害怕": "Fear",
    "感激": "Gratitude", "悲痛": "Grief", "愧疚": "Guilt", "充满希望": "Hopeful",
    "绝望": "Hopeless", "恐惧": "Horror", "不关心": "Indifferent", "嫉妒": "Jealousy",
    "开心": "Joy", "厌恶": "Loathe", "紧张": "Nervousness", "没意识的": "Oblivious",
    "悲观": "Pessimism", "自豪": "Pride", "释怀": "Relief", "悔恨": "Remorse", "伤心": "Sadness",
    "伤感": "Sentimental", "惊讶": "Surprise", "信任": "Trust", "无感": "Unbothered",
}


def emotion_atoms(label: str) -> list[str]:
    """'Anger & Love' -> ['Anger', 'Love'] (EmoBench joins co-occurring emotions with ' & ')."""
    return [a.strip() for a in label.split("&") if a.strip()]


def unknown_emotion_atoms(label: str, language: Language | str = Language.en) -> list[str]:
    """Atoms of ``label`` outside the taxonomy for ``language`` (empty list: all known)."""
    known = set(ZH_EMOTIONS) if str(language) == "zh" else set(EMOTIONS)
    return [a for a in emotion_atoms(label) if a not in known]


# ---- The concise pipeline's attribute space (source paper, listed in METHOD.md) ----

class EUArea(StrEnum):
    emotion_identification = "emotion_identification"
    cause_reasoning = "cause_reasoning"
    perspective_taking = "perspective_taking"
    mixed_ambivalent_emotions = "mixed_ambivalent_emotions"
    anticipated_emotional_consequences = "anticipated_emotional_consequences"


class EAArea(StrEnum):
    supportive_response = "supportive_response"
    action_selection = "action_selection"
    emotion_regulation_strategy = "emotion_regulation_strategy"
    conflict_deescalation = "conflict_deescalation"
    boundary_setting = "boundary_setting"


class RelationshipType(StrEnum):
    romantic = "romantic"
    family = "family"
    friend = "friend"
    work = "work"
    social = "social"


class ProblemFocus(StrEnum):
    self = "self"
    others = "others"


class ConflictDomain(StrEnum):
    career_performance = "career_performance"
    money_finances = "money_finances"
    caregiving_burden = "caregiving_burden"
    friendship_drift = "friendship_drift"
    romantic_trust_jealousy = "romantic_trust_jealousy"
    inlaw_family_tension = "inlaw_family_tension"
    online_miscommunication = "online_miscommunication"
    cross_cultural_misunderstanding = "cross_cultural_misunderstanding"


class Stakes(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class EmotionMix(StrEnum):
    anger_plus_hurt = "anger_plus_hurt"
    relief_plus_guilt = "relief_plus_guilt"
    envy_plus_admiration = "envy_plus_admiration"
    love_plus_resentment = "love_plus_resentment"
    shame_plus_defiance = "shame_plus_defiance"
    worry_plus_excitement = "worry_plus_excitement"


class InsightLevel(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class CopingStyle(StrEnum):
    avoidance = "avoidance"
    overfixing_problem_solving = "overfixing_problem_solving"
    venting = "venting"
    people_pleasing = "people_pleasing"
    intellectualizing = "intellectualizing"
    self_blame = "self_blame"


class CommunicationStyle(StrEnum):
    withdrawn_indirect = "withdrawn_indirect"
    apologetic_soft = "apologetic_soft"
    sarcastic_deflecting = "sarcastic_deflecting"
    blunt_critical = "blunt_critical"
    conflict_avoidant_compliant = "conflict_avoidant_compliant"


class Viewpoint(StrEnum):
    self_perspective = "self_perspective"
    other_person_perspective = "other_person_perspective"
    neutral_third_party = "neutral_third_party"


# ---- Personas and themes ----

class ThemeCategory(StrEnum):
    professional = "Professional"
    education = "Education"
    family = "Family"
    relationships = "Relationships"
    health = "Health"
    financial = "Financial"


class Disposition(StrEnum):
    anxious = "anxious"
    optimistic = "optimistic"
    skeptical = "skeptical"
    empathetic = "empathetic"
    guarded = "guarded"
    expressive = "expressive"


class RelationshipStatus(StrEnum):
    single = "single"
    partnered = "partnered"
    married = "married"
    divorced = "divorced"
    widowed = "widowed"
