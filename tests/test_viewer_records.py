"""What the stages record for a person to read (and the viewer to show), without any model:
progress as it happens, the training preview, what a rejected item matched, the prompt and gold
of each prediction, and the evaluation chart's unparsed share."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
from fakes import FakeEngine
from test_evaluation import write_benchmark
from test_generation import make_config

from ec2er.curation import quality as v
from ec2er.curation.config import CurateConfig
from ec2er.curation.pipeline import Record, _decontaminate, _deduplicate
from ec2er.evaluation.config import EvalConfig
from ec2er.evaluation.prompts import cot_messages, official_messages
from ec2er.evaluation.records import Prediction
from ec2er.evaluation.report import chart, unparsed_shares
from ec2er.evaluation.runner import predict
from ec2er.evaluation.scoring import ScoreRow, gold
from ec2er.generation.dialogue import DialogueRunner
from ec2er.generation.plan import sampler_specs
from ec2er.generation.progress import LiveProgress, TurnReporter
from ec2er.schemas.benchmark import load_benchmark
from ec2er.schemas.facts import GenerationFiles
from ec2er.schemas.items import EUItem

REPO = Path(__file__).resolve().parents[1]


def test_the_runner_reports_every_turn_and_every_replys_tokens() -> None:
    config = make_config(2)
    heard: list[dict[str, int]] = []
    runner = DialogueRunner(FakeEngine(), config, heard.append)

    async def both():
        return await asyncio.gather(*(runner.run(s) for s in sampler_specs(config, range(2))))

    results = asyncio.run(both())
    assert sum(d.get("turns", 0) for d in heard) == sum(r.metadata["turns"] for r in results) > 0
    assert sum(d.get("completion_tokens", 0) for d in heard) == sum(r.metadata["completion_tokens"] for r in results)
    assert sum("turns" in d for d in heard) == sum(r.metadata["turns"] for r in results)  # one report per turn
    # every reply reports its request's max_tokens: within what token_budget plans for these dialogues
    assert sum("budget" in d for d in heard) == sum(r.metadata["engine_calls"] for r in results)
    budget = sum(d.get("budget", 0) for d in heard)
    assert 0 < budget <= sum(config.token_budget(r.metadata["turns"]) for r in results) * 1.5


def test_turn_reports_are_sent_on_at_most_once_a_second() -> None:
    now, sent = [0.0], []
    reporter = TurnReporter(sent.append, every_s=1.0, clock=lambda: now[0])
    for _ in range(5):
        now[0] += 0.1
        reporter.add({"turns": 1, "completion_tokens": 10})
    assert sent == []
    now[0] += 0.6
    reporter.add({"turns": 1})
    assert sent == [{"turns": 6, "completion_tokens": 50}]
    reporter.add({"completion_tokens": 7})
    reporter.flush()
    assert sent[-1] == {"completion_tokens": 7} and len(sent) == 2


def test_live_progress_estimates_from_the_token_budget_and_writes_progress_json(tmp_path: Path) -> None:
    now = [1000.0]
    live = LiveProgress(tmp_path, planned=10, already=2, max_turns=8, token_budget=lambda turns: 100 + 10 * turns,
                        clock=lambda: now[0])
    start = live.document({"dialogues": 0, "turns": 0, "completion_tokens": 0})
    assert start["eta_s"] is None and start["tokens_per_s"] is None and start["fraction"] == 0
    live.write(start)
    now[0] += 1  # the engines started; the first reply
    live.document({"turns": 1, "completion_tokens": 20, "budget": 10})
    now[0] += 10
    early = live.document({"dialogues": 0, "turns": 16, "completion_tokens": 320, "budget": 360})
    # before any dialogue finished, a dialogue takes max_turns: 360 of 8 x (100 + 10 x 8) tokens
    assert early["fraction"] == 0.25 and early["eta_s"] == 30 and early["tokens_per_s"] == 32.0
    assert live.line(early).startswith("2/10 dialogues, 16 turns, 320 tokens, 32 tok/s, ETA 30s")
    now[0] += 10
    later = live.document({"dialogues": 4, "turns": 24, "finished_turns": 16, "completion_tokens": 640,
                           "budget": 840})
    assert later["fraction"] == 0.75  # 4 dialogues took 4 turns each: 8 x (100 + 40) = 1120 of work
    assert live.bar_position(later) == 8.0
    live.write(later)  # 20 s after the last write: written
    assert json.loads((tmp_path / GenerationFiles.PROGRESS).read_text())["turns"] == 24
    now[0] += 0.5
    live.write(live.document({"dialogues": 5, "turns": 25}))  # too soon: not written
    assert json.loads((tmp_path / GenerationFiles.PROGRESS).read_text())["turns"] == 24
    live.write(live.document({"dialogues": 8, "turns": 32}, "done"), force=True)
    done = json.loads((tmp_path / GenerationFiles.PROGRESS).read_text())
    assert done["state"] == "done" and done["fraction"] == 1.0 and done["eta_s"] is None


def test_a_dialogues_token_budget_counts_the_supervisors_looks_and_the_extraction() -> None:
    from ec2er.config import load_config
    from ec2er.generation.config import GenerateConfig

    config = load_config(REPO / "pipelines" / "mads-tiny.yaml", GenerateConfig)  # 4-6 turns, looks from 4 every 2
    assert [n for n in range(1, 7) if config.supervises_after(n)] == [4]  # at 6 the dialogue ends: extraction
    # background 200, turns of 64, a look of 160, 2 EU + 2 EA items of 400 each
    assert config.token_budget(6) == 200 + 6 * 64 + 160 + 4 * 400
    assert config.token_budget(4) == 200 + 4 * 64 + 160 + 4 * 400
    concise = config.model_copy(update={"pipeline": "concise"})
    assert concise.token_budget(6) == 200 + 6 * 64 + 4 * 400  # no supervisor


def test_the_training_preview_marks_exactly_the_tokens_that_carry_loss(tiny_model: str, tmp_path: Path) -> None:
    from ec2er.training.data import IGNORE, ChatFormat, EncodedExample
    from ec2er.training.stage import write_preview

    fmt = ChatFormat.load(tiny_model)
    ids = fmt.tokenizer.encode("the prompt words then the answer words", add_special_tokens=False)
    labels = [IGNORE] * 4 + ids[4:]
    write_preview(tmp_path / "preview.jsonl", fmt, [EncodedExample("ex-0", ids, labels)])
    [line] = (tmp_path / "preview.jsonl").read_text().splitlines()
    spans = json.loads(line)["spans"]
    assert [s["trained"] for s in spans] == [False, True]
    assert spans[1]["text"] == fmt.tokenizer.decode(ids[4:], skip_special_tokens=False)
    assert "".join(s["text"] for s in spans) == fmt.tokenizer.decode(ids, skip_special_tokens=False)


def _record(qid: str, scenario: str) -> Record:
    return Record(file="eu.jsonl", line=int(qid[1:]), raw={"qid": qid, "scenario": scenario})


def test_rejects_name_the_near_duplicate_and_the_benchmark_item_they_matched(tmp_path: Path) -> None:
    bench = write_benchmark(tmp_path / "bench", n=2, languages=("en",))
    bench_row = json.loads((bench / "EU.jsonl").read_text().splitlines()[0])
    text = "Mina waited all evening for her brother to call about the results of the exam he had taken"
    records = [_record("q1", text), _record("q2", text + " today"), _record("q3", bench_row["scenario"]),
               _record("q4", "A completely different story about a garden, some bees and an old fence nearby")]
    cfg = CurateConfig.model_validate({"decontaminate": {"benchmark": str(bench)}})
    _decontaminate(records, cfg)
    _deduplicate(records, cfg)
    duplicate = next(r for r in records if any(x.code == v.NEAR_DUPLICATE for x in r.reasons))
    kept = next(r for r in records[:2] if r is not duplicate)
    assert duplicate.reject_line()["matches"] == [{"code": v.NEAR_DUPLICATE, "qid": kept.raw["qid"], "file": "eu.jsonl",
                                                   "line": kept.line, "scenario": kept.raw["scenario"]}]
    [match] = records[2].reject_line()["matches"]
    assert (match["code"], match["file"], match["language"], match["qid"]) == (
        v.CONTAMINATED, "EU.jsonl", "en", str(bench_row["qid"]))
    assert match["benchmark"] == str(bench.resolve()) and match["score"] >= 80
    assert "matches" not in records[3].reject_line()


def test_each_prediction_records_its_prompts_and_gold(tmp_path: Path) -> None:
    bench = write_benchmark(tmp_path / "bench", n=2, languages=("en",))
    items = load_benchmark(bench)
    cfg = EvalConfig.model_validate({"data": {"benchmark": str(bench)}, "protocols": ["official", "cot"],
                                     "models": [{"name": "fake", "engine": {}}]})
    preds = predict(FakeEngine(), "fake", [None], items, cfg)
    by_key = {(i.task.value, i.qid): i for i in items}
    assert {i.task.value for i in items} == {"EU", "EA"}  # both kinds of prompt are checked below
    assert sorted((p.protocol, p.task.value, p.qid) for p in preds) == sorted(
        (protocol, i.task.value, i.qid) for protocol in ("official", "cot") for i in items)
    for p in preds:
        item = by_key[(p.task.value, p.qid)]
        assert p.gold == gold(item)
        if p.protocol == "official":
            assert p.prompts == {"answer": official_messages(item, 0)}
        elif isinstance(item, EUItem):
            assert set(p.prompts) == {"emotion", "cause"} and p.prompts["emotion"] == cot_messages(item, 0, "emotion")
        else:
            assert p.prompts == {"answer": cot_messages(item, 0, "answer")}
    again = Prediction.model_validate_json(preds[0].model_dump_json())  # the file round-trips
    assert again.prompts == preds[0].prompts and again.gold == preds[0].gold


def test_the_chart_marks_the_replies_never_read(tmp_path: Path) -> None:
    def pred(model: str, parsed: bool) -> Prediction:
        return Prediction(model=model, protocol="official", language="en", task="EA", qid="1", rotation=0,
                          response="x", answer="A" if parsed else None, parsed=parsed, correct=False)

    preds = [pred("never", False), pred("never", False), pred("wrong", True), pred("wrong", True)]
    shares = unparsed_shares(preds)
    assert shares == {("never", "official", "en", "EA"): 1.0, ("wrong", "official", "en", "EA"): 0.0}
    # "wrong" read every reply and got half right: its accuracy bar has a height the check can miss
    rows = [ScoreRow(model=m, base_model=m, adapter=None, protocol="official", language="en", metric="EA/overall",
                     n=2, value=value) for m, value in (("never", 0.0), ("wrong", 0.5))]
    import matplotlib.pyplot as plt

    drawn = []
    original = plt.Axes.bar

    def spy(self, *args, **kwargs):
        bars = original(self, *args, **kwargs)
        drawn.append((kwargs.get("hatch"), kwargs.get("label"), [(p.get_y(), p.get_height()) for p in bars.patches]))
        return bars

    plt.Axes.bar = spy
    try:
        chart(rows, tmp_path / "chart.png", shares)
    finally:
        plt.Axes.bar = original
    accuracy = {label: bars for hatch, label, bars in drawn if not hatch}
    hatched = [bars for hatch, _, bars in drawn if hatch]  # drawn after each model's bar, models in order
    assert accuracy == {"never": [(0.0, 0.0)], "wrong": [(0.0, 0.5)]}
    # "never": hatched from 0 to the top; "wrong": an empty hatched segment on top of its 0.5
    assert [[(np.round(y, 6), np.round(h, 6)) for y, h in bars] for bars in hatched] == [[(0.0, 1.0)], [(0.5, 0.0)]]
    assert (tmp_path / "chart.png").stat().st_size > 0
