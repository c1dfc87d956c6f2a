"""The embedded SmolLM2 end to end, its engine started once for all of it (each start of a vLLM
engine costs three processes' imports on 2 cores):

1. trained by pipelines/train-tiny.yaml (6 steps) into a registry that also holds a random
   stand-in adapter;
2. ``ec2er serve`` of the demo recipe (a key from a file) serving the base model and both adapters,
   answered through the official ``openai`` client;
3. pipelines/eval-tiny.yaml through that endpoint, on the base model and the trained adapter (vLLM
   LoRA requests in the server): the cot protocol renders training items in the paper's template,
   exactly as they were trained, and the adapter's free-decoded replies are the trained JSON answer
   and end there (the end-of-turn token was learned), where the base model's are not;
4. one dialogue of pipelines/mads-tiny.yaml through that endpoint: every agent's reply, the
   supervisor's JSON verdicts (structured outputs) and the extracted items are what the schemas
   allow;
5. the server stopped as `timeout`, systemd and Kubernetes stop a service: SIGTERM to its whole
   process group.

The generation and evaluation stages on vLLM engines inside Ray actors are tested on the tiny
random model (test_generation_slow.py, test_chain.py, test_engine_vllm.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_serving_cli import EC2ER, _read_line
from test_training_slow import CURATED, _config, _record

from ec2er.cli import main
from ec2er.io import free_port
from ec2er.stage import StageInputs
from ec2er.training.stage import STAGE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BASE = "smollm2-135m-instruct"
KEY = "k-123"


@pytest.fixture(scope="module")
def trained(ray_local, smollm2_model, tmp_path_factory) -> tuple[Path, str]:
    """SmolLM2 trained by train-tiny for 6 steps, published beside one random stand-in adapter."""
    from ec2er.models.random_lora import publish_stand_ins

    root = tmp_path_factory.mktemp("smollm2")
    registry = root / "registry"
    config = _config(REPO / "pipelines" / "train-tiny.yaml", registry,
                     **{"optim.max_steps": 6, "optim.learning_rate": 3e-3, "ray.checkpoint_every_steps": 6})
    summary = STAGE(config, StageInputs(data=CURATED), root / "train")
    record = _record(root / "train")
    assert record["loss"]["final"] < record["loss"]["first"]
    (name,) = summary.handoff.adapters
    publish_stand_ins(registry, BASE, 1)
    return registry, name


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """``ec2er serve --config serve/demo.yaml`` on the trained registry, its key from a file, in
    its own process group; yields (process, base url, key file, log folder, first console line)."""
    registry, _ = trained
    root = tmp_path_factory.mktemp("serve")
    port, key, logs = free_port(), root / "key", root / "logs"
    key.write_text(f"{KEY}\n")
    proc = subprocess.Popen(
        [*EC2ER, "serve", "--config", "serve/demo.yaml", "--port", str(port), "--log-dir", str(logs),
         "--set", f"registry={registry}", "--set", f"api_key_file={key}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ | {"HF_HUB_OFFLINE": "1"}, start_new_session=True)
    try:
        ready = _read_line(proc, timeout=240)
        yield proc, f"http://127.0.0.1:{port}/v1", key, logs, ready
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _engine(url: str, key: Path) -> dict:
    """The recipes' engine section for the endpoint (ec2er's OpenAI engine)."""
    return {"kind": "openai", "model": BASE, "base_url": url, "api_key_file": str(key), "max_model_len": 2048}


def test_the_demo_serves_the_base_model_and_both_adapters_to_the_openai_client(server, trained):
    import openai

    _, url, _, logs, ready = server
    _, name = trained
    port = url.split(":")[2].split("/")[0]
    assert ready.startswith(f"serve: {url} serves {BASE} and 2 registry adapter(s)"), ready
    assert f"logs: {logs / f'serve-{port}.log'}" in ready, ready
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=120)
    models = [m.id for m in client.models.list()]
    # the base model, then the registry's adapters oldest first (published in the same second:
    # by name), so either order here
    assert models[0] == BASE and sorted(models[1:]) == sorted([f"{BASE}-random-1-v1", name]), models
    answers = {m: client.chat.completions.create(
        model=m, messages=[{"role": "user", "content": "Name one emotion."}], max_tokens=16,
        temperature=0.0).choices[0].message.content for m in models}
    assert all(answers.values()) and len(set(answers.values())) == 3, answers
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()


def test_the_trained_adapter_answers_in_the_trained_format_through_the_endpoint(server, trained, tmp_path,
                                                                             monkeypatch):
    from ec2er.evaluation import runner
    from ec2er.evaluation.records import Prediction
    from ec2er.schemas.training import ReasonedAnswer

    _, url, key, _, _ = server
    registry, name = trained
    recipe = yaml.safe_load((REPO / "pipelines" / "eval-tiny.yaml").read_text())
    recipe["data"] |= {"benchmark": str(CURATED / "train.jsonl"), "limit": 1}
    recipe["models"][0] |= {"engine": _engine(url, key), "adapters": [name]}
    # cot only: schema-constrained answers are checked on the tiny model (test_evaluation.py)
    recipe |= {"registry": str(registry), "protocols": ["cot"], "bootstrap_samples": 100}
    path = tmp_path / "eval-tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "eval"
    assert main(["evaluate", "--config", str(path), "--output", str(out)]) == 0

    preds = [Prediction.model_validate_json(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    tuned = f"smollm2+{name}"
    assert {(p.model, p.protocol, p.task.value) for p in preds} == {
        (m, "cot", t) for m in ("smollm2", tuned) for t in ("EU", "EA")}

    def trained_answer(text: str) -> bool | None:
        """Whether the reply is the trained JSON answer and ends there; None: it does not open with it."""
        try:
            obj, end = json.JSONDecoder().raw_decode(text.lstrip())
            ReasonedAnswer.model_validate(obj)
        except ValueError:  # pydantic's ValidationError is one
            return None
        return end == len(text.strip())

    def replies(model: str) -> list[str]:  # EU asks twice (emotion, then cause): each reply alone
        return [text for p in preds if p.model == model and p.protocol == "cot"
                for text in (p.parts or {"answer": p.response}).values()]

    assert all(trained_answer(text) is True for text in replies(tuned)), replies(tuned)
    assert not all(trained_answer(text) is True for text in replies("smollm2")), "the base model already does"
    res = json.loads((out / "results.json").read_text())
    assert res[tuned]["cot"]["en"]["parse_failure_rate"] == 0.0 < res["smollm2"]["cot"]["en"]["parse_failure_rate"]
    table = (out / "table.md").read_text()
    assert tuned in table and "Δ vs base" in table
    assert (out / "chart.png").stat().st_size > 1000 and (out / "table.csv").is_file()
    # the run's own numbers survive an audit from its predictions and the benchmark
    assert main(["evaluate", "rescore", "--predictions", str(out / "predictions.jsonl"),
                 "--benchmark", str(CURATED / "train.jsonl"), "--output", str(tmp_path / "audit")]) == 0
    assert json.loads((tmp_path / "audit" / "results.json").read_text()) == res
    # a re-run into the same folder resumes: every part is there, nothing is asked again
    before = (out / "predictions.jsonl").read_text()
    monkeypatch.setattr(runner, "_predict_on_ray", lambda *a: pytest.fail("the resumed run predicted again"))
    assert main(["evaluate", "--config", str(path), "--output", str(out)]) == 0
    assert (out / "predictions.jsonl").read_text() == before


def test_the_mads_tiny_recipe_writes_valid_verdicts_and_items_through_the_endpoint(server, tmp_path, capsys):
    from ec2er.generation.outputs import export
    from ec2er.io import read_jsonl
    from ec2er.schemas.checks import check_files
    from ec2er.schemas.dialogue import SupervisorVerdict

    _, url, key, _, _ = server
    recipe = yaml.safe_load((REPO / "pipelines" / "mads-tiny.yaml").read_text())
    recipe |= {"engine": _engine(url, key) | {"max_reasks": 0}}
    path, out = tmp_path / "mads-tiny.yaml", tmp_path / "mads"
    path.write_text(yaml.safe_dump(recipe))
    # shorter background and turns than the recipe's and one EU item (decoding is most of this
    # test's time: about 8 tokens/s here while the other worker runs; an EA item is another 400
    # tokens, and the extraction of both kinds is the chain's and test_generation*.py's); the
    # supervisor and the extractor keep the room their JSON needs
    assert main(["generate", "--config", str(path), "--output", str(out), "--num-dialogues", "1", "--no-progress",
                 "--set", "items={eu_min: 1, eu_max: 1, ea_min: 0, ea_max: 0}",
                 "--set", "sampling.background.max_tokens=80", "--set", "sampling.turn.max_tokens=32"]) == 0
    assert "1 dialogues ok" in capsys.readouterr().out
    export(str(out), str(out))
    report = check_files([out / "eu.jsonl", out / "ea.jsonl"])
    assert report.ok, report.errors
    # a 135M model often repeats an option (such rows are recorded as failed, never written)
    (dialogue,) = read_jsonl(out / "metadata.jsonl")
    assert dialogue["model"] == BASE and dialogue["turns"] >= 4
    assert dialogue["verdicts"] and dialogue["supervisor_errors"] == [], dialogue
    for verdict in dialogue["verdicts"]:  # the supervisor's structured output
        SupervisorVerdict.model_validate(verdict)
    written = dialogue["eu"] + dialogue["ea"]
    assert written == sum(report.counts.values())
    assert dialogue["ea"] == 0 and written + len(dialogue["item_failures"]) == 1


def _family_with_the_engine_core(server, timeout_s: float = 10.0) -> list:
    """The server's descendants once vLLM's engine core is among them. Once (one suite run of
    many, 2026-12-07) a snapshot of them held no engine core although the server's log showed it
    serving a request a second before; the tree is read again for a few seconds, and a failure
    prints every descendant whole (pytest's own message cuts the list short)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while True:
        family, seen = server.children(recursive=True), []
        for p in family:
            try:
                seen.append(f"{p.pid} (parent {p.ppid()}): {p.name()} | {' '.join(p.cmdline())[:160]}")
            except psutil.Error as e:
                seen.append(f"{p.pid}: {type(e).__name__}")
        if any("EngineCore" in line for line in seen):
            return family
        if time.monotonic() > deadline:
            pytest.fail("no vLLM engine core among the server's processes:\n" + "\n".join(seen))
        time.sleep(0.5)


def test_a_sigterm_to_the_servers_group_stops_everything_within_seconds(server):
    """Ray's own processes must not die under the server's orderly stop; the server exits 0 within
    seconds and no process it started (Ray's, the replica's vLLM engine and worker) survives it."""
    import psutil

    proc, _, _, logs, _ = server
    family = _family_with_the_engine_core(psutil.Process(proc.pid))  # Ray, the replica, the engine core
    stopped_at = time.monotonic()
    os.killpg(proc.pid, signal.SIGTERM)  # the whole group, as `timeout` does
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - stopped_at
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1] == "serve: stopped"
    log = next(logs.glob("serve-*.log")).read_text()
    assert "vLLM" in log  # the chatter went to the log
    # our handler, not Ray's crash handler (which prints this and a stack, then SIGABRT)
    assert "SIGTERM received" not in err + log and "Traceback" not in err, err
    _, alive = psutil.wait_procs(family, timeout=5)
    assert alive == [], [(p.pid, p.name()) for p in alive]
    print(f"stopped in {took:.1f} s")
