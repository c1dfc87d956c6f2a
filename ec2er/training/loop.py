"""The function every Ray Train worker runs: HF ``Trainer`` + a PEFT LoRA, reporting checkpoints
to Ray Train, resuming from the one Ray hands back after a failure or a driver restart.

The same code runs on CPU (gloo, ``use_cpu``) and GPU (NCCL, bf16); DeepSpeed ZeRO-2/3 come in
through ``TrainingArguments(deepspeed=dict)``, which transformers fills ("auto" values) and runs.
Each worker writes everything it prints (transformers, DeepSpeed, Ray) to its own log file
(``<output>/logs/worker-rank<R>.log``); rank 0 sends one line per logging step to the driver,
which prints it. Import this module lazily: it
imports transformers.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ec2er.training.config import TrainConfig

# Checkpoint folder name inside a Ray checkpoint, as RayTrainReportCallback writes it.
HF_CHECKPOINT = "checkpoint"
TRAINER_STATE = "trainer_state.json"  # transformers' file in every checkpoint
RESUMED_KEY = "resumed_from_step"  # log-history entry marking a resumed session
FAULT_ENV = "EC2ER_TRAIN_FAULT"  # test hook, "RANK:STEP:MARKER_FILE": that rank exits once at STEP


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``. ``loop_config``: the recipe (``config``, without
    its DeepSpeed path, whose file a cluster node may lack) and the ``deepspeed`` dict, the
    encoded ``train``/``val`` rows, the padding ``fill_id``, the base model ``folder``,
    ``log_dir`` (unless ``verbose``), the driver's ``progress`` queue and an optional ``fault`` hook."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    if not loop_config.get("verbose"):  # --verbose: the workers' output reaches the console
        redirect_output(Path(loop_config["log_dir"]) / f"worker-rank{rank}.log")
    config = TrainConfig.model_validate(loop_config["config"])
    import torch

    print(f"rank {rank} of {ray.train.get_context().get_world_size()}: torch threads {torch.get_num_threads()}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix=f"ec2er-train-rank{rank}-") as scratch:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            build_trainer(config, loop_config, Path(scratch), rank).train()
            return
        with checkpoint.as_directory() as folder:  # a download for remote storage: train inside
            resume = Path(folder) / HF_CHECKPOINT
            step = json.loads((resume / TRAINER_STATE).read_text())["global_step"]
            trainer = build_trainer(config, loop_config, Path(scratch), rank, resumed_from=step)
            trainer.train(resume_from_checkpoint=str(resume))


def redirect_output(path: Path) -> None:
    """Send this worker process's stdout and stderr (file descriptors 1 and 2, so C++ and
    subprocess chatter too) to ``path``. The worker process exists for this run only."""
    import sys

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:  # an output folder this node cannot write: keep Ray's own worker log
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def build_trainer(config: TrainConfig, loop_config: dict[str, Any], scratch: Path, rank: int,
                  resumed_from: int | None = None) -> Any:
    from ray.train.huggingface.transformers import prepare_trainer
    from transformers import AutoTokenizer, Trainer, set_seed

    from ec2er.models import resolve_model
    from ec2er.training.data import PadCollator

    # the driver's model folder, unless this node lacks it (a cluster): then resolve it here
    folder = loop_config["folder"] if os.path.isdir(loop_config["folder"]) else resolve_model(config.model)
    if loop_config["deepspeed"] and not config.ray.use_gpu:
        _skip_deepspeed_shm_op()  # before DeepSpeed's communication starts (the Trainer's arguments)
    # Arguments first: with ZeRO-3 they must exist before the model loads, so that
    # from_pretrained partitions the weights across workers as it reads them.
    args = training_arguments(config, scratch, bool(loop_config["val"]), loop_config["deepspeed"])
    if loop_config["deepspeed"]:
        import deepspeed

        # ZeRO-3's partitioned loading asks DeepSpeed for the world size before the Trainer
        # would set DeepSpeed's communication up: without this, it sees a world of one. It
        # wraps the process group Ray Train already made.
        deepspeed.init_distributed(dist_backend="nccl" if config.ray.use_gpu else "gloo")
    set_seed(config.optim.seed)  # the LoRA matrices' initialisation
    model = lora_model(config, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # transformers counts non-padding tokens as input_ids != pad_token_id when a batch has no
    # attention mask (packed rows): the fill id is that pad, distinct from every end-of-turn id.
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(loop_config["fill_id"])
    trainer = Trainer(model=model, args=args, train_dataset=loop_config["train"],
                      eval_dataset=loop_config["val"] or None, data_collator=PadCollator(loop_config["fill_id"]),
                      processing_class=tokenizer, callbacks=callbacks(loop_config, rank, resumed_from))
    return prepare_trainer(trainer)


def callbacks(loop_config: dict[str, Any], rank: int, resumed_from: int | None) -> list[Any]:
    from ray.train.huggingface.transformers import RayTrainReportCallback

    # Progress after the reporter: its on_save restarts the tokens/s clock once the report is done
    chosen: list[Any] = [RayTrainReportCallback(), Progress(loop_config.get("progress"), resumed_from)]
    if loop_config.get("fault"):
        chosen.append(ExitOnce(rank, **loop_config["fault"]))
    return chosen


def _skip_deepspeed_shm_op() -> None:
    """On CPU workers, DeepSpeed's torch backend compiles its shared-memory op (``deepspeed_shm_comm``) when
    it starts, about 45 s of 2 cores the first time per virtualenv path. The op serves only
    ``inference_all_reduce`` (tensor-parallel inference kernels); ZeRO's gradient and parameter
    collectives go through torch.distributed, so training never calls it. DeepSpeed builds it only
    when ``deepspeed.ops.__compatible_ops__`` says it can (``comm/torch.py: build_shm_op``); saying
    it cannot is the one switch it offers."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def training_arguments(config: TrainConfig, scratch: Path, has_eval: bool, deepspeed: dict[str, Any] | None) -> Any:
    from transformers import TrainingArguments

    o, every = config.optim, config.ray.checkpoint_every_steps
    return TrainingArguments(
        output_dir=str(scratch),
        per_device_train_batch_size=o.per_device_batch_size,
        per_device_eval_batch_size=o.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation(),
        learning_rate=o.learning_rate, lr_scheduler_type=o.lr_scheduler, warmup_steps=o.warmup(),
        num_train_epochs=o.epochs, max_steps=o.max_steps or -1,
        weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm, seed=o.seed, data_seed=o.seed,
        logging_steps=config.logging_steps, logging_first_step=True,
        # Ray keeps config.ray.num_to_keep checkpoints in storage; the scratch copy is only
        # the newest one, until RayTrainReportCallback has reported it.
        save_strategy="steps", save_steps=every, save_total_limit=1,
        eval_strategy="steps" if has_eval else "no", eval_steps=every,
        use_cpu=not config.ray.use_gpu, bf16=config.bf16,
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},  # LoRA: frozen inputs need no grads
        deepspeed=deepspeed,
        ddp_find_unused_parameters=False,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,  # rows are our own dicts, batched by PadCollator
        report_to="none", disable_tqdm=True,
    )


def lora_model(config: TrainConfig, folder: str) -> Any:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ec2er.models.families import lora_targets, read_model_config

    dtype = torch.bfloat16 if config.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    model.config.use_cache = False  # no KV cache while training (and none with checkpointing)
    targets = lora_targets(config.lora.target_modules, read_model_config(folder) or {}, config.model)
    lora = LoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


class Progress(TrainerCallback):
    """Rank 0's line per logging step (loss, learning rate, tokens/s over all workers), sent to
    the driver's queue. Also makes the last step log, so the final loss is always recorded, and
    marks a resumed session in the log history (so in every later checkpoint's
    trainer_state.json) with the step it resumed from."""

    def __init__(self, queue: Any = None, resumed_from: int | None = None):
        self.queue = queue
        self.resumed_from = resumed_from
        self.last: tuple[float, int] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = (time.perf_counter(), state.num_input_tokens_seen)
        if self.resumed_from is None:
            return
        state.log_history.append({RESUMED_KEY: self.resumed_from, "step": state.global_step})
        if state.is_world_process_zero:
            self.send(f"resumed from the checkpoint of step {self.resumed_from}")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        now, seen = time.perf_counter(), state.num_input_tokens_seen
        rate = None if self.last is None or now <= self.last[0] else (seen - self.last[1]) / (now - self.last[0])
        self.last = (now, seen)  # after an evaluation too: tokens/s measures training steps only
        line = progress_line(state.global_step, state.max_steps, logs, rate)
        if line:
            self.send(line)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = (time.perf_counter(), state.num_input_tokens_seen)  # saving is not training

    def send(self, line: str) -> None:
        if self.queue is None:
            print(line, flush=True)
            return
        try:
            self.queue.put_nowait(line)
        except Exception:  # noqa: BLE001 - progress must never stop training (driver gone, queue full)
            pass


def progress_line(step: int, max_steps: int, logs: dict[str, Any], tokens_per_s: float | None) -> str | None:
    if "loss" in logs:
        parts = [f"loss {logs['loss']:.4f}", f"lr {logs.get('learning_rate', 0.0):.2e}"]
        if tokens_per_s is not None:
            parts.append(f"{tokens_per_s:,.0f} tokens/s")
    elif "eval_loss" in logs:
        parts = [f"val loss {logs['eval_loss']:.4f}"]
    else:
        return None
    return f"step {step}/{max_steps}  " + "  ".join(parts)


class ExitOnce(TrainerCallback):
    """Test hook: rank ``rank`` dies (``os._exit``) at optimizer step ``step``, once per marker
    file. It first waits until Ray Train has committed the checkpoints reported so far: Ray's
    controller collects reports every couple of seconds, and a worker that dies sooner after a
    report takes that report with it (the run then resumes from the one before)."""

    def __init__(self, this_rank: int, rank: int, step: int, marker: str):
        self.armed = this_rank == rank
        self.step, self.marker = step, Path(marker)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.armed and state.global_step == self.step and not self.marker.exists():
            import ray.train

            ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
            self.marker.write_text(f"exited at step {self.step}\n")
            os._exit(1)


def parse_fault(value: str | None) -> dict[str, Any] | None:
    """``EC2ER_TRAIN_FAULT=RANK:STEP:MARKER`` -> the ExitOnce arguments (None when unset)."""
    if not value:
        return None
    rank, step, marker = value.split(":", 2)
    return {"rank": int(rank), "step": int(step), "marker": marker}
