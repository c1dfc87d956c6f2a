"""Benchmark: does the generation job scale? 1k and 10k dialogues through the whole job (plan,
Ray Data over an AsyncLLM actor, writers, checkpoints, stats) on the tiny random model with short
budgets, and planning 1M dialogues alone.

Each run is its own process, so its peak resident memory (``ru_maxrss``) is the driver's own;
Ray's processes and the engine are separate and not counted. Throughput is the job's steady
rate: dialogues written from the first write to the last, so the Ray and engine start-up (the
same for any size) does not flatter the larger run.

The two sizes run interleaved, --repeats rounds of 1k then 10k (jobs/benchlib.py), so that on a
shared machine each ratio compares two runs made one after the other, not a quiet run with a busy
one; planning 1M is one run after the rounds (it is no ratio). One round takes about 9 minutes
(1k: about 1.5 minutes with start-up, 10k: about 7.5); the default stays 3 rounds (about 28
minutes in all), because with 2 the median is the mean of both and one disturbed round moves it,
while 3 outvote it.
The LAST line is one JSON object with the median over rounds of driver_mem_ratio_10k_vs_1k and
throughput_ratio_10k_vs_1k (each ratio taken within its round), ``spread`` (for each: min, max,
relative spread (max - min) / median, per-round values), plan_1m_driver_mb, ``runs`` (each size's
median figures) and ``rounds`` (every round's figures).

    python jobs/bench_scale.py            # 3 rounds of 1k and 10k, then plan 1M
    python jobs/bench_scale.py --sizes 200 2000 --plan 100000 --repeats 2   # a quicker look
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

import benchlib  # noqa: E402  (jobs/, this script's folder)

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
    if last[0] == first[0]:
        raise SystemExit(f"{n} dialogues were written in one block: no steady rate (use sizes above "
                         f"ray.batch_size={SHORT['ray.batch_size']})")
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
    benchlib.add_repeats_argument(parser)
    args = parser.parse_args()
    if args.child:
        print(json.dumps((child_run if args.child == "run" else child_plan)(args.n, args.out)))
        return
    small, large = args.sizes
    rounds = benchlib.run_rounds({"small": lambda _: _spawn("run", small), "large": lambda _: _spawn("run", large)},
                                 args.repeats)
    plan = _spawn("plan", args.plan)
    print(json.dumps(_report(rounds, args, plan)))


def _report(rounds: list[dict], args: argparse.Namespace, plan: dict) -> dict:
    def large_over_small(key: str) -> list:
        return benchlib.per_round(rounds, lambda r: benchlib.ratio(r["large"][key], r["small"][key]))

    summary = benchlib.summarize({"driver_mem_ratio_10k_vs_1k": large_over_small("driver_peak_mb"),
                                  "throughput_ratio_10k_vs_1k": large_over_small("steady_dialogues_per_s")})
    print("\n".join(benchlib.describe(summary)), flush=True)
    return {
        **summary, "plan_1m_driver_mb": plan["driver_peak_mb"], "sizes": list(args.sizes), "plan_size": args.plan,
        "repeats": args.repeats, "model": "tiny-random-llama", "device": f"cpu ({os.cpu_count()} cores)",
        "runs": [benchlib.median_figures([r[size] for r in rounds]) for size in ("small", "large")],
        "plan": plan, "rounds": rounds,
    }


if __name__ == "__main__":
    main()
