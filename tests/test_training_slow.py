"""The training stage on Ray Train for real: 2 gloo CPU workers, a worker killed mid-run, DeepSpeed
ZeRO-2, the registry's versions, a driver killed mid-run and started again. (SmolLM2 trained until
it answers in the trained JSON format is in test_smollm2.py.)

DeepSpeed's CPU shared-memory op is not built: it serves only inference all-reduces
(ec2er.training.loop._skip_deepspeed_shm_op); the ZeRO-2 test checks no build of it starts."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ec2er.adapters import AdapterRegistry
from ec2er.cli import main
from ec2er.config import load_config
from ec2er.models import resolve_model
from ec2er.stage import StageInputs
from ec2er.training.config import TrainConfig
from ec2er.training.loop import FAULT_ENV
from ec2er.training.stage import STAGE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CURATED = REPO / "tests" / "fixtures" / "curated"
TINY_RECIPE = REPO / "pipelines" / "train-tiny-random.yaml"  # 12 steps, checkpoints at 4, 8, 12


def _config(recipe: Path, registry: Path, **overrides: object) -> TrainConfig:
    return load_config(recipe, TrainConfig, {"registry": str(registry), **overrides})


def _record(output: Path) -> dict:
    return json.loads((output / "training.json").read_text())


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="module")
def gloo_run(ray_local, registry, tmp_path_factory):
    """The tiny model on 2 gloo workers; rank 1 dies once at step 6, after the step-4 checkpoint."""
    output = tmp_path_factory.mktemp("gloo") / "train"
    marker = output.parent / "rank1-exited"
    os.environ[FAULT_ENV] = f"1:6:{marker}"
    try:
        summary = STAGE(_config(TINY_RECIPE, registry), StageInputs(data=CURATED), output)
    finally:
        del os.environ[FAULT_ENV]
    return summary, output, marker


@pytest.fixture(scope="module")
def zero2_run(ray_local, registry, gloo_run, tmp_path_factory):
    """The same recipe and data with DeepSpeed ZeRO-2, published into the same registry."""
    v1 = _digest(registry / "tiny-random-v1")
    output = tmp_path_factory.mktemp("zero2") / "train"
    config = _config(TINY_RECIPE, registry, deepspeed=str(REPO / "pipelines" / "deepspeed" / "zero2.json"),
                     merge=True)
    return STAGE(config, StageInputs(data=CURATED), output), output, v1


def test_training_loss_falls_on_two_gloo_workers(gloo_run):
    summary, output, _ = gloo_run
    record = _record(output)
    assert record["config"]["ray"]["num_workers"] == 2 and record["steps"] == 12
    assert record["loss"]["final"] < record["loss"]["first"]
    assert len(record["loss"]["val_curve"]) == 3 and record["tokens_seen"] > 0 and record["tokens_per_s"] > 0
    assert "loss" in summary.headline and summary.counts["examples"] == 18


def test_a_killed_worker_is_replaced_and_the_run_resumes_from_its_checkpoint(gloo_run):
    _, output, marker = gloo_run
    assert marker.read_text().strip() == "exited at step 6"
    record = _record(output)
    assert record["run"]["resumed_from_steps"] == [4]  # not 0: the step-4 checkpoint was restored
    assert record["steps"] == 12


def test_the_adapter_is_published_with_the_base_engines_load_and_its_tokenizer(gloo_run, registry, capsys):
    summary, _, _ = gloo_run
    assert summary.handoff.adapters == ["tiny-random-v1"]
    folder = AdapterRegistry(registry).path("tiny-random-v1")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == resolve_model("tiny-random-llama")
    assert (folder / "tokenizer.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "training.json").read_text())["base_model"] == "tiny-random-llama"


def test_zero2_publishes_v2_and_never_touches_v1(zero2_run, registry, capsys):
    summary, output, v1_before = zero2_run
    assert summary.handoff.adapters == ["tiny-random-v2"]
    assert _digest(registry / "tiny-random-v1") == v1_before
    assert AdapterRegistry(registry).names() == ["tiny-random-v1", "tiny-random-v2"]
    assert main(["adapters", "list", "--registry", str(registry)]) == 0
    listed = capsys.readouterr().out
    assert "tiny-random-v1" in listed and "tiny-random-v2" in listed
    record = _record(output)
    assert record["loss"]["final"] < record["loss"]["first"] and record["adapter_weights"]["nonzero_b"] > 0
    # every worker's ZeRO-2 optimizer shard reached the run's storage
    shards = glob.glob(str(output / "ray" / "*" / "checkpoint_*" / "checkpoint" / "global_step*" / "zero_pp_rank_*"))
    assert {Path(s).name.split("_mp_")[0] for s in shards} == {"zero_pp_rank_0", "zero_pp_rank_1"}
    # DeepSpeed's shared-memory op (inference all-reduces only) was neither built nor loaded
    logs = [(output / "logs" / f"worker-rank{r}.log").read_text() for r in (0, 1)]
    assert all(log.startswith(f"rank {r} of 2") for r, log in enumerate(logs)), logs
    assert not any("shm_comm" in log for log in logs), logs


def test_the_merged_model_computes_what_base_plus_adapter_computes(zero2_run, registry):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    summary, output, _ = zero2_run
    assert summary.files["merged"] == str(output / "merged")
    ids = torch.tensor([[1, 40, 41, 42, 43, 2]])
    base = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-random-llama"), dtype=torch.float32)
    with torch.no_grad():
        plain = base(ids).logits
        adapted = PeftModel.from_pretrained(base, str(registry / "tiny-random-v2")).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(output / "merged", dtype=torch.float32)(ids).logits
    assert torch.allclose(merged, adapted, atol=1e-4) and not torch.allclose(merged, plain, atol=1e-4)


def test_running_a_finished_run_again_publishes_nothing(gloo_run, zero2_run, registry):
    _, output, _ = gloo_run
    again = STAGE(_config(TINY_RECIPE, registry), StageInputs(data=CURATED), output)
    assert again.headline.startswith("already trained tiny-random-v1") and again.handoff.adapters == ["tiny-random-v1"]
    assert AdapterRegistry(registry).names() == ["tiny-random-v1", "tiny-random-v2"]


def _env() -> dict[str, str]:
    # the subprocess starts its own Ray (no RAY_ADDRESS), listening on 127.0.0.1 only
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled")
    env.pop("RAY_ADDRESS", None)
    env.pop(FAULT_ENV, None)
    return env


def test_a_killed_driver_started_again_continues_its_run(tmp_path):
    output = tmp_path / "train"
    cmd = [str(BIN / "ec2er"), "train", "--config", str(TINY_RECIPE), "--data", str(CURATED),
           "--output", str(output), "--set", f"registry={tmp_path / 'registry'}", "--set", "optim.max_steps=16",
           "--set", "ray.checkpoint_every_steps=4", "--set", "logging_steps=4",
           "--set", "ray.num_workers=1"]  # the driver's loss is the point: one worker (two: tests above)
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as log:
        first = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    snapshot = str(output / "ray" / "*" / "checkpoint_manager_snapshot.json")  # a checkpoint is committed
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and not glob.glob(snapshot):
        time.sleep(0.1)
    assert first.poll() is None, f"the first run ended before it could be killed:\n{first_log.read_text()[-3000:]}"
    os.kill(first.pid, signal.SIGKILL)  # the driver only
    first.wait()
    time.sleep(2)
    try:  # then whatever of its Ray is left, so CPUs are free
        os.killpg(first.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert not (output / "training.json").exists()
    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    record = _record(output)
    (resumed,) = record["run"]["resumed_from_steps"]
    assert 4 <= resumed < 16 and record["steps"] == 16
    assert f"resumed from the checkpoint of step {resumed}" in again.stdout
    assert record["loss"]["train_curve"][0][0] == 1  # the curve starts at the first run's first step
