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
contender starts from an empty prefix cache. The LAST line is one JSON object with
speedup_vs_sequential (b/a), fraction_of_raw (b/c), engine_decode_gain (d), speedup_vs_lockstep
(b/b0), the model, N and the device.

    python jobs/bench_generate.py --n 16
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

from ec2er.llm import ChatEngine, ChatRequest, RawCompletion  # noqa: E402


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
    await engine.achat_one(requests[0])  # warm-up
    rates = []
    for batch in (requests[:1], requests):
        t = time.perf_counter()
        done = await asyncio.gather(*(engine.achat_one(r) for r in batch))
        rates.append(sum(r.completion_tokens for r in done) / (time.perf_counter() - t))
    out = {"single_tokens_per_s": round(rates[0], 2), "batch_tokens_per_s": round(rates[1], 2),
           "gain": round(rates[1] / rates[0], 2)}
    print(f"(d) engine decode alone: {n} streams {out['batch_tokens_per_s']} tokens/s, one stream "
          f"{out['single_tokens_per_s']} tokens/s: {out['gain']}x", flush=True)
    return out


async def _run(args: argparse.Namespace) -> dict:
    from ec2er.generation.dialogue import DialogueRunner
    from ec2er.generation.plan import sampler_specs
    from ec2er.llm import build_engine

    config = _config(args)
    specs = sampler_specs(config, range(args.n))
    engine = build_engine(config.engine, asynchronous=True)
    runner = DialogueRunner(engine, config)
    await runner.run(sampler_specs(config, [args.n])[0])  # warm-up: first-call costs belong to no contender
    gate = asyncio.Semaphore(engine.max_in_flight)

    async def capped(run, spec):
        async with gate:
            return await run(spec)

    sequential, ta = await _timed(engine, lambda: _in_order(runner, specs))
    a = _figures("(a) one dialogue at a time", args.n, _tokens(sequential), ta)
    recorder = Recording(engine)
    pipeline = DialogueRunner(recorder, config)
    coroutines, tb = await _timed(engine, lambda: asyncio.gather(*(capped(pipeline.run, s) for s in specs)))
    b = _figures("(b) coroutines on the async engine", args.n, _tokens(coroutines), tb)
    lockstep = Lockstep(engine)
    stepped, tb0 = await _timed(engine, lambda: asyncio.gather(*(DialogueRunner(lockstep, config).run(s) for s in specs)))
    b0 = _figures("(b0) lock-step turns", args.n, _tokens(stepped), tb0)
    replay, tc = await _timed(engine, lambda: asyncio.gather(*(capped(engine.achat_one, r) for r in recorder.requests)))
    c = _figures("(c) raw flat batch", args.n, (sum(r.completion_tokens for r in replay),
                                                sum(r.prompt_tokens for r in replay),
                                                sum(r.cached_tokens for r in replay)), tc)
    d = await _decode_gain(engine, 16)
    engine.close()
    same = sum(x.model_dump(exclude={"metadata"}) == y.model_dump(exclude={"metadata"}) ==
               z.model_dump(exclude={"metadata"}) for x, y, z in zip(sequential, coroutines, stepped, strict=True))
    turns = sorted(r.metadata["turns"] for r in coroutines)
    print(f"(a), (b) and (b0) wrote identical dialogues and items for {same} of {args.n}; turns {turns}; "
          f"(b0) took {lockstep.steps} steps")
    return {
        "speedup_vs_sequential": round(b["tokens_per_s"] / a["tokens_per_s"], 2),
        "fraction_of_raw": round(b["tokens_per_s"] / c["tokens_per_s"], 3),
        "engine_decode_gain": d["gain"],
        "speedup_vs_lockstep": round(b["tokens_per_s"] / b0["tokens_per_s"], 3),
        "target_b_over_a": round(0.8 * d["gain"], 2),
        "model": args.model, "n": args.n, "turns": {"min": args.min_turns, "max": args.max_turns, "seen": turns},
        "identical_dialogues": same, "device": _device(),
        "sequential": a, "pipeline": b, "lockstep": b0, "raw": c, "engine_decode": d,
    }


async def _in_order(runner, specs) -> list:
    return [await runner.run(s) for s in specs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pipelines/mads-tiny.yaml")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=16, help="dialogues")
    parser.add_argument("--min-turns", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=14)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. sampling.turn.max_tokens=48")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args))))


if __name__ == "__main__":
    main()
