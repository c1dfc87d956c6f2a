"""``assess(text_or_messages, config) -> RiskAssessment``: tier-1 rules, then the guard model where
the recipe asks for it.

How the tiers combine: the rules set the level; with ``guard.mode: ambiguous_only`` the guard is
asked only when the rules say ambiguous, and its answer decides (unsafe: high; safe: none); with
``always`` it is asked every time and can raise the level to high, but never lowers a rule's
high (an explicit statement stays high whatever a model says) nor, when it errs, anything at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from ec2er.llm import ChatEngine
from ec2er.llm.openai_engine import _run_coroutine
from ec2er.safety.guard import CODE_CATEGORY, ask_guard, guard_engine
from ec2er.safety.rules import RULES_VERSION, match_rules
from ec2er.safety.schema import Evidence, GuardVerdict, RiskAssessment, RiskCategory, RiskLevel, SafetyConfig

Messages = Sequence[dict[str, str]]


def as_messages(text_or_messages: str | Messages) -> list[dict[str, str]]:
    """A text is one user message; a conversation is a list of {role, content}."""
    if isinstance(text_or_messages, str):
        return [{"role": "user", "content": text_or_messages}]
    messages = list(text_or_messages)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or not isinstance(m.get("role"), str):
            raise ValueError(f"message {i}: expected {{'role': str, 'content': str}}")
    return messages


def assess_rules(text_or_messages: str | Messages, roles: Sequence[str] = ("user",)) -> RiskAssessment:
    """Tier 1 only: microseconds, no model. A conversation's evidence names each message."""
    messages = as_messages(text_or_messages)
    single = isinstance(text_or_messages, str)
    evidence: list[Evidence] = []
    for i, m in enumerate(messages):
        if m["role"] in roles:
            evidence += match_rules(m["content"], message=None if single else i)
    evidence.sort(key=lambda e: (-e.level.rank, e.message or 0, e.start))
    level = evidence[0].level if evidence else RiskLevel.none
    return RiskAssessment(level=level, category=evidence[0].category if evidence else None, evidence=evidence,
                          tier1_level=level, rules_version=RULES_VERSION)


def _asks_guard(level: RiskLevel, config: SafetyConfig) -> bool:
    mode = config.guard.mode
    return mode == "always" or (mode == "ambiguous_only" and level is RiskLevel.ambiguous)


def combine(rules: RiskAssessment, verdict: GuardVerdict) -> RiskAssessment:
    """The rules' assessment with the guard's verdict folded in (see the module's docstring)."""
    out = rules.model_copy(update={"guard": verdict})
    if verdict.safe is None or rules.level is RiskLevel.high:
        return out
    if verdict.safe:
        if rules.level is RiskLevel.ambiguous:
            return out.model_copy(update={"level": RiskLevel.none, "category": None, "decided_by": "guard"})
        return out
    category = rules.category or _guard_category(verdict.codes)
    return out.model_copy(update={"level": RiskLevel.high, "category": category, "decided_by": "guard"})


def _guard_category(codes: list[str]) -> RiskCategory | None:
    return next((CODE_CATEGORY[c] for c in codes if c in CODE_CATEGORY), None)


async def aassess(text_or_messages: str | Messages, config: SafetyConfig | None = None,
                  engine: ChatEngine | None = None) -> RiskAssessment:
    """``assess`` as a coroutine (for servers); ``engine`` overrides the guard the config names."""
    config = config or SafetyConfig()
    rules = assess_rules(text_or_messages, config.roles)
    if not _asks_guard(rules.level, config):
        return rules
    return await _with_guard(rules, text_or_messages, config, engine)


async def _with_guard(rules: RiskAssessment, text_or_messages: str | Messages, config: SafetyConfig,
                      engine: ChatEngine | None) -> RiskAssessment:
    owned = engine is None
    engine = engine or guard_engine(config.guard)
    try:
        verdict = await ask_guard(engine, _guarded_conversation(text_or_messages, config), config.guard)
    finally:
        if owned:
            engine.close()
    return combine(rules, verdict)


def _guarded_conversation(text_or_messages: str | Messages, config: SafetyConfig) -> list[dict[str, str]]:
    """The conversation up to the last message of an assessed role (the one the guard judges)."""
    messages = as_messages(text_or_messages)
    last = max((i for i, m in enumerate(messages) if m["role"] in config.roles), default=len(messages) - 1)
    return messages[:last + 1]


def assess(text_or_messages: str | Messages, config: SafetyConfig | None = None,
           engine: ChatEngine | None = None) -> RiskAssessment:
    """The risk of a text, or of a conversation's messages of ``config.roles`` (default: user).

    English first: tier 1 knows English only (any other language gets level none from the rules);
    what the guard of tier 2 understands depends on the guard model. Not a clinical instrument."""
    config = config or SafetyConfig()
    rules = assess_rules(text_or_messages, config.roles)
    if not _asks_guard(rules.level, config):
        return rules  # no event loop for the rules alone: they take microseconds
    return _run_coroutine(_with_guard(rules, text_or_messages, config, engine))
