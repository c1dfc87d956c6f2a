"""Generation stage end to end on real vLLM engines: a vLLM engine core killed mid-run, whose
actor ends and is replaced by Ray, the run finishing with every dialogue written once. (The tiny
MADS recipe on the embedded SmolLM2 is in test_smollm2.py; the chain's `ray job submit` test, in
test_chain.py, runs generation on the multi-node cluster.)"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import psutil
import pytest

from ec2er.generation.outputs import done_ids, iter_items, iter_result_batches

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# The tiny random model writes strings up to their schema bounds: give extraction room.
TINY = ["--set", "engine.model=tiny-random-llama", "--set", "engine.max_model_len=4096",
        "--set", "sampling.extraction.max_tokens=1024", "--set", "sampling.supervisor.max_tokens=160",
        "--set", "turns.max_turns=4", "--set", "items={eu_min: 1, eu_max: 1, ea_min: 1, ea_max: 1}",
        "--set", "ray.batch_size=1", "--set", "ray.max_concurrent_batches=2", "--num-dialogues", "4"]


def _run_into(run, config, out: Path, done: list[object], failed: list[BaseException]) -> None:
    try:
        done.append(run(config, out))
    except BaseException as error:  # noqa: BLE001 - the test names it
        failed.append(error)


def _actor_families() -> list[tuple[str, list[tuple[psutil.Process, str]]]]:
    """Each generation actor's title and its child processes with theirs (ones that end while
    we look are skipped)."""
    families = []
    for actor in psutil.process_iter(["cmdline"]):
        title = " ".join(actor.info["cmdline"] or [])
        if "GenerationActor" not in title:
            continue
        try:
            families.append((title, [(c, c.name() + " " + " ".join(c.cmdline()))
                                     for c in actor.children(recursive=True)]))
        except psutil.Error:  # gone, or a zombie, while we looked
            continue
    return families


def _engine_cores() -> list[psutil.Process]:
    """vLLM engine core processes under the generation actors."""
    return [c for _, children in _actor_families() for c, title in children if "EngineCore" in title]


def _titles() -> list[str]:
    """What the test saw, for a failure's message: each actor's title and its children's."""
    return [f"{title[:80]} -> " + ", ".join(t[:60] for _, t in children) for title, children in _actor_families()]


def _qids(out: Path) -> list[str]:
    return sorted(json.loads(line)["qid"] for _, _, line in iter_items(str(out)))


def test_a_dead_engine_ends_its_actor_and_the_run_still_finishes(tmp_path, ray_local):
    """SIGKILL of the vLLM engine core under a generation actor: the actor sees the engine dead,
    exits, and Ray starts a new one that redoes the unwritten dialogues; the run ends with every
    planned dialogue written once (that a resumed run's items equal an uninterrupted run's is
    checked in test_generation_job.py, where it costs no engine start)."""
    import threading

    from ec2er.config import load_config, parse_override
    from ec2er.generation.config import GenerateConfig
    from ec2er.generation.driver import run_generation

    overrides = dict(parse_override(TINY[i + 1]) for i in range(0, len(TINY) - 2, 2) if TINY[i] == "--set")
    # one dialogue at a time, so the test's window to kill mid-run (a dialogue written, others not)
    # is three dialogues long: two at a time, a newcomer's clean-clone run once ended before the
    # test had seen its engine core with a dialogue written
    config = load_config(REPO / "pipelines/mads-tiny.yaml", GenerateConfig,
                         overrides | {"num_dialogues": 4, "ray.max_concurrent_batches": 1})
    out = tmp_path / "mads"
    done: list[object] = []
    failed: list[BaseException] = []
    runner = threading.Thread(target=_run_into, args=(run_generation, config, out, done, failed), daemon=True)
    runner.start()
    # the kill must come mid-run: once a dialogue is written and while the engine core is up (an
    # engine core is named by vLLM only after it has imported vLLM, seconds after it started)
    cores: list[object] = []
    deadline = time.time() + 300
    while time.time() < deadline and runner.is_alive() and not (cores and done_ids(str(out))):
        time.sleep(0.2)
        cores = _engine_cores()
    assert not failed, f"the run failed before its engine was killed: {failed[0]!r}"
    assert cores and runner.is_alive(), f"no engine core to kill: {_titles()}"
    assert len(done_ids(str(out))) < 4
    for core in cores:
        with contextlib.suppress(psutil.NoSuchProcess):  # one that ended since it was seen
            core.kill()
    runner.join(timeout=400)
    assert not failed, f"the run failed after its engine was killed: {failed[0]!r}"
    assert done, "the run did not finish after its engine died"
    written = [i for _, b in iter_result_batches(str(out), ["dialogue_id"]) for i in b.column(0).to_pylist()]
    assert sorted(written) == [f"mads-s7-{i:07d}" for i in range(4)]
    assert len(_qids(out)) == len(set(_qids(out))) > 0
