"""The training stage: a curated folder in, a published LoRA adapter (``<name>-v<N>``) out.

``<output>/`` holds ``training.json`` (what was trained, how, and how it went), ``preview.jsonl``
(the first examples as training sees them, the tokens that carry loss marked), ``adapter/`` (the
copy that was published), ``checkpoint/`` (the final checkpoint's small files), ``logs/``
(``worker-rank<R>.log``: everything each worker printed; the driver's logs go where
``ec2er.console`` sends them), ``ray/`` (Ray Train's run storage, unless the recipe puts it
elsewhere) and, with ``merge``, ``merged/``. Re-running a finished run into the same folder publishes nothing new;
re-running an interrupted one continues it (same Ray run name).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ec2er import console
from ec2er.adapters import TRAINING_RECORD, AdapterRegistry
from ec2er.errors import ConfigError
from ec2er.io import check_writable, read_json, write_json
from ec2er.schemas.facts import LOGS, TrainingFiles
from ec2er.schemas.prompts import TEMPLATE_VERSION
from ec2er.stage import Handoff, Promise, PromisedAdapters, Stage, StageInputs, StageSummary
from ec2er.training.config import TrainConfig

PREVIEW_EXAMPLES = 5  # written to TrainingFiles.PREVIEW: what the first examples teach


def check_training(config: TrainConfig, promised: Promise | None = None) -> str:
    """The base model can be had (in seconds, not after a minute of hub retries), the LoRA's target
    modules are the model's, and the registry can take the adapter; returns the model's folder or
    hub id."""
    from ec2er.models import check_model
    from ec2er.models.families import lora_targets, missing_targets, read_model_config

    folder = check_model(config.model)
    model_config = read_model_config(folder)
    if model_config is not None:  # a hub id not downloaded yet: checked once it is, when training loads it
        targets = lora_targets(config.lora.target_modules, model_config, config.model)
        missing = missing_targets(folder, targets)
        if missing:
            raise ConfigError(f"{config.model}: lora.target_modules {', '.join(missing)} are not modules of "
                              f"this model ({model_config.get('model_type')}); try 'attention' or 'all-linear'")
    AdapterRegistry(config.registry).check_writable()
    return folder


def run_training(config: TrainConfig, inputs: StageInputs, output: Path) -> StageSummary:
    from ec2er.models import resolve_model
    from ec2er.training.data import ChatFormat, load_training_data
    from ec2er.training.export import merge_adapter

    start = time.perf_counter()
    data_dir = inputs.data or config.data
    if data_dir is None:
        raise ConfigError("ec2er train: no curated data: give --data or the recipe's 'data'")
    check_training(config)
    check_writable(output)
    folder = resolve_model(config.model)
    fmt = ChatFormat.load(folder)
    data = load_training_data(Path(data_dir), fmt, config.max_length, config.overlong, config.min_examples)
    write_preview(output / TrainingFiles.PREVIEW, fmt, data.train.examples[:PREVIEW_EXAMPLES])
    run_name = config.ray.run_name or config.default_run_name(data.data_hash)
    record = finished_record(output, run_name, config.registry)
    verb = "already trained" if record is not None else "trained"
    if record is None:
        record = train_and_publish(config, data, fmt, folder, run_name, output)
    if config.merge and not record.get("merged"):
        record["merged"] = str(merge_adapter(folder, output / TrainingFiles.ADAPTER, output / TrainingFiles.MERGED,
                                             config.bf16))
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
    logs = (output / LOGS).resolve()
    loop_config = {"config": config.model_dump(mode="json", exclude={"deepspeed"}),
                   "deepspeed": config.deepspeed_config(), "train": train_rows, "val": val_rows,
                   "fill_id": fmt.fill_id, "folder": folder, "log_dir": str(logs), "verbose": console.verbose()}
    print(f"train: {run_name}: {len(data.train.examples)} examples in {len(train_rows)} rows, "
          f"{config.ray.num_workers} workers; logs in {logs}", flush=True)
    result = fit(config, loop_config, run_name, output, keep=output / TrainingFiles.CHECKPOINT)
    weights = export_adapter(result.checkpoint, output / TrainingFiles.ADAPTER, folder)
    state = read_json(result.checkpoint / TRAINER_STATE)
    share = nonpad_share(train_rows, config.optim.per_device_batch_size, config.optim.seed)
    record = training_record(config, data, folder, result, state, weights, share)
    write_json(output / TrainingFiles.ADAPTER / TRAINING_RECORD, record)
    entry = AdapterRegistry(config.registry).publish(config.name, output / TrainingFiles.ADAPTER, base_model=config.model,
                                                     summary=registry_summary(record))
    return {**record, "adapter": entry.name, "registry": str(config.registry)}


def write_preview(path: Path, fmt: Any, examples: list[Any]) -> None:
    """``preview.jsonl``: what the first training examples teach, as exactly as training sees
    them: one line per example, ``{"example_id", "spans": [{"text", "trained"}]}``, the decoded
    tokens in order, grouped into runs that carry loss (``trained``) or not (the viewer marks
    them; ``ec2er train preview`` prints the same). Written from the encoded examples, after
    any truncation, so no model is needed to read it."""
    from itertools import groupby

    from ec2er.io import write_jsonl
    from ec2er.training.data import IGNORE

    def spans(example: Any) -> list[dict[str, Any]]:
        pairs = zip(example.input_ids, example.labels, strict=True)
        return [{"text": fmt.tokenizer.decode([i for i, _ in run], skip_special_tokens=False), "trained": trained}
                for trained, run in ((t, list(r)) for t, r in groupby(pairs, key=lambda p: p[1] != IGNORE))]

    write_jsonl(path, ({"example_id": e.example_id, "spans": spans(e)} for e in examples))


def finished_record(output: Path, run_name: str, registry: Path) -> dict[str, Any] | None:
    """The record of this very run, if it already finished and its adapter is published."""
    path = output / TRAINING_RECORD
    if not path.is_file():
        return None
    record = read_json(path)
    published = AdapterRegistry(registry).find(record.get("adapter", ""))
    return record if record.get("run", {}).get("name") == run_name and published else None


def training_record(config: TrainConfig, data: Any, folder: str, result: Any, state: dict[str, Any],
                    weights: dict[str, int], share: float) -> dict[str, Any]:
    """``training.json``: base model, data hash, full config, losses, tokens, timings, run."""
    history = state.get("log_history", [])
    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    return {
        "base_model": config.model, "base_model_folder": folder, "prompt_version": TEMPLATE_VERSION,
        "data": {"hash": data.data_hash, "files": data.source, "train": data.train.counts(),
                 "val": data.val.counts() if data.val else None},
        "config": config.model_dump(mode="json"),
        # each restart that resumed from a checkpoint (a lost worker or node, a driver re-run): the step
        "run": {"name": result.run_name, "storage": result.storage,
                "resumed_from_steps": (resumed := [h["resumed_from_step"] for h in history if "resumed_from_step" in h]),
                "restarts": len(resumed)},
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
    files = {"training": str(output / TRAINING_RECORD), "adapter": str(output / TrainingFiles.ADAPTER)}
    if record.get("merged"):
        files["merged"] = record["merged"]
    counts = {"examples": train["kept"], "overlong": train["overlong"], "steps": record["steps"],
              "tokens_seen": record["tokens_seen"], "tokens_per_s": record["tokens_per_s"],
              "nonpad_share": record["nonpad_share"], "train_loss": loss["final"], "val_loss": loss.get("val_final")}
    return StageSummary(stage="train", output=str(output), headline=headline, counts=counts, files=files,
                        highlights=[f"adapter:  {headline}"], handoff=Handoff(adapters=[record["adapter"]]))


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
    check=check_training,
    promises=lambda config: Promise(adapters={config.name: PromisedAdapters(registry=str(config.registry),
                                                                            base_model=config.model)}),
    extra_arguments=_merge_flag,
    overrides_from_args=lambda args: {"merge": True} if getattr(args, "merge", False) else {},
)
