"""The LLM engine layer: one protocol (``ChatEngine``), a backend per module of
``ec2er.llm.kinds`` (vLLM, OpenAI-compatible endpoints), JSON recovery.

``build_engine(config)`` is the only constructor stages call (the registry of ``ec2er.llm.kinds``,
keyed on the config's ``kind``); backends import vLLM or openai lazily so that the rest of ec2er
imports without them.
"""

from ec2er.config import EngineBase, SamplingConfig
from ec2er.llm.base import ChatEngine
from ec2er.llm.json_recovery import recover_json
from ec2er.llm.kinds import ENGINE_KINDS, EngineConfig, engine_kind
from ec2er.llm.kinds.openai import OpenAIEngineConfig
from ec2er.llm.kinds.vllm import VLLMEngineConfig
from ec2er.llm.types import ChatRequest, ChatResult, EngineDead, GenerationError, Message, RawCompletion


def check_engine(config: EngineBase) -> None:
    """Fail in one line, before Ray or an engine starts, when the engine's model cannot be had:
    an unknown name or folder (vLLM), or an endpoint that does not serve it (OpenAI-compatible)."""
    engine_kind(config).check(config)


def build_engine(config: EngineBase, asynchronous: bool = False) -> ChatEngine:
    """The engine a config names. ``asynchronous``: one whose ``achat_one`` coroutines share it
    (vLLM's AsyncLLM) instead of batched ``chat`` calls; OpenAI-compatible engines do both."""
    return engine_kind(config).build(config, asynchronous)


__all__ = [
    "ENGINE_KINDS", "ChatEngine", "ChatRequest", "ChatResult", "EngineBase", "EngineConfig", "OpenAIEngineConfig",
    "VLLMEngineConfig", "EngineDead", "GenerationError", "Message",
    "RawCompletion", "SamplingConfig", "build_engine", "check_engine", "recover_json",
]
