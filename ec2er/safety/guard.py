"""Tier 2: a guard model asked through an OpenAI-compatible endpoint, in Llama Guard 3's terms.

The prompt follows Llama Guard 3's published template (the task, the 14 hazard categories S1-S14,
the conversation, the two-line answer) so that a Llama Guard 3 model answers in its trained format
and any instruct model can be asked the same question. The answer is "safe", or "unsafe" and a
line of codes ("S11" is suicide & self-harm). What other languages get depends on the guard model
(Llama Guard 3 was trained on eight languages); the rules of tier 1 are English only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ec2er.config import SamplingConfig
from ec2er.llm import ChatEngine, ChatRequest
from ec2er.safety.schema import GuardConfig, GuardVerdict, RiskCategory

# Llama Guard 3's hazard taxonomy (MLCommons), in its own words.
CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes.", "S2": "Non-Violent Crimes.", "S3": "Sex Crimes.", "S4": "Child Exploitation.",
    "S5": "Defamation.", "S6": "Specialized Advice.", "S7": "Privacy.", "S8": "Intellectual Property.",
    "S9": "Indiscriminate Weapons.", "S10": "Hate.", "S11": "Self-Harm.", "S12": "Sexual Content.",
    "S13": "Elections.", "S14": "Code Interpreter Abuse.",
}
# The guard's codes that name one of our categories (S11 covers both suicide and self-harm).
CODE_CATEGORY: dict[str, RiskCategory] = {
    "S11": RiskCategory.suicide, "S1": RiskCategory.harm_to_others, "S3": RiskCategory.abuse,
    "S4": RiskCategory.abuse,
}

_PROMPT = """Task: Check if there is unsafe content in '{role}' messages in conversations according our safety policy with the below categories.

<BEGIN UNSAFE CONTENT CATEGORIES>
{categories}
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

{conversation}

<END CONVERSATION>

Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:
 - First line must read 'safe' or 'unsafe'.
 - If unsafe, a second line must include a comma-separated list of violated categories."""

_CODES = re.compile(r"\bS(\d{1,2})\b")


def guard_prompt(messages: Sequence[dict[str, str]]) -> str:
    """Llama Guard 3's prompt for the last message of a conversation (the role it names: 'User'
    for a user message, 'Agent' for an assistant's)."""
    role = "Agent" if messages[-1].get("role") == "assistant" else "User"
    lines = "\n".join(f"{code}: {text}" for code, text in CATEGORIES.items())
    conversation = "\n\n".join(f"{'Agent' if m.get('role') == 'assistant' else 'User'}: {m.get('content', '')}"
                               for m in messages)
    return _PROMPT.format(role=role, categories=lines, conversation=conversation)


def parse_verdict(text: str, model: str) -> GuardVerdict:
    """'safe' / 'unsafe\\nS11,S1' (Llama Guard's format; leading words a chatty model adds before
    the verdict are tolerated); anything else is a verdict with an error, never a guess."""
    words = text.strip().lower()
    first = re.search(r"\b(unsafe|safe)\b", words)
    if first is None:
        return GuardVerdict(model=model, raw=text, error="the guard answered neither 'safe' nor 'unsafe'")
    if first.group(1) == "safe":
        return GuardVerdict(model=model, safe=True, raw=text)
    codes = [f"S{int(n)}" for n in _CODES.findall(text.upper()[first.end():])]
    return GuardVerdict(model=model, safe=False, codes=list(dict.fromkeys(codes)), raw=text)


def guard_request(messages: Sequence[dict[str, str]], config: GuardConfig) -> ChatRequest:
    convo = [{"role": m["role"], "content": m["content"]} for m in messages]
    sent = convo if config.prompt == "template" else [{"role": "user", "content": guard_prompt(convo)}]
    return ChatRequest(messages=sent, sampling=SamplingConfig(temperature=0.0, max_tokens=config.max_tokens))


async def ask_guard(engine: ChatEngine, messages: Sequence[dict[str, str]], config: GuardConfig) -> GuardVerdict:
    """The guard's verdict on the last message; an unreachable endpoint is a verdict with an error."""
    result = await engine.achat_one(guard_request(messages, config))
    if result.error is not None:
        return GuardVerdict(model=engine.model_name, error=f"{result.error.kind}: {result.error.message}")
    return parse_verdict(result.text, engine.model_name)


def guard_engine(config: GuardConfig) -> ChatEngine:
    """The OpenAI-compatible engine the guard config names (the project's own backend)."""
    from ec2er.llm.openai_engine import OpenAICompatibleEngine

    assert config.engine is not None  # GuardConfig requires one unless mode is off
    return OpenAICompatibleEngine(config.engine)
