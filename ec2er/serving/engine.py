"""The served engine: vLLM's ``AsyncLLM`` and vLLM's own OpenAI serving objects around it.

Built the way ``ray.serve.llm`` builds them (``ray/llm/_internal/serve/engines/vllm/vllm_engine.py``:
``AsyncEngineArgs`` + ``FrontendArgs`` flattened into one namespace, then vLLM's
``init_app_state``), so request parsing, chat templates, streaming, structured outputs, logprobs
and error bodies are vLLM's. Only two things are ours: the registry resolver (``resolver.py``)
and, on CPU builds, the gate that keeps base and adapter requests out of each other's batches.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from typing import Any

from ec2er.serving.config import ServeConfig
from ec2er.serving.gate import BatchGate
from ec2er.serving.resolver import ServableAdapters, register_registry_resolver, servable_adapters
from ec2er.serving.vllm_api import vllm_symbol

log = logging.getLogger(__name__)


def _gated_engine_class(gate: BatchGate) -> type:
    """``AsyncLLM`` whose ``generate`` passes the gate first. Every OpenAI serving object (chat,
    completions, streamed or not) reaches the engine through ``generate``, so this one place
    covers them all; the gate is held until the request's last output."""
    AsyncLLM = vllm_symbol("vllm.v1.engine.async_llm:AsyncLLM")

    class GatedAsyncLLM(AsyncLLM):  # type: ignore[misc, valid-type]
        async def generate(self, *args: Any, **kwargs: Any):  # type: ignore[override]
            async with gate.admit("adapter" if kwargs.get("lora_request") else "base"):
                async for output in super().generate(*args, **kwargs):
                    yield output

    return GatedAsyncLLM


def separate_base_batches(config: ServeConfig) -> bool:
    from ec2er.llm.vllm_fixes import mixed_lora_batches_are_exact

    wanted = config.engine.separate_base_batches
    return not mixed_lora_batches_are_exact() if wanted is None else wanted


def with_max_tokens(kwargs: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """Engine arguments whose default ``max_tokens`` (a request that names none) is at most
    ``limit``: vLLM's own server-wide bound (``max_new_tokens`` of the generation config). A
    request asking for more is refused by the app before vLLM sees it."""
    if limit is None:
        return kwargs
    override = dict(kwargs.get("override_generation_config") or {})
    override["max_new_tokens"] = min(limit, override.get("max_new_tokens") or limit)
    return kwargs | {"override_generation_config": override}


@dataclass
class ServedEngine:
    engine: Any  # vllm AsyncLLM
    state: Any  # starlette State holding vLLM's OpenAI serving objects (init_app_state)
    adapters: ServableAdapters


async def start_engine(config: ServeConfig) -> ServedEngine:
    """Start ``AsyncLLM`` for the config's base model with the registry resolver, and build vLLM's
    OpenAI serving state for it."""
    from starlette.datastructures import State

    from ec2er.llm.vllm_engine import engine_kwargs

    AsyncEngineArgs = vllm_symbol("vllm.engine.arg_utils:AsyncEngineArgs")
    AsyncLLM = vllm_symbol("vllm.v1.engine.async_llm:AsyncLLM")
    FrontendArgs = vllm_symbol("vllm.entrypoints.launchers.cli_args:FrontendArgs")
    init_app_state = vllm_symbol("vllm.entrypoints.launchers.api_server.app_state:init_app_state")
    UsageContext = vllm_symbol("vllm.usage.usage_lib:UsageContext")

    # vLLM consults LoRA resolvers only with runtime LoRA updating on; its HTTP routes for
    # loading adapters stay unmounted (our app mounts only the routes listed in app.py).
    os.environ["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "1"
    adapters = servable_adapters(config.registry, config.model)
    register_registry_resolver(adapters)
    kwargs = with_max_tokens(engine_kwargs(config.engine.engine_config(config.model)), config.limits.max_tokens)
    model_path = kwargs["model"]
    engine_args = AsyncEngineArgs(**kwargs, served_model_name=[config.served_name],
                                  max_cpu_loras=config.engine.max_cpu_loras)
    engine_class = _gated_engine_class(BatchGate()) if separate_base_batches(config) else AsyncLLM
    log.info("starting %s for %s (%s)", engine_class.__name__, config.served_name, model_path)
    engine = engine_class.from_engine_args(engine_args, usage_context=UsageContext.OPENAI_API_SERVER)
    state = State()
    args = argparse.Namespace(**(vars(FrontendArgs()) | vars(engine_args)))
    await init_app_state(engine, state, args, supported_tasks=await engine.get_supported_tasks())
    return ServedEngine(engine, state, adapters)
