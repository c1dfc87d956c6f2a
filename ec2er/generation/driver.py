"""``run_generation``: check everything, plan, generate what is not written yet, count.

Everything that can be wrong with the inputs (model, personas, themes, output folder) is found
before the first file is written, so a corrected run can use the same folder. A folder holding a
run with other data-shaping settings is refused, naming the settings that differ.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from ec2er.console import progress_bar
from ec2er.errors import ConfigError
from ec2er.generation.config import GenerateConfig
from ec2er.generation.outputs import PLAN, done_ids, run_stats
from ec2er.generation.progress import LiveProgress
from ec2er.io import check_writable, fingerprint, read_json, write_json
from ec2er.llm import check_engine
from ec2er.schemas.facts import GenerationFiles as Files

log = logging.getLogger(__name__)


def run_identity(config: GenerateConfig) -> dict[str, Any]:
    """What must match for a folder to be resumed: everything that shapes the data (not the
    dialogue count, which may grow, nor how the work is spread over actors)."""
    identity = config.model_dump(mode="json", exclude={"num_dialogues", "ray", "engine"})
    return identity | {"engine": config.engine.output_identity()}


def differing_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON documents."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(set(old) | set(new))
                for k in differing_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".") or "<root>"]


def check_inputs(config: GenerateConfig) -> None:
    """The model, the persona file and the themes file, checked without writing anything."""
    from ec2er.generation.personas import check_persona_file, persona_file
    from ec2er.generation.plan import pick_theme

    check_engine(config.engine)
    if config.personas.source != "sampler":
        check_persona_file(persona_file(config.personas), config.personas.column)
    if config.pipeline == "mads":
        from ec2er.generation.personas import persona_at

        pick_theme(config, persona_at(config.seed, 0), 0)  # loads (and so checks) the themes file


def preflight(config: GenerateConfig, out: Path) -> None:
    """Every input checked, and the folder's earlier run (if any) compatible, before any write."""
    check_inputs(config)
    check_writable(out)
    identity = out / Files.FINGERPRINT
    if identity.exists():
        differ = differing_keys(read_json(identity), run_identity(config))
        if differ:
            raise ConfigError(f"{out}: holds a run with a different config ({', '.join(differ[:3])} "
                              f"differ{'' if len(differ) < 4 else ', and more'}; see {identity}); "
                              "use a new output folder or the original settings")


def ensure_plan(config: GenerateConfig, out: Path) -> int:
    """The plan of this run in ``out/plan`` (made again only when the dialogue count changed);
    returns its size. Written to a temporary folder and renamed in, so a killed planner leaves
    the previous plan or none."""
    from ec2er.generation.job import write_plan

    record = out / Files.PLAN_RECORD
    key = fingerprint({"identity": run_identity(config), "num_dialogues": config.num_dialogues})
    if record.is_file() and (out / PLAN).is_dir():
        saved = read_json(record)
        if isinstance(saved, dict) and saved.get("key") == key:
            return saved["dialogues"]
    tmp = out / f".{PLAN}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    planned = write_plan(config, str(tmp.resolve()))
    if planned < config.num_dialogues:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ConfigError(f"personas: only {planned} dialogues possible from the persona source (wanted "
                          f"{config.num_dialogues}; raise personas.max_reuse or add personas)")
    shutil.rmtree(out / PLAN, ignore_errors=True)
    tmp.rename(out / PLAN)
    write_json(record, {"key": key, "dialogues": planned})
    return planned


def run_generation(config: GenerateConfig, out: str | Path) -> dict[str, Any]:
    from ec2er.generation.job import run_job
    from ec2er.ray_utils import engine_actor_resources, init_ray, require_shared_storage

    out = Path(out).absolute()  # Ray Data and pyarrow want absolute paths
    preflight(config, out)
    init_ray(config.ray.address, config.ray.num_cpus)
    # the workers write results and checkpoints: on several nodes, into one place they all reach
    gpus = ["GPU"] if engine_actor_resources(config.engine).get("num_gpus") else []
    require_shared_storage({"the generation output": out}, config.ray, gpus)
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False  # ours says more
    planned = ensure_plan(config, out)
    if not (out / Files.FINGERPRINT).exists():
        write_json(out / Files.FINGERPRINT, run_identity(config))
    already = len(done_ids(str(out)))
    bar = progress_bar(planned, f"generate {config.pipeline}", "dialogue", initial=min(already, planned))
    # the bar moves with every reply (dialogues finish late); the line says dialogues, turns, tok/s, ETA
    bar.bar_format = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}"
    live = LiveProgress(out, planned, min(already, planned), config.turns.max_turns, config.token_budget)
    latest: dict[str, int] = {}

    def show(counts: dict[str, int], state: str = "running") -> None:
        latest.update(counts)
        doc = live.document(counts, state)
        bar.n = live.bar_position(doc)
        bar.set_postfix_str(live.line(doc), refresh=False)
        bar.refresh()
        live.write(doc, force=state != "running")

    with bar:
        try:
            session = run_job(config, str(out), show) if already < planned else dict.fromkeys(("dialogues",), 0)
        except BaseException:
            show(dict(latest), "stopped")  # the viewer tells a stopped session from a running one
            raise
        show(session | {k: session.get(k, 0) for k in ("items", "failed", "redo")}, "done")
    stats = run_stats(str(out), config, session)
    write_json(out / Files.STATS, stats)
    if config.pipeline == "concise":
        from ec2er.generation.concise import write_concise_files

        stats["summary"] = write_concise_files(out, stats)
    return stats


def summary_lines(stats: dict[str, Any], out: str | Path) -> list[str]:
    d, i, s = stats["dialogues"], stats["items"], stats["session"]
    lines = [
        f"{out}: {d['ok']} dialogues ok, {d['failed']} failed (of {d['planned']} planned); "
        f"{i['eu']} EU + {i['ea']} EA items, {i['failed']} items failed",
        f"this session: {s.get('dialogues', 0)} dialogues written; {s.get('redo', 0)} dialogue tries redone "
        f"(engine or network errors, and {s.get('batches_redone', 0)} batches lost with "
        f"{s.get('actors_lost', 0)} actors; Ray restarted {s.get('actors_restarted', 0)} actors)",
        f"EU: {stats['distributions']['eu_coarse']}",
        f"EA: {stats['distributions']['ea_category']}",
    ]
    if "summary" in stats:
        lines.append(f"final files: {stats['summary']['personas']}, {stats['summary']['items']}")
    return lines
