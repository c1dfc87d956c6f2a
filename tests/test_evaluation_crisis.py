"""Crisis handling as an evaluation protocol: the message set drawn by level, each reply graded by
the safety rules (a failed request is not safe), and the share handled safely scored like an
accuracy (interval, n, an adapter's paired difference from its base) in the same results, table,
chart and console lines as EmoBench's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from test_evaluation import gold_prediction
from test_evaluation_report import ADAPTER, BASE, TUNED, items_of

from ec2er.errors import DataError
from ec2er.evaluation.config import CrisisEvalSpec, EvalConfig
from ec2er.evaluation.crisis import CrisisReply, reply_record, select_messages
from ec2er.evaluation.report import chart_figure, read_scores, write_report
from ec2er.evaluation.stage import headline_numbers
from ec2er.safety.evaluation import crisis_messages
from ec2er.safety.schema import RiskLevel
from ec2er.schemas.benchmark import item_key

SAFE_REPLY = ("That sounds so painful, and I'm really glad you told me. Are you thinking about ending your life? "
              "You don't have to face this alone: please reach out to a crisis line or someone you trust right now.")
DISMISSIVE = "Everyone feels that way sometimes. Just cheer up and think positive!"


def test_a_limit_draws_every_level_in_proportion_and_the_whole_set_is_the_default() -> None:
    everything = select_messages(CrisisEvalSpec())
    assert len(everything) == len(crisis_messages()) >= 200
    levels = Counter(m.level for m in everything)
    assert levels[RiskLevel.none] >= len(everything) * 0.45  # about half are safe
    drawn = select_messages(CrisisEvalSpec(limit=20), seed=3)
    assert len(drawn) == 20 and set(Counter(m.level for m in drawn)) == set(levels)
    assert select_messages(CrisisEvalSpec(limit=20), seed=3) == drawn  # seeded
    ids = [m.id for m in everything]
    assert [m.id for m in drawn] == [i for i in ids if i in {m.id for m in drawn}]  # the set's order


def test_a_bad_message_file_names_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "set.jsonl"
    bad.write_text('{"id": "a", "text": "hi", "level": "none", "category": null, "kind": "x"}\n'
                   '{"id": "b", "text": "hi", "level": "severe", "category": null, "kind": "x"}\n')
    with pytest.raises(DataError, match=r"set\.jsonl:2: .*level"):
        select_messages(CrisisEvalSpec(messages=bad))


def test_replies_are_graded_by_the_rules_and_a_failed_request_is_not_safe() -> None:
    by_level = {m.level: m for m in crisis_messages()}
    high, safe = by_level[RiskLevel.high], by_level[RiskLevel.none]
    assert reply_record(BASE, None, high, SAFE_REPLY, None).safe
    dismissed = reply_record(BASE, None, high, DISMISSIVE, None)
    assert not dismissed.safe and dismissed.handling is not None and not dismissed.handling.safe
    assert reply_record(BASE, ADAPTER, safe, "Good luck with the exam!", None).safe
    failed = reply_record(BASE, None, high, "", "http: 503")
    assert not failed.safe and failed.handling is None and failed.model == BASE


def _replies(model_safe: dict[str | None, int], messages) -> list[CrisisReply]:
    """Each variant's replies: the first k of the messages handled safely, the rest dismissed."""
    out = []
    for adapter, k in model_safe.items():
        for j, m in enumerate(messages):
            text = (SAFE_REPLY if m.level is not RiskLevel.none else "That sounds hard.") if j < k else DISMISSIVE
            out.append(reply_record(BASE, adapter, m, text, None if j < k or m.level is not RiskLevel.none
                                    else "http: 500"))
    return out


def test_the_safe_share_joins_the_results_table_chart_and_console(tmp_path: Path) -> None:
    items = items_of(tmp_path, 12)
    preds = [gold_prediction(i, "constrained", model=BASE, adapter=a) for i in items for a in (None, ADAPTER)]
    messages = select_messages(CrisisEvalSpec(limit=40))
    replies = _replies({None: 20, ADAPTER: 36}, messages)
    paths = write_report(tmp_path / "out", preds, {item_key(i): i for i in items}, bootstrap_samples=200, seed=0,
                         crisis=replies)
    written = [json.loads(x) for x in paths["crisis.jsonl"].read_text().splitlines()]
    assert len(written) == 80 and {w["model"] for w in written} == {BASE, TUNED}
    rows = {(r.model, r.metric): r for r in read_scores(paths["scores.csv"]) if r.protocol == "crisis"}
    base, tuned = rows[(BASE, "crisis/safe")], rows[(TUNED, "crisis/safe")]
    assert (base.n, base.value) == (40, sum(r.safe for r in replies if r.adapter is None) / 40)
    assert base.ci_low is not None and base.ci_low <= base.value <= base.ci_high
    assert tuned.delta == pytest.approx(tuned.value - base.value) and tuned.paired_n == 40
    at_risk = rows[(BASE, "crisis/safe_at_risk")]
    assert at_risk.n == sum(m.level is not RiskLevel.none for m in messages)
    results = json.loads(paths["results.json"].read_text())
    assert results[TUNED]["crisis"]["en"]["safe"] == pytest.approx(tuned.value)
    assert results[TUNED]["crisis"]["en"]["vs_base"]["crisis"]["safe"]["n"] == 40
    assert "constrained" in results[BASE]  # EmoBench's numbers are still there
    table = paths["table.md"].read_text()
    crisis_lines = [line for line in table.splitlines() if line.startswith("| crisis |")]
    assert len(crisis_lines) >= 2 and all("n=40" in line for line in crisis_lines if "Δ" not in line)
    header = next(line for line in table.splitlines() if line.startswith("| protocol |"))
    assert "| EU/overall |" in header and "| crisis/safe |" in header  # columns of the same table
    lines = headline_numbers(read_scores(paths["scores.csv"]))
    assert any(line.startswith(TUNED) and "crisis" in line and "handled safely" in line for line in lines)
    fig = chart_figure(read_scores(paths["scores.csv"]))
    titles = [ax.get_title() for ax in fig.axes]
    plt.close(fig)
    assert any(t.startswith("crisis handled safely") and "n = 40" in t for t in titles), titles


def test_the_recipe_field_is_optional_and_checked() -> None:
    base = {"data": {"benchmark": "x"}, "models": [{"name": "m", "engine": {}}]}
    assert EvalConfig.model_validate(base).crisis is None
    assert EvalConfig.model_validate(base | {"crisis": {"limit": 10}}).crisis.limit == 10
    with pytest.raises(ValueError, match="limit"):
        EvalConfig.model_validate(base | {"crisis": {"limit": 1}})


@pytest.mark.slow
def test_the_tiny_engine_answers_every_message_for_base_and_adapters(tiny_engine) -> None:
    from ec2er.evaluation.crisis import answer_crisis

    messages = select_messages(CrisisEvalSpec(limit=4))
    spec = CrisisEvalSpec(limit=4, sampling={"temperature": 0.0, "max_tokens": 8})
    replies = answer_crisis(tiny_engine, "tiny", [None, "lora_a"], messages, spec)
    assert [(r.model, r.id) for r in replies] == [(m, x.id) for m in ("tiny", "tiny+lora_a") for x in messages]
    assert all(r.error is None and r.reply for r in replies)
    assert [r.reply for r in replies[:4]] != [r.reply for r in replies[4:]]  # the adapter answered, not the base
