"""Reader checks: would a careful reader accept the item as a question at all?

The structural checks (``ec2er.schemas.checks``) make an item well formed and ``quality`` makes it
a good one; these reject what a small generator writes that is neither a question nor its answers:
options that are not answers (a fragment, a single word where a sentence is asked, another
language, a dialogue turn copied), a subject who is not a person of the dialogue, and an
explanation that repeats a template. Each rule is one function returning its reason or None.

Why hand-written word lists and not an NLP library: none is installed, and a tagger would not
settle it either (EmoBench's own causes are often verbless noun phrases, "The loss of her dog",
which are good answers); what marks a bad option here is cheaper to see: too few words, a phrase
cut off on a word that cannot end it, or text that is not English. The lists are English only:
the language rules apply to English items (``language: en``), Chinese items skip them.

The sentence-like options are EA's ``choices`` and EU's ``cause_choices``; EU's emotion options
are single taxonomy emotions, which the structural check ``emotion_not_in_taxonomy`` enforces.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from rapidfuzz import fuzz, process

from ec2er.curation.config import ValidateConfig
from ec2er.curation.dedup import normalize, tokenize
from ec2er.schemas.checks import Reason, str_list
from ec2er.schemas.items import ITEM_MODELS
from ec2er.schemas.taxonomy import Task

# Reason codes (stable: rejects.jsonl, stats.json and the data card count them).
OPTION_SINGLE_WORD = "option_single_word"
OPTION_FRAGMENT = "option_fragment"
OPTION_NOT_ENGLISH = "option_not_english"
OPTION_COPIES_TURN = "option_copies_dialogue_turn"
SUBJECT_NOT_PERSON = "subject_not_a_person"
EXPLANATION_TEMPLATE = "explanation_is_template"
EXPLANATION_SHARED = "explanation_shared"

# What each rule rejects, for the data card.
RULES: dict[str, str] = {
    OPTION_SINGLE_WORD: "an answer option of one word where a sentence is asked (EA choices, EU causes)",
    OPTION_FRAGMENT: "an answer option that is a fragment: fewer words than a sentence needs, no content "
                     "word, or cut off on a word that cannot end a phrase ('the', 'and', 'because')",
    OPTION_NOT_ENGLISH: "an option of an English item that is not English: too few ASCII letters, or "
                        "several words and not one common English function word",
    OPTION_COPIES_TURN: "an option that copies a turn of the item's dialogue (nearly) word for word",
    SUBJECT_NOT_PERSON: "a subject that is not a person of the dialogue: not a pronoun, not a role "
                        "('mother', 'the waitress'), not a name used in the scenario or dialogue",
    EXPLANATION_TEMPLATE: "an explanation that repeats the instruction or question text instead of reasoning",
    EXPLANATION_SHARED: "an explanation that several items with different answers share word for word (subjects "
                        "aside): the same words argue for different answers, so for none",
}

# English function words: a phrase of several English words has at least one (EmoBench: every
# English option of 3+ words does). Also the curation-wide notion of "not a content word".
FUNCTION_WORDS = frozenset(
    "a an the and or but nor of to in on at for with by from as into onto about over under after "
    "before through during without within between against toward towards up down out off than "
    "is are was were be been being am do does did done has have had having will would shall should "
    "can could may might must not no yes so if then that this these those there here what which who "
    "whom whose when where why how all any some each every both either neither more most much many "
    "it its i me my mine you your yours he him his she her hers we us our ours they them their "
    "theirs himself herself themselves myself yourself itself ourselves just very too also only even "
    "because while until unless though although since again anything something nothing everything "
    # contractions as tokenize() splits them: "didn't" -> "didn", "t"
    "don didn doesn isn aren wasn weren won wouldn couldn shouldn can haven hasn hadn t s ll re ve d m".split()
)
# Words a phrase cannot end on: it was cut off. Only articles, conjunctions and determiners:
# English ends clauses on stranded prepositions and auxiliaries ("the car she had dreamed of",
# "who the woman is"), EmoBench's options included.
DANGLING = frozenset("a an the and or but nor because although though unless if than my your their our its".split())
# Subject pronouns and person words EmoBench-style subjects use ("Jane's mother", "the waitress",
# "my husband"): the head of a subject that is not a name must be one of these (or its plural).
PRONOUNS = frozenset("i me we us you he him she her they them someone somebody everyone nobody".split())
ROLES = frozenset(
    "person people man men woman women boy girl child children kid kids baby teen teenager adult "
    "mother mom mum mommy father dad daddy parent parents son daughter brother sister sibling twin "
    "grandmother grandma grandfather grandpa grandparent grandson granddaughter aunt uncle cousin "
    "nephew niece wife husband spouse partner fiance fiancee boyfriend girlfriend ex family "
    "stepmother stepfather stepson stepdaughter stepbrother stepsister in-law mother-in-law "
    "father-in-law sister-in-law brother-in-law "
    "friend bestie roommate flatmate housemate neighbor neighbour classmate schoolmate teammate "
    "colleague coworker co-worker boss manager supervisor employee employer intern assistant "
    "secretary team member members guest host stranger customer client patient therapist counselor "
    "counsellor doctor nurse dentist teacher tutor professor student pupil coach mentor principal "
    "lawyer officer police policeman policewoman driver pilot waiter waitress server chef cook "
    "cashier clerk receptionist landlord landlady tenant owner shopkeeper seller buyer vendor "
    "worker staff engineer artist painter musician singer writer author player athlete runner "
    "soldier nanny babysitter caregiver carer volunteer leader director ceo founder investor "
    "candidate applicant interviewer recruiter judge priest pastor monk nun librarian scientist "
    "researcher journalist reporter photographer designer developer programmer accountant banker "
    "farmer mechanic plumber electrician builder gardener cleaner janitor guard "
    "audience fan fans crowd group couple newcomer novice senior junior peer peers acquaintance "
    "lover mate buddy pal companion relative relatives elder elders".split()
)
QUOTES = "\"“”'‘’«"  # an option opening with one is speech (EA Response options are quoted)
TITLES = frozenset("mr mrs ms miss dr prof professor sir madam lady lord aunt uncle grandma grandpa".split())


@dataclass(frozen=True)
class DialogueText:
    """What of an item's dialogue the rules read: its turns and its background."""

    turns: tuple[str, ...]
    background: str = ""

    @classmethod
    def from_raw(cls, obj: dict[str, Any]) -> DialogueText:
        turns = obj.get("turns") if isinstance(obj.get("turns"), list) else []
        return cls(tuple(str(t.get("text", "")) for t in turns if isinstance(t, dict)),
                   str(obj.get("background") or ""))


# ---------------------------------------------------------------- options


def is_speech(option: str) -> bool:
    """A quoted utterance (EA's Response options): a reply may be one word ("Whatever.")."""
    return option.strip()[:1] in QUOTES


def option_single_word(option: str) -> str | None:
    if len(tokenize(option)) == 1 and not is_speech(option):
        return f"{option!r} is one word where a sentence is asked"
    return None


def option_fragment(option: str, min_words: int) -> str | None:
    words = tokenize(option)
    if not words:
        return None  # empty: the structural check empty_option
    if not is_speech(option):
        if len(words) == 1:
            return None  # option_single_word
        if len(words) < min_words:
            return f"{option!r} has {len(words)} words, a sentence-like option needs {min_words}"
        if all(w in FUNCTION_WORDS for w in words):
            return f"{option!r} has no content word"
    if words[-1] in DANGLING:
        return f"{option!r} is cut off after {words[-1]!r}"
    return None


def ascii_letter_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(c.isascii() for c in letters) / len(letters) if letters else 1.0


def option_not_english(option: str, min_ascii: float, min_words: int) -> str | None:
    share = ascii_letter_share(option)
    if share < min_ascii:
        return f"{option!r}: {share:.0%} of its letters are ASCII"
    words = tokenize(option)
    if len(words) >= min_words and not FUNCTION_WORDS.intersection(words):
        return f"{option!r}: {len(words)} words and not one common English function word"
    return None


def option_copies_turn(option: str, turns: Iterable[str], min_words: int, similarity: float) -> str | None:
    """The option (of at least ``min_words``) appears (nearly) verbatim in a turn: rapidfuzz's
    partial_ratio aligns it with the turn's best-matching stretch, so a copied half of a long
    turn counts as well as the whole turn."""
    norm = normalize(option)
    if len(norm.split()) < min_words:
        return None
    # extractOne with a cutoff: rapidfuzz skips the turns that cannot reach it
    best = process.extractOne(norm, [_normalized(t) for t in turns], scorer=fuzz.partial_ratio,
                              score_cutoff=similarity)
    if best is None:
        return None
    return f"{option!r} copies turn {best[2]} of the dialogue (similarity {best[1]:.0f})"


@lru_cache(maxsize=4096)  # each turn is compared with every option of the dialogue's items
def _normalized(text: str) -> str:
    return normalize(text)


# ---------------------------------------------------------------- subject


_WORD_RE = re.compile(r"[^\W\d_][\w'’-]*")


def _bare(word: str) -> str:
    """Without its possessive: "Jane's", "Iris'" -> "Jane", "Iris"."""
    return word.removesuffix("'s").removesuffix("’s").rstrip("'’")


@lru_cache(maxsize=4096)  # a dialogue's turns are read again for each of its items
def _word_cases(text: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The text's words (lower-cased) written capitalized inside a sentence, capitalized at a
    sentence's start, and in lower case."""
    inside, first, lower = set(), set(), set()
    end = 0  # where the previous word ended
    for m in _WORD_RE.finditer(text):
        word = _bare(m.group())
        between = text[end:m.start()].strip()
        if not word[:1].isupper():
            lower.add(word.lower())
        elif end == 0 or (between and between[-1] in ".!?:\"“"):
            first.add(word.lower())
        else:
            inside.add(word.lower())
        end = m.end()
    return frozenset(inside), frozenset(first), frozenset(lower)


def _names_in(texts: Iterable[str]) -> set[str]:
    """Lower-cased words used as names in the texts: written capitalized inside a sentence, or
    capitalized (a sentence's first word) and never in lower case ("Joy" stays a name when the
    texts also speak of joy, as long as one sentence has it mid-sentence)."""
    inside, first, lower = set(), set(), set()
    for text in texts:
        i, f, lo = _word_cases(text)
        inside |= i
        first |= f
        lower |= lo
    return (inside | (first - lower)) - FUNCTION_WORDS


def _is_role(word: str) -> bool:
    return word in ROLES or (word.endswith("s") and word[:-1] in ROLES)


def subject_not_person(subject: str, texts: Iterable[str]) -> str | None:
    """The subject's head (its last word: "Jane's mother" -> mother) is a pronoun or a role, or it
    is a name of the scenario or dialogue and every other word is a name, a title, a role or a
    function word. Checked on English items only."""
    words = [_bare(w) for w in _WORD_RE.findall(subject.lower())]
    if not words:
        return f"subject {subject!r} has no word"
    head, rest = words[-1], words[:-1]
    if head in PRONOUNS or _is_role(head):
        return None  # whatever describes a role: "the bank clerk", "her older sister"
    names = _names_in(texts)
    if head in names and all(w in names or w in TITLES or _is_role(w) or w in FUNCTION_WORDS for w in rest):
        return None  # "Professor Adams", "Lin Lin", "coworker Tom"
    return f"subject {subject!r} is not a pronoun, a role, or a name in the scenario or dialogue"


# ---------------------------------------------------------------- explanation


@cache
def instruction_texts() -> tuple[str, ...]:
    """What the generator was told and what the model is asked: an explanation that repeats
    these reasons about nothing. Read from where they are defined, so a reworded prompt stays
    covered."""
    from ec2er.generation.agents import extractor
    from ec2er.generation.extraction import EADraft, EUDraft
    from ec2er.schemas import prompts

    texts = [extractor.EXTRACTOR_SYSTEM, extractor.EU_EXTRACTOR.user, extractor.EA_EXTRACTOR.user,
             *extractor.EU_HINTS.values(), *extractor.EA_HINTS.values(), *extractor.QUESTION_HINTS.values(),
             prompts.INSTRUCTION_TEMPLATE]
    texts += [f.description for m in (EUDraft, EADraft) for f in m.model_fields.values() if f.description]
    return tuple(normalize(t) for t in texts)


def question_texts(subject: str) -> tuple[str, ...]:
    from ec2er.schemas import prompts

    wordings = [prompts.EU_EMOTION_Q["en"], prompts.EU_CAUSE_Q["en"], prompts.EU_CAUSE_OF_Q,
                *(prompts.EA_Q["en"].replace("{q_type}", t) for t in ("action", "response"))]
    return tuple(normalize(w.format(subject=subject, emotion="")) for w in wordings)


def explanation_template(explanation: str, subject: str, similarity: float) -> str | None:
    """The explanation is (nearly) a stretch of the instruction or question text: partial_ratio
    of the explanation within each text at least as long as it."""
    norm = normalize(explanation)
    if not norm:
        return None
    longer = [text for text in (*instruction_texts(), *question_texts(subject)) if len(norm) <= len(text)]
    best = process.extractOne(norm, longer, scorer=fuzz.partial_ratio, score_cutoff=similarity)
    if best is None:
        return None
    return f"repeats the instruction or question text (similarity {best[1]:.0f}): {explanation[:80]!r}"


def _without_subject(text: Any, subject: Any) -> str:
    subject_words = set(tokenize(subject)) if isinstance(subject, str) else set()
    return " ".join(w for w in tokenize(text) if w not in subject_words) if isinstance(text, str) else ""


def explanation_key(obj: dict[str, Any]) -> str | None:
    """The explanation with its subject's words taken out: "Ana feels X here" and "Bo feels X
    here" are one template."""
    return _without_subject(obj.get("explanation"), obj.get("subject")) or None


def _answer_key(obj: dict[str, Any]) -> tuple[str, ...]:
    fields = [f.gold for model in ITEM_MODELS.values() for f in model.OPTION_FIELDS if f.gold in obj]
    return tuple(_without_subject(obj.get(f), obj.get("subject")) for f in fields)


def shared_explanations(objs: list[dict[str, Any] | None], max_shared: int) -> dict[int, str]:
    """index -> reason detail for every item whose explanation ``max_shared`` or more items share
    while their gold answers differ: the same words argue for different answers, so for none.
    (Items sharing the explanation AND the answer repeat one item: near-duplicates' business.)"""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, obj in enumerate(objs):
        key = explanation_key(obj) if isinstance(obj, dict) else None
        if key:
            groups[key].append(i)
    out = {}
    for members in groups.values():
        answers = {_answer_key(objs[i]) for i in members}
        if len(members) >= max_shared and len(answers) > 1:
            text = str(objs[members[0]].get("explanation"))[:80]
            out |= {i: f"{len(members)} items with {len(answers)} different answers share this explanation: "
                       f"{text!r}" for i in members}
    return out


# ---------------------------------------------------------------- one item


def sense_reasons(obj: dict[str, Any], task: Task, cfg: ValidateConfig, dialogue: DialogueText | None
                  ) -> list[Reason]:
    """Every reader-check reason of one raw item (``dialogue``: its dialogue, when known)."""
    english = obj.get("language", "en") == "en"
    text_field = ITEM_MODELS[task].OPTION_FIELDS[-1]  # the sentence-like options: causes (EU), choices (EA)
    reasons = []
    for option in str_list(obj.get(text_field.choices)) or []:
        checks = [(OPTION_SINGLE_WORD, option_single_word(option) if english else None),
                  (OPTION_FRAGMENT, option_fragment(option, cfg.option_min_words) if english else None),
                  (OPTION_NOT_ENGLISH, option_not_english(option, cfg.english_min_ascii, cfg.english_min_words)
                   if english else None),
                  (OPTION_COPIES_TURN, option_copies_turn(option, dialogue.turns, cfg.copy_min_words,
                                                          cfg.copy_similarity) if dialogue else None)]
        reasons += [Reason(code=code, detail=f"{text_field.choices}: {detail}") for code, detail in checks if detail]
    subject, scenario = obj.get("subject"), obj.get("scenario")
    if english and isinstance(subject, str) and subject.strip() and isinstance(scenario, str):
        texts = [scenario, *(dialogue.turns if dialogue else ()), *((dialogue.background,) if dialogue else ())]
        detail = subject_not_person(subject, texts)
        if detail:
            reasons.append(Reason(code=SUBJECT_NOT_PERSON, detail=detail))
    explanation = obj.get("explanation")
    if isinstance(explanation, str) and isinstance(subject, str):
        detail = explanation_template(explanation, subject, cfg.explanation_template_similarity)
        if detail:
            reasons.append(Reason(code=EXPLANATION_TEMPLATE, detail=detail))
    return reasons


def sense_stats(mode: str, reason_codes: list[set[str]], kept_flags: list[set[str]],
                coverage: dict[str, int]) -> dict[str, Any]:
    """stats.json's account of the reader checks: per rule, the items failing it (rejected, or
    kept flagged) and those it alone removed; and where the copy-of-a-turn rule could not look."""
    rules = {code: {"what": what,
                    "items": sum(code in c for c in reason_codes) + sum(code in f for f in kept_flags),
                    "removed_by_it_alone": sum(c == {code} for c in reason_codes)}
             for code, what in RULES.items()}
    without = coverage.get("without_dialogue", 0)
    if mode == "skip":
        note = "reader checks skipped (checks.sense: skip)"
    elif without:
        note = (f"{OPTION_COPIES_TURN} skipped for {without} items whose dialogue is not in the input "
                "(eu.jsonl/ea.jsonl without dialogues.jsonl, or no provenance); their subjects were "
                "checked against the scenario alone")
    else:
        note = f"{OPTION_COPIES_TURN} checked on every item against its dialogue"
    return {"mode": mode, "rules": rules, **coverage, "note": note}
