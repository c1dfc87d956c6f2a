"""Benchmark: dialogues as coroutines on vLLM's async engine (the pipeline) vs one dialogue at a
time (the paper's way) vs lock-step turns vs the engine's raw throughput.

One AsyncLLM engine (what each generation actor owns), N MADS dialogues whose lengths the
supervisor decides (--min-turns to --max-turns), with extraction, at the recipe's token budgets:
(a) one dialogue at a time; (b) the pipeline: every dialogue its own coroutine on the shared
engine, capped at the engine's in-flight limit, exactly as a generation actor runs them; (b0)
lock-step turns: the same coroutines, but the engine only runs when every live dialogue waits on
it, each step a batch that ends with its longest reply (the loop ec2er used before); (c) every
request of (b) replayed at once in one flat batch; (d) the engine's own decode gain, 16 streams
vs 1. Per-request seeds make (a), (b) and (b0) write the same dialogues (counted); each
contender starts from an empty prefix cache.

The engine starts once; the contenders then run interleaved, --repeats rounds of a b b0 c d
(jobs/benchlib.py), so that on a shared machine each ratio compares two runs of one round, not
a quiet run with a busy one; (c) replays the requests (b) sent in its own round. The LAST line is
one JSON object with the median over rounds of speedup_vs_sequential (b/a), fraction_of_raw
(b/c), engine_decode_gain (d) and speedup_vs_lockstep (b/b0), each ratio taken within its round;
``spread`` gives, for each of these, min, max, relative spread ((max - min) / median) and the
per-round values; sequential/pipeline/lockstep/raw/engine_decode are each contender's median
figures, ``rounds`` every round's figures; identical_dialogues is the smallest count of any
round; plus the model, N and the device. One round of the README's run (16 dialogues, 4-8 turns,
SmolLM2 on 2 cores) takes about 28 minutes, (a) half of it.

    python jobs/bench_generate.py --n 16 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchlib  # noqa: E402  (jobs/, this script's folder)

from ec2er.llm import ChatEngine, ChatRequest, RawCompletion  # noqa: E402
from ec2er.schemas.facts import DEFAULT_MODEL  # noqa: E402


class Recording(ChatEngine):
    """Passes each request to the engine and keeps it (for (c)'s replay)."""

    def __init__(self, inner: ChatEngine):
        self.inner, self.model_name, self.max_reasks = inner, inner.model_name, inner.max_reasks
        self.requests: list[ChatRequest] = []

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def _acomplete_one(self, request: ChatRequest) -> RawCompletion:
        self.requests.append(request)
        return await self.inner._acomplete_one(request)


class Lockstep(ChatEngine):
    """(b0): requests are held until every coroutine that could still add one is waiting, then
    sent together; the next step starts when the whole step is done. The barrier looks at the
    event loop's ready queue (a private attribute of asyncio's loop: fine for a benchmark)."""

    def __init__(self, inner: ChatEngine):
        self.inner, self.model_name, self.max_reasks = inner, inner.model_name, inner.max_reasks
        self.pending: list[tuple[ChatRequest, asyncio.Future]] = []
        self.flushing = False
        self.steps = 0

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def _acomplete_one(self, request: ChatRequest) -> RawCompletion:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((request, future))
        if not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().create_task(self._step())
        return await future

    async def _step(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(10_000):  # let every runnable coroutine reach its next request
            if not loop._ready:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0)
        batch, self.pending = self.pending, []
        self.flushing = False
        self.steps += 1
        raws = await asyncio.gather(*(self.inner._acomplete_one(r) for r, _ in batch))
        for (_, future), raw in zip(batch, raws, strict=True):
            future.set_result(raw)


def _config(args: argparse.Namespace):
    from ec2er.config import load_config, parse_override
    from ec2er.generation.config import GenerateConfig

    overrides = dict(map(parse_override, args.set)) | {
        "num_dialogues": args.n, "engine.model": args.model, "engine.max_model_len": args.max_model_len,
        "turns": {"min_turns": args.min_turns, "max_turns": args.max_turns},
    }
    return load_config(args.config, GenerateConfig, overrides)


def _device() -> str:
    from ec2er.llm.vllm_engine import is_cpu_build

    if is_cpu_build():
        return f"cpu ({os.cpu_count()} cores)"
    import torch

    return torch.cuda.get_device_name(0)


def _figures(name: str, n: int, tokens: tuple[int, int, int], seconds: float) -> dict[str, float]:
    completion, prompt, cached = tokens
    out = {"dialogues_per_min": round(n / seconds * 60, 3), "tokens_per_s": round(completion / seconds, 2),
           "completion_tokens": completion, "prompt_tokens": prompt, "cached_prompt_tokens": cached,
           "seconds": round(seconds, 2)}
    print(f"{name:<34} {out['dialogues_per_min']:>7.2f} dialogues/min {out['tokens_per_s']:>8.2f} tokens/s "
          f"({completion} tokens in {out['seconds']} s; prompts {prompt} tokens, {cached} cached)", flush=True)
    return out


def _tokens(results) -> tuple[int, int, int]:
    return tuple(sum(r.metadata[k] for r in results)  # type: ignore[return-value]
                 for k in ("completion_tokens", "prompt_tokens", "cached_prompt_tokens"))


async def _timed(engine, coroutine_factory) -> tuple[list, float]:
    await engine.reset_prefix_cache_async()
    start = time.perf_counter()
    results = await coroutine_factory()
    return results, time.perf_counter() - start


async def _decode_gain(engine, n: int) -> dict[str, float]:
    """n short prompts decoded together vs one alone, with next to no prompt to compute: what the
    engine gains from batching decode, which bounds what (b) can gain over (a)."""
    from ec2er.config import SamplingConfig

    requests = [ChatRequest([{"role": "user", "content": f"Tell a long story about a lighthouse keeper, part {i}."}],
                            sampling=SamplingConfig(temperature=0.8, max_tokens=128, seed=i)) for i in range(n)]
    await engine.reset_prefix_cache_async()  # every round from the same cache state
    await engine.achat_one(requests[0])  # warm-up
    rates = []
    for batch in (requests[:1], requests):
        t = time.perf_counter()
        done = await asyncio.gather(*(engine.achat_one(r) for r in batch))
        rates.append(sum(r.completion_tokens for r in done) / (time.perf_counter() - t))
    out = {"single_tokens_per_s": round(rates[0], 2), "batch_tokens_per_s": round(rates[1], 2),
           "gain": round(rates[1] / rates[0], 3)}
    print(f"(d) engine decode alone: {n} streams {out['batch_tokens_per_s']} tokens/s, one stream "
          f"{out['single_tokens_per_s']} tokens/s: {out['gain']}x", flush=True)
    return out


async def _run(args: argparse.Namespace) -> dict:
    from ec2er.generation.dialogue import DialogueRunner
    from ec2er.generation.plan import sampler_specs
    from ec2er.llm import build_engine

    config = _config(args)
    specs = sampler_specs(config, range(args.n))
    engine = build_engine(config.engine, asynchronous=True)  # one engine for every contender and round
    runner = DialogueRunner(engine, config)
    await runner.run(sampler_specs(config, [args.n])[0])  # warm-up: first-call costs belong to no contender
    rounds = await benchlib.arun_rounds(_contenders(engine, config, specs, args.n), args.repeats)
    engine.close()
    return _report(rounds, args)


def _contenders(engine, config, specs, n: int) -> dict:
    """(a), (b), (b0), (c), (d) as benchlib contenders; each starts from an empty prefix cache, and
    (c) replays the requests (b) sent in the same round."""
    from ec2er.generation.dialogue import DialogueRunner

    gate = asyncio.Semaphore(engine.max_in_flight)

    async def capped(run, spec):
        async with gate:
            return await run(spec)

    async def sequential(_round):
        results, seconds = await _timed(engine, lambda: _in_order(DialogueRunner(engine, config), specs))
        return {"figures": _figures("(a) one dialogue at a time", n, _tokens(results), seconds), "results": results}

    async def pipeline(_round):
        recorder = Recording(engine)
        runner = DialogueRunner(recorder, config)
        results, seconds = await _timed(engine, lambda: asyncio.gather(*(capped(runner.run, s) for s in specs)))
        return {"figures": _figures("(b) coroutines on the async engine", n, _tokens(results), seconds),
                "results": results, "requests": recorder.requests}

    async def lockstep(_round):
        stepper = Lockstep(engine)
        results, seconds = await _timed(engine, lambda: asyncio.gather(*(DialogueRunner(stepper, config).run(s)
                                                                          for s in specs)))
        return {"figures": _figures("(b0) lock-step turns", n, _tokens(results), seconds) | {"steps": stepper.steps},
                "results": results}

    async def raw(this_round):
        requests = this_round["b"]["requests"]
        replay, seconds = await _timed(engine, lambda: asyncio.gather(*(capped(engine.achat_one, r) for r in requests)))
        tokens = tuple(sum(getattr(r, k) for r in replay) for k in ("completion_tokens", "prompt_tokens", "cached_tokens"))
        return {"figures": _figures("(c) raw flat batch", n, tokens, seconds)}

    async def decode(_round):
        return {"figures": await _decode_gain(engine, 16)}

    return {"a": sequential, "b": pipeline, "b0": lockstep, "c": raw, "d": decode}


def _report(rounds: list[dict], args: argparse.Namespace) -> dict:
    def b_over(other: str) -> list:
        return benchlib.per_round(rounds, lambda r: benchlib.ratio(r["b"]["figures"]["tokens_per_s"],
                                                                   r[other]["figures"]["tokens_per_s"]))

    summary = benchlib.summarize({
        "speedup_vs_sequential": b_over("a"), "fraction_of_raw": b_over("c"),
        "engine_decode_gain": benchlib.per_round(rounds, lambda r: r["d"]["figures"]["gain"]),
        "speedup_vs_lockstep": b_over("b0")})
    same = [sum(x.model_dump(exclude={"metadata"}) == y.model_dump(exclude={"metadata"}) ==
                z.model_dump(exclude={"metadata"})
                for x, y, z in zip(r["a"]["results"], r["b"]["results"], r["b0"]["results"], strict=True))
            for r in rounds]
    turns = sorted(res.metadata["turns"] for res in rounds[0]["b"]["results"])
    print(f"(a), (b) and (b0) wrote identical dialogues and items for {same} of {args.n} (per round); "
          f"turns {turns}; (b0) took {[r['b0']['figures']['steps'] for r in rounds]} steps", flush=True)
    print("\n".join(benchlib.describe(summary)), flush=True)
    gain = summary["engine_decode_gain"]
    names = {"a": "sequential", "b": "pipeline", "b0": "lockstep", "c": "raw", "d": "engine_decode"}
    return {
        **{key: summary[key] for key in summary if key != "spread"},
        "target_b_over_a": None if gain is None else round(0.8 * gain, 2),
        "spread": summary["spread"], "repeats": args.repeats,
        "model": args.model, "n": args.n, "turns": {"min": args.min_turns, "max": args.max_turns, "seen": turns},
        "identical_dialogues": min(same), "device": _device(),
        **{name: benchlib.median_figures([r[key]["figures"] for r in rounds]) for key, name in names.items()},
        "rounds": [{name: r[key]["figures"] for key, name in names.items()} for r in rounds],
    }


async def _in_order(runner, specs) -> list:
    return [await runner.run(s) for s in specs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pipelines/mads-tiny.yaml")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--n", type=int, default=16, help="dialogues")
    parser.add_argument("--min-turns", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=14)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. sampling.turn.max_tokens=48")
    benchlib.add_repeats_argument(parser)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args))))


if __name__ == "__main__":
    main()
