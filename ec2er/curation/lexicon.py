"""Surface forms of each taxonomy emotion, to find an emotion named in a text.

Why a hand-written table rather than a stemmer: English names emotions through irregular
derivations (anger -> angry/angrily, pride -> proud, fear -> afraid, grief -> grieving) that a
stemmer does not join, and stemming also joins words that are not the emotion. Whole-word matching
against explicit forms keeps "enjoy" from counting as "joy" and "careful" from counting as
"caring", while "angrily" does count as "Anger". Forms are the atom's inflections and the
derivations a reader takes as naming that emotion, and nothing looser (no "hope" for "Hopeless").
"""

from __future__ import annotations

import re
from functools import cache

from ec2er.schemas.taxonomy import EMOTIONS, ZH_EMOTIONS, emotion_atoms

EMOTION_FORMS: dict[str, tuple[str, ...]] = {
    "Acceptance": ("acceptance", "accepting", "accepted", "accept", "accepts"),
    "Admiration": ("admiration", "admire", "admired", "admires", "admiring", "admiringly"),
    "Amusement": ("amusement", "amused", "amusing", "amusingly"),
    "Anger": ("anger", "angered", "angering", "angers", "angry", "angrier", "angriest", "angrily"),
    "Annoyance": ("annoyance", "annoyed", "annoying", "annoyingly", "annoy", "annoys"),
    "Anticipation": ("anticipation", "anticipate", "anticipated", "anticipates", "anticipating"),
    "Boredom": ("boredom", "bored", "boring"),
    "Caring": ("caring", "cared"),
    "Curiosity": ("curiosity", "curious", "curiously"),
    "Delight": ("delight", "delighted", "delightful", "delightfully", "delights"),
    "Disappointment": ("disappointment", "disappointed", "disappointing", "disappoint", "disappoints"),
    "Disapproval": ("disapproval", "disapprove", "disapproved", "disapproves", "disapproving", "disapprovingly"),
    "Disgust": ("disgust", "disgusted", "disgusting", "disgustedly"),
    "Embarrassment": ("embarrassment", "embarrassed", "embarrassing", "embarrass"),
    "Excitement": ("excitement", "excited", "exciting", "excitedly"),
    "Fear": ("fear", "fears", "feared", "fearful", "fearfully", "afraid", "scared", "frightened"),
    "Gratitude": ("gratitude", "grateful", "gratefully", "thankful", "thankfully"),
    "Grief": ("grief", "grieve", "grieved", "grieves", "grieving"),
    "Guilt": ("guilt", "guilty", "guiltily"),
    "Hopeful": ("hopeful", "hopefully", "hopefulness"),
    "Hopeless": ("hopeless", "hopelessly", "hopelessness"),
    "Horror": ("horror", "horrified", "horrifying", "horrific"),
    "Indifferent": ("indifferent", "indifference", "indifferently"),
    "Jealousy": ("jealousy", "jealous", "jealously"),
    "Joy": ("joy", "joys", "joyful", "joyfully", "joyous", "joyously"),
    "Loathe": ("loathe", "loathed", "loathes", "loathing"),
    "Love": ("love", "loved", "loves", "loving", "lovingly"),
    "Nervousness": ("nervousness", "nervous", "nervously"),
    "Oblivious": ("oblivious", "obliviously", "obliviousness"),
    "Pessimism": ("pessimism", "pessimistic", "pessimistically"),
    "Pride": ("pride", "proud", "proudly"),
    "Relief": ("relief", "relieved"),
    "Remorse": ("remorse", "remorseful", "remorsefully"),
    "Sadness": ("sadness", "sad", "sadder", "saddest", "sadly", "saddened"),
    "Sentimental": ("sentimental", "sentimentality", "sentimentally"),
    "Surprise": ("surprise", "surprised", "surprising", "surprisingly"),
    "Trust": ("trust", "trusted", "trusting", "trusts"),
    "Unbothered": ("unbothered",),
    "Anxiety": ("anxiety", "anxious", "anxiously"),
    "Betrayal": ("betrayal", "betrayed"),
    "Confusion": ("confusion", "confused"),
    "Contentment": ("contentment", "contented"),
    "Defiance": ("defiance", "defiant", "defiantly"),
    "Envy": ("envy", "envious", "enviously", "envied"),
    "Frustration": ("frustration", "frustrated", "frustrating"),
    "Helplessness": ("helplessness", "helpless", "helplessly"),
    "Hurt": ("hurt",),
    "Insecurity": ("insecurity", "insecure"),
    "Loneliness": ("loneliness", "lonely", "lonelier"),
    "Overwhelm": ("overwhelm", "overwhelmed", "overwhelming"),
    "Regret": ("regret", "regrets", "regretted", "regretful", "regretfully"),
    "Resentment": ("resentment", "resent", "resented", "resentful", "resentfully"),
    "Shame": ("shame", "ashamed", "shameful"),
    "Worry": ("worry", "worried", "worries", "worrying"),
}
assert set(EMOTION_FORMS) == set(EMOTIONS), set(EMOTIONS) ^ set(EMOTION_FORMS)


@cache
def _pattern(atom: str) -> re.Pattern[str]:
    if atom in ZH_EMOTIONS:  # Chinese has no word boundaries: the label itself, as a substring
        return re.compile(re.escape(atom))
    forms = EMOTION_FORMS.get(atom, (atom.lower(),))
    return re.compile(r"\b(?:" + "|".join(map(re.escape, forms)) + r")\b", re.IGNORECASE)


def named_emotions(label: str, text: str) -> list[str]:
    """The atoms of ``label`` (e.g. 'Anger & Love') that ``text`` names, whole-word."""
    return [a for a in emotion_atoms(label) if _pattern(a).search(text)]
