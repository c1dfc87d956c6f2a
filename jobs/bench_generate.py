"""Benchmark: the paper's one-dialogue-at-a-time loop vs our turn-synchronous batch vs raw.

Same engine, model and N dialogues: (a) sequential, one dialogue at a time, as the source
paper's code ran; (b) ec2er's turn-synchronous loop, all N advancing one turn per batched call;
(c) the engine's raw throughput on one flat batch with the same number of requests and token
counts (the requests of (b) replayed at once). Dialogues have a fixed length (--turns, no early stop) and no extraction, so (a) and (b)
do identical work (per-request seeds make them write the same text). Prints dialogues/min and
tokens/s for each; the LAST line is one JSON object with speedup_vs_sequential (b/a) and
fraction_of_raw (b/c).

    python jobs/bench_generate.py --n 16 --turns 4 --max-tokens 48
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
    from ec2er.config import load_config
    from ec2er.generation.config import GenerateConfig

    sampling = {"temperature": 0.8, "max_tokens": args.max_tokens}
    return load_config(args.config, GenerateConfig, {
        "num_dialogues": args.n, "engine.model": args.model, "engine.max_model_len": args.max_model_len,
        "turns": {"min_turns": args.turns, "max_turns": args.turns},
        "items": {"eu_min": 0, "eu_max": 0, "ea_min": 0, "ea_max": 0},
        "sampling": {"background": sampling, "turn": sampling},
    })


def _device() -> str:
    from ec2er.llm.vllm_engine import is_cpu_build

    if is_cpu_build():
        return f"cpu ({os.cpu_count()} cores)"
    import torch

    return torch.cuda.get_device_name(0)


def _figures(name: str, n: int, tokens: int, seconds: float) -> dict[str, float]:
    out = {"dialogues_per_min": round(n / seconds * 60, 3), "tokens_per_s": round(tokens / seconds, 2),
           "completion_tokens": tokens, "seconds": round(seconds, 2)}
    print(f"{name:<32} {out['dialogues_per_min']:>9.2f} dialogues/min {out['tokens_per_s']:>9.2f} tokens/s "
          f"({tokens} tokens in {out['seconds']} s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pipelines/mads-tiny.yaml")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--n", type=int, default=16, help="dialogues")
    parser.add_argument("--turns", type=int, default=4, help="messages per dialogue (fixed)")
    parser.add_argument("--max-tokens", type=int, default=48, help="per background and per turn")
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()

    from ec2er.generation.dialogue_loop import DialogueLoop
    from ec2er.generation.plan import plan_dialogues
    from ec2er.llm import ChatRequest, build_engine

    config = _config(args)
    specs = plan_dialogues(config)
    engine = build_engine(config.engine)
    loop = DialogueLoop(engine, config)
    loop.run(specs[:1])  # warm-up: first-call costs belong to no contender

    def tokens(results) -> int:
        return sum(r.metadata["completion_tokens"] for r in results)

    t = time.perf_counter()
    sequential = [r for s in specs for r in loop.run([s])]
    a = _figures("(a) one dialogue at a time", args.n, tokens(sequential), time.perf_counter() - t)

    replay: list[ChatRequest] = []
    batched_chat = engine.chat

    def recording_chat(requests):  # keep (b)'s requests to replay them as (c)
        replay.extend(requests)
        return batched_chat(requests)

    engine.chat = recording_chat
    t = time.perf_counter()
    batched = loop.run(specs)
    b = _figures("(b) turn-synchronous batch", args.n, tokens(batched), time.perf_counter() - t)
    engine.chat = batched_chat

    # (c) all of (b)'s requests (same prompts, seeds, token counts) in one flat batch: the
    # engine's throughput without the turn-by-turn dependency; an upper bound for (b)
    t = time.perf_counter()
    raw = engine.chat(replay)
    c = _figures("(c) raw flat batch", args.n, sum(r.completion_tokens for r in raw), time.perf_counter() - t)
    engine.close()

    same_text = sum(x.dialogue is not None and y.dialogue is not None and x.dialogue.turns == y.dialogue.turns
                    for x, y in zip(sequential, batched))
    print(f"(a) and (b) wrote identical dialogues for {same_text} of {args.n}")
    print(json.dumps({
        "speedup_vs_sequential": round(b["tokens_per_s"] / a["tokens_per_s"], 2),
        "fraction_of_raw": round(b["tokens_per_s"] / c["tokens_per_s"], 3),
        "model": args.model, "n": args.n, "turns": args.turns, "max_tokens": args.max_tokens,
        "device": _device(), "sequential": a, "batched": b, "raw": c,
    }))


if __name__ == "__main__":
    main()
