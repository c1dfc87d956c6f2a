"""Benchmark: training throughput of the training stage with 1 vs 2 Ray Train workers, and with vs
without packing, on the same model and data.

Three runs of ``ec2er train`` (the stage's own code: Ray Train, HF Trainer, LoRA) over one epoch of
the same curated items: (a) 1 worker with every CPU (or 1 GPU), rows unpacked; (b) 2 workers,
unpacked; (c) 2 workers, packed into rows of max_length. tokens/s counts real (non-padding)
tokens over all workers with transformers' own counter and clock, between the first and the last
logged step (start-up and the first step left out); the non-padding share is the share of the
token slots the model computes that hold real tokens. The data is the curated fixture, each item
repeated ``--copies`` times under new ids.

Ray starts once; the three runs then go interleaved, --repeats rounds of a b c (jobs/benchlib.py),
each run from a fresh folder of its round, so that on a shared machine each ratio compares runs
of one round, not a quiet run with a busy one. One round of the default (SmolLM2, 72 examples)
takes about 10 minutes (estimated from the README's tokens/s). The LAST line is one JSON object
with the median over rounds of tokens_per_s (b), speedup_2_workers (b/a) and speedup_packing
(c/b), each ratio taken within its round; ``spread`` (for each ratio: min, max, relative spread
(max - min) / median, per-round values); nonpad_share_unpacked, nonpad_share_packed; ``runs`` (each run's median figures),
``rounds`` (every round's figures); the model and the device.

    python jobs/bench_train.py                       # SmolLM2-135M-Instruct on this machine
    python jobs/bench_train.py --model tiny-random-llama --copies 2 --repeats 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import shutil
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchlib  # noqa: E402  (jobs/, this script's folder)

from ec2er.adapters import TRAINING_RECORD  # noqa: E402
from ec2er.config import load_config  # noqa: E402
from ec2er.io import read_jsonl, write_jsonl  # noqa: E402
from ec2er.ray_utils import init_ray  # noqa: E402
from ec2er.schemas.facts import DEFAULT_MODEL, CuratedFiles  # noqa: E402
from ec2er.stage import StageInputs  # noqa: E402
from ec2er.training.config import TrainConfig  # noqa: E402
from ec2er.training.stage import STAGE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=REPO / "pipelines" / "train-tiny.yaml")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--data", type=Path, default=REPO / "tests" / "fixtures" / "curated",
                   help="curated folder whose train.jsonl is repeated")
    p.add_argument("--copies", type=int, default=4, help="times each item is repeated (new qids)")
    p.add_argument("--batch", type=int, default=4, help="rows per worker per step")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per example and per packed row (default: the recipe's)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL)")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "bench-train",
                   help="folder for the runs (emptied first; their logs stay for reading)")
    benchlib.add_repeats_argument(p)
    return p.parse_args()


def _repeated_data(source: Path, copies: int, dest: Path) -> Path:
    items = read_jsonl(source / CuratedFiles.TRAIN)
    dest.mkdir(parents=True, exist_ok=True)
    write_jsonl(dest / CuratedFiles.TRAIN, [{**item, "qid": f"{item['qid']}-c{c}"}
                                            for c in range(copies) for item in items])
    return dest


def _config(args: argparse.Namespace, root: Path, workers: int, packing: bool) -> TrainConfig:
    cpus = os.cpu_count() or 2
    length = {} if args.max_length is None else {"max_length": args.max_length}
    return load_config(args.config, TrainConfig, {**length,
        "model": args.model, "name": "bench", "registry": str(root / "registry"), "packing": packing,
        "optim.epochs": 1, "optim.max_steps": None, "optim.per_device_batch_size": 1 if packing else args.batch,
        "optim.gradient_accumulation": 1, "optim.effective_batch_size": None, "min_examples": 1,
        "logging_steps": 1, "ray.num_workers": workers, "ray.use_gpu": args.gpu,
        "ray.cpus_per_worker": 1 if args.gpu else max(1, cpus // workers),
        "ray.checkpoint_every_steps": 100000,  # only the final checkpoint: saving is not throughput
    })


def _run(args: argparse.Namespace, root: Path, data: Path, workers: int, packing: bool) -> dict:
    label = f"{workers}w-{'packed' if packing else 'unpacked'}"
    STAGE(_config(args, root, workers, packing), StageInputs(data=data), root / label)
    record = json.loads((root / label / TRAINING_RECORD).read_text())
    figures = {"tokens_per_s": record["tokens_per_s"], "nonpad_share": record["nonpad_share"],
               "steps": record["steps"], "tokens_seen": record["tokens_seen"], "fit_s": record["timings"]["fit_s"],
               "examples": record["data"]["train"]["kept"]}
    print(f"bench: {label}: {json.dumps(figures)}", flush=True)
    return figures


def _device(gpu: bool) -> str:
    if gpu:
        import torch

        return torch.cuda.get_device_name(0)
    return f"cpu: {os.cpu_count()} cores, {platform.processor() or platform.machine()}"


def main() -> None:
    args = _args()
    init_ray()
    time.sleep(20)  # Ray's own processes keep 2 cores busy for a while after start-up: not ours to time
    root = args.work
    shutil.rmtree(root, ignore_errors=True)  # every run starts fresh: no Ray run to continue
    data = _repeated_data(args.data, args.copies, root / "curated")

    def contender(workers: int, packing: bool):
        calls = itertools.count(1)  # its nth run is round n: each run in a fresh folder
        return lambda _round: _run(args, root / f"round-{next(calls)}", data, workers, packing)

    rounds = benchlib.run_rounds({"1_worker": contender(1, False), "2_workers": contender(2, False),
                                  "2_workers_packed": contender(2, True)}, args.repeats)
    print(json.dumps(_report(rounds, args)))


def _report(rounds: list[dict], args: argparse.Namespace) -> dict:
    def rate_ratio(numerator: str, denominator: str) -> list:
        return benchlib.per_round(rounds, lambda r: benchlib.ratio(r[numerator]["tokens_per_s"],
                                                                   r[denominator]["tokens_per_s"]))

    summary = benchlib.summarize({"speedup_2_workers": rate_ratio("2_workers", "1_worker"),
                                  "speedup_packing": rate_ratio("2_workers_packed", "2_workers")})
    print("\n".join(benchlib.describe(summary)), flush=True)
    runs = {name: benchlib.median_figures([r[name] for r in rounds]) for name in rounds[0]}
    one, two, packed = runs["1_worker"], runs["2_workers"], runs["2_workers_packed"]
    return {
        "model": args.model, "device": _device(args.gpu), "examples": two["examples"],
        "tokens_per_s": two["tokens_per_s"], "tokens_per_s_1_worker": one["tokens_per_s"],
        "tokens_per_s_2_workers_packed": packed["tokens_per_s"], **summary, "repeats": args.repeats,
        "nonpad_share_unpacked": two["nonpad_share"], "nonpad_share_packed": packed["nonpad_share"],
        "rows_per_worker_step": {"unpacked": args.batch, "packed": 1}, "runs": runs, "rounds": rounds,
    }


if __name__ == "__main__":  # Ray Train workers are started from this process
    main()
