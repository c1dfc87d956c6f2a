"""The generation job on Ray Data, in two streaming passes:

1. plan: personas (``ray.data.range`` for the built-in sampler, ``read_json``/``read_parquet``
   for files) -> each row's dialogue specs -> ``write_parquet(plan/)``;
2. generate: ``read_parquet(plan/)`` -> ``map_batches`` over a pool of actors, each owning an
   async engine and running one coroutine per dialogue -> ``write_parquet(results/)``, with Ray
   Data's checkpointing keyed on ``dialogue_id``: a re-run reads the plan again and skips every
   dialogue already written.

The plan is a file-based source on purpose: Ray Data filters checkpointed ids at a read, so the
ids must exist in what is read. The driver builds the job and reports progress; it never holds
the plan or the dialogues.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from ec2er.errors import DataError
from ec2er.generation.config import GenerateConfig
from ec2er.generation.outputs import CHECKPOINTS, PLAN, RESULTS, result_table

log = logging.getLogger(__name__)

PROGRESS_ACTOR = "ec2er-generation-progress"
COUNTERS = ("dialogues", "failed", "redo", "items", "completion_tokens")


# ---------------------------------------------------------------- pass 1: the plan

def _sampler_rows(config_json: str) -> Callable[[dict[str, Any]], dict[str, list[Any]]]:
    def rows(batch: dict[str, Any]) -> dict[str, list[Any]]:
        from ec2er.generation.plan import sampler_specs

        config = GenerateConfig.model_validate_json(config_json)
        specs = sampler_specs(config, [int(i) for i in batch["id"]])
        return {"dialogue_id": [s.dialogue_id for s in specs], "spec": [s.model_dump_json() for s in specs]}

    return rows


def _persona_rows(config_json: str, source: str) -> Callable[[dict[str, Any]], dict[str, list[Any]]]:
    def rows(batch: dict[str, Any]) -> dict[str, list[Any]]:
        from ec2er.generation.personas import persona_from_text
        from ec2er.generation.plan import persona_specs

        config = GenerateConfig.model_validate_json(config_json)
        specs = [spec for text in batch[config.personas.column]
                 if (persona := persona_from_text(text, source)) is not None
                 for spec in persona_specs(config, persona)]
        return {"dialogue_id": [s.dialogue_id for s in specs], "spec": [s.model_dump_json() for s in specs]}

    return rows


def write_plan(config: GenerateConfig, uri: str) -> int:
    """Plan ``config.num_dialogues`` dialogues into ``uri`` (Parquet); returns how many the
    persona source allows. Deterministic: the same config writes the same rows."""
    import ray

    config_json = config.model_dump_json()
    if config.personas.source == "sampler":
        ds = ray.data.range(config.num_dialogues).map_batches(_sampler_rows(config_json), batch_size=1024)
    else:
        from ec2er.generation.personas import persona_file

        path = persona_file(config.personas)
        read = ray.data.read_parquet if path.endswith(".parquet") else ray.data.read_json
        ds = read(path, columns=[config.personas.column]) if path.endswith(".parquet") else read(path)
        # ids derive from persona text: a persona listed twice plans each dialogue once; sorted
        # by id (a hash), the first num_dialogues are a deterministic, evenly spread choice
        ds = (ds.map_batches(_persona_rows(config_json, path), batch_size=1024)
              .groupby("dialogue_id").map_groups(lambda group: {k: v[:1] for k, v in group.items()})
              .sort("dialogue_id").limit(config.num_dialogues))
    try:
        ds.write_parquet(uri)
    except Exception as e:  # a persona file that does not parse: one line naming it
        raise DataError(f"planning from {config.personas.path or 'the sampler'} failed: "
                        f"{_first_line(e)}") from None
    return ray.data.read_parquet(uri).count()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


# ---------------------------------------------------------------- pass 2: the dialogues

class GenerationActor:
    """The map_batches callable: built once per actor (its engine starts here), then called with
    overlapping batches of specs; every dialogue is one coroutine on the shared engine.

    A dialogue that failed for the engine's or network's sake is left out of the output, so a
    re-run does it again; a dead engine ends the actor (``os._exit``, as ``ray.data.llm``'s vLLM
    stage does: Ray then restarts it and retries its batches, where a clean exit would not be
    retried)."""

    def __init__(self, config_json: str, progress: str | None = None):
        import ray

        from ec2er.generation.dialogue import DialogueRunner
        from ec2er.llm import build_engine

        self.config = GenerateConfig.model_validate_json(config_json)
        self.engine = build_engine(self.config.engine, asynchronous=True)
        self.runner = DialogueRunner(self.engine, self.config)
        self.in_flight = self.config.ray.max_in_flight or self.engine.max_in_flight
        self.gate: asyncio.Semaphore | None = None
        self.progress = ray.get_actor(progress) if progress else None

    async def __call__(self, batch: dict[str, Any]) -> Any:
        from ec2er.generation.plan import DialogueSpec

        if self.gate is None:  # made in the actor's event loop
            self.gate = asyncio.Semaphore(self.in_flight)
        specs = [DialogueSpec.model_validate_json(s) for s in batch["spec"]]
        results = await asyncio.gather(*(self._one(spec) for spec in specs))
        kept = [r for r in results if r is not None and not r.transient]
        if self.progress is not None:
            self.progress.add.remote({
                "dialogues": len(kept), "failed": sum(r.metadata["status"] != "ok" for r in kept),
                "redo": len(specs) - len(kept), "items": sum(len(r.eu) + len(r.ea) for r in kept),
                "completion_tokens": sum(r.metadata["completion_tokens"] for r in results if r is not None)})
        return result_table(kept)

    async def _one(self, spec: Any) -> Any:
        from ec2er.llm import EngineDead

        async with self.gate:
            try:
                return await self.runner.run(spec)
            except EngineDead as e:
                log.error("engine died (%s): ending this actor so Ray restarts it", e)
                os._exit(1)
            except Exception:  # a bug or an unexpected reply: this dialogue is redone next run
                log.exception("dialogue %s failed in the worker; left for a re-run", spec.dialogue_id)
                return None


class Progress:
    """Running counters the actors add to and the driver reads (never a re-read of outputs)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)

    def add(self, delta: dict[str, int]) -> None:
        for key, value in delta.items():
            self.counts[key] += value

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)


def run_job(config: GenerateConfig, out: str, on_progress: Callable[[dict[str, int]], None]) -> dict[str, int]:
    """Generate every planned dialogue not yet written; returns this session's counters."""
    import ray
    from ray.data.checkpoint import CheckpointConfig

    from ec2er.ray_utils import engine_actor_resources

    progress = ray.remote(num_cpus=0)(Progress).options(name=f"{PROGRESS_ACTOR}-{os.getpid()}").remote()
    context = ray.data.DataContext.get_current()
    previous = context.checkpoint_config
    context.checkpoint_config = CheckpointConfig(
        id_column="dialogue_id", checkpoint_path=f"{out}/{CHECKPOINTS}",
        delete_checkpoint_on_success=False)  # a later, larger run must still skip these ids
    try:
        low, high = config.ray.pool
        # blocks of one batch each, so every actor (and each of its overlapping slots) gets work
        ds = ray.data.read_parquet(f"{out}/{PLAN}").repartition(
            target_num_rows_per_block=config.ray.batch_size).map_batches(
            GenerationActor, batch_size=config.ray.batch_size,
            fn_constructor_kwargs={"config_json": config.model_dump_json(),
                                   "progress": f"{PROGRESS_ACTOR}-{os.getpid()}"},
            compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high,
                                               max_tasks_in_flight_per_actor=config.ray.max_concurrent_batches),
            max_concurrency=config.ray.max_concurrent_batches,
            **engine_actor_resources(config.engine, config.ray.cpus_per_actor))
        error: list[BaseException] = []
        writer = threading.Thread(target=_write, args=(ds, f"{out}/{RESULTS}", error), daemon=True)
        writer.start()
        while writer.is_alive():
            writer.join(timeout=1.0)
            on_progress(ray.get(progress.snapshot.remote()))
        if error:
            raise error[0]
        return ray.get(progress.snapshot.remote())
    finally:
        context.checkpoint_config = previous
        ray.kill(progress)


def _write(ds: Any, uri: str, error: list[BaseException]) -> None:
    try:
        ds.write_parquet(uri)
    except BaseException as e:  # re-raised in the driver's thread
        error.append(e)
