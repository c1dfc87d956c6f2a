"""The training stage: a curated folder in, a published LoRA adapter (``<name>-v<N>``) out.

``<output>/`` holds ``training.json`` (what was trained, how, and how it went), ``adapter/`` (the
copy that was published), ``checkpoint/`` (the final checkpoint's small files), ``logs/``
(``worker-rank<R>.log``: everything each worker printed; the driver's logs go where
``ec2er.console`` sends them), ``ray/`` (Ray Train's run storage, unless the recipe puts it
elsewhere) and, with ``merge``, ``merged/``. Re-running a finished run into the same folder publishes nothing new;
re-running an interrupted one continues it (same Ray run name).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ec2er import console
from ec2er.adapters import TRAINING_RECORD, AdapterRegistry
from ec2er.errors import ConfigError
from ec2er.io import check_writable, write_json
from ec2er.stage import Stage, StageInputs, StageSummary
from ec2er.training.config import TrainConfig


def run_training(config: TrainConfig, inputs: StageInputs, output: Path) -> StageSummary:
    from ec2er.models import resolve_model
    from ec2er.training.data import ChatFormat, load_training_data
    from ec2er.training.export import merge_adapter

    start = time.perf_counter()
    data_dir = inputs.data or config.data
    if data_dir is None:
        raise ConfigError("ec2er train: no curated data: give --data or the recipe's 'data'")
    check_writable(output)
    folder = resolve_model(config.model)
    fmt = ChatFormat.load(folder)
    data = load_training_data(Path(data_dir), fmt, config.max_length, config.overlong, config.min_examples)
    run_name = config.ray.run_name or config.default_run_name(data.data_hash)
    record = finished_record(output, run_name, config.registry)
    verb = "already trained" if record is not None else "trained"
    if record is None:
        record = train_and_publish(config, data, fmt, folder, run_name, output)
    if config.merge and not record.get("merged"):
        record["merged"] = str(merge_adapter(folder, output / "adapter", output / "merged", config.bf16))
    record["timings"]["stage_s"] = round(time.perf_counter() - start, 1)
    write_json(output / TRAINING_RECORD, record)
    return summarize(record, output, verb)


def train_and_publish(config: TrainConfig, data: Any, fmt: Any, folder: str, run_name: str,
                      output: Path) -> dict[str, Any]:
    """Run (or continue) the Ray Train run, export its final adapter, publish it; the record."""
    from ec2er.training.data import build_rows, nonpad_share
    from ec2er.training.export import export_adapter
    from ec2er.training.loop import TRAINER_STATE
    from ec2er.training.trainer import fit

    train_rows = build_rows(data.train.examples, config.packing, config.max_length)
    val_rows = build_rows(data.val.examples, config.packing, config.max_length) if data.val else []
    logs = (output / "logs").resolve()
    loop_config = {"config": config.model_dump(mode="json", exclude={"deepspeed"}),
                   "deepspeed": config.deepspeed_config(), "train": train_rows, "val": val_rows,
                   "fill_id": fmt.fill_id, "folder": folder, "log_dir": str(logs), "verbose": console.verbose()}
    print(f"train: {run_name}: {len(data.train.examples)} examples in {len(train_rows)} rows, "
          f"{config.ray.num_workers} workers; logs in {logs}", flush=True)
    result = fit(config, loop_config, run_name, output, keep=output / "checkpoint")
    weights = export_adapter(result.checkpoint, output / "adapter", folder)
    state = json.loads((result.checkpoint / TRAINER_STATE).read_text("utf-8"))
    share = nonpad_share(train_rows, config.optim.per_device_batch_size, config.optim.seed)
    record = training_record(config, data, folder, result, state, weights, share)
    write_json(output / "adapter" / TRAINING_RECORD, record)
    entry = AdapterRegistry(config.registry).publish(config.name, output / "adapter", base_model=config.model,
                                                     summary=registry_summary(record))
    return {**record, "adapter": entry.name, "registry": str(config.registry)}


def finished_record(output: Path, run_name: str, registry: Path) -> dict[str, Any] | None:
    """The record of this very run, if it already finished and its adapter is published."""
    path = output / TRAINING_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text("utf-8"))
    published = AdapterRegistry(registry).find(record.get("adapter", ""))
    return record if record.get("run", {}).get("name") == run_name and published else None


def training_record(config: TrainConfig, data: Any, folder: str, result: Any, state: dict[str, Any],
                    weights: dict[str, int], share: float) -> dict[str, Any]:
    """``training.json``: base model, data hash, full config, losses, tokens, timings, run."""
    history = state.get("log_history", [])
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    return {
        "base_model": config.model, "base_model_folder": folder,
        "data": {"hash": data.data_hash, "files": data.source, "train": data.train.counts(),
                 "val": data.val.counts() if data.val else None},
        "config": config.model_dump(mode="json"),
        "run": {"name": result.run_name, "storage": result.storage,
                "resumed_from_steps": [h["resumed_from_step"] for h in history if "resumed_from_step" in h]},
        "loss": {"first": losses[0][1] if losses else None, "final": losses[-1][1] if losses else None,
                 "val_final": val[-1][1] if val else None, "train_curve": losses, "val_curve": val},
        "steps": state.get("global_step"), "epochs": state.get("epoch"),
        "effective_batch_size": config.effective_batch_size(),
        "tokens_seen": state.get("num_input_tokens_seen"), "tokens_per_s": tokens_per_second(history),
        "nonpad_share": round(share, 4), "adapter_weights": weights,
        "timings": {"fit_s": round(result.seconds, 1)},
    }


def tokens_per_second(history: list[dict[str, Any]]) -> float | None:
    """Steady training throughput (all workers) between the first and the last loss log of the
    last session: transformers' own token count and clock, without start-up and first step."""
    session = history
    for i, h in enumerate(history):
        if "resumed_from_step" in h:
            session = history[i + 1:]
    logs = [h for h in session if "loss" in h and "train_runtime" in h and "num_input_tokens_seen" in h]
    if len(logs) < 2 or logs[-1]["train_runtime"] <= logs[0]["train_runtime"]:
        return None
    tokens = logs[-1]["num_input_tokens_seen"] - logs[0]["num_input_tokens_seen"]
    return round(tokens / (logs[-1]["train_runtime"] - logs[0]["train_runtime"]), 1)


def registry_summary(record: dict[str, Any]) -> dict[str, Any]:
    return {"train_loss": record["loss"]["final"], "val_loss": record["loss"]["val_final"],
            "examples": record["data"]["train"]["kept"], "steps": record["steps"],
            "data_hash": record["data"]["hash"], "run": record["run"]["name"]}


def summarize(record: dict[str, Any], output: Path, verb: str = "trained") -> StageSummary:
    loss, train = record["loss"], record["data"]["train"]
    val = f" (val {loss['val_final']:.2f})" if loss.get("val_final") is not None else ""
    dropped = f", {train['dropped']} overlong dropped" if train["dropped"] else ""
    truncated = f", {train['truncated']} truncated" if train["truncated"] else ""
    epochs = record.get("epochs") or 0
    headline = (f"{verb} {record['adapter']} on {train['kept']} examples{dropped}{truncated}: "
                f"loss {_num(loss['first'])} → {_num(loss['final'])}{val}, {epochs:g} epochs, "
                f"{record['timings']['fit_s']:.0f} s")
    files = {"training": str(output / TRAINING_RECORD), "adapter": str(output / "adapter")}
    if record.get("merged"):
        files["merged"] = record["merged"]
    counts = {"examples": train["kept"], "overlong": train["overlong"], "steps": record["steps"],
              "tokens_seen": record["tokens_seen"], "tokens_per_s": record["tokens_per_s"],
              "nonpad_share": record["nonpad_share"], "train_loss": loss["final"], "val_loss": loss.get("val_final")}
    return StageSummary(stage="train", output=str(output), headline=headline, counts=counts, files=files,
                        adapters=[record["adapter"]])


def _num(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}"


def _merge_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--merge", action="store_true", help="also write a merged full model to <output>/merged "
                                                        "(the recipe's 'merge')")


STAGE = Stage(
    name="train",
    help="train a LoRA adapter on curated items (Ray Train + PEFT, DeepSpeed optional) and publish it",
    config_model=TrainConfig,
    run=run_training,
    data_flag="--data",
    data_help="curated folder (train.jsonl, val.jsonl); default: the recipe's 'data'",
    data_required=False,
    extra_arguments=_merge_flag,
    overrides_from_args=lambda args: {"merge": True} if getattr(args, "merge", False) else {},
)
