"""Benchmark: the paper's one-dialogue-at-a-time loop vs our turn-synchronous batch vs raw.

Same engine, model and N dialogues: (a) sequential, one dialogue at a time, as the source
paper's code ran; (b) ec2er's turn-synchronous loop, all N advancing one turn per batched call;
(c) the engine's raw throughput on one flat batch with the same number of requests and token
counts (the requests of (b) replayed at once). Dialogues have a fixed length (--turns, no early
stop) and no extraction, so (a) and (b) do identical work (per-request seeds make them write the
same text); token budgets are the recipe's unless --max-tokens is given. Each contender starts
from an empty prefix cache, so none is served prompts a previous one computed. Prints
dialogues/min, tokens/s and prompt tokens (computed and cached) for each; the LAST line is one
JSON object with speedup_vs_sequential (b/a) and fraction_of_raw (b/c).

    python jobs/bench_generate.py --n 16 --turns 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _config(args: argparse.Namespace):
    from ec2er.config import load_config, parse_override
    from ec2er.generation.config import GenerateConfig

    overrides = dict(map(parse_override, args.set)) | {
        "num_dialogues": args.n, "engine.model": args.model, "engine.max_model_len": args.max_model_len,
        "turns": {"min_turns": args.turns, "max_turns": args.turns},
        "items": {"eu_min": 0, "eu_max": 0, "ea_min": 0, "ea_max": 0},
    }
    if args.max_tokens is not None:
        overrides |= {"sampling.background.max_tokens": args.max_tokens, "sampling.turn.max_tokens": args.max_tokens}
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
    print(f"{name:<28} {out['dialogues_per_min']:>7.2f} dialogues/min {out['tokens_per_s']:>8.2f} tokens/s "
          f"({completion} tokens in {out['seconds']} s; prompts {prompt} tokens, {cached} cached)", flush=True)
    return out


def _decode_gain(engine, n: int) -> dict[str, float]:
    """The engine's own batching gain on decode alone: n short prompts decoded together vs one
    alone, with next to no prompt to compute. A pipeline of n dialogues decodes at most n rows
    per step and also computes its prompts, so this bounds what (b) can gain over (a)."""
    from ec2er.config import SamplingConfig
    from ec2er.llm import ChatRequest

    requests = [ChatRequest([{"role": "user", "content": f"Tell a long story about a lighthouse keeper, part {i}."}],
                            sampling=SamplingConfig(temperature=0.8, max_tokens=128, seed=i)) for i in range(n)]
    engine.chat(requests[:1])  # warm-up
    rates = []
    for batch in (requests[:1], requests):
        t = time.perf_counter()
        rates.append(sum(r.completion_tokens for r in engine.chat(batch)) / (time.perf_counter() - t))
    out = {"single_tokens_per_s": round(rates[0], 2), "batch_tokens_per_s": round(rates[1], 2),
           "gain": round(rates[1] / rates[0], 2)}
    print(f"(d) engine decode alone: {n} streams {out['batch_tokens_per_s']} tokens/s, one stream "
          f"{out['single_tokens_per_s']} tokens/s: {out['gain']}x, the ceiling for b/a", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pipelines/mads-tiny.yaml")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=16, help="dialogues")
    parser.add_argument("--turns", type=int, default=4, help="messages per dialogue (fixed)")
    parser.add_argument("--max-tokens", type=int, help="per background and per turn (default: the recipe's)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. engine.cpu_block_size=128")
    args = parser.parse_args()

    from ec2er.generation.dialogue_loop import DialogueLoop
    from ec2er.generation.plan import plan_dialogues
    from ec2er.llm import ChatRequest, build_engine

    config = _config(args)
    specs = plan_dialogues(config)
    engine = build_engine(config.engine)
    loop = DialogueLoop(engine, config)
    loop.run(specs[:1])  # warm-up: first-call costs belong to no contender

    def tokens(results) -> tuple[int, int, int]:
        return tuple(sum(r.metadata[k] for r in results)  # type: ignore[return-value]
                     for k in ("completion_tokens", "prompt_tokens", "cached_prompt_tokens"))

    engine.reset_prefix_cache()
    t = time.perf_counter()
    sequential = [r for s in specs for r in loop.run([s])]
    a = _figures("(a) one dialogue at a time", args.n, tokens(sequential), time.perf_counter() - t)

    replay: list[ChatRequest] = []
    batched_chat = engine.chat

    def recording_chat(requests):  # keep (b)'s requests to replay them as (c)
        replay.extend(requests)
        return batched_chat(requests)

    engine.chat = recording_chat
    engine.reset_prefix_cache()
    t = time.perf_counter()
    batched = loop.run(specs)
    b = _figures("(b) turn-synchronous batch", args.n, tokens(batched), time.perf_counter() - t)
    engine.chat = batched_chat

    # (c) all of (b)'s requests (same prompts, seeds, token counts) in one flat batch: the
    # engine's throughput without the turn-by-turn dependency. Not a strict bound: (b)'s later
    # turns reuse the cached prompts of earlier ones, which requests of one batch cannot.
    engine.reset_prefix_cache()
    t = time.perf_counter()
    raw = engine.chat(replay)
    c = _figures("(c) raw flat batch", args.n, (sum(r.completion_tokens for r in raw), sum(r.prompt_tokens for r in raw),
                                                sum(r.cached_tokens for r in raw)), time.perf_counter() - t)
    d = _decode_gain(engine, args.n)
    engine.close()

    same_text = sum(x.dialogue is not None and y.dialogue is not None and x.dialogue.turns == y.dialogue.turns
                    for x, y in zip(sequential, batched))
    print(f"(a) and (b) wrote identical dialogues for {same_text} of {args.n}")
    print(json.dumps({
        "speedup_vs_sequential": round(b["tokens_per_s"] / a["tokens_per_s"], 2),
        "fraction_of_raw": round(b["tokens_per_s"] / c["tokens_per_s"], 3),
        "engine_decode_gain": d["gain"],
        "model": args.model, "n": args.n, "turns": args.turns,
        "max_tokens": {"background": config.sampling.background.max_tokens, "turn": config.sampling.turn.max_tokens},
        "device": _device(), "sequential": a, "batched": b, "raw": c, "engine_decode": d,
    }))


if __name__ == "__main__":
    main()
