"""The chain as a list of stages it does not know: declared handoffs wired to inputs, every recipe
checked before the first stage starts, one writer per output folder, the chain's shared settings.
None of these starts Ray or an engine."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ec2er.cli import main
from ec2er.config import StrictModel
from ec2er.errors import ConfigError, Ec2erError
from ec2er.stage import Endpoint, Handoff, Promise, ServedBaseModel, Stage, StageInputs, StageSummary

REPO = Path(__file__).resolve().parents[1]


class Knob(StrictModel):
    value: int = 0
    registry: Path = Path("nowhere")


def _fake_chain(seen: dict[str, Any]) -> list[Stage[Any]]:
    """Three stages the chain has never heard of: a maker hands on a folder and an adapter, a
    server an endpoint, a reader records what it was given."""

    def make(config: Knob, inputs: StageInputs, output: Path) -> StageSummary:
        output.mkdir(parents=True, exist_ok=True)
        return StageSummary(stage="make", output=str(output), headline="made", highlights=["made: yes"],
                            handoff=Handoff(data=str(output), heldout=str(output / "held.jsonl"),
                                            adapters=[f"fam-v{config.value}"]))

    @contextlib.contextmanager
    def serve(config: Knob, inputs: StageInputs, output: Path):
        seen["serve_registry"] = config.registry
        yield StageSummary(stage="serve", output=str(output), headline="up",
                           handoff=Handoff(endpoint=Endpoint(url="http://x/v1", bases=[ServedBaseModel(model="m", served_name="m")])))
        seen["served_until_end"] = "read" in seen

    def read(config: Knob, inputs: StageInputs, output: Path) -> StageSummary:
        seen["read"] = inputs
        seen["read_registry"] = config.registry
        return StageSummary(stage="read", output=str(output), headline="read", highlights=["read: done"])

    def no_unknown_family(config: Knob, promised: Promise) -> None:
        if config.value == 13:
            raise ConfigError("value: 13 is unlucky")
        seen.setdefault("promised", []).append(promised)

    return [Stage(name="make", help="make", config_model=Knob, run=make, config_required=False,
                  promises=lambda c: Promise(endpoint=None)),
            Stage(name="serve", help="serve", config_model=Knob, open=serve, config_required=False,
                  promises=lambda c: Promise(endpoint=Endpoint(url="", bases=[ServedBaseModel(model="m", served_name="m")]))),
            Stage(name="read", help="read", config_model=Knob, run=read, config_required=False,
                  check=no_unknown_family)]


@pytest.fixture
def fake_chain(monkeypatch, tmp_path):
    import ec2er.run as run

    seen: dict[str, Any] = {}
    monkeypatch.setattr(run, "chain", lambda: _fake_chain(seen))
    monkeypatch.setattr(run, "RunConfig", run._run_config_model())
    recipe = tmp_path / "knob.yaml"
    recipe.write_text("value: 1\n")
    return run, seen, recipe


def _run_args(recipe: Path, out: Path, *sets: str) -> list[str]:
    chain_recipe = out.parent / "chain.yaml"
    chain_recipe.write_text(textwrap.dedent(f"""\
        registry: {out.parent / 'shared-registry'}
        make: {{config: {recipe}}}
        serve: {{config: {recipe}}}
        read: {{config: {recipe}}}
    """))
    return ["run", "--config", str(chain_recipe), "--output", str(out), "--no-progress", *sets]


def test_the_chain_wires_declared_handoffs_of_stages_it_does_not_know(fake_chain, tmp_path, capsys):
    run, seen, recipe = fake_chain
    out = tmp_path / "run"
    assert main(_run_args(recipe, out)) == 0
    inputs = seen["read"]
    assert inputs.data == out / "make" and inputs.adapters == ["fam-v1"]
    assert inputs.benchmark == str(out / "make" / "held.jsonl")  # no benchmark: the held-out split
    assert inputs.endpoint is not None and inputs.endpoint.url == "http://x/v1"
    assert seen["served_until_end"] is True  # the server stayed up while the later stage ran
    # the chain's one registry setting reached every stage whose recipe has a registry
    assert seen["serve_registry"] == seen["read_registry"] == tmp_path / "shared-registry"
    printed = capsys.readouterr().out
    assert printed.index("made: yes") < printed.index("read: done")  # each stage's own highlights
    assert f"ec2er view {out}" in printed


def test_a_bad_later_recipe_is_found_before_the_first_stage_runs(fake_chain, tmp_path, capsys):
    run, seen, recipe = fake_chain
    out = tmp_path / "run"
    assert main(_run_args(recipe, out, "--set", "read.set={value: 13}")) == 2
    err = capsys.readouterr().err
    assert "stage read failed before the chain started: value: 13 is unlucky" in err
    assert not (out / "make").exists()  # nothing ran
    assert main(_run_args(recipe, out, "--set", "read.set={valeu: 2}")) == 2
    assert "valeu: unknown key" in capsys.readouterr().err


def test_a_serving_stage_takes_one_recipe(fake_chain, tmp_path, capsys):
    run, _, recipe = fake_chain
    out = tmp_path / "run"
    args = _run_args(recipe, out)
    chain_recipe = Path(args[2])
    chain_recipe.write_text(chain_recipe.read_text().replace(f"serve: {{config: {recipe}}}",
                                                             f"serve: [{{config: {recipe}}}, {{config: {recipe}}}]"))
    assert main(args) == 2
    assert "stage serve: give one recipe" in capsys.readouterr().err


def _tiny_random_chain(tmp_path: Path, adapters: list[str]) -> Path:
    """pipelines/run-tiny-random.yaml with evaluation naming ``adapters``."""
    import yaml

    recipe = yaml.safe_load((REPO / "pipelines/run-tiny-random.yaml").read_text())
    recipe["evaluate"]["set"]["models.0.adapters"] = adapters
    recipe = {k: ({**v, "config": str(REPO / v["config"])} if isinstance(v, dict) and "config" in v else v)
              for k, v in recipe.items()}
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_the_shipped_chain_checks_evaluation_before_generation(tmp_path, capsys):
    """An evaluation that names an adapter nobody has, and that training will not publish,
    is refused before generation starts (it used to fail after generation had run)."""
    out = tmp_path / "run"
    code = main(["run", "--config", str(_tiny_random_chain(tmp_path, ["ghost-v3"])), "--output", str(out),
                 "--set", f"registry={tmp_path / 'adapters'}", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "stage evaluate failed before the chain started" in err and "'ghost-v3' is not in the registry" in err
    assert not (out / "generate").exists()


def test_training_publishes_what_evaluation_names(tmp_path):
    """The adapter family training will publish is accepted by evaluation's check."""
    import ec2er.run as run
    from ec2er.config import load_config

    cfg = load_config(_tiny_random_chain(tmp_path, ["tiny-random-v7"]), run.RunConfig,
                      {"registry": str(tmp_path / "adapters")})
    steps = run.plan_chain(cfg, tmp_path / "run")
    assert [s.key for s in steps] == ["generate", "curate", "train", "serve", "evaluate"]
    assert all(s.config.registry == tmp_path / "adapters" for s in steps if hasattr(s.config, "registry"))


def _hold(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder`` as a run's output until its stdin closes."""
    code = ("import sys; from ec2er.io import output_lock\n"
            f"with output_lock({str(folder)!r}):\n    print('held', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_two_runs_into_one_folder_do_not_both_proceed(tmp_path, capsys):
    from ec2er.io import output_lock

    out = tmp_path / "train"
    holder = _hold(out)
    try:
        with pytest.raises(Ec2erError, match=f"{out}: another ec2er run is writing here \\(pid {holder.pid}"):
            with output_lock(out):
                pass
        # the CLI of a stage: one line, non-zero, before anything starts
        assert main(["train", "--config", str(REPO / "pipelines/train-tiny-random.yaml"),
                     "--data", str(REPO / "tests/fixtures/curated"), "--output", str(out), "--no-progress"]) == 2
        assert "another ec2er run is writing here" in capsys.readouterr().err
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    with output_lock(out), output_lock(out):  # free again, and a process may nest its own hold
        pass


def test_a_registry_that_cannot_take_the_adapter_is_found_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for registry in (blocker, blocker / "adapters"):
        assert main(["train", "--config", str(REPO / "pipelines/train-tiny-random.yaml"),
                     "--data", str(REPO / "tests/fixtures/curated"), "--output", str(tmp_path / "t"),
                     "--set", f"registry={registry}", "--no-progress"]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("ec2er: error: registry") and "is a file, not a folder" in line, line


def test_an_unknown_base_model_in_training_is_named_in_seconds(tmp_path, capsys, monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    assert main(["train", "--config", str(REPO / "pipelines/train-tiny-random.yaml"),
                 "--data", str(REPO / "tests/fixtures/curated"), "--output", str(tmp_path / "t"),
                 "--set", "model=no-such/model-xyz", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no-such/model-xyz: unknown model" in err
    assert time.monotonic() - start < 20


def test_a_run_that_fails_at_its_start_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "new-output"
    assert main(["train", "--config", str(REPO / "pipelines/train-tiny-random.yaml"),
                 "--data", str(tmp_path / "missing"), "--output", str(out), "--no-progress"]) == 2
    capsys.readouterr()
    assert not out.exists()


def test_a_benchmark_folder_without_one_task_stops_the_chain_before_it_starts(tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "EU.jsonl").write_text("")
    out = tmp_path / "run"
    assert main(["run", "--config", str(REPO / "pipelines/run-tiny-random.yaml"), "--output", str(out),
                 "--set", f"benchmark={bench}", "--set", f"registry={tmp_path / 'adapters'}", "--no-progress"]) == 2
    assert "no EA.jsonl" in capsys.readouterr().err
    assert not (out / "generate").exists()
