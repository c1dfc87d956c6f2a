"""``ec2er serve`` as a command: the checks made before anything starts, and a server that is not
ready in time. (The demo recipe served, answered through the official ``openai`` client and
stopped by a SIGTERM to its whole process group is in test_smollm2.py.)"""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ec2er.io import free_port

REPO = Path(__file__).resolve().parents[1]
EC2ER = [sys.executable, "-m", "ec2er.cli"]


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ec2er serve exited {proc.returncode}: {proc.stderr.read()}")
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            return proc.stdout.readline()
    raise AssertionError(f"no line from ec2er serve within {timeout:.0f} s")


def test_unknown_recipe_key_is_one_line_and_exit_2(tmp_path):
    recipe = tmp_path / "serve.yaml"
    recipe.write_text("model: smollm2-135m-instruct\nengine: {max_loras: 2, lora_slots: 3}\n")
    run = subprocess.run([*EC2ER, "serve", "--config", str(recipe)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == f"ec2er: error: {recipe}: engine.lora_slots: unknown key"


def _tiny_recipe(tmp_path: Path, tiny_model: str, registry: Path, extra: str = "") -> Path:
    recipe = tmp_path / "serve.yaml"
    recipe.write_text(f"model: {tiny_model}\nserved_model_name: tiny\nregistry: {registry}\n"
                      f"engine: {{max_model_len: 512, kv_cache_gib: 1, max_lora_rank: 8}}\n"
                      f"log_dir: {tmp_path / 'logs'}\n{extra}")
    return recipe


@pytest.mark.parametrize("extra, error", [
    ("", "registry {tmp}/typo: no such folder (ec2er train publishes adapters there; to serve the base "
         "model alone, create it empty)"),
    ("api_key: sk-123\n", "{tmp}/serve.yaml: api_key: a key written in a recipe travels in Ray Serve's "
                          "deployment arguments and into logs: put it in an environment variable and name it "
                          "(api_key_env: EC2ER_API_KEY), or in a file (api_key_file: /path/to/key)"),
    ("api_key_file: {tmp}/nokey\n", "{tmp}/nokey: cannot read the api key (No such file or directory)"),
])
def test_what_serve_checks_before_starting_is_one_line_and_exit_2(tiny_model, tmp_path, extra, error):
    recipe = _tiny_recipe(tmp_path, tiny_model, tmp_path / "typo", extra.format(tmp=tmp_path))
    if "typo" not in error:
        (tmp_path / "typo").mkdir()
    run = subprocess.run([*EC2ER, "serve", "--config", str(recipe), "--port", str(free_port())],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [f"ec2er: error: {error.format(tmp=tmp_path)}"]
    assert run.stdout == ""


@pytest.mark.slow
def test_a_server_not_ready_in_time_says_why_and_exits_2(tiny_model, tmp_path):
    """A replica that asks more CPUs than the machine has is never scheduled: after the recipe's
    ready_timeout_s, one line says so and what it asked for, and the command ends non-zero.
    (Serve gives a replica that never started its whole graceful shutdown time too: 1 s here.)"""
    (tmp_path / "registry").mkdir()
    recipe = _tiny_recipe(tmp_path, tiny_model, tmp_path / "registry", "ready_timeout_s: 5\nscaling: "
                          "{resources_per_replica: {cpus: 64}, graceful_shutdown_timeout_s: 1}\n")
    run = subprocess.run([*EC2ER, "serve", "--config", str(recipe), "--port", str(free_port())],
                         capture_output=True, text=True, cwd=REPO, timeout=240)
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ec2er: error: serving tiny was not ready within 5 s (ready_timeout_s): OpenAIServer ")
    assert "each replica asks 64 CPU" in last
