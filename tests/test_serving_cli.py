"""``ec2er serve`` end to end: the issue's demo (embedded SmolLM2 and two registry adapters,
answered through the official ``openai`` client), its console, and a clean SIGTERM shutdown.
A module of its own so that it starts after tests/test_serving.py's server has stopped."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EC2ER = [sys.executable, "-m", "ec2er.cli"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.mark.slow
def test_demo_serves_smollm2_and_two_adapters_then_stops_cleanly_on_sigterm(smollm2_model, tmp_path):
    import openai
    import psutil

    from ec2er.models.random_lora import publish_stand_ins

    port = _free_port()
    publish_stand_ins(tmp_path / "registry", "smollm2-135m-instruct", 2)
    proc = subprocess.Popen(
        [*EC2ER, "serve", "--config", "serve/demo.yaml", "--port", str(port), "--log-dir", str(tmp_path / "logs"),
         "--set", f"registry={tmp_path / 'registry'}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"})
    try:
        ready = _read_line(proc, timeout=240)
        assert ready.startswith(f"ec2er serve: http://127.0.0.1:{port}/v1 serves smollm2-135m-instruct and "
                                "2 registry adapter(s)"), ready
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        models = [m.id for m in client.models.list()]
        assert models == ["smollm2-135m-instruct", "smollm2-135m-instruct-random-1-v1",
                          "smollm2-135m-instruct-random-2-v1"]
        answers = {m: client.chat.completions.create(
            model=m, messages=[{"role": "user", "content": "Name one emotion."}], max_tokens=16,
            temperature=0.0).choices[0].message.content for m in models}
        assert all(answers.values()) and len(set(answers.values())) == 3, answers
        family = psutil.Process(proc.pid).children(recursive=True)  # Ray, the replica, the engine core
        assert len(family) > 3
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "ec2er serve: stopped"
    assert "vLLM" in (tmp_path / "logs" / f"serve-{port}.log").read_text()  # the chatter went to the log
    _, alive = psutil.wait_procs(family, timeout=30)
    assert alive == [], [p.cmdline()[:3] for p in alive]
