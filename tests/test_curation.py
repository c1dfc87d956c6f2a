"""Curation stage: per-check units, and a full run on a fixture with planted defects.

Every item here is written by the test (our own words, EmoBench's layout); the real EmoBench is
read only through the ``emobench_dir`` fixture, to paraphrase one of its scenarios at run time.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
from scipy.stats import chisquare

from ec2er.cli import main as cli_main
from ec2er.curation import quality as v
from ec2er.curation.balance import over_quota
from ec2er.curation.config import CurateConfig, ValidateConfig
from ec2er.curation.lexicon import named_emotions
from ec2er.curation.pipeline import curate
from ec2er.curation.positions import balance_positions, position_stats
from ec2er.curation.preprocess import DialogueReport, clean_dialogue
from ec2er.curation.review import cohen_kappa
from ec2er.io import read_jsonl
from ec2er.schemas import EACategory, parse_item
from ec2er.schemas.taxonomy import EU_FINE_TO_COARSE

NAMES = ["Alma", "Bruno", "Chidi", "Dagny", "Emeka", "Farah", "Goran", "Hiroko", "Ines", "Jonas", "Kalani",
         "Lior", "Mirela", "Nuno", "Oksana", "Pavel", "Quentin", "Rosa", "Soren", "Tamsin", "Ulla", "Viktor",
         "Wanjiru", "Ximena", "Yusuf", "Zofia"]
PLACES = ["the harbour market", "a mountain hostel", "the night bus", "her cousin's bakery", "a chess club",
          "the county archive", "a rooftop garden", "the ferry terminal", "a pottery studio", "the old cinema",
          "a volunteer kitchen", "the swimming pool", "a train platform", "the village hall", "a bike workshop"]
OBJECTS = ["a violin", "the spare keys", "a handwritten letter", "a borrowed camera", "the wedding album",
           "a cracked phone", "the rent money", "a stack of invoices", "a knitted scarf", "the team trophy",
           "a jar of honey", "a concert ticket", "the library card", "a bag of oranges", "the garden shears"]
ACTS = ["rearranged the shelves", "missed the last connection", "painted the fence", "counted the coins twice",
        "called the landlord", "carried the boxes upstairs", "fixed the leaking tap", "read the contract aloud",
        "waited by the window", "sorted the old photographs", "cancelled the delivery", "rehearsed the speech",
        "followed the wrong map", "cleaned the van", "lent the ladder to a neighbour", "checked the weather"]
TIMES = ["on Tuesday morning", "late in the evening", "before the storm", "during the holidays",
         "after the meeting", "at dawn", "around noon", "the week before the exam", "on a rainy Sunday"]
EMOTION_SETS = ["Anger", "Joy", "Guilt", "Relief", "Pride", "Fear", "Sadness", "Surprise", "Gratitude",
                "Embarrassment", "Jealousy", "Curiosity"]
FINE = list(EU_FINE_TO_COARSE)
COARSE_FINE = {}
for fine, coarse in EU_FINE_TO_COARSE.items():
    COARSE_FINE.setdefault(coarse, fine)


def _sentence(rng: random.Random, name: str) -> str:
    return rng.choice([
        f"{name} went to {rng.choice(PLACES)} {rng.choice(TIMES)} and {rng.choice(ACTS)}.",
        f"{rng.choice(TIMES).capitalize()}, a friend of {name} brought {rng.choice(OBJECTS)} to {rng.choice(PLACES)}.",
        f"Nobody at {rng.choice(PLACES)} knew that {name} had {rng.choice(ACTS)}.",
        f"{name} kept {rng.choice(OBJECTS)} next to {rng.choice(OBJECTS)} {rng.choice(TIMES)}.",
        f"Later {name} {rng.choice(ACTS)} while someone else {rng.choice(ACTS)}.",
        f"The neighbour asked about {rng.choice(OBJECTS)}, and {name} {rng.choice(ACTS)} {rng.choice(TIMES)}.",
    ])


def scenario_text(rng: random.Random, name: str, sentences: int = 7) -> str:
    return " ".join(_sentence(rng, name) for _ in range(sentences))


def cause(rng: random.Random) -> str:
    return f"Someone {rng.choice(ACTS)} at {rng.choice(PLACES)} with {rng.choice(OBJECTS)}"


def _distinct(rng: random.Random, make, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        c = make(rng)
        if c not in out:
            out.append(c)
    return out


def eu_item(i: int, rng: random.Random) -> dict:
    name = NAMES[i % len(NAMES)]
    coarse = list(COARSE_FINE)[i % 4]
    gold = rng.choice(EMOTION_SETS)
    emotions = [gold] + rng.sample([e for e in EMOTION_SETS if e != gold], 5)
    rng.shuffle(emotions)
    causes = _distinct(rng, cause, 4)
    scenario = scenario_text(rng, name)
    return {"qid": f"eu-{i}", "language": "en", "coarse_category": coarse.value,
            "finegrained_category": COARSE_FINE[coarse].value, "scenario": scenario, "subject": name,
            "emotion_choices": emotions, "emotion_label": gold, "cause_choices": causes, "cause_label": causes[0],
            "explanation": f"{name} would feel {gold.lower()} here. {causes[0]}, and that matters to {name}.",
            "provenance": {"pipeline": "concise", "dialogue_id": f"d{i}", "turn_indices": [1, 2],
                           "generator_model": "test", "prompt_version": "t1"}}


def ea_item(i: int, rng: random.Random) -> dict:
    name = NAMES[(i + 7) % len(NAMES)]
    choices = _distinct(rng, lambda r: f"{name} {r.choice(ACTS)} and talks it over at {r.choice(PLACES)}", 4)
    return {"qid": f"ea-{i}", "language": "en", "category": list(EACategory)[i % 4].value,
            "question type": "Action" if i % 2 else "Response", "scenario": scenario_text(rng, name),
            "subject": name, "choices": choices, "label": choices[2],
            "explanation": f"The most effective step: {choices[2]}."}


def clean_items(n_eu: int, n_ea: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    eu = [eu_item(i, rng) for i in range(n_eu)]
    ea = [ea_item(i, rng) for i in range(n_ea)]
    for it in eu:
        assert not named_emotions(it["emotion_label"], it["scenario"])
    return eu, ea


def write_lines(path: Path, rows: list[dict | str]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


BENCH_EU_SCENARIO = ("Marisol spent three weekends restoring her late grandfather's rowing boat in the shed behind "
                     "the house. On the morning of the regatta she carried it to the river with her brother, "
                     "only to find that the club had cancelled the race because of high water. Her brother "
                     "suggested they row anyway along the calm backwater, and they drifted past the willows "
                     "until sunset, talking about the summers they had spent there as children.")


def write_benchmark(folder: Path) -> Path:
    """A benchmark in EmoBench's layout, our own text."""
    folder.mkdir(parents=True, exist_ok=True)
    write_lines(folder / "EU.jsonl", [{"qid": "1", "language": "en", "coarse_category": "complex_emotions",
                                       "finegrained_category": "emotion_transition", "scenario": BENCH_EU_SCENARIO,
                                       "subject": "Marisol", "emotion_choices": ["Joy", "Anger", "Guilt", "Fear",
                                                                                  "Pride", "Relief"],
                                       "emotion_label": "Joy", "cause_choices": ["a", "b", "c", "d"],
                                       "cause_label": "a"}])
    write_lines(folder / "EA.jsonl", [{"qid": "1", "language": "en", "category": "Personal-Self",
                                       "question type": "Action", "scenario": "Tobias lost his keys again.",
                                       "subject": "Tobias", "choices": ["a", "b", "c", "d"], "label": "a"}])
    return folder


def paraphrase(text: str, rng: random.Random) -> str:
    """Rotate the sentences and rework some words: what a generator copying a benchmark would do."""
    sentences = [s.strip() for s in text.replace("!", ".").split(". ") if s.strip()]
    sentences = sentences[1:] + sentences[:1]
    words = " ".join(sentences).split()
    for i in rng.sample(range(len(words)), k=len(words) // 8):
        words[i] = {"the": "that", "and": "while", "a": "one"}.get(words[i].lower(), words[i])
    return " ".join(words)


def defects(eu: list[dict], ea: list[dict], rng: random.Random) -> dict[str, dict]:
    near_dup = dict(eu[0], qid="eu-dup", scenario=eu[0]["scenario"].replace(" and ", " & ", 1) + " Really.")
    contaminated = dict(eu[1], qid="eu-bench", scenario=paraphrase(BENCH_EU_SCENARIO, rng), subject="Marisol",
                        explanation=eu[1]["explanation"].replace(eu[1]["subject"], "Marisol"))
    wrong = dict(eu[2], qid="eu-wrong")
    wrong["scenario"] = scenario_text(rng, wrong["subject"])
    distractor_emotion = next(e for e in wrong["emotion_choices"] if e != wrong["emotion_label"])
    wrong["explanation"] = (f"{wrong['subject']} would feel {distractor_emotion.lower()}, because "
                            f"{wrong['cause_choices'][3].lower()}.")
    leak = dict(eu[3], qid="eu-leak", emotion_label="Anger",
                emotion_choices=["Anger", "Joy", "Guilt", "Fear", "Pride", "Relief"],
                scenario=scenario_text(rng, eu[3]["subject"]) + f" {eu[3]['subject']} answered angrily.")
    leak["explanation"] = f"{eu[3]['subject']} would feel anger. {eu[3]['cause_label']}."
    seven = dict(ea[0], qid="ea-seven", scenario=scenario_text(rng, ea[0]["subject"]),
                 choices=ea[0]["choices"] + [f"{ea[0]['subject']} {act} alone" for act in ACTS[:3]])
    return {"near_dup": near_dup, "contaminated": contaminated, "wrong": wrong, "leak": leak, "seven": seven}


# ---------------------------------------------------------------- units

def test_emotion_words_whole_word_and_inflected() -> None:
    assert named_emotions("Anger", "She replied angrily.") == ["Anger"]
    assert named_emotions("Anger", "He was ANGRY.") == ["Anger"]
    assert named_emotions("Joy", "They enjoy the trip and are overjoyed.") == []
    assert named_emotions("Joy", "a joyful trip") == ["Joy"]
    assert named_emotions("Anger & Love", "a loving, angered man") == ["Anger", "Love"]
    assert named_emotions("Hopeful", "she was hopeless") == []
    assert named_emotions("生气", "他很生气。") == ["生气"]


def test_validate_reports_every_reason() -> None:
    eu, _ = clean_items(1, 0)
    assert v.validate_item(eu[0], ValidateConfig())[1] == []
    bad = dict(eu[0], emotion_choices=eu[0]["emotion_choices"][:5] + ["Blorp", ""], scenario="Too short, angry.",
               emotion_label="Anger", coarse_category="nonsense", explanation="")
    codes = {r.code for r in v.validate_item(bad, ValidateConfig())[1]}
    assert {v.OPTION_COUNT, v.EMPTY_OPTION, v.EMOTION_OOV, v.GOLD_MISSING, v.SCENARIO_LENGTH, v.EMOTION_LEAK,
            v.CATEGORY, v.NO_EXPLANATION, v.SUBJECT_MISSING} <= codes


def test_explanation_must_favour_the_gold() -> None:
    _, ea = clean_items(0, 1)
    item = ea[0]
    codes = lambda expl: {r.code for r in v.validate_item(dict(item, explanation=expl), ValidateConfig())[1]}  # noqa: E731
    assert codes(f"Best: {item['label']}.") == set()
    assert codes(f"Best: {item['choices'][0]}.") == {v.EXPLANATION_DISTRACTOR}
    assert codes("It depends on how everyone feels.") == set()  # restates no option: no verdict
    assert codes("") == {v.NO_EXPLANATION}


def test_positions_uniform_on_1k_items() -> None:
    eu, ea = clean_items(500, 500, seed=3)
    items = [parse_item(x) for x in eu + ea]
    assert position_stats(items)["emotion_choices"]["histogram"]["A"] != 500 // 6  # fixtures start skewed
    balanced = balance_positions(items, seed=0)
    for field, st in position_stats(balanced).items():
        assert st["p_value"] > 0.01, (field, st)
        assert max(st["histogram"].values()) - min(st["histogram"].values()) <= 1
    for before, after in zip(items, balanced, strict=True):  # same options, same gold text
        assert sorted(before.emotion_choices if hasattr(before, "emotion_choices") else before.choices) == \
            sorted(after.emotion_choices if hasattr(after, "emotion_choices") else after.choices)
        parse_item(after.model_dump(mode="json", by_alias=True, exclude_none=True))


def test_balance_caps_every_coarse_category_of_each_task() -> None:
    """The 1.5x rule per EU coarse category and per EA category: after balancing no category of a
    task holds more than 1.5x its expected share of that task's kept items, items are rejected
    only from categories over that cap, and the categories under it keep all of theirs."""
    from collections import Counter

    eu, ea = clean_items(40, 40)
    items = [parse_item(x) for x in eu + ea]
    # EU: the first coarse category 5x its share; EA: two categories 4x
    skew = items + [parse_item(dict(eu[0], qid=f"xu{i}")) for i in range(40)] \
        + [parse_item(dict(ea[k % 2], qid=f"xa{k}")) for k in range(60)]
    rejected = over_quota(skew, 1.5, seed=0)
    kept = [it for i, it in enumerate(skew) if i not in rejected]
    before = Counter((it.task.value, it.category) for it in skew)
    after = Counter((it.task.value, it.category) for it in kept)
    for task in ("EU", "EA"):
        total = sum(n for (t, _), n in after.items() if t == task)
        cap = 1.5 * total / 4
        assert all(n <= cap for (t, _), n in after.items() if t == task), (task, after)
        for (t, cat), n in before.items():
            if t == task and n <= cap:
                assert after[(t, cat)] == n, (cat, "lost items below the cap")
    assert {(skew[i].task.value, skew[i].category) for i in rejected} == {
        ("EU", eu[0]["coarse_category"]), ("EA", ea[0]["category"]), ("EA", ea[1]["category"])}
    assert over_quota(items, 1.5, seed=0) == {}


def test_dialogue_preprocess() -> None:
    report = DialogueReport()
    d = clean_dialogue({"dialogue_id": "d", "pipeline": "mads", "persona_id": "p", "background": "b", "turns": [
        {"index": 0, "speaker": "Patient:", "text": "My sister forgot my birthday again this year."},
        {"index": 1, "speaker": "[counselor]", "text": "How did that land for you?"},
        {"index": 2, "speaker": "client", "text": "My sister forgot my birthday again, this year!"},
        {"index": 3, "speaker": "client", "text": "It reminded me of being left out as a kid."}]}, 0.9, report)
    assert [t.index for t in d.turns] == [0, 1, 3]
    assert [t.speaker.value for t in d.turns] == ["CLIENT", "THERAPIST", "CLIENT"]
    assert report.turns_dropped == 1


def test_cohen_kappa() -> None:
    assert cohen_kappa(["ok", "bad", "ok", "ok"], ["ok", "bad", "ok", "ok"]) == 1.0
    # p_o = 0.5, p_e = 0.5 -> 0
    assert cohen_kappa(["ok", "ok", "bad", "bad"], ["ok", "bad", "ok", "bad"]) == 0.0
    assert cohen_kappa(["ok", "bad", "ok", "bad", "ok"], ["ok", "bad", "bad", "bad", "ok"]) == pytest.approx(0.6153846, abs=1e-6)


# ---------------------------------------------------------------- the stage, end to end

@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, dict]]:
    root = tmp_path_factory.mktemp("curate")
    rng = random.Random(7)
    eu, ea = clean_items(24, 24)
    planted = defects(eu, ea, rng)
    gen = root / "gen"
    gen.mkdir()
    write_lines(gen / "eu.jsonl", eu[:12] + ["{this is not json"] + eu[12:] +
                [planted[k] for k in ("near_dup", "contaminated", "wrong", "leak")])
    write_lines(gen / "ea.jsonl", ea + [planted["seven"]])
    write_lines(gen / "dialogues.jsonl", [{"dialogue_id": "d0", "pipeline": "mads", "persona_id": "p0",
                                           "background": "b", "turns": [
                                               {"index": 0, "speaker": "Patient", "text": "I lost the keys."},
                                               {"index": 1, "speaker": "Patient", "text": "I lost the keys!"}]}])
    bench = write_benchmark(root / "bench")
    out = root / "out"
    assert cli_main(["curate", "--input", str(gen), "--output", str(out), "--benchmark", str(bench),
                     "--config", "pipelines/curate.yaml"]) == 0
    return out, json.loads((out / "stats.json").read_text()), planted


def _reasons(out: Path) -> dict[str, set[str]]:
    return {(r["qid"] or f"{Path(r['file']).name}:{r['line']}"): {x["code"] for x in r["reasons"]}
            for r in read_jsonl(out / "rejects.jsonl")}


def test_planted_defects_rejected_with_their_reason(curated) -> None:
    out, stats, _ = curated
    reasons = _reasons(out)
    assert reasons["eu-dup"] == {v.NEAR_DUPLICATE}
    assert v.CONTAMINATED in reasons["eu-bench"]
    assert reasons["eu-wrong"] == {v.EXPLANATION_DISTRACTOR}
    assert reasons["eu-leak"] == {v.EMOTION_LEAK}
    assert reasons["ea-seven"] == {v.OPTION_COUNT}
    assert reasons["eu.jsonl:13"] == {v.MALFORMED_LINE}
    malformed = next(r for r in read_jsonl(out / "rejects.jsonl") if r["qid"] is None)
    assert "eu.jsonl:13" in malformed["reasons"][0]["detail"]
    assert stats["decontamination"]["dropped"] == 1
    assert stats["decontamination"]["items"][0]["qid"] == "eu-bench"
    assert stats["dialogues"]["turns_dropped"] == 1


def test_clean_items_kept_and_outputs_complete(curated) -> None:
    out, stats, _ = curated
    kept = {r["qid"] for name in ("train.jsonl", "val.jsonl") for r in read_jsonl(out / name)}
    assert kept == {f"eu-{i}" for i in range(24)} | {f"ea-{i}" for i in range(24)}
    assert stats["counts"] == {"read": 54, "kept": 48, "train": 40, "val": 8, "rejected": 6}
    assert stats["distribution"]["val"] == {"EU": {c.value: 1 for c in COARSE_FINE},
                                            "EA": {c.value: 1 for c in EACategory}}
    for row in read_jsonl(out / "train.jsonl"):
        parse_item(row)
    assert stats["confidence"]["method"] == "none"
    for png in ("categories.png", "gold_positions.png", "scenario_lengths.png"):
        assert (out / "plots" / png).stat().st_size > 1000
    card = (out / "DATACARD.md").read_text()
    assert "gold_emotion_in_scenario" in card and "plots/categories.png" in card


def test_review_export_and_kappa(curated, tmp_path: Path, capsys) -> None:
    out, _, _ = curated
    assert cli_main(["review", "export", "--input", str(out / "train.jsonl"), "--n", "5",
                     "--output", str(tmp_path)]) == 0
    sheets = []
    for name, verdicts in (("annotator_A.csv", ["ok", "ok", "bad"]), ("annotator_B.csv", ["ok", "bad", "bad"])):
        rows = list(csv.DictReader((tmp_path / name).open()))
        assert len({r["qid"] for r in rows}) == 5
        for r, judgment in zip(rows, verdicts * len(rows), strict=False):
            r["judgment"] = judgment
        with (tmp_path / name).open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        sheets.append(str(tmp_path / name))
    capsys.readouterr()
    assert cli_main(["review", "kappa", *sheets]) == 0
    result = json.loads(capsys.readouterr().out)
    # 5 items drawn (seed 0): 3 EU (two questions each) + 2 EA = 8 rows, judged in sheet order
    # A: ok ok bad ok ok bad ok ok  (6 ok, 2 bad)    B: ok bad bad ok bad bad ok bad  (3 ok, 5 bad)
    # agree on rows 1, 3, 4, 6, 7: p_o = 5/8; by chance p_e = (6*3 + 2*5) / 8^2 = 28/64
    # kappa = (5/8 - 28/64) / (1 - 28/64) = (12/64) / (36/64) = 1/3
    assert result == {"rows": 8, "agreement": 0.625, "kappa": round(1 / 3, 4)}


def test_gold_positions_uniform_in_train_on_1k(tmp_path: Path) -> None:
    eu, ea = clean_items(560, 560, seed=11)
    write_lines(tmp_path / "eu.jsonl", eu)
    write_lines(tmp_path / "ea.jsonl", ea)
    stats = curate(tmp_path, tmp_path / "out", CurateConfig())
    train = [parse_item(r) for r in read_jsonl(tmp_path / "out" / "train.jsonl")]
    assert len(train) >= 1000
    for field in ("emotion_choices", "choices"):
        letters = [getattr(t, field).index(t.emotion_label if field == "emotion_choices" else t.label)
                   for t in train if hasattr(t, field)]
        assert chisquare([letters.count(k) for k in range(max(letters) + 1)]).pvalue > 0.01
    assert stats["positions"]["train"]["cause_choices"]["p_value"] > 0.01


def test_paraphrased_emobench_scenario_rejected(emobench_dir: Path, tmp_path: Path) -> None:
    """A paraphrase of a real EmoBench scenario, made now and never stored, is caught."""
    rows = [r for r in read_jsonl(emobench_dir / "EU.jsonl") if r["language"] == "en"]
    source = max(rows, key=lambda r: len(r["scenario"].split()))
    eu, _ = clean_items(4, 0)
    item = dict(eu[0], qid="eu-emobench", subject=source["subject"],
                scenario=paraphrase(source["scenario"], random.Random(1)))
    write_lines(tmp_path / "eu.jsonl", [item, *eu[1:]])
    stats = curate(tmp_path, tmp_path / "out", CurateConfig.model_validate(
        {"decontaminate": {"benchmark": str(emobench_dir)}}))
    assert v.CONTAMINATED in _reasons(tmp_path / "out")["eu-emobench"]
    assert [d["qid"] for d in stats["decontamination"]["items"]] == ["eu-emobench"]


def test_bad_recipe_and_missing_input_are_one_line_errors(tmp_path: Path, capsys) -> None:
    assert cli_main(["curate", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o")]) == 2
    (tmp_path / "bad.yaml").write_text("dedup:\n  treshold: 0.9\n")
    (tmp_path / "gen").mkdir()
    assert cli_main(["curate", "--input", str(tmp_path / "gen"), "--output", str(tmp_path / "o"),
                     "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "dedup.treshold: unknown key" in capsys.readouterr().err


def test_a_small_run_still_holds_out_one_item() -> None:
    """Five items at val_fraction 0.1 round to none per (task, category): one is held out anyway
    (the chain evaluates on this split when there is no benchmark); none when no share is asked."""
    from ec2er.curation.pipeline import stratified_split

    rng = random.Random(0)
    items = [parse_item(eu_item(i, rng)) for i in range(3)] + [parse_item(ea_item(i, rng)) for i in range(2)]
    train, val = stratified_split(items, 0.1, seed=0)
    assert len(val) == 1 and len(train) == 4 and {id(x) for x in train + val} == {id(x) for x in items}
    assert stratified_split(items, 0.0, seed=0) == (items, [])
    assert stratified_split(items[:1], 0.1, seed=0) == (items[:1], [])
