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
from collections.abc import Callable, Iterator
from typing import Any

from ec2er.errors import DataError, Ec2erError
from ec2er.generation.config import GenerateConfig
from ec2er.generation.outputs import CHECKPOINTS, PLAN, RESULTS, result_table
from ec2er.io import fingerprint

log = logging.getLogger(__name__)

PROGRESS_ACTOR = "ec2er-generation-progress"
# turns, completion_tokens and budget (the replies' max_tokens) are reported as they happen (per
# turn, per reply); the others per batch; finished_turns (the turns of the dialogues done) sizes
# the estimate of the work left
COUNTERS = ("dialogues", "failed", "redo", "items", "completion_tokens", "budget", "turns", "finished_turns")
# what the actors' lives cost this session (see Progress): incarnations started, restarted by Ray
# after their process died, lost (a batch of theirs had to be done again), batches done again
ACTOR_COUNTERS = ("actors_started", "actors_restarted", "actors_lost", "batches_redone")


class DialogueFailed(Ec2erError):
    """A dialogue the run cannot finish: a programming error or an unexpected reply (no retry can
    fix it), or one that failed every try the engine or the network cost it. Raised in an actor, it
    ends the Ray Data job, and so the run, with this one line."""


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
    path: str | None = None  # the persona file, when the personas come from one
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
    write_planned(ds, uri, path)
    return ray.data.read_parquet(uri).count()


def write_planned(ds: Any, uri: str, persona_path: str | None) -> None:
    """Run the plan's dataset into ``uri``. A persona file that does not parse (a later row than
    the check before the run read) is one DataError naming it; any other failure (a bug, Ray's
    own) propagates as what it is."""
    try:
        ds.write_parquet(uri)
    except Exception as e:
        bad = _unreadable_rows(e) if persona_path is not None else None
        if bad is None:
            raise
        raise DataError(f"{persona_path}: {bad}") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def _unreadable_rows(error: BaseException) -> str | None:
    """What pyarrow said of rows it could not read (invalid JSON, a value of the wrong type),
    found inside Ray's wrappers (a read task's error arrives as a RayTaskError that is also the
    pyarrow error, or as text naming it); None when the failure is not about the file's rows."""
    import re

    import pyarrow as pa

    for e in _causes(error):
        found = re.findall(r"^\S*\b(?:ArrowInvalid|ArrowTypeError): (.+)$", str(e), flags=re.MULTILINE)
        if found:
            return found[-1].strip()
        if isinstance(e, (pa.ArrowInvalid, pa.ArrowTypeError)):
            lines = str(e).strip().splitlines()
            return lines[-1] if lines else type(e).__name__
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it wraps, once each: Python's cause and context, and the ``cause``
    Ray's task errors carry."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]


# ---------------------------------------------------------------- pass 2: the dialogues

class GenerationActor:
    """The map_batches callable: built once per actor (its engine starts here), then called with
    overlapping batches of specs; every dialogue is one coroutine on the shared engine.

    A dialogue that failed for the engine's or network's sake (``GenerationError.transient``) is
    tried again, up to ``ray.dialogue_tries`` tries; a dead engine ends the actor (``os._exit``, as
    ``ray.data.llm``'s vLLM stage does: Ray then restarts it and retries its batches, where a clean
    exit would not be retried), and a lost node takes the actor with it, with the same outcome.
    The Progress actor (on the driver's node) counts each batch's attempts, so a batch lost with
    its actor costs its dialogues a try too. Anything else (a bug) raises ``DialogueFailed``:
    retrying a programming error only hides it."""

    def __init__(self, config_json: str, progress: str | None = None):
        import ray

        from ec2er.generation.dialogue import DialogueRunner
        from ec2er.generation.progress import TurnReporter
        from ec2er.llm import build_engine

        self.config = GenerateConfig.model_validate_json(config_json)
        self.engine = build_engine(self.config.engine, asynchronous=True)
        self.progress = ray.get_actor(progress) if progress else None
        self.reporter = TurnReporter(self.progress.add.remote) if self.progress is not None else None
        self.runner = DialogueRunner(self.engine, self.config, self.reporter.add if self.reporter else None)
        self.in_flight = self.config.ray.max_in_flight or self.engine.max_in_flight
        self.gate: asyncio.Semaphore | None = None
        context = ray.get_runtime_context()
        self.node_id = context.get_node_id()
        # one life of this actor: Ray restarts a lost actor under the same id, in a new process
        self.life = f"{context.get_actor_id()}/{self.node_id[:12]}/{os.getpid()}"
        if self.progress is not None:
            self.progress.actor_started.remote(self.life, context.was_current_actor_reconstructed)

    async def __call__(self, batch: dict[str, Any]) -> Any:
        from ec2er.generation.plan import DialogueSpec

        if self.gate is None:  # made in the actor's event loop
            self.gate = asyncio.Semaphore(self.in_flight)
        specs = [DialogueSpec.model_validate_json(s) for s in batch["spec"]]
        key = fingerprint(sorted(s.dialogue_id for s in specs))[:20]  # the same batch in every attempt
        lost = await self.progress.batch_started.remote(key, self.life, len(specs)) if self.progress else 0
        if lost >= self.config.ray.dialogue_tries:
            raise DialogueFailed(f"dialogues {specs[0].dialogue_id} and {len(specs) - 1} more: their batch was lost "
                                 f"with its actor {lost} times (a dead engine or a lost node each time; "
                                 f"ray.dialogue_tries is {self.config.ray.dialogue_tries})")
        results = await asyncio.gather(*(self._one(spec, lost) for spec in specs))
        if self.progress is not None:
            self.reporter.flush()
            self.progress.batch_finished.remote(key, self.life, self.node_id, {
                "dialogues": len(results), "failed": sum(r.metadata["status"] != "ok" for r in results),
                "items": sum(len(r.eu) + len(r.ea) for r in results),
                "finished_turns": sum(r.metadata["turns"] for r in results)})
        return result_table(results)

    async def _one(self, spec: Any, lost: int) -> Any:
        """The dialogue's result, after as many tries as the engine and the network cost it (a
        batch lost with an actor already cost its dialogues ``lost`` tries)."""
        tries = self.config.ray.dialogue_tries
        for attempt in range(lost + 1, tries + 1):
            result = await self._try(spec)
            result.metadata |= {"tries": attempt, "node_id": self.node_id}
            if not result.transient:
                return result
            cause = transient_cause(result.metadata)
            log.warning("dialogue %s, try %d of %d: %s", spec.dialogue_id, attempt, tries, cause)
            if attempt == tries:
                raise DialogueFailed(f"dialogue {spec.dialogue_id} failed all {tries} tries for the engine's or "
                                     f"the network's sake (ray.dialogue_tries); the last: {cause}")
            if self.progress is not None:
                self.progress.add.remote({"redo": 1})
            await asyncio.sleep(min(2.0 ** (attempt - lost - 1), 30.0))  # let an endpoint recover
        raise AssertionError("unreachable: the loop returns or raises")

    async def _try(self, spec: Any) -> Any:
        from ec2er.llm import EngineDead

        async with self.gate:
            try:
                return await self.runner.run(spec)
            except EngineDead as e:
                log.error("engine died (%s): ending this actor so Ray restarts it", e)
                os._exit(1)
            except Exception as e:  # a bug or an unexpected reply: ends the run, never retried
                log.exception("dialogue %s failed in the worker", spec.dialogue_id)
                raise DialogueFailed(f"dialogue {spec.dialogue_id}: {type(e).__name__}: {_first_line(e)}") from e


def transient_cause(metadata: dict[str, Any]) -> str:
    """The engine's or the network's error that spoiled a try, as the dialogue recorded it."""
    item = next((f"item {f['qid']}: {f['error']}" for f in metadata["item_failures"]
                 if f["error"].startswith(("engine", "http", "timeout"))), None)
    return metadata["error"] or item or (metadata["supervisor_errors"] or ["an engine or network error"])[-1]


class Progress:
    """Running counters the actors add to and the driver reads (never a re-read of outputs), and
    the record of each batch's attempts and each actor's lives, kept on the driver's node.

    Ray Data does not say what a lost actor cost, so it is counted here from what the actors
    report. A batch started a second time was lost with the life that ran it before: either in
    flight, or finished but with its output still in the lost node's object store, which Ray
    rebuilds by running the batch again. Either way its dialogues are done again and that life is
    lost; an attempt lost in flight also costs the batch's dialogues a try (a dialogue that kills
    its engine every time must not loop forever). A life that starts with Ray's
    ``was_current_actor_reconstructed`` is a restart, and the life before it was lost."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(COUNTERS + ACTOR_COUNTERS, 0)
        self.batches: dict[str, list[list[Any]]] = {}  # key -> [[life, finished], ...]
        self.lives: set[str] = set()
        self.lost: set[str] = set()
        self.nodes: dict[str, int] = {}  # dialogues written per node

    def add(self, delta: dict[str, int]) -> None:
        for key, value in delta.items():
            self.counts[key] += value

    def actor_started(self, life: str, restarted: bool) -> None:
        actor = life.split("/")[0]
        if restarted:
            self.counts["actors_restarted"] += 1
            self.lost |= {other for other in self.lives if other.split("/")[0] == actor}
        self.lives.add(life)
        self.counts["actors_started"] = len(self.lives)
        self.counts["actors_lost"] = len(self.lost)

    def batch_started(self, key: str, life: str, size: int) -> int:
        """Record an attempt; return how many earlier attempts were lost in flight."""
        attempts = self.batches.setdefault(key, [])
        if attempts:
            self.counts["batches_redone"] += 1
            self.counts["redo"] += size
            self.lost |= {before for before, _ in attempts}
            self.counts["actors_lost"] = len(self.lost)
        attempts.append([life, False])
        return sum(not finished for _, finished in attempts[:-1])

    def batch_finished(self, key: str, life: str, node_id: str, delta: dict[str, int]) -> None:
        for attempt in self.batches.get(key, []):
            if attempt[0] == life:
                attempt[1] = True
        self.nodes[node_id] = self.nodes.get(node_id, 0) + delta.get("dialogues", 0)
        self.add(delta)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

    def dialogues_per_node(self) -> dict[str, int]:
        return dict(self.nodes)


def run_job(config: GenerateConfig, out: str, on_progress: Callable[[dict[str, int]], None]) -> dict[str, int]:
    """Generate every planned dialogue not yet written; returns this session's counters."""
    import ray
    from ray.data.checkpoint import CheckpointConfig

    from ec2er.ray_utils import engine_actor_resources, on_this_node, worker_resources

    progress = ray.remote(num_cpus=0)(Progress).options(name=f"{PROGRESS_ACTOR}-{os.getpid()}",
                                                        **on_this_node()).remote()
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
            # Ray Data queues twice max_concurrency batches per actor by default, and grows the pool
            # only past 1.75 queued batches per slot: capping the queue at one per slot (as ec2er
            # did) kept an autoscaling pool at its minimum forever
            compute=ray.data.ActorPoolStrategy(min_size=low, max_size=high),
            max_concurrency=config.ray.max_concurrent_batches,
            **engine_actor_resources(config.engine, config.ray.cpus_per_actor, worker_resources(config.ray)))
        _write_with_progress(ds, f"{out}/{RESULTS}", progress, on_progress)
        on_progress(ray.get(progress.snapshot.remote()))
        nodes = ray.get(progress.dialogues_per_node.remote())
        return ray.get(progress.snapshot.remote()) | {"dialogues_per_node": nodes}
    finally:
        context.checkpoint_config = previous
        ray.kill(progress)


def _failed_dialogue(error: BaseException) -> DialogueFailed | None:
    """The DialogueFailed an actor raised, as its one line, from inside Ray Data's and Ray's
    wrappers. Ray Data re-raises a UDF's exception as ``UserCodeException`` and Ray ships only that
    across processes, with the original's traceback as text, so the line is found in the text."""
    import re

    for e in _causes(error):
        if type(e) is DialogueFailed:  # raised in this process
            return e
        found = re.findall(rf"^\S*\b{DialogueFailed.__name__}: (.+)$", str(e), flags=re.MULTILINE)
        if found:
            return DialogueFailed(found[-1].strip())
    return None


def _write_with_progress(ds: Any, uri: str, progress: Any, on_progress: Callable[[dict[str, int]], None]) -> None:
    """Write the dataset in this (the main) thread while another reports progress every second.

    The write stays in the main thread so that a SIGTERM or Ctrl-C interrupts it there and Ray
    Data stops its own execution as it unwinds; the reporter is stopped and joined before this
    returns. Otherwise a thread of this driver may still be calling Ray when the CLI stops Ray,
    and Ray's core worker, finding its raylet gone under that call, ends the process with status 1
    ("Exiting because the Raylet IPC connection failed") instead of the CLI's 143."""
    stop = threading.Event()
    reporter = threading.Thread(target=_report_progress, args=(progress, on_progress, stop), daemon=True)
    reporter.start()
    try:
        ds.write_parquet(uri)
    except Exception as e:
        failed = _failed_dialogue(e)
        if failed is None:
            raise
        raise failed from None
    finally:
        stop.set()
        reporter.join()


def _report_progress(progress: Any, on_progress: Callable[[dict[str, int]], None], stop: threading.Event) -> None:
    import ray

    while not stop.wait(1.0):
        try:
            on_progress(ray.get(progress.snapshot.remote(), timeout=30))
        except Exception as e:  # the bar stops; the write goes on and reports its own failure
            log.warning("progress reporting stopped: %s", e)
            return
