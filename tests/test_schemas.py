"""Schemas: EmoBench's exact layout, round-trips, consistency rules, the training format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ec2er.io import dumps
from ec2er.schemas import (
    EA_FIELDS,
    EU_FIELDS,
    EAItem,
    EUItem,
    SupervisorVerdict,
    detect_task,
    normalize_speaker,
    parse_item,
    training_examples,
)
from ec2er.schemas.taxonomy import ZH_EMOTIONS, emotion_atoms, unknown_emotion_atoms

FIXTURE = Path(__file__).parent / "fixtures" / "items_emobench_layout.jsonl"


def _lines(path: Path) -> list[str]:
    return [line.rstrip("\n") for line in path.open(encoding="utf-8") if line.strip()]


def test_fixture_rows_round_trip_to_identical_json():
    for line in _lines(FIXTURE):
        item = parse_item(json.loads(line))
        assert dumps(item) == line


def test_serialized_keys_follow_emobench_order_then_ours():
    rows = [json.loads(dumps(parse_item(json.loads(line)))) for line in _lines(FIXTURE)]
    assert tuple(rows[0]) == EU_FIELDS
    assert tuple(rows[2]) == EA_FIELDS
    assert list(rows[3])[: len(EA_FIELDS)] == list(EA_FIELDS)
    assert {"explanation", "provenance", "confidence"} <= set(rows[3])


def test_task_detection_and_ea_alias():
    eu, _, ea, _ = (json.loads(line) for line in _lines(FIXTURE))
    assert detect_task(eu).value == "EU" and detect_task(ea).value == "EA"
    item = parse_item(ea)
    assert isinstance(item, EAItem) and item.question_type.value == "Response"
    with pytest.raises(ValueError, match="cannot tell EU from EA"):
        detect_task({"qid": "1", "scenario": "x"})


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.update(emotion_label="Love"), "emotion_label 'Love' is not among the choices"),
    (lambda r: r.update(cause_label="nope"), "cause_label 'nope' is not among the choices"),
    (lambda r: r.update(finegrained_category="faux_pas"), "does not belong to coarse_category"),
    (lambda r: r.update(coarse_category="vibes"), "coarse_category"),
    (lambda r: r.update(language="fr"), "language"),
    (lambda r: r.update(surprise_field=1), "surprise_field"),
    (lambda r: r.pop("subject"), "subject"),
])
def test_invalid_eu_rows_are_rejected_with_the_field(mutate, message):
    row = json.loads(_lines(FIXTURE)[0])
    mutate(row)
    with pytest.raises(ValidationError, match=message):
        EUItem.model_validate(row)


def test_ea_gold_must_be_a_choice():
    row = json.loads(_lines(FIXTURE)[2])
    row["label"] = "Something else"
    with pytest.raises(ValidationError, match="label"):
        parse_item(row)


def test_taxonomy_atoms_and_chinese_labels():
    assert emotion_atoms("Pride & Disappointment") == ["Pride", "Disappointment"]
    assert unknown_emotion_atoms("Pride & Glee") == ["Glee"]
    assert unknown_emotion_atoms("开心 & 尴尬", "zh") == []
    assert set(ZH_EMOTIONS.values()) <= set(__import__("ec2er.schemas.taxonomy", fromlist=["x"]).EMOTIONS)


def test_training_examples_follow_the_paper_template():
    eu = parse_item(json.loads(_lines(FIXTURE)[0]))
    eu.explanation = "She is proud of finishing yet let down by the time."
    emotion, cause = training_examples(eu)
    assert emotion.prompt.startswith("<scenario>\n" + eu.scenario + "\n</scenario>")
    assert "A) Pride & Disappointment\nB) Anger" in emotion.prompt
    assert '"answer": "A/B/C/D/E/F"' in emotion.prompt
    assert json.loads(emotion.target) == {"reasoning": eu.explanation, "answer": "A"}
    assert "Why would Priya feel Pride & Disappointment" in cause.prompt
    ea = parse_item(json.loads(_lines(FIXTURE)[3]))
    (ex,) = training_examples(ea)
    assert json.loads(ex.target)["answer"] == "C" and "most effective action for Lena" in ex.prompt


def test_supervisor_verdict_all_met_and_schema():
    v = SupervisorVerdict(scenario_clear=True, emotions_present=True, causes_present=True,
                          dilemma_present=True, rich_enough=False, reason="thin")
    assert not v.all_met
    assert v.model_copy(update={"rich_enough": True}).all_met
    assert set(SupervisorVerdict.model_json_schema()["required"]) >= {"scenario_clear", "reason"}


@pytest.mark.parametrize(("tag", "speaker"), [("Patient:", "CLIENT"), ("[therapist]", "THERAPIST"),
                                              ("Supervisor", "SUPERVISOR"), ("counsellor", "THERAPIST")])
def test_speaker_tags_normalize(tag, speaker):
    assert normalize_speaker(tag).value == speaker


@pytest.mark.emobench
def test_every_emobench_row_loads_and_round_trips(emobench_dir):
    counts = {}
    for name in ("EU.jsonl", "EA.jsonl"):
        for line in _lines(emobench_dir / name):
            item = parse_item(json.loads(line))
            assert dumps(item) == line
            counts[(item.task.value, item.language.value)] = counts.get((item.task.value, item.language.value), 0) + 1
            if isinstance(item, EUItem):  # the taxonomy covers every label EmoBench uses
                for choice in item.emotion_choices:
                    assert unknown_emotion_atoms(choice, item.language) == []
    assert counts == {("EU", "en"): 200, ("EU", "zh"): 200, ("EA", "en"): 200, ("EA", "zh"): 200}
