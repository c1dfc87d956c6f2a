"""The LLM engine layer: one protocol (``ChatEngine``), two backends, JSON recovery.

``build_engine(EngineConfig)`` is the only constructor stages call; backends import vLLM or
openai lazily so that the rest of ec2er imports without them.
"""

from ec2er.config import EngineConfig, SamplingConfig
from ec2er.llm.base import ChatEngine
from ec2er.llm.json_recovery import recover_json
from ec2er.llm.types import ChatRequest, ChatResult, GenerationError, Message, RawCompletion


def build_engine(config: EngineConfig) -> ChatEngine:
    if config.kind == "vllm":
        from ec2er.llm.vllm_engine import VLLMEngine

        return VLLMEngine(config)
    from ec2er.llm.openai_engine import OpenAICompatibleEngine

    return OpenAICompatibleEngine(config)


__all__ = [
    "ChatEngine", "ChatRequest", "ChatResult", "EngineConfig", "GenerationError", "Message",
    "RawCompletion", "SamplingConfig", "build_engine", "recover_json",
]
