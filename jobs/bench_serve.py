"""Benchmark: the served endpoint under bounded concurrent load, one adapter vs many.

Starts the serving recipe's application on 127.0.0.1 with a temporary registry of --adapters
random stand-in adapters (or, with --url, measures a server already running on this machine), then
sends the same number of requests, --concurrency at a time, in four phases:
  base     every request to the base model
  single   every request to one adapter
  adapters the requests spread round-robin over all the adapters
  mixed    the requests spread round-robin over the base model and all the adapters
Every request asks for exactly --max-tokens tokens (ignore_eos) with a prompt of its own, so the
phases do the same work. Prints requests/s, output tokens/s, p50/p99 latency and errors per phase.

The server starts once; the phases then run interleaved, --repeats rounds of base single adapters
mixed (jobs/benchlib.py), so that on a shared machine each ratio compares phases run one after
the other, not a quiet phase with a busy one. One round of the README's run (48 requests per
phase, 8 at a time, 32 tokens) takes about 2.5 minutes. The LAST line is one JSON object: the
median over rounds of requests_per_s, p50_ms and p99_ms (the mixed phase), mixed_vs_single and
adapters_vs_single (requests/s ratios to the single phase of the same round); ``spread`` (for each
ratio: min, max, relative spread (max - min) / median, per-round values); errors (all phases of
all rounds); ``phases`` (each phase's median figures) and ``rounds`` (every round's figures).

The load is bounded in count (--requests per phase, at most 2000) and time (--time-limit for all
rounds and phases: no request starts after it), and goes only to 127.0.0.1.

    python jobs/bench_serve.py --config serve/demo.yaml --adapters 3 --requests 48 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchlib  # noqa: E402  (jobs/, this script's folder)

LOCAL_HOSTS = ("127.0.0.1", "localhost")
MAX_REQUESTS = 2000
SCENARIOS = ["lost their job after ten years", "was praised by a mentor in front of everyone",
             "found out a friend lied to them", "is waiting for a medical result",
             "moved to a city where they know nobody", "won a small prize by surprise"]


def add_load_arguments(p: argparse.ArgumentParser, requests: int, timeout: float) -> None:
    """The load a phase sends (this benchmark's and bench_bases.py's)."""
    p.add_argument("--requests", type=int, default=requests, help=f"requests per phase (at most {MAX_REQUESTS})")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    p.add_argument("--max-tokens", type=int, default=32, help="output tokens per request (exactly)")
    p.add_argument("--time-limit", type=float, default=1800, help="seconds for all rounds and phases together")
    p.add_argument("--timeout", type=float, default=timeout, help="seconds one request may take")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("serve/demo.yaml"), help="serving recipe")
    p.add_argument("--url", help="benchmark a server already running on this machine "
                                 "(http://127.0.0.1:PORT/v1) instead of starting one")
    p.add_argument("--port", type=int, default=8011, help="port of the server this benchmark starts")
    p.add_argument("--adapters", type=int, default=3, help="random stand-in adapters to serve")
    add_load_arguments(p, requests=48, timeout=120)
    p.add_argument("--rail", action="store_true",
                   help="serve with the crisis rail on (the recipe's safety: block, or its defaults) and "
                        "report the time it adds to each request (its Server-Timing entry): rail_p50_ms, "
                        "rail_p99_ms")
    p.add_argument("--api-key", default="unused", help="bearer token, if the server wants one")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the serving recipe (e.g. engine.max_loras=4), repeatable")
    benchlib.add_repeats_argument(p)
    args = p.parse_args()
    if not 1 <= args.requests <= MAX_REQUESTS:
        p.error(f"--requests must be 1..{MAX_REQUESTS}")
    if args.url and urlparse(args.url).hostname not in LOCAL_HOSTS:
        p.error(f"--url must point to this machine ({', '.join(LOCAL_HOSTS)}), not {args.url}")
    return args


def rail_ms(server_timing: str | None) -> float | None:
    """The crisis rail's time on a request, from its Server-Timing entry (ec2er.safety.rail)."""
    from ec2er.safety.rail import TIMING_METRIC

    for entry in (server_timing or "").split(","):
        name, _, params = entry.strip().partition(";")
        if name == TIMING_METRIC and params.startswith("dur="):
            return float(params[4:])
    return None


async def _one(client: Any, model: str, index: int, args: argparse.Namespace) -> tuple[float, int, float | None]:
    """One request: its latency, its output tokens and the rail's time on it (None without a rail)."""
    start = time.perf_counter()
    raw = await client.chat.completions.with_raw_response.create(
        model=model, max_tokens=args.max_tokens, temperature=0.0, seed=index,
        messages=[{"role": "user", "content": f"Case {index}: a person {SCENARIOS[index % len(SCENARIOS)]}. "
                                              "How do they feel, and why?"}],
        extra_body={"ignore_eos": True})
    reply = raw.parse()
    return time.perf_counter() - start, reply.usage.completion_tokens, rail_ms(raw.headers.get("server-timing"))


async def _phase(url: str, models: list[str], args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """``args.requests`` requests, ``args.concurrency`` at a time, models taken round-robin; no request
    starts after ``deadline``."""
    import openai

    gate = asyncio.Semaphore(args.concurrency)
    latencies: list[float] = []
    rail: list[float] = []
    tokens, errors, skipped = 0, [], 0

    async def run(client: Any, index: int) -> None:
        nonlocal tokens, skipped
        async with gate:
            if time.monotonic() > deadline:
                skipped += 1
                return
            try:
                seconds, n, rail_time = await _one(client, models[index % len(models)], index, args)
            except openai.APIError as e:
                errors.append(f"{type(e).__name__}: {str(e)[:120]}")
                return
            latencies.append(seconds)
            rail.extend([] if rail_time is None else [rail_time])
            tokens += n

    async with openai.AsyncOpenAI(base_url=url, api_key=args.api_key, max_retries=0, timeout=args.timeout) as client:
        start = time.perf_counter()
        await asyncio.gather(*(run(client, i) for i in range(args.requests)))
        seconds = time.perf_counter() - start
    return _figures(latencies, tokens, errors, skipped, seconds) | _rail_figures(rail)


def _percentiles(values: list[float]) -> list[float]:
    return statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99


def _figures(latencies: list[float], tokens: int, errors: list[str], skipped: int, seconds: float) -> dict[str, Any]:
    cuts = _percentiles(latencies)
    return {"requests": len(latencies), "requests_per_s": round(len(latencies) / seconds, 3),
            "tokens_per_s": round(tokens / seconds, 2), "p50_ms": round(cuts[49] * 1000, 1) if cuts else None,
            "p99_ms": round(cuts[98] * 1000, 1) if cuts else None, "errors": len(errors),
            "error_kinds": sorted(set(errors))[:5], "skipped_at_time_limit": skipped, "seconds": round(seconds, 2)}


def _rail_figures(rail: list[float]) -> dict[str, Any]:
    """The rail's time per request (ms), where the server ran one."""
    cuts = _percentiles(rail)
    return {"rail_p50_ms": round(cuts[49], 3), "rail_p99_ms": round(cuts[98], 3)} if cuts else {}


def _print(name: str, f: dict[str, Any], console: Any) -> None:
    print(f"{name:<9} {f['requests_per_s']:>7.3f} req/s {f['tokens_per_s']:>8.2f} tokens/s  p50 {f['p50_ms']} ms  "
          f"p99 {f['p99_ms']} ms  errors {f['errors']}  ({f['requests']} requests in {f['seconds']} s"
          + (f", {f['skipped_at_time_limit']} not sent: time limit" if f["skipped_at_time_limit"] else "") + ")",
          file=console, flush=True)


async def _bench(url: str, base: str, adapters: list[str], args: argparse.Namespace,
                 console: Any = sys.stdout) -> dict[str, Any]:
    import openai

    deadline = time.monotonic() + args.time_limit
    async with openai.AsyncOpenAI(base_url=url, api_key=args.api_key, max_retries=0, timeout=args.timeout) as client:
        for model in [base, *adapters]:  # load every adapter before timing
            await _one(client, model, 0, args)

    def phase(name: str, models: list[str]):
        async def run(_round: dict) -> dict[str, Any]:
            figures = await _phase(url, models, args, deadline)
            _print(name, figures, console)
            return figures
        return run

    rounds = await benchlib.arun_rounds(
        {"base": phase("base", [base]), "single": phase("single", adapters[:1]),
         "adapters": phase("adapters", adapters), "mixed": phase("mixed", [base, *adapters])}, args.repeats, console)
    return _report(rounds, adapters, args, console)


def _report(rounds: list[dict], adapters: list[str], args: argparse.Namespace, console: Any) -> dict[str, Any]:
    def over_single(name: str) -> list:
        return benchlib.per_round(rounds, lambda r: benchlib.ratio(r[name]["requests_per_s"],
                                                                   r["single"]["requests_per_s"]))

    summary = benchlib.summarize({"mixed_vs_single": over_single("mixed"), "adapters_vs_single": over_single("adapters")})
    print("\n".join(benchlib.describe(summary)), file=console, flush=True)
    phases = {name: benchlib.median_figures([r[name] for r in rounds]) for name in rounds[0]}
    mixed = phases["mixed"]
    rail = {key: mixed[key] for key in ("rail_p50_ms", "rail_p99_ms") if key in mixed}
    if rail:
        print(f"crisis rail: {rail['rail_p50_ms']} ms p50, {rail['rail_p99_ms']} ms p99 of each request (mixed phase, "
              f"median over rounds), of a request's p50 {mixed['p50_ms']} ms", file=console, flush=True)
    return {"requests_per_s": mixed["requests_per_s"], "p50_ms": mixed["p50_ms"], "p99_ms": mixed["p99_ms"], **rail,
            "errors": sum(p["errors"] for r in rounds for p in r.values()), **summary, "repeats": args.repeats,
            "adapters": len(adapters), "max_loras": args.max_loras, "concurrency": args.concurrency,
            "max_tokens": args.max_tokens, "phases": phases, "rounds": rounds}


def _served_models(url: str, api_key: str) -> tuple[str, list[str]]:
    import openai

    ids = [m.id for m in openai.OpenAI(base_url=url, api_key=api_key).models.list()]
    return ids[0], ids[1:]  # our server lists the base model first


def main() -> int:
    args = _args()
    args.max_loras = None  # the engine's LoRA slots, where this benchmark starts the server
    if args.url:
        base, adapters = _served_models(args.url, args.api_key)
        result = asyncio.run(_bench(args.url, base, adapters[: args.adapters], args))
    else:
        from ec2er.config import load_config, parse_override
        from ec2er.serving.config import ServeConfig
        from ec2er.console import console_to_log
        from ec2er.serving.server import serving
        from ec2er.models.random_lora import publish_stand_ins

        with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
            overrides = dict(map(parse_override, args.set)) | {
                "registry": f"{tmp}/registry", "host": LOCAL_HOSTS[0], "port": args.port,
                "api_key_env": None, "api_key_file": None} | ({"safety": {}} if args.rail else {})
            config = load_config(args.config, ServeConfig, overrides)
            log_file = config.log_dir / "bench-serve.log"
            print(f"engine and Ray logs: {log_file}", flush=True)
            with console_to_log(log_file) as console:
                adapters = publish_stand_ins(config.registry, config.model, args.adapters,
                                             rank=min(8, config.engine.max_lora_rank))
                args.max_loras = config.engine.max_loras
                if args.max_loras < len(adapters):
                    print(f"{len(adapters)} adapters share {args.max_loras} LoRA slots (engine.max_loras): the "
                          "adapters and mixed phases also wait for a slot", flush=True)
                with serving(config) as url:
                    result = asyncio.run(_bench(url, config.served_name, adapters, args, console))
    if not result["adapters"]:
        print("no adapters served: nothing to compare", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # vLLM engines start in this process tree: guard required
    sys.exit(main())
