"""Curation's reader checks (ec2er.curation.sense): each rule on hand-written items that fail it
and on the idioms of good items that must pass; the good items of tests/fixtures and of
test_curation's generator; the real EmoBench (read at run time, never stored); and a curation run
whose reader rejections land in rejects.jsonl, stats.json and the data card. All in-process, fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_curation import clean_items, write_lines

from ec2er.curation import quality
from ec2er.curation import sense as s
from ec2er.curation.config import CurateConfig, ValidateConfig
from ec2er.curation.pipeline import curate
from ec2er.io import read_jsonl
from ec2er.schemas import detect_task

FIXTURES = Path(__file__).parent / "fixtures"
CFG = ValidateConfig()
TURNS = ("I never told my sister about the loan, and now she keeps asking where the money went.",
         "It sounds like keeping that secret has been weighing on you for a long time, Mara.")


def ea(**changes) -> dict:
    item = {"qid": "ea-1", "language": "en", "category": "Personal-Self", "question type": "Action",
            "scenario": "Mara borrowed money from the savings she shares with her sister Ilse and spent it on "
                        "her own rent. Ilse has started asking where the money went.",
            "subject": "Mara", "choices": ["Tell Ilse the truth and offer a plan to pay it back",
                                           "Blame the bank for a mistake",
                                           "Avoid her sister until she stops asking",
                                           "Move the rest of the savings to her own account"],
            "label": "Tell Ilse the truth and offer a plan to pay it back",
            "explanation": "Owning up and offering repayment rebuilds the trust Mara broke with her sister.",
            "provenance": {"pipeline": "mads", "dialogue_id": "dialogue-mara", "turn_indices": [0],
                           "generator_model": "t", "prompt_version": "1"}}
    return item | changes


def codes(obj: dict, dialogue: s.DialogueText | None = None) -> set[str]:
    return {r.code for r in s.sense_reasons(obj, detect_task(obj), CFG, dialogue)}


# ---------------------------------------------------------------- one rule at a time

def test_single_word_option() -> None:
    assert s.option_single_word("furthermore")
    assert s.option_single_word("flechte")
    assert s.option_single_word('"Whatever."') is None  # a one-word reply is still a reply
    assert s.option_single_word("Apologise to her") is None


@pytest.mark.parametrize("option", ["Her hands", "The loss of the", "She wanted to tell him because",
                                    "of the and to", "Call him and"])
def test_fragment_options(option: str) -> None:
    assert s.option_fragment(option, CFG.option_min_words)


@pytest.mark.parametrize("option", [
    "Promise to keep the secret", "The loss of her dog", "She managed to buy the car she had dreamed of",
    "He doesn't know who the woman is", "Cut off contact for a while", "Find alternative travel arrangements",
    '"I know it\'s hard, but I\'m here for you"', '"Whatever."', '"Fine, do it."',
    "Ask Ilse's mother-in-law for help"])
def test_good_options_are_not_fragments(option: str) -> None:
    assert s.option_fragment(option, CFG.option_min_words) is None
    assert s.option_not_english(option, CFG.english_min_ascii, CFG.english_min_words) is None


def test_not_english() -> None:
    check = lambda o: s.option_not_english(o, CFG.english_min_ascii, CFG.english_min_words)  # noqa: E731
    assert check("Sie sollte ihrer Schwester sofort alles erzählen")  # ASCII enough, no English function word
    assert check("她应该告诉她的妹妹真相")
    assert check("Она должна сказать сестре правду")
    assert check("Talk to her сестра сейчас же немедленно")  # mostly Cyrillic letters
    assert check("Complaining won't change anything") is None
    assert check("Tell Zoë the truth about the café") is None  # a few accented letters are English too


def test_copy_of_a_turn() -> None:
    copy = lambda o: s.option_copies_turn(o, TURNS, CFG.copy_min_words, CFG.copy_similarity)  # noqa: E731
    assert copy("It sounds like keeping that secret has been weighing on you for a long time, Mara.")
    assert copy("keeping that secret has been weighing on you")  # half a turn, verbatim
    assert copy("It sounds like keeping the secret has been weighing on you for a long time")  # near-verbatim
    assert copy("Tell her sister the truth about the loan") is None  # a paraphrase of the content
    assert copy("the money went") is None  # too short to call a copy


@pytest.mark.parametrize("subject", ["Mara", "Ilse", "her sister", "Mara's sister", "Ilse' friend", "the bank clerk",
                                     "Mr Okafor", "Dr. Okafor", "my husband", "their parents", "she",
                                     "Mara's Coworkers", "Lin Lin"])
def test_people_are_subjects(subject: str) -> None:
    texts = ["Mara borrowed money from Ilse. Later Dr. Okafor and Lin Lin came by.", "Mr Okafor called."]
    assert s.subject_not_person(subject, texts) is None


@pytest.mark.parametrize("subject", ["Floating their hands", "the money", "furthermore", "Savings account",
                                     "Pablo", "Hope"])
def test_non_people_are_not_subjects(subject: str) -> None:
    # "Hope" is capitalized only at a sentence's start and in lower case elsewhere: a word, not a name
    texts = ["Floating their hands in the water, Mara waited. Savings account numbers were listed.",
             "Hope was all she had left; she had no hope of repaying the money."]
    assert s.subject_not_person(subject, texts)


def test_a_name_mentioned_mid_sentence_stays_a_name_even_if_also_a_word() -> None:
    texts = ["Mara called Hope on Sunday.", "Hope answered. There was little hope left."]
    assert s.subject_not_person("Hope", texts) is None


def test_template_explanations() -> None:
    template = lambda e, who="Mara": s.explanation_template(e, who, CFG.explanation_template_similarity)  # noqa: E731
    assert template("the reasoning to the correct answers")
    assert template("Why the best choice is best.")
    assert template("What is the most effective action for Mara?")
    assert template("the emotional reasoning that leads to the answers")
    assert template(ea()["explanation"]) is None
    assert template("Mara feels guilty because she spent money that was not only hers.") is None


def test_shared_explanations_need_different_answers() -> None:
    boiler = "This is the best option because it is the most effective."
    items = [ea(qid=f"q{i}", label=ea()["choices"][i], explanation=boiler) for i in range(3)]
    assert set(s.shared_explanations(items, 3)) == {0, 1, 2}
    assert s.shared_explanations(items[:2], 3) == {}  # two is not "many" by default
    same_answer = [ea(qid=f"q{i}", explanation=boiler) for i in range(3)]  # one item repeated: dedup's job
    assert s.shared_explanations(same_answer, 3) == {}
    # the subject's own words aside: "Mara ..." and "Ilse ..." are one template
    swapped = [ea(qid="a", explanation="Mara should do it."),
               ea(qid="b", subject="Ilse", explanation="Ilse should do it.", label=ea()["choices"][1]),
               ea(qid="c", explanation="Mara should do it.", label=ea()["choices"][2])]
    assert set(s.shared_explanations(swapped, 3)) == {0, 1, 2}


# ---------------------------------------------------------------- whole items

def test_the_demo_item_of_the_issue_fails_every_rule_it_should() -> None:
    bad = ea(subject="Floating their hands",
             choices=["furthermore", "flechte", TURNS[1], "Ask her sister to forgive the debt"], label=TURNS[1],
             explanation="why the best choice is best")
    dialogue = s.DialogueText(TURNS, "Mara, 34, shares savings with her sister.")
    assert codes(bad, dialogue) == {s.OPTION_SINGLE_WORD, s.OPTION_COPIES_TURN, s.SUBJECT_NOT_PERSON,
                                    s.EXPLANATION_TEMPLATE}
    # without its dialogue, no copy check
    assert codes(bad) == {s.OPTION_SINGLE_WORD, s.SUBJECT_NOT_PERSON, s.EXPLANATION_TEMPLATE}
    assert codes(ea(), dialogue) == set()


def test_a_name_only_in_the_dialogue_is_a_person_of_it() -> None:
    item = ea(subject="Mara's landlord Okoro", scenario=ea()["scenario"])
    assert s.SUBJECT_NOT_PERSON in codes(item)
    assert s.SUBJECT_NOT_PERSON not in codes(item, s.DialogueText(("Okoro wants the rent by Friday.",)))


def test_chinese_items_skip_the_english_rules() -> None:
    zh = [json.loads(x) for x in (FIXTURES / "items_emobench_layout.jsonl").read_text().splitlines()
          if json.loads(x)["language"] == "zh"]
    assert zh and all(codes(item) == set() for item in zh)


def _good_items() -> list[dict]:
    rows = [json.loads(x) for name in ("curated/train.jsonl", "curated/val.jsonl", "items_emobench_layout.jsonl")
            for x in (FIXTURES / name).read_text().splitlines()]
    eu, ea_ = clean_items(200, 200, seed=3)
    return rows + eu + ea_


def test_no_good_test_item_is_rejected() -> None:
    items = _good_items()
    wrong = {it["qid"]: codes(it) for it in items if codes(it)}
    assert not wrong
    assert s.shared_explanations(items, CFG.explanation_max_shared) == {}


@pytest.mark.emobench
def test_no_emobench_item_fails_a_reader_check_but_a_subject_missing_from_its_scenario(emobench_dir: Path) -> None:
    """EmoBench's own items are what good items look like; its one known slip (a subject spelled
    differently in its scenario) is the only kind of failure allowed."""
    rows = [json.loads(x) for name in ("EU.jsonl", "EA.jsonl") for x in (emobench_dir / name).open(encoding="utf-8")]
    assert len(rows) >= 800
    for row in rows:
        found = codes(row)
        assert found <= {s.SUBJECT_NOT_PERSON}, (row["qid"], found)
        if found:
            assert not quality.subject_in(row["subject"], row["scenario"]), row["qid"]


# ---------------------------------------------------------------- through curation

def test_curation_rejects_with_reasons_and_counts_each_rule(tmp_path: Path) -> None:
    eu, good = clean_items(4, 8, seed=5)
    bad = [dict(good[0], qid="ea-bad-subject", subject="Floating their hands"),
           dict(good[1], qid="ea-bad-options", choices=[*good[1]["choices"][:2], "furthermore", good[1]["label"]]),
           dict(good[2], qid="ea-copy", choices=[*good[2]["choices"][:3], TURNS[0]], provenance=ea()["provenance"])]
    dialogue = {"dialogue_id": ea()["provenance"]["dialogue_id"], "pipeline": "concise", "persona_id": "p",
                "background": "b", "turns": [{"index": 0, "speaker": "CLIENT", "text": TURNS[0]}]}
    for name, rows in (("eu.jsonl", eu), ("ea.jsonl", good[3:] + bad), ("dialogues.jsonl", [dialogue])):
        write_lines(tmp_path / name, rows)
    # the demo's recipe (quality only flags): the reader checks still reject
    cfg = CurateConfig.model_validate({"checks": {"quality": "flag"}, "balance": {"factor": 100}})
    stats = curate(tmp_path, tmp_path / "out", cfg)
    rejects = {r["qid"]: {x["code"] for x in r["reasons"]} for r in read_jsonl(tmp_path / "out" / "rejects.jsonl")}
    assert rejects == {"ea-bad-subject": {s.SUBJECT_NOT_PERSON}, "ea-bad-options": {s.OPTION_SINGLE_WORD},
                       "ea-copy": {s.OPTION_COPIES_TURN}}
    rules = stats["sense"]["rules"]
    assert {c: r["items"] for c, r in rules.items() if r["items"]} == {
        s.SUBJECT_NOT_PERSON: 1, s.OPTION_SINGLE_WORD: 1, s.OPTION_COPIES_TURN: 1}
    assert stats["sense"]["with_dialogue"] == 1 and stats["sense"]["without_dialogue"] == len(eu) + len(good[3:]) + 2
    assert "skipped for 11 items" in stats["sense"]["note"]
    card = (tmp_path / "out" / "DATACARD.md").read_text()
    assert "## Reader checks" in card and f"| {s.OPTION_COPIES_TURN} |" in card and "skipped for 11 items" in card


def test_skip_mode_runs_no_reader_check(tmp_path: Path) -> None:
    _, good = clean_items(0, 4, seed=5)
    write_lines(tmp_path / "ea.jsonl", [dict(good[0], subject="Floating their hands"), *good[1:]])
    cfg = CurateConfig.model_validate({"checks": {"quality": "skip", "sense": "skip"}, "balance": {"factor": 100}})
    stats = curate(tmp_path, tmp_path / "out", cfg)
    assert stats["counts"]["rejected"] == 0 and stats["sense"]["note"].startswith("reader checks skipped")
