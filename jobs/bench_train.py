"""Benchmark: training throughput of the training stage with 1 vs 2 Ray Train workers, and with vs
without packing, on the same model and data.

Three runs of ``ec2er train`` (the stage's own code: Ray Train, HF Trainer, LoRA) over one epoch of
the same curated items: (a) 1 worker with every CPU (or 1 GPU), rows unpacked; (b) 2 workers,
unpacked; (c) 2 workers, packed into rows of max_length. tokens/s counts real (non-padding)
tokens over all workers with transformers' own counter and clock, between the first and the last
logged step (start-up and the first step left out); the non-padding share is the share of the
token slots the model computes that hold real tokens. The data is the curated fixture, each item
repeated ``--copies`` times under new ids. The LAST line is one JSON object with tokens_per_s
(b), speedup_2_workers (b/a), speedup_packing (c/b), nonpad_share_unpacked, nonpad_share_packed,
the model and the device.

    python jobs/bench_train.py                       # SmolLM2-135M-Instruct on this machine
    python jobs/bench_train.py --model tiny-random-llama --copies 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import shutil
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ec2er.config import load_config  # noqa: E402
from ec2er.io import read_jsonl, write_jsonl  # noqa: E402
from ec2er.ray_utils import init_ray  # noqa: E402
from ec2er.schemas.facts import CuratedFiles  # noqa: E402
from ec2er.stage import StageInputs  # noqa: E402
from ec2er.training.config import TrainConfig  # noqa: E402
from ec2er.training.stage import STAGE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=REPO / "pipelines" / "train-tiny.yaml")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", type=Path, default=REPO / "tests" / "fixtures" / "curated",
                   help="curated folder whose train.jsonl is repeated")
    p.add_argument("--copies", type=int, default=4, help="times each item is repeated (new qids)")
    p.add_argument("--batch", type=int, default=4, help="rows per worker per step")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per example and per packed row (default: the recipe's)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker (NCCL)")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "bench-train",
                   help="folder for the runs (emptied first; their logs stay for reading)")
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
    record = json.loads((root / label / "training.json").read_text())
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
    one = _run(args, root, data, 1, packing=False)
    two = _run(args, root, data, 2, packing=False)
    packed = _run(args, root, data, 2, packing=True)
    print(json.dumps({
        "model": args.model, "device": _device(args.gpu), "examples": two["examples"],
        "tokens_per_s": two["tokens_per_s"], "tokens_per_s_1_worker": one["tokens_per_s"],
        "tokens_per_s_2_workers_packed": packed["tokens_per_s"],
        "speedup_2_workers": round(two["tokens_per_s"] / one["tokens_per_s"], 3),
        "speedup_packing": round(packed["tokens_per_s"] / two["tokens_per_s"], 3),
        "nonpad_share_unpacked": two["nonpad_share"], "nonpad_share_packed": packed["nonpad_share"],
        "rows_per_worker_step": {"unpacked": args.batch, "packed": 1},
        "runs": {"1_worker": one, "2_workers": two, "2_workers_packed": packed},
    }))


if __name__ == "__main__":  # Ray Train workers are started from this process
    main()
