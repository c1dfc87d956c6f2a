"""Tier 1: transparent, versioned rules (regular expressions) for risk in English text.

How a text is read, in order, every step keeping character offsets (evidence spans point into the
text as given):

1. Curly apostrophes become straight ones; the text is lower-cased.
2. **Idioms are masked** (replaced by spaces): "this exam is killing me", "I'm dying to see it",
   "I could kill for a coffee", "bored to death", "I'd rather die than go to that party", "I cut
   myself while cooking". A masked phrase can no longer match a risk rule.
3. **Risk rules** match what is left; each has an id, a level and a category (``RULES``).
4. **Demotion**: a high match preceded closely by a negation ("I would never hurt myself", "I don't
   want to die") or placed in the past without a sign that it is current ("I used to cut myself
   in high school", unlike "I've been cutting again") counts as ambiguous: still shown, still
   worth a question, not an explicit statement of current risk.

``MEANS_RULES`` find means information (lethal doses, methods) in a reply: the rail withholds it,
and a therapist turn that gives it is unsafe handling.

English only: other languages get no tier-1 match at all (level none), so a deployment serving
them must use the tier-2 guard with ``mode: always``. The rules are a screen, not a clinical
instrument: they miss what they do not spell out, and their job is to be cheap, explainable and
conservative. Change ``RULES_VERSION`` whenever a rule changes (assessments record it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ec2er.safety.schema import Evidence, RiskCategory, RiskLevel

RULES_VERSION = "crisis-rules-1"

HIGH, AMBIGUOUS = RiskLevel.high, RiskLevel.ambiguous
SUICIDE, SELF_HARM = RiskCategory.suicide, RiskCategory.self_harm
OTHERS, ABUSE = RiskCategory.harm_to_others, RiskCategory.abuse


@dataclass(frozen=True)
class Rule:
    id: str
    level: RiskLevel
    category: RiskCategory
    pattern: re.Pattern[str]
    demotable: bool = True  # False where the pattern itself holds the negation ("don't want to live")


@dataclass(frozen=True)
class Idiom:
    id: str
    pattern: re.Pattern[str]
    # not an idiom when this matches the words just before it ("scared he's going to kill me")
    unless_before: re.Pattern[str] | None = None


def _re(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)  # texts are lower-cased first (normalize): no IGNORECASE, which is slower


_KIN = (r"(?:him|her|them|someone|somebody|people|everyone|the baby|my baby|my (?:boss|wife|husband|partner|"
        r"dad|mom|mum|father|mother|son|daughter|kids?|children|brother|sister|neighbou?r|ex|stepdad|coworker))")
_ABUSER = (r"(?:he|she|they|my (?:husband|wife|partner|boyfriend|girlfriend|dad|father|mom|mum|mother|stepdad|"
           r"stepfather|stepmom|uncle|brother|ex|boss|coach))")

IDIOMS: tuple[Idiom, ...] = (
    Idiom("killing_me", _re(r"\b(?:is|are|was|were|'s|'re)\s+(?:really\s+|literally\s+|slowly\s+)?killing\s+me\b")),
    Idiom("kill_me_threat_joke", _re(r"\b(?:going to|gonna|will|'ll|would|is going to)\s+(?:literally\s+)?"
                                     r"(?:kill|murder)\s+me\b(?!\s+(?:one day|someday))"),
          unless_before=_re(r"(?:scared|afraid|terrified|frightened|fear|threat\w*|swore|promised|said)\b[^.!?]{0,25}$")),
    Idiom("shoot_me_now", _re(r"\b(?:just\s+)?(?:shoot|kill)\s+me\s+now\b")),
    Idiom("dying_to", _re(r"\bdying\s+(?:to|for)\b")),
    Idiom("kill_for", _re(r"\b(?:kill|die)\s+for\b")),
    Idiom("die_of", _re(r"\b(?:die|died|dying)\s+(?:of|from)\s+(?:embarrassment|shame|boredom|laughter|laughing|"
                        r"cuteness|envy|jealousy|curiosity|the heat|heat|cold|excitement)\b")),
    Idiom("died_laughing", _re(r"\b(?:die|died|dying)\s+laughing\b")),
    Idiom("crawl_in_hole", _re(r"\bcrawl\s+(?:into|in)\s+a\s+hole\s+and\s+die\b")),
    Idiom("nearly_died", _re(r"\b(?:nearly|almost|could have|could've|practically|literally)\s+died\b")),
    Idiom("rather_die_than", _re(r"\b(?:would|'d)\s+rather\s+die\s+than\s+(?!(?:live|go on|keep (?:living|going)|feel|"
                                 r"wake up|be alive|continue|face another|spend another))")),
    Idiom("to_death", _re(r"\b(?:bored|scared|worried|tickled|frightened|sick|tired|loved?|stressed)\s+to\s+death\b")),
    Idiom("dead_phrase", _re(r"\bover my dead body\b|\bdead\s+(?:tired|serious|set|end|beat|last|on my feet)\b")),
    Idiom("kill_time", _re(r"\bkill(?:ing|ed)?\s+(?:time|it)\b")),
    Idiom("kill_for_trifle", _re(r"\b(?:kill|murder|strangle)\s+(?:him|her|them|my \w+)\s+(?:for|if|when)\s+"
                                 r"(?:eating|taking|borrowing|using|stealing|losing|breaking|forgetting|being|not|"
                                 r"spoiling|telling|he|she|they)\b")),
    Idiom("hurt_accident", _re(r"\b(?:cut|burn(?:ed|t)?|hurt)\s+(?:myself|my (?:finger|hand|thumb|back|knee|ankle))\s+"
                               r"(?:on|while|when|cooking|shaving|at\s+(?:the\s+)?(?:gym|work)|playing|lifting|running|"
                               r"chopping|slicing|in the kitchen|by accident|laughing|gardening|moving)\b")),
    Idiom("accidentally_hurt", _re(r"\baccidentally\s+(?:cut|burn(?:ed|t)?|hurt)\s+myself\b")),
    Idiom("cut_slack", _re(r"\bcut(?:ting)?\s+(?:myself|me)\s+(?:some\s+)?slack\b")),
    Idiom("head_against_wall", _re(r"\bbang(?:ing)?\s+my\s+head\s+against\s+(?:a|the)\s+(?:brick\s+)?wall\b")),
    Idiom("want_to_die_laughing", _re(r"\bwant(?:ed)?\s+to\s+die\s+(?:right there|on the spot)\b")),
)

_FIRST = r"(?:i|i'm|im|i've|ive|i'd|i'll|i have|i am|i was)"

RULES: tuple[Rule, ...] = (
    # suicide: explicit ideation, passive or active
    Rule("suicide.kill_myself", HIGH, SUICIDE, _re(r"\bkill(?:ing|ed)?\s+my\s*self\b")),
    Rule("suicide.end_my_life", HIGH, SUICIDE, _re(r"\b(?:end|ending|take|taking|took)\s+my\s+(?:own\s+)?life\b")),
    Rule("suicide.end_it_all", HIGH, SUICIDE, _re(r"\b(?:end|ending|finish)\s+it\s+all\b")),
    Rule("suicide.want_to_die", HIGH, SUICIDE,
         _re(r"\b(?:wants?|wanna|wanted|wish|wishing|ready|longing)\s+(?:to\s+)?die\b")),
    Rule("suicide.rather_be_dead", HIGH, SUICIDE, _re(r"\brather\s+(?:be\s+dead|die|not\s+(?:be\s+alive|exist|be here))\b")),
    Rule("suicide.wish_dead", HIGH, SUICIDE,
         _re(r"\bwish(?:ed)?\s+i\s+(?:was|were|had)\s+(?:dead|never been born|not alive|not here|gone for good)\b")),
    Rule("suicide.never_wake_up", HIGH, SUICIDE,
         _re(r"\b(?:sleep|fall asleep|go to sleep|close my eyes)\s+and\s+(?:never|not)\s+wake\s+up\b")),
    Rule("suicide.better_off_without_me", HIGH, SUICIDE,
         _re(r"\b(?:better off|happier|easier|lighter)\s+(?:without me|if i (?:was|were|wasn't|weren't) "
             r"(?:dead|gone|here|around)|if i died|if i disappeared)\b")),
    Rule("suicide.no_point_living", HIGH, SUICIDE,
         _re(r"\b(?:no|don't see (?:the|any)|dont see (?:the|any)|can't see (?:the|any)|lost (?:the|any|my)|what's the|whats the)\s+"
             r"(?:point|reason|will)\s+(?:in|of|to|for)?\s*(?:living|going on|being alive|staying alive|"
             r"carrying on|keep (?:going|living)|live|life)\b"), demotable=False),
    Rule("suicide.not_want_to_live", HIGH, SUICIDE,
         _re(r"\b(?:don't|dont|do not|no longer|never)\s+want\s+to\s+(?:live|be alive|exist|wake up|"
             r"be here anymore|be here any more|go on)\b"), demotable=False),
    Rule("suicide.tired_of_living", HIGH, SUICIDE,
         _re(r"\b(?:tired|sick|done)\s+(?:of|with)\s+(?:living|being alive|life itself|existing)\b")),
    Rule("suicide.suicidal", HIGH, SUICIDE,
         _re(r"\b(?:suicidal|suicide\s+(?:note|plan|letter)|(?:thoughts?|thinking|thought)\s+(?:of|about)\s+"
             r"(?:suicide|ending (?:my life|it all|things))|attempted\s+suicide|tried\s+suicide)\b")),
    # suicide: plan and means
    Rule("suicide.stockpiling", HIGH, SUICIDE,
         _re(r"\b(?:saving|saved|stockpil\w*|hoard\w*|collecting|stashing|stashed)\s+(?:up\s+)?(?:my\s+|all\s+"
             r"(?:my\s+)?|the\s+)?(?:pills|tablets|meds|medication|sleeping pills|painkillers|pain pills)\b")),
    Rule("suicide.enough_pills", HIGH, SUICIDE,
         _re(r"\b(?:how many|enough)\s+(?:of\s+(?:my|these|the)\s+)?(?:pills|tablets|meds|painkillers)\b[^.?!]{0,40}"
             r"\b(?:take|kill|die|overdose|do it|not wake up|end it)\b")),
    Rule("suicide.method_search", HIGH, SUICIDE,
         _re(r"\b(?:looked up|looking up|searched|researched|googled|reading about)\s+(?:how|ways|methods?)\s+"
             r"(?:to\s+)?(?:die|overdose|hang|end (?:it|my life))")),
    Rule("suicide.jump", HIGH, SUICIDE,
         _re(r"\bjump(?:ing)?\s+(?:off|from|in front of)\s+(?:a|the|my|that)?\s*(?:bridge|building|roof|balcony|"
             r"cliff|train|car|bus|overpass|tower)")),
    Rule("suicide.noose", HIGH, SUICIDE, _re(r"\b(?:noose|hang myself|hanging myself)\b")),
    Rule("suicide.goodbye_note", HIGH, SUICIDE,
         _re(r"\b(?:wrote|writing|written|left)\s+(?:a|my)\s+(?:goodbye|farewell|final)\s+(?:note|letter)s?\b")),
    Rule("suicide.take_all_pills", HIGH, SUICIDE,
         _re(r"\b(?:take|swallow|down)\s+(?:all|every one)\s+(?:of\s+)?(?:my|the|these|those)\s+"
             r"(?:pills|tablets|meds|painkillers)\b")),
    # suicide: veiled, hopeless, someone else's
    Rule("suicide.cant_go_on", AMBIGUOUS, SUICIDE,
         _re(r"\b(?:can't|cant|cannot)\s+(?:go on|keep going|carry on|do this|take (?:it|this))\s+"
             r"(?:anymore|any more|any longer|much longer|like this)\b|\bcan't go on\b")),
    Rule("suicide.disappear", AMBIGUOUS, SUICIDE,
         _re(r"\b(?:want|wish|wanted|wishing)\s+(?:to|i could)\s+(?:just\s+)?(?:disappear|vanish|not exist|"
             r"stop existing|be gone|fade away|not be here)\b(?!\s+(?:for a|on (?:a )?(?:vacation|holiday)|to (?:a|the)))")),
    Rule("suicide.nobody_would_notice", AMBIGUOUS, SUICIDE,
         _re(r"\b(?:no one|nobody|no-one)\s+would\s+(?:even\s+)?(?:notice|care|miss me)\b[^.?!]{0,30}"
             r"\bif\s+i\b|\b(?:no one|nobody)\s+would\s+(?:even\s+)?miss\s+me\b")),
    Rule("suicide.if_i_died", AMBIGUOUS, SUICIDE,
         _re(r"\bif\s+i\s+(?:died|was dead|were dead|wasn't here|weren't here|was gone|were gone|"
             r"wasn't around|weren't around|disappeared)\b")),
    Rule("suicide.burden", AMBIGUOUS, SUICIDE,
         _re(r"\b(?:i'm|im|i am|i feel like|i've become|just)\s+(?:a|such a)\s+burden\b")),
    Rule("suicide.no_way_out", AMBIGUOUS, SUICIDE,
         _re(r"\b(?:no way out|only way out|what's the point anymore|whats the point anymore|"
             r"what's the point of anything|nothing left to live for)\b")),
    Rule("suicide.giving_away", AMBIGUOUS, SUICIDE,
         _re(r"\b(?:giving|gave|give)\s+(?:away\s+)?(?:all\s+)?my\s+(?:things|stuff|belongings|possessions)"
             r"(?:\s+away)?\b|\bsaid my goodbyes\b|\bsaying goodbye to everyone\b")),
    Rule("suicide.someone_else", AMBIGUOUS, SUICIDE,
         _re(r"\b(?:kill(?:ing|ed)?|hurt(?:ing)?)\s+(?:himself|herself|themselves|themself)\b|\bend (?:his|her|their) "
             r"(?:own )?life\b|\b(?:took|take) (?:his|her|their) own life\b|\b(?:died by|committed) suicide\b")),
    Rule("suicide.overdose", AMBIGUOUS, SUICIDE, _re(r"\boverdos(?:e|ed|ing)\b")),
    # self-harm
    Rule("self_harm.hurt_myself", HIGH, SELF_HARM,
         _re(r"\b(?:cut|cutting|cuts|burn|burning|burned|burnt|hit|hitting|hurt|hurting|scratch|scratching|harm|"
             r"harming|punish|punishing|starve|starving|bite|biting)\s+my\s*self\b")),
    Rule("self_harm.self_harm", HIGH, SELF_HARM, _re(r"\bself[- ]?(?:harm\w*|injur\w*|mutilat\w*)")),
    Rule("self_harm.cutting", HIGH, SELF_HARM,
         _re(rf"\b(?:{_FIRST}\s+(?:been\s+|started\s+|back to\s+)?|started\s+|relapsed\s+(?:on\s+|into\s+)?|"
             r"urges?\s+to\s+)cut(?:ting)?\b(?!\s+(?:back|down|carbs|sugar|costs|ties|corners|class|classes|out|off|"
             r"it|my hair|hair|the|some|coupons|grass|wood|onions|vegetables|in line|loose|him|her|them|you|"
             r"people|my losses|a deal|through))")),
    Rule("self_harm.cutting_again", HIGH, SELF_HARM, _re(r"\bcutting\s+(?:again|lately|more|every)\b")),
    Rule("self_harm.blade_on_skin", HIGH, SELF_HARM,
         _re(r"\b(?:razor|blade|knife|lighter|scissors)\b[^.?!]{0,40}\b(?:my\s+)?(?:arms?|wrists?|thighs?|legs?|skin)\b")),
    Rule("self_harm.until_bleed", HIGH, SELF_HARM, _re(r"\buntil\s+(?:it|they|i|my \w+)\s+(?:bleeds?|bled)\b")),
    Rule("self_harm.hiding_marks", AMBIGUOUS, SELF_HARM,
         _re(r"\b(?:hide|hiding|cover|covering)\s+(?:up\s+)?(?:the|my)\s+(?:scars|cuts|marks|burns)\b|"
             r"\bscars on my (?:arms?|wrists?|thighs?|legs?)\b")),
    # harm to others
    Rule("others.intent", HIGH, OTHERS,
         _re(r"\b(?:want|wanted|planning|plan|thought about|thinking about|think about|urges?|fantasi[sz]e about|"
             r"fantasi[sz]ing about|intend|intending)\s+(?:to\s+)?(?:kill|killing|hurt|hurting|harm|harming|stab|"
             rf"stabbing|shoot|shooting|strangle|strangling|poison|poisoning|beat up|beating up)\s+{_KIN}\b")),
    Rule("others.thoughts_of_harming", HIGH, OTHERS,
         _re(rf"\bthoughts?\s+(?:of|about)\s+(?:hurting|harming|killing|shaking|smothering)\s+{_KIN}\b")),
    Rule("others.going_to_kill", AMBIGUOUS, OTHERS,
         _re(rf"\b(?:going to|gonna|will|'ll|could)\s+(?:kill|hurt|stab|shoot|strangle)\s+{_KIN}\b")),
    # abuse the speaker suffers
    Rule("abuse.violence", HIGH, ABUSE,
         _re(rf"\b{_ABUSER}\s+(?:\w+\s+)?(?:hits|hit|beats|beat|chokes|choked|strangles|strangled|slaps|slapped|kicks|"
             r"kicked|punches|punched|shoves|shoved|pushes|pushed|hurts|rapes|raped|forces|forced|burns|burned|"
             r"locks|locked)\s+me\b")),
    Rule("abuse.threat", HIGH, ABUSE,
         _re(r"\bthreaten(?:s|ed|ing)?\s+(?:to\s+)?(?:kill|hurt|take the kids from|beat)\s+me\b|"
             r"\b(?:scared|afraid|terrified|frightened)\s+(?:that\s+)?(?:he|she|they)(?:'ll|'s going to| will|"
             r" is going to| might| could| would)\s+(?:kill|hurt|hit)\s+me\b")),
    Rule("abuse.unsafe_home", AMBIGUOUS, ABUSE,
         _re(r"\b(?:not safe|afraid to go|scared to go)\s+(?:at\s+)?home\b|\bwalk(?:ing)? on eggshells\b")),
)

MEANS_RULES: tuple[Rule, ...] = (
    Rule("means.lethal_dose", HIGH, SUICIDE, _re(r"\b(?:lethal|fatal|deadly|toxic)\s+(?:dose|amount|quantity|level)\b")),
    Rule("means.dose_with_outcome", HIGH, SUICIDE,
         _re(r"\b\d+(?:[.,]\d+)?\s*(?:mg|milligrams?|grams?|g|pills|tablets|capsules)\b[^.?!]{0,60}\b(?:kill|fatal|"
             r"lethal|die|death|overdose|enough to)\b|\b(?:kill|fatal|lethal|overdose|enough to)\b[^.?!]{0,40}\b\d+"
             r"(?:[.,]\d+)?\s*(?:mg|milligrams?|grams?|g|pills|tablets|capsules)\b")),
    Rule("means.best_method", HIGH, SUICIDE,
         _re(r"\b(?:most|least|more|less)\s+(?:painless|effective|reliable|quick|quickest|lethal|certain)\s+"
             r"(?:way|method|means|option)s?\b|\bpainless\s+(?:way|method)s?\s+to\b")),
    Rule("means.how_to", HIGH, SUICIDE,
         _re(r"\bhow\s+to\s+(?:tie\s+a\s+noose|hang\s+(?:yourself|oneself)|overdose|slit|kill\s+(?:yourself|oneself)|"
             r"end\s+your\s+life)\b|\b(?:tie|tying)\s+a\s+noose\b")),
    Rule("means.cutting_technique", HIGH, SELF_HARM,
         _re(r"\b(?:cut|slit)\s+(?:along|across|vertically|lengthwise|deeper|your wrists?)\b")),
    Rule("means.height", HIGH, SUICIDE,
         _re(r"\b(?:high|tall)\s+enough\s+(?:to|for)\s+(?:be fatal|kill|die|a fatal)\b|\b\d+\s+(?:floors?|stories|"
             r"storeys|feet|metres|meters)\b[^.?!]{0,40}\b(?:fatal|survive|lethal|die)\b")),
)

_NEGATION_BEFORE = _re(r"\b(?:not(?!\s+(?:sure|certain))|never|no(?!\s+one)|don't|dont|do not|didn't|wouldn't|won't|"
                       r"isn't|aren't|no longer|stopped)\s+(?:\S+\s+){0,3}$")
_PAST = _re(r"\b(?:used to|years ago|when i was (?:younger|little|small|a (?:kid|child|teen|teenager))|"
            r"as a (?:kid|child|teen|teenager)|in (?:high school|middle school|college)|back then|"
            r"a long time ago|in my twenties|in my teens)\b")
_CURRENT = _re(r"\b(?:again|lately|recently|these days|last (?:night|week)|this (?:week|morning)|started|still|"
               r"relaps\w*|now|today|tonight|keep|every day)\b")
_SENTENCE_END = re.compile(r"[.!?;\n]")


def normalize(text: str) -> str:
    """Lower case and straight apostrophes, same length as the text (offsets stay valid)."""
    return text.replace("\u2019", "'").replace("\u2018", "'").lower()


def mask_idioms(text: str) -> str:
    """The normalized text with every idiom replaced by spaces (same length)."""
    chars = list(normalize(text))
    for idiom in IDIOMS:
        for m in idiom.pattern.finditer("".join(chars)):
            before = "".join(chars[max(0, m.start() - 40):m.start()])
            if idiom.unless_before is not None and idiom.unless_before.search(before):
                continue
            chars[m.start():m.end()] = " " * (m.end() - m.start())
    return "".join(chars)


def _sentence(text: str, start: int, end: int) -> tuple[str, str]:
    """(the words of the match's sentence before it, the whole sentence)."""
    left = max((m.end() for m in _SENTENCE_END.finditer(text, 0, start)), default=0)
    right = _SENTENCE_END.search(text, end)
    return text[left:start], text[left:right.start() if right else len(text)]


def _demoted(rule: Rule, masked: str, start: int, end: int) -> bool:
    if not rule.demotable or rule.level is not HIGH:
        return False
    before, sentence = _sentence(masked, start, end)
    negated = bool(_NEGATION_BEFORE.search(before))
    in_past = bool(_PAST.search(sentence)) and not _CURRENT.search(sentence)
    return negated or in_past


def match_rules(text: str, rules: tuple[Rule, ...] = RULES, message: int | None = None) -> list[Evidence]:
    """Every rule match in ``text`` after idioms are masked, decisive first (highest level, then
    earliest); overlapping matches of one category keep the first found."""
    masked = mask_idioms(text)
    found: list[Evidence] = []
    for rule in rules:
        for m in rule.pattern.finditer(masked):
            if any(e.category == rule.category and e.start < m.end() and m.start() < e.end for e in found):
                continue
            level = AMBIGUOUS if _demoted(rule, masked, m.start(), m.end()) else rule.level
            found.append(Evidence(rule=rule.id, level=level, category=rule.category, start=m.start(),
                                  end=m.end(), text=text[m.start():m.end()], message=message))
    return sorted(found, key=lambda e: (-e.level.rank, e.message or 0, e.start))


def means_information(text: str) -> list[Evidence]:
    """Means information in a reply (doses, methods): what no reply to a person at risk may carry."""
    return match_rules(text, MEANS_RULES)
