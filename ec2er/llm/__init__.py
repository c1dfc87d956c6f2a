"""The LLM engine layer: one protocol (``ChatEngine``), two backends, JSON recovery.

``build_engine(EngineConfig)`` is the only constructor stages call; backends import vLLM or
openai lazily so that the rest of ec2er imports without them.
"""

from ec2er.config import EngineConfig, SamplingConfig
from ec2er.llm.base import ChatEngine
from ec2er.llm.json_recovery import recover_json
from ec2er.llm.types import ChatRequest, ChatResult, EngineDead, GenerationError, Message, RawCompletion


def check_engine(config: EngineConfig) -> None:
    """Fail in one line, before Ray or an engine starts, when the engine's model cannot be had:
    an unknown name or folder (vLLM), or an endpoint that does not serve it (OpenAI-compatible)."""
    if config.kind == "vllm":
        from ec2er.models import check_model

        check_model(config.model)
        return
    from ec2er.llm.openai_engine import OpenAICompatibleEngine

    OpenAICompatibleEngine(config).check_served([config.model])


def build_engine(config: EngineConfig, asynchronous: bool = False) -> ChatEngine:
    """The engine a config names. ``asynchronous``: one whose ``achat_one`` coroutines share it
    (vLLM's AsyncLLM) instead of batched ``chat`` calls; OpenAI-compatible engines do both."""
    if config.kind == "vllm" and asynchronous:
        from ec2er.llm.async_vllm_engine import AsyncVLLMEngine

        return AsyncVLLMEngine(config)
    if config.kind == "vllm":
        from ec2er.llm.vllm_engine import VLLMEngine

        return VLLMEngine(config)
    from ec2er.llm.openai_engine import OpenAICompatibleEngine

    return OpenAICompatibleEngine(config)


__all__ = [
    "ChatEngine", "ChatRequest", "ChatResult", "EngineConfig", "EngineDead", "GenerationError", "Message",
    "RawCompletion", "SamplingConfig", "build_engine", "check_engine", "recover_json",
]
