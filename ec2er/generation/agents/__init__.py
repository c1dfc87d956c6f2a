"""One module per agent; each owns its versioned prompt template(s) and builds its requests."""

from ec2er.generation.agents.background import BackgroundGeneratorAgent
from ec2er.generation.agents.base import PromptTemplate, TokenBudget
from ec2er.generation.agents.client import ClientAgent
from ec2er.generation.agents.extractor import ExtractorAgent
from ec2er.generation.agents.supervisor import SupervisorAgent, SupervisorCheck
from ec2er.generation.agents.therapist import TherapistAgent

__all__ = ["BackgroundGeneratorAgent", "ClientAgent", "ExtractorAgent", "PromptTemplate",
           "SupervisorAgent", "SupervisorCheck", "TherapistAgent", "TokenBudget"]
