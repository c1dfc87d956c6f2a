"""The ec2er command line: help everywhere, one-line errors, `validate`, `models`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ec2er.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "items_emobench_layout.jsonl"
SUBCOMMANDS = ("generate", "curate", "train", "serve", "evaluate", "run", "models", "validate")


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "ec2er.cli", "--help"], capture_output=True, text=True, check=True)
    for name in SUBCOMMANDS:
        assert f"    {name}" in out.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ec2er " + name)


@pytest.mark.parametrize("name", ["train", "serve"])
def test_unbuilt_stages_say_so_honestly(name, capsys):
    assert main([name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ec2er: error: ec2er {name}: not built yet") and err.count("\n") == 1


def test_validate_passes_on_a_valid_file(capsys):
    assert main(["validate", str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "EU en: 1 valid" in out and "EA en: 2 valid" in out and "4 valid, 0 invalid" in out


def test_validate_names_file_line_and_field_of_each_bad_line(tmp_path, capsys):
    good = FIXTURE.read_text().splitlines()
    eu = json.loads(good[0])
    eu["emotion_label"] = "Glee"
    ea = json.loads(good[2])
    ea["question type"] = "Feeling"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([good[1], '{"qid": "1", oops', json.dumps(eu), json.dumps(ea), "[1, 2]", '{"qid": "z"}']) + "\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{bad}:2: invalid JSON")
    assert err[1] == f"{bad}:3: EU emotion_label 'Glee' is not among the choices"
    assert err[2].startswith(f"{bad}:4: EA question type: Input should be 'Action' or 'Response'")
    assert err[3] == f"{bad}:5: expected a JSON object, got list"
    assert err[4] == f"{bad}:6: cannot tell EU from EA: no 'emotion_choices' or 'choices' field"


def test_missing_file_is_one_line_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.jsonl")]) == 2
    assert capsys.readouterr().err == f"ec2er: error: {tmp_path / 'nope.jsonl'}: no such file\n"


def test_models_list_and_unknown_model(capsys):
    assert main(["models", "list"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out
    assert main(["models", "prepare", "gpt-17"]) == 2
    assert "unknown embedded model 'gpt-17'" in capsys.readouterr().err


@pytest.mark.emobench
def test_validate_accepts_the_real_emobench_files(emobench_dir, capsys):
    assert main(["validate", str(emobench_dir / "EU.jsonl"), str(emobench_dir / "EA.jsonl")]) == 0
    assert "800 valid, 0 invalid" in capsys.readouterr().out
