"""Crisis safety: risk of suicide, self-harm, harm to others and abuse in a text or a conversation.

``assess(text_or_messages, config) -> RiskAssessment``: tier 1 is transparent English rules
(``rules.py``, microseconds, no model); tier 2 is any guard model behind an OpenAI-compatible
endpoint, asked in Llama Guard 3's format where the rules are not sure, or always, as
``SafetyConfig.guard.mode`` says. ``dialogue.py`` checks how a dialogue's therapist turns handled a
client's risk; ``rail.py`` puts the check in front of (and behind) a chat endpoint.

A screen, not a clinical instrument: it finds what its rules and its guard model recognise, and
nothing it says replaces a person's judgement.
"""

from ec2er.safety.assess import aassess, assess, assess_rules
from ec2er.safety.rules import RULES_VERSION, means_information
from ec2er.safety.schema import (
    Evidence,
    GuardConfig,
    GuardVerdict,
    RiskAssessment,
    RiskCategory,
    RiskLevel,
    SafetyConfig,
)

__all__ = ["RULES_VERSION", "Evidence", "GuardConfig", "GuardVerdict", "RiskAssessment", "RiskCategory",
           "RiskLevel", "SafetyConfig", "aassess", "assess", "assess_rules", "means_information"]
