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
    assert err[1] == (f"{bad}:3: gold_not_in_choices: emotion_label 'Glee' is not among emotion_choices "
                      "(and 1 more)")
    assert err[2].startswith(f"{bad}:4: category_not_in_taxonomy: question type: Input should be 'Action' or 'Response'")
    assert err[3] == f"{bad}:5: expected a JSON object, got list"
    assert err[4] == f"{bad}:6: schema_invalid: cannot tell EU from EA: no 'emotion_choices' or 'choices' field"


def test_validate_and_curation_share_one_definition_of_a_valid_item(tmp_path, capsys):
    """An EA item with 5 choices and an EU item with a repeated choice parse as items, but no
    valid item looks like that: `ec2er validate` refuses them with curation's own reason codes."""
    from ec2er.curation.config import ValidateConfig
    from ec2er.curation.quality import validate_item

    good = FIXTURE.read_text().splitlines()
    ea = json.loads(good[2])
    ea["choices"] = ea["choices"] + ["Walk away and say nothing at all"]
    eu = json.loads(good[0])
    eu["emotion_choices"][1] = eu["emotion_choices"][2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ea) + "\n" + json.dumps(eu) + "\n")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{bad}:1: option_count: choices: 5 options, expected 4"
    assert err[1] == f"{bad}:2: duplicate_options: emotion_choices: repeated options"
    for obj, code in ((ea, "option_count"), (eu, "duplicate_options")):
        item, reasons = validate_item(obj, ValidateConfig())
        assert item is None and code in {r.code for r in reasons}


def test_unreadable_files_are_one_line_errors_naming_them(tmp_path, capsys):
    binary = tmp_path / "blob.jsonl"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(FIXTURE.read_bytes().splitlines()[0] + b"\n" + '{"qid": "caf\xe9"}'.encode("latin-1") + b"\n")
    assert main(["validate", str(binary)]) == 2
    assert capsys.readouterr().err == f"ec2er: error: {binary}: not a text file (binary data)\n"
    assert main(["validate", str(latin)]) == 1
    assert f"{latin}:2: not UTF-8 text" in capsys.readouterr().err
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b"seed: 1\nname: caf\xe9\n")
    assert main(["evaluate", "--config", str(recipe)]) == 2
    assert capsys.readouterr().err.startswith(f"ec2er: error: {recipe}:2: not UTF-8 text")
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: a\nseed: 1\nname: b\n")
    assert main(["evaluate", "--config", str(twice)]) == 2
    assert capsys.readouterr().err.startswith(f"ec2er: error: {twice}:3: invalid YAML (duplicate key 'name')")


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
    """Every row passes but one: zh EU qid 74 lists 7 cause options, mixing two names of the same
    person (a translation slip in EmoBench itself; its en twin has 6), outside EmoBench's 4-or-6."""
    assert main(["validate", str(emobench_dir / "EU.jsonl"), str(emobench_dir / "EA.jsonl")]) == 1
    out = capsys.readouterr()
    assert "799 valid, 1 invalid" in out.out
    (line,) = [x for x in out.err.splitlines() if x]
    row = json.loads((emobench_dir / "EU.jsonl").read_text().splitlines()[int(line.split(":")[1]) - 1])
    assert (row["language"], row["qid"]) == ("zh", "74")
    assert line.endswith("option_count: cause_choices: 7 options, expected 4-6")
