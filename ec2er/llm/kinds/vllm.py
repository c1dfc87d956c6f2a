"""The vLLM backend: vLLM in the process (``vllm.LLM``) or as an async engine (``AsyncLLM``);
vLLM itself is imported only when an engine is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ec2er.config import EngineBase
from ec2er.llm.kinds import register_engine


class VLLMEngineConfig(EngineBase):
    """vLLM in the process (``vllm.LLM``) or as an async engine (``AsyncLLM``)."""

    kind: Literal["vllm"] = "vllm"
    dtype: str = Field("auto", description="'auto': the checkpoint's dtype on GPUs, float32 on CPU "
                                           "builds (bf16 matmuls fall back to slow kernels on CPUs "
                                           "without AVX512-BF16: 3x lower batched throughput here)")
    enforce_eager: bool = True
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    kv_cache_gib: int = Field(2, ge=1, description="VLLM_CPU_KVCACHE_SPACE (GiB, an integer) on CPU builds")
    cpu_reserved_cores: int | None = Field(
        None, ge=0, description="VLLM_CPU_NUM_OF_RESERVED_CPU on CPU builds: cores kept from the model's "
                                "threads for vLLM's scheduler. None: 0 on machines of 4 cores or fewer "
                                "(vLLM's 1 would halve a 2-core machine: 1.8x lower batched throughput measured), "
                                "vLLM's own choice on bigger ones")
    cpu_threads_bind: str | None = Field(
        None, description="VLLM_CPU_OMP_THREADS_BIND on CPU builds: the cores the model's OpenMP threads "
                          "are pinned to, e.g. '0' or '0-3' ('|' between tensor-parallel ranks). None: "
                          "vLLM's 'auto', every core. Engines sharing a machine (two bases behind one "
                          "endpoint) each want cores of their own: on the same cores, each one's "
                          "threads wait at every parallel step for the other's (measured on 2 cores: "
                          "both together served 0.37 req/s where either alone served 1.2-1.5)")
    cpu_single_process: bool = Field(
        False, description="on CPU builds, run vLLM's model worker inside its engine process "
                           "(vLLM's VLLM_ENABLE_V1_MULTIPROCESSING=0: vllm.LLM's engine in the caller, "
                           "AsyncLLM's in one process instead of two). Measured on 2 cores: an engine "
                           "start 48 -> 30 CPU-seconds, but batched decoding ~18% slower (mads-tiny, 4 "
                           "dialogues on SmolLM2: 147 -> 173 s), so it pays for short-lived engines only "
                           "(the test suite sets the variable); an explicit environment variable wins")
    cpu_block_size: int | None = Field(
        32, ge=16, description="KV-cache block size on CPU builds (vLLM's CPU default is 128); prefix "
                               "caching reuses whole blocks, so smaller blocks let each dialogue turn reuse "
                               "more of the history it shares with the previous turn")
    enable_lora: bool = False
    max_lora_rank: int = Field(16, ge=1)
    max_loras: int = Field(2, ge=1)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to vllm.LLM as is")

    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "tensor_parallel_size", "gpu_memory_utilization", "kv_cache_gib", "cpu_reserved_cores",
        "cpu_threads_bind", "cpu_single_process", "cpu_block_size", "max_loras"})
    runs_locally: ClassVar[bool] = True
    adapters_in_process: ClassVar[bool] = True
    prompt_logprobs: ClassVar[bool] = True
    LORA_RANKS: ClassVar[tuple[int, ...]] = (8, 16, 32, 64, 128, 256, 320, 512)  # max_lora_rank values vLLM accepts

    def with_adapters(self, adapters: dict[str, str]) -> VLLMEngineConfig:
        """With LoRA on and room for every adapter: max_loras for all of them, and a max_lora_rank
        no smaller than the largest adapter's rank (read from its adapter_config.json)."""
        if not adapters:
            return self.model_copy(update={"adapters": {}})
        from ec2er.adapters import ADAPTER_CONFIG
        from ec2er.io import read_json

        ranks = [read_json(Path(path, ADAPTER_CONFIG)).get("r", 0)
                 for path in adapters.values() if Path(path, ADAPTER_CONFIG).is_file()]
        need = max([self.max_lora_rank, *ranks])
        return self.model_copy(update={
            "adapters": dict(adapters), "enable_lora": True, "max_loras": max(self.max_loras, len(adapters)),
            "max_lora_rank": next((r for r in self.LORA_RANKS if r >= need), need)})

    def gpus(self) -> int:
        from ec2er.llm.vllm_engine import is_cpu_build

        return 0 if is_cpu_build() else self.tensor_parallel_size


def _build(config: VLLMEngineConfig, asynchronous: bool) -> Any:
    if asynchronous:
        from ec2er.llm.async_vllm_engine import AsyncVLLMEngine

        return AsyncVLLMEngine(config)
    from ec2er.llm.vllm_engine import VLLMEngine

    return VLLMEngine(config)


def _check(config: VLLMEngineConfig) -> None:
    from ec2er.models import check_model

    check_model(config.model)


register_engine(VLLMEngineConfig, build=_build, check=_check)
