"""The OpenAI-compatible backend: any endpoint that speaks OpenAI's chat API (a vLLM server,
ec2er's own ``ec2er serve``, a hosted API); the ``openai`` client is imported only when an engine
is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ec2er.config import EngineBase
from ec2er.llm.kinds import register_engine


class OpenAIEngineConfig(EngineBase):
    """Any OpenAI-compatible endpoint: a vLLM server, ec2er's own (``ec2er serve``), a hosted API."""

    kind: Literal["openai"] = "openai"
    base_url: str = Field(description="the endpoint's base URL, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the bearer key")
    api_key_file: Path | None = Field(None, description="a file holding the bearer key (wins over api_key_env)")
    max_concurrency: int = Field(16, ge=1)
    max_retries: int = Field(4, ge=0)
    timeout_s: float = Field(120.0, gt=0)

    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "base_url", "api_key_env", "api_key_file", "max_concurrency", "max_retries", "timeout_s"})

    def only_reachable_from_this_machine(self) -> bool:
        from urllib.parse import urlparse

        host = urlparse(self.base_url).hostname or ""
        return host == "localhost" or host == "::1" or host.startswith("127.")


def _build(config: OpenAIEngineConfig, asynchronous: bool) -> Any:
    from ec2er.llm.openai_engine import OpenAICompatibleEngine

    return OpenAICompatibleEngine(config)  # serves both: batched chat and achat_one coroutines


def _check(config: OpenAIEngineConfig) -> None:
    from ec2er.llm.openai_engine import OpenAICompatibleEngine

    OpenAICompatibleEngine(config).check_served([config.model])


register_engine(OpenAIEngineConfig, build=_build, check=_check)
