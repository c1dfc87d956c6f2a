"""The LLM engine layer: one protocol (``ChatEngine``), two backends, JSON recovery.

``build_engine(config)`` is the only constructor stages call (a registry keyed on the config's
type, ``VLLMEngineConfig`` or ``OpenAIEngineConfig``); backends import vLLM or
openai lazily so that the rest of ec2er imports without them.
"""

from collections.abc import Callable
from typing import Any

from ec2er.config import EngineBase, EngineConfig, OpenAIEngineConfig, SamplingConfig, VLLMEngineConfig
from ec2er.llm.base import ChatEngine
from ec2er.llm.json_recovery import recover_json
from ec2er.llm.types import ChatRequest, ChatResult, EngineDead, GenerationError, Message, RawCompletion


def _vllm(config: VLLMEngineConfig, asynchronous: bool) -> ChatEngine:
    if asynchronous:
        from ec2er.llm.async_vllm_engine import AsyncVLLMEngine

        return AsyncVLLMEngine(config)
    from ec2er.llm.vllm_engine import VLLMEngine

    return VLLMEngine(config)


def _openai(config: OpenAIEngineConfig, asynchronous: bool) -> ChatEngine:
    from ec2er.llm.openai_engine import OpenAICompatibleEngine

    return OpenAICompatibleEngine(config)  # serves both: batched chat and achat_one coroutines


def _check_vllm(config: VLLMEngineConfig) -> None:
    from ec2er.models import check_model

    check_model(config.model)


def _check_openai(config: OpenAIEngineConfig) -> None:
    from ec2er.llm.openai_engine import OpenAICompatibleEngine

    OpenAICompatibleEngine(config).check_served([config.model])


# config type -> (builder, pre-flight check); a new backend registers its own config type here
ENGINE_BUILDERS: dict[type[EngineBase], tuple[Callable[[Any, bool], ChatEngine], Callable[[Any], None]]] = {
    VLLMEngineConfig: (_vllm, _check_vllm),
    OpenAIEngineConfig: (_openai, _check_openai),
}


def _entry(config: EngineBase) -> tuple[Callable[[Any, bool], ChatEngine], Callable[[Any], None]]:
    try:
        return ENGINE_BUILDERS[type(config)]
    except KeyError:
        raise TypeError(f"no engine is registered for {type(config).__name__}") from None


def check_engine(config: EngineBase) -> None:
    """Fail in one line, before Ray or an engine starts, when the engine's model cannot be had:
    an unknown name or folder (vLLM), or an endpoint that does not serve it (OpenAI-compatible)."""
    _entry(config)[1](config)


def build_engine(config: EngineBase, asynchronous: bool = False) -> ChatEngine:
    """The engine a config names. ``asynchronous``: one whose ``achat_one`` coroutines share it
    (vLLM's AsyncLLM) instead of batched ``chat`` calls; OpenAI-compatible engines do both."""
    return _entry(config)[0](config, asynchronous)


__all__ = [
    "ChatEngine", "ChatRequest", "ChatResult", "EngineBase", "EngineConfig", "OpenAIEngineConfig",
    "VLLMEngineConfig", "EngineDead", "GenerationError", "Message",
    "RawCompletion", "SamplingConfig", "build_engine", "check_engine", "recover_json",
]
