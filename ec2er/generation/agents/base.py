"""Prompt templates and the token budget that keeps growing dialogues inside max_model_len."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ec2er.llm import Message
from ec2er.schemas.dialogue import Turn

# Per-message overhead of chat templates (role tags, separators), generous for all we use.
MESSAGE_OVERHEAD = 8


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt: ``name@version`` goes into every item's provenance."""

    name: str
    version: str
    system: str
    user: str = ""

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    def system_text(self, **fields: object) -> str:
        return self.system.format(**fields)

    def user_text(self, **fields: object) -> str:
        return self.user.format(**fields)


@dataclass
class TokenBudget:
    """Counts prompt tokens (with the engine's tokenizer where it has one) against the room
    ``max_model_len`` leaves after the completion."""

    max_model_len: int
    count: Callable[[str], int]

    def room(self, max_tokens: int) -> int:
        return self.max_model_len - max_tokens - 16

    def messages_tokens(self, messages: list[Message]) -> int:
        return sum(self.count(m["content"]) + MESSAGE_OVERHEAD for m in messages)

    def fit_conversation(self, head: list[Message], history: list[Message], max_tokens: int) -> list[Message]:
        """``head`` (system prompt with the background, opening line) is always kept; the oldest
        history messages go, two at a time so the roles keep alternating, until it fits."""
        room = self.room(max_tokens) - self.messages_tokens(head)
        sizes = [self.count(m["content"]) + MESSAGE_OVERHEAD for m in history]
        start = 0
        while start < len(history) and sum(sizes[start:]) > room:
            start += 2
        return head + history[start:]

    def fit_transcript(self, turns: list[Turn], room: int) -> str:
        """The numbered transcript's most recent turns that fit in ``room`` tokens."""
        lines = [f"[{t.index}] {t.speaker.value}: {t.text}" for t in turns]
        kept: list[str] = []
        used = 0
        for line in reversed(lines):
            used += self.count(line) + 1
            if used > room:
                kept.append("[earlier turns omitted]")
                break
            kept.append(line)
        return "\n".join(reversed(kept))


# Opens both the client's and the therapist's system prompt, word for word: with the background
# first, an engine's prefix cache computes it once per dialogue for both agents instead of once
# per turn per agent (the role-specific text, which differs, comes after it).
SESSION_CONTEXT = PromptTemplate(
    name="session_context", version="1",
    system="Therapy session. The client's background:\n{background}\n\n",
)


def session_system_text(background: str, role: PromptTemplate, **fields: object) -> str:
    return SESSION_CONTEXT.system_text(background=background) + role.system_text(**fields)
