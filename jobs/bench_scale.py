"""Benchmark: does the generation job scale? 1k and 10k dialogues through the whole job (plan,
Ray Data over an AsyncLLM actor, writers, checkpoints, stats) on the tiny random model with short
budgets, and planning 1M dialogues alone.

Each run is its own process, so its peak resident memory (``ru_maxrss``) is the driver's own;
Ray's processes and the engine are separate and not counted. Throughput is the job's steady
rate: dialogues written from the first write to the last, so the Ray and engine start-up (the
same for any size) does not flatter the larger run. The LAST line is one JSON object with
driver_mem_ratio_10k_vs_1k, throughput_ratio_10k_vs_1k and plan_1m_driver_mb.

    python jobs/bench_scale.py            # 1k, 10k, plan 1M
    python jobs/bench_scale.py --sizes 200 2000 --plan 100000   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHORT = {"engine.model": "tiny-random-llama", "engine.max_model_len": 1024, "engine.kv_cache_gib": 2,
         "turns": {"min_turns": 4, "max_turns": 4},
         "items": {"eu_min": 0, "eu_max": 0, "ea_min": 0, "ea_max": 0},
         "sampling.background.max_tokens": 16, "sampling.turn.max_tokens": 16,
         "ray.batch_size": 64, "ray.max_concurrent_batches": 4}


def _config(n: int):
    from ec2er.config import load_config
    from ec2er.generation.config import GenerateConfig

    return load_config("pipelines/mads-tiny.yaml", GenerateConfig, SHORT | {"num_dialogues": n})


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_run(n: int, out: Path) -> dict:
    from ec2er.generation.driver import ensure_plan, preflight
    from ec2er.generation.job import run_job
    from ec2er.ray_utils import init_ray

    config = _config(n)
    preflight(config, out)
    init_ray()
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    ensure_plan(config, out)
    marks: list[tuple[float, int]] = []
    run_job(config, str(out), lambda c: marks.append((time.perf_counter(), c["dialogues"])))
    first = next((t, k) for t, k in marks if k > 0)
    last = marks[-1]
    return {"n": n, "written": last[1], "steady_dialogues_per_s": round((last[1] - first[1]) / (last[0] - first[0]), 2),
            "driver_peak_mb": round(_peak_mb(), 1)}


def child_plan(n: int, out: Path) -> dict:
    from ec2er.generation.driver import ensure_plan, preflight
    from ec2er.ray_utils import init_ray

    config = _config(n)
    preflight(config, out)
    init_ray()
    start = time.perf_counter()
    planned = ensure_plan(config, out)
    return {"n": n, "planned": planned, "seconds": round(time.perf_counter() - start, 1),
            "driver_peak_mb": round(_peak_mb(), 1)}


def _spawn(kind: str, n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ec2er-scale-") as tmp:
        run = subprocess.run([sys.executable, __file__, "--child", kind, "--n", str(n), "--out", tmp],
                             capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{kind} {n} failed:\n{run.stderr[-3000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"{kind} {n:>8}: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=(1000, 10000))
    parser.add_argument("--plan", type=int, default=1_000_000)
    parser.add_argument("--child", choices=["run", "plan"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps((child_run if args.child == "run" else child_plan)(args.n, args.out)))
        return
    small, large = (_spawn("run", n) for n in args.sizes)
    plan = _spawn("plan", args.plan)
    print(json.dumps({
        "driver_mem_ratio_10k_vs_1k": round(large["driver_peak_mb"] / small["driver_peak_mb"], 3),
        "throughput_ratio_10k_vs_1k": round(large["steady_dialogues_per_s"] / small["steady_dialogues_per_s"], 3),
        "plan_1m_driver_mb": plan["driver_peak_mb"], "sizes": list(args.sizes), "plan_size": args.plan,
        "model": "tiny-random-llama", "device": f"cpu ({os.cpu_count()} cores)",
        "runs": [small, large], "plan": plan,
    }))


if __name__ == "__main__":
    main()
