"""Execution: Ray Data ``map_batches`` over a pool of stateful actors, each owning one engine
(vLLM in-process, or a client of an OpenAI-compatible endpoint). Each actor runs the
turn-synchronous loop over its batch. ``executor: local`` runs the same worker in-process.

Rows travel as JSON strings: nested, ragged records (turns, items) are not worth an Arrow schema.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Iterator
from typing import Any

from ec2er.generation.config import GenerateConfig
from ec2er.generation.dialogue_loop import DialogueLoop, DialogueResult, DialogueState, dialogue_result
from ec2er.generation.plan import DialogueSpec
from ec2er.llm import build_engine

log = logging.getLogger(__name__)


class GenerationWorker:
    """The map_batches callable: built once per actor (the engine starts here), then called
    with batches of dialogue specs. An unexpected failure fails that batch's rows, recorded with
    the error, instead of the job."""

    def __init__(self, config_json: str):
        self.config = GenerateConfig.model_validate_json(config_json)
        self.engine = build_engine(self.config.engine)
        self.loop = DialogueLoop(self.engine, self.config)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        specs = [DialogueSpec.model_validate_json(s) for s in batch["spec"]]
        return {"result": [r.model_dump_json() for r in self.run(specs)]}

    def run(self, specs: list[DialogueSpec]) -> list[DialogueResult]:
        try:
            return self.loop.run(specs)
        except Exception as e:
            log.error("batch of %d dialogues failed: %s", len(specs), traceback.format_exc())
            return [failed_result(s, f"worker: {type(e).__name__}: {e}", self.config.engine.model)
                    for s in specs]


def failed_result(spec: DialogueSpec, error: str, model: str) -> DialogueResult:
    return dialogue_result(DialogueState(spec, error=error, stop_reason="failed"), model)


def iter_results(config: GenerateConfig, specs: list[DialogueSpec]) -> Iterator[DialogueResult]:
    """Results in completion order (ids, not order, make the output deterministic)."""
    if not specs:
        return iter(())
    if config.ray.executor == "local":
        return _iter_local(config, specs)
    return _iter_ray(config, specs)


def _iter_local(config: GenerateConfig, specs: list[DialogueSpec]) -> Iterator[DialogueResult]:
    worker = GenerationWorker(config.model_dump_json())
    try:
        size = config.ray.batch_size
        for start in range(0, len(specs), size):
            yield from worker.run(specs[start:start + size])
    finally:
        worker.engine.close()


def _iter_ray(config: GenerateConfig, specs: list[DialogueSpec]) -> Iterator[DialogueResult]:
    import ray

    from ec2er.ray_utils import engine_actor_resources, init_ray

    init_ray(config.ray.address, config.ray.num_cpus)
    ray.data.DataContext.get_current().enable_progress_bars = False  # ours says more
    size = config.ray.batch_size
    ds = ray.data.from_items([{"spec": s.model_dump_json()} for s in specs],
                             override_num_blocks=max(1, math.ceil(len(specs) / size)))
    ds = ds.map_batches(
        GenerationWorker, fn_constructor_kwargs={"config_json": config.model_dump_json()},
        batch_size=size, compute=ray.data.ActorPoolStrategy(size=config.ray.actors),
        **engine_actor_resources(config.engine, config.ray.cpus_per_actor),
    )
    for row in ds.iter_rows():
        yield DialogueResult.model_validate_json(row["result"])
