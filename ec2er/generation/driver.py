"""``run_generation``: plan, skip what is committed, run, commit as results arrive, checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ec2er.generation.config import GenerateConfig
from ec2er.generation.outputs import RunOutputs
from ec2er.generation.plan import plan_dialogues
from ec2er.generation.ray_pipeline import iter_results

log = logging.getLogger(__name__)


def run_generation(config: GenerateConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    outputs = RunOutputs(out, config)
    done = outputs.prepare()
    plan = plan_dialogues(config)
    todo = [s for s in plan if s.dialogue_id not in done]
    if done:
        log.info("resuming %s: %d of %d dialogues already committed", out, len(plan) - len(todo), len(plan))
    session = {"dialogues": 0, "items": 0, "completion_tokens": 0, "seconds": 0.0}
    start = time.perf_counter()
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), unit="dialogue", disable=not progress,
               desc=f"generate {config.pipeline}")
    with bar:
        for result in iter_results(config, todo):
            outputs.commit(result)
            session["dialogues"] += 1
            session["items"] += len(result.eu) + len(result.ea)
            session["completion_tokens"] += result.metadata["completion_tokens"]
            elapsed = time.perf_counter() - start
            bar.update(1)
            bar.set_postfix(items=session["items"], tok_s=f"{session['completion_tokens'] / elapsed:.1f}")
            if session["dialogues"] % config.checkpoint_interval == 0:
                outputs.checkpoint(_rates(session, elapsed))
    stats = outputs.checkpoint(_rates(session, time.perf_counter() - start), final=True)
    return stats


def _rates(session: dict[str, Any], elapsed: float) -> dict[str, Any]:
    return {**session, "seconds": round(elapsed, 2),
            "dialogues_per_s": round(session["dialogues"] / elapsed, 4) if elapsed else 0.0,
            "tokens_per_s": round(session["completion_tokens"] / elapsed, 2) if elapsed else 0.0}


def summary_lines(stats: dict[str, Any], out: str | Path) -> list[str]:
    d, i, s = stats["dialogues"], stats["items"], stats["session"]
    lines = [
        f"{out}: {d['ok']} dialogues ok, {d['failed']} failed (of {d['planned']} planned); "
        f"{i['eu']} EU + {i['ea']} EA items, {i['failed']} items failed",
        f"this session: {s.get('dialogues', 0)} dialogues in {s.get('seconds', 0)} s "
        f"({s.get('dialogues_per_s', 0)} dialogues/s, {s.get('tokens_per_s', 0)} tokens/s)",
        f"EU: {stats['distributions']['eu_coarse']}",
        f"EA: {stats['distributions']['ea_category']}",
    ]
    if "summary" in stats:
        lines.append(f"final files: {stats['summary']['personas']}, {stats['summary']['items']}")
    return lines
