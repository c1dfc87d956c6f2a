"""Benchmark: one endpoint serving two base models (``more_models``) and an adapter of each, asked
at once, against each base model (with its adapter) asked alone.

Starts the serving recipe (default serve/two-bases.yaml: SmolLM2-135M-Instruct and Gemma 3 270M) on
127.0.0.1 with a temporary registry holding one random stand-in adapter per base, then runs three
phases, interleaved and repeated as jobs/benchlib.py does (--repeats rounds):
  first    requests round-robin over the first base and its adapter
  second   requests round-robin over the second base and its adapter
  both     requests round-robin over all four
Each phase sends --requests requests, --concurrency at a time, each asking exactly --max-tokens
tokens (ignore_eos). The two bases run in separate replicas (separate engine processes), so on a
machine with cores to spare ``both`` should approach the sum of the two alone; on 2 cores they
share the cores. The LAST line is one JSON object: per-phase median figures, ``both_vs_first``
and ``both_vs_second`` (requests/s ratios within a round) with their spread, and errors.
Requests go only to 127.0.0.1, bounded in count and time.

    python jobs/bench_bases.py --config serve/two-bases.yaml --requests 24 --concurrency 8 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchlib  # noqa: E402  (jobs/, this script's folder)
from bench_serve import LOCAL_HOSTS, MAX_REQUESTS, _phase, _print, add_load_arguments  # noqa: E402


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("serve/two-bases.yaml"), help="serving recipe with more_models")
    p.add_argument("--port", type=int, default=8012, help="port of the server this benchmark starts")
    add_load_arguments(p, requests=24, timeout=180)
    benchlib.add_repeats_argument(p)
    args = p.parse_args()
    args.api_key = "unused"
    if not 1 <= args.requests <= MAX_REQUESTS:
        p.error(f"--requests must be 1..{MAX_REQUESTS}")
    return args


async def _bench(url: str, groups: list[list[str]], args: argparse.Namespace, console: Any) -> dict[str, Any]:
    deadline = time.monotonic() + args.time_limit
    await _phase(url, [m for g in groups for m in g], args, deadline)  # every engine warm, adapters loaded

    def phase(name: str, models: list[str]):
        async def run(_round: dict) -> dict[str, Any]:
            figures = await _phase(url, models, args, deadline)
            _print(name, figures, console)
            return figures
        return run

    rounds = await benchlib.arun_rounds({"first": phase("first", groups[0]), "second": phase("second", groups[1]),
                                         "both": phase("both", groups[0] + groups[1])}, args.repeats, console)

    def over(name: str) -> list:
        return benchlib.per_round(rounds, lambda r: benchlib.ratio(r["both"]["requests_per_s"], r[name]["requests_per_s"]))

    summary = benchlib.summarize({"both_vs_first": over("first"), "both_vs_second": over("second")})
    print("\n".join(benchlib.describe(summary)), file=console, flush=True)
    return {**summary, "models": groups, "errors": sum(p["errors"] for r in rounds for p in r.values()),
            "phases": {name: benchlib.median_figures([r[name] for r in rounds]) for name in rounds[0]},
            "repeats": args.repeats, "concurrency": args.concurrency, "max_tokens": args.max_tokens, "rounds": rounds}


def main() -> int:
    args = _args()
    from ec2er.config import load_config
    from ec2er.console import console_to_log
    from ec2er.models.random_lora import publish_stand_ins
    from ec2er.serving.config import ServeConfig
    from ec2er.serving.server import serving

    with tempfile.TemporaryDirectory(prefix="bench-bases-") as tmp:
        config = load_config(args.config, ServeConfig, {"registry": f"{tmp}/registry", "host": LOCAL_HOSTS[0],
                                                        "port": args.port, "api_key_env": None, "api_key_file": None})
        bases = config.bases()
        if len(bases) < 2:
            print(f"{args.config}: serves one base model; this benchmark needs more_models", file=sys.stderr)
            return 2
        log_file = config.log_dir / "bench-bases.log"
        print(f"engine and Ray logs: {log_file}", flush=True)
        with console_to_log(log_file) as console:
            groups = [[b.served_name, *publish_stand_ins(config.registry, b.model, 1, rank=min(8, b.engine.max_lora_rank))]
                      for b in bases[:2]]
            with serving(config) as url:
                result = asyncio.run(_bench(url, groups, args, console))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # vLLM engines start in this process tree: guard required
    sys.exit(main())
