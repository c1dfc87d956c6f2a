"""Results that cannot mislead: every accuracy carries its n, no difference goes without its
paired interval (or says "n = <n>: no conclusion"), McNemar's exact test and the detectable
difference beside each adapter's comparison, and a chart whose titles carry n, whose empty
panels say why and whose legend covers no bar. Fake predictions on invented items: no engine."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy import stats

from ec2er.evaluation.records import Prediction
from ec2er.evaluation.report import chart_figure, read_scores, table, write_report
from ec2er.evaluation.scoring import (
    MIN_ITEMS_FOR_INTERVAL,
    ScoreRow,
    mcnemar_p,
    minimum_detectable_difference,
    score_rows,
)
from ec2er.evaluation.stage import headline_numbers, too_few_items_warning
from ec2er.schemas.benchmark import item_key, load_benchmark
from ec2er.schemas.items import Item
from test_evaluation import gold_prediction, write_benchmark

BASE, ADAPTER = "smollm2", "smollm2-tiny-v1"
TUNED = f"{BASE}+{ADAPTER}"


def wrong(item: Item, protocol: str = "constrained", adapter: str | None = None) -> Prediction:
    """A parsed, wrong answer (the gold's neighbour letter)."""
    right = gold_prediction(item, protocol, model=BASE, adapter=adapter)
    return right.model_copy(update={"correct": False, "lenient_correct": False})


def items_of(tmp_path: Path, n: int, tasks: tuple[str, ...] = ("EU", "EA")) -> list[Item]:
    items = load_benchmark(write_benchmark(tmp_path / "bench", n=n, languages=("en",)))
    return [i for i in items if i.task.value in tasks]


def report(tmp_path: Path, preds: list[Prediction], items: list[Item]) -> tuple[Path, list[ScoreRow]]:
    out = tmp_path / "out"
    paths = write_report(out, preds, {item_key(i): i for i in items}, bootstrap_samples=200, seed=0)
    return out, read_scores(paths["scores.csv"])


def _power(n: int, d: float) -> float:
    """The exact McNemar test's power on n items all discordant, the adapter winning each with
    probability (1 + d) / 2: summed over every outcome the test rejects."""
    wins = np.array([k for k in range(n + 1) if mcnemar_p(k, n - k) < 0.05])
    return float(stats.binom.pmf(wins, n, (1 + d) / 2).sum())


def test_mcnemar_is_exact_and_the_detectable_difference_has_the_power_it_claims() -> None:
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(1, 4) == pytest.approx(2 * (1 + 5) / 32)  # 2 P(X <= 1), X ~ Binomial(5, 1/2)
    assert mcnemar_p(10, 0) == pytest.approx(2 * 0.5 ** 10) == mcnemar_p(0, 10)
    assert minimum_detectable_difference(5) is None  # 5 of 5 won: p = 0.0625, nothing can be detected
    sizes = [6, 10, 20, 100]
    mdes = [minimum_detectable_difference(n) for n in sizes]
    assert all(d is not None for d in mdes) and np.all(np.diff(mdes) < 0)
    for n, d in zip(sizes, mdes, strict=True):
        assert _power(n, d) >= 0.8 > _power(n, d - 0.01), (n, d)  # the smallest such difference
    # close to the normal approximation (z_0.975 + z_0.8) / sqrt(n) where that holds
    assert minimum_detectable_difference(400) == pytest.approx(
        (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / 20, abs=0.01)


def test_one_item_says_no_conclusion_everywhere(tmp_path: Path) -> None:
    """The demo without EmoBench: ONE EA item, no EU item; the adapter right, its base wrong."""
    items = items_of(tmp_path, 1, ("EA",))
    preds = [wrong(items[0])] + [gold_prediction(items[0], "constrained", model=BASE, adapter=ADAPTER)]
    out, rows = report(tmp_path, preds, items)

    tuned = {r.metric: r for r in rows if r.model == TUNED}["EA/overall"]
    assert (tuned.n, tuned.value, tuned.ci_low, tuned.no_interval) == (1, 1.0, None, "too_few")
    assert (tuned.delta, tuned.delta_low, tuned.no_delta_interval) == (1.0, None, "too_few")
    assert (tuned.paired_n, tuned.gained, tuned.lost, tuned.mcnemar_p, tuned.mde) == (1, 1, 0, 1.0, None)

    md = (out / "table.md").read_text()
    assert "n = 1: no conclusion (1 of 1)" in md and "n = 1: no conclusion (0 of 1)" in md
    assert "| detectable Δ (80% power) |" in md and "none n=1" in md  # one item detects no difference
    assert "| Δ vs base |" in md and "1.000" not in md and "+1.000" not in md and "+1.00" not in md

    result = json.loads((out / "results.json").read_text())[TUNED]["constrained"]["en"]
    assert result["n"]["EA"]["overall"] == 1 and result["n"]["parse_failure_rate"] == 1
    comparison = result["vs_base"]["EA"]["overall"]
    assert comparison["ci"] is None and comparison["no_conclusion"] == "n = 1: no conclusion"
    assert (comparison["n"], comparison["gained"], comparison["lost"], comparison["mcnemar_p"]) == (1, 1, 0, 1.0)

    lines = headline_numbers(rows)
    assert any(line.startswith(TUNED) and "EA n = 1: no conclusion (1 of 1)" in line for line in lines), lines
    assert any("Δ vs base" in line and "EA n = 1: no conclusion" in line for line in lines), lines
    assert not any("1.000" in line for line in lines), lines
    warning = too_few_items_warning(rows)
    assert warning is not None and "en EU n = 0, en EA n = 1" in warning and "cannot be told apart" in warning


def test_enough_items_give_intervals_with_n_mcnemar_and_the_detectable_difference(tmp_path: Path) -> None:
    items = items_of(tmp_path, 12)  # 12 EU + 12 EA: above MIN_ITEMS_FOR_INTERVAL
    assert len(items) == 24 and 12 >= MIN_ITEMS_FOR_INTERVAL
    base = [gold_prediction(i, "constrained", model=BASE) if int(i.qid) <= 4 else wrong(i) for i in items]
    tuned = [gold_prediction(i, "constrained", model=BASE, adapter=ADAPTER) for i in items]
    out, rows = report(tmp_path, base + tuned, items)

    row = {(r.model, r.metric): r for r in rows}[(TUNED, "EA/overall")]
    assert (row.paired_n, row.gained, row.lost) == (12, 8, 0) and row.delta == pytest.approx(8 / 12)
    assert row.mcnemar_p == pytest.approx(2 * 0.5 ** 8)
    assert row.delta_low is not None and row.delta_low > 0 and row.mde == pytest.approx(minimum_detectable_difference(12))

    frame = table(rows)
    by_line = {line: dict(zip(frame.columns, values, strict=True))
               for line, values in zip(frame["model"], frame.itertuples(index=False), strict=True)}
    assert by_line[BASE]["EA/overall"].startswith("0.333 [") and by_line[BASE]["EA/overall"].endswith("n=12")
    assert by_line["Δ vs base"]["EA/overall"].startswith("+0.667 [+")
    assert "McNemar p=0.0078 n=12" in by_line["Δ vs base"]["EA/overall"]
    assert by_line["detectable Δ (80% power)"]["EA/overall"] == f"{minimum_detectable_difference(12):.2f} n=12"
    # the categories hold 3 items each: no conclusion there, in the same table
    assert by_line["Δ vs base"]["EA/Social-Self"] == "n = 3: no conclusion"
    assert (out / "table.csv").read_text().count("n=12") >= 3

    lines = headline_numbers(rows)
    delta_line = next(line for line in lines if "Δ vs base" in line)
    assert "EA +0.667 [+" in delta_line and "McNemar p=0.0078 n=12 (80% power at |Δ| >= 0.74)" in delta_line
    assert all(" n=12" in line or "no conclusion" in line for line in lines), lines
    assert too_few_items_warning(rows) is None


def test_a_difference_without_spread_is_no_conclusion_but_an_accuracy_keeps_its_value(tmp_path: Path) -> None:
    """Every item alike in both models: the bootstrap has nothing to resample, and a zero-width
    interval would claim certainty; an all-right accuracy still says what it is, with its n."""
    items = items_of(tmp_path, 12, ("EA",))
    preds = [gold_prediction(i, "constrained", model=BASE, adapter=a) for i in items for a in (None, ADAPTER)]
    rows = score_rows(preds, {item_key(i): i for i in items}, samples=200)
    row = {(r.model, r.metric): r for r in rows}[(TUNED, "EA/overall")]
    assert (row.ci_low, row.no_interval, row.delta_low, row.no_delta_interval) == (None, "no_spread", None, "no_spread")
    assert row.mcnemar_p == 1.0
    cells = table(rows).set_index("model")["EA/overall"]
    assert cells[TUNED] == "1.000 n=12 (every item alike: no interval)"
    assert cells["Δ vs base"] == "n = 12: no conclusion (every item alike: nothing to resample); McNemar p=1"


def test_some_small_tasks_are_named_in_the_warning(tmp_path: Path) -> None:
    items = items_of(tmp_path, 12)
    items = [i for i in items if i.task.value == "EA" or int(i.qid) <= 4]  # EU: 4 items
    preds = [gold_prediction(i, "constrained", model=BASE) for i in items]
    rows = score_rows(preds, {item_key(i): i for i in items}, samples=50)
    warning = too_few_items_warning(rows)
    assert warning is not None and "on en EU n = 4" in warning and "EA" not in warning


def _overlaps(a, b) -> bool:  # two display-space boxes share some area
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_chart_titles_carry_n_an_empty_panel_says_why_and_the_legend_covers_no_bar() -> None:
    def row(model: str, protocol: str, metric: str, n: int, value: float) -> ScoreRow:
        low, high = (max(0, value - 0.2), min(1, value + 0.2)) if n >= MIN_ITEMS_FOR_INTERVAL else (None, None)
        return ScoreRow(model=model, base_model=model.split("+")[0], adapter=None, protocol=protocol, language="en",
                        metric=metric, n=n, value=value, ci_low=low, ci_high=high,
                        no_interval=None if low is not None else "too_few")

    models = [BASE, TUNED, "gemma3-270m", "gemma3-270m+gemma-v1"]
    rows = [row(m, p, "EA/overall", 1, 1.0 if "+" in m else 0.0)  # no EU items at all
            for m in models for p in ("constrained", "cot")]
    fig = chart_figure(rows, {(m, "cot", "en", "EA"): 0.5 for m in models})
    try:
        fig.canvas.draw()
        eu, ea = fig.axes[:2]
        assert eu.get_title() == "EU overall (en): n = 0"
        assert [t.get_text() for t in eu.texts] == ["no EU items in the evaluated set"]
        assert ea.get_title() == "EA overall (en), n = 1: no conclusion"
        assert not [c for c in ea.containers if getattr(c, "has_yerr", False)]  # n = 1: no interval drawn
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == [*sorted(models), "unparsed (hatched)"]
        box = legend.get_window_extent()
        bars = [p.get_window_extent() for ax in fig.axes for p in ax.patches if p.get_height() > 0]
        assert len(bars) >= len(models) and not any(_overlaps(box, b) for b in bars)
        assert not any(_overlaps(box, ax.get_window_extent()) for ax in fig.axes)  # outside every panel
    finally:
        plt.close(fig)


def test_chart_draws_error_bars_only_for_real_intervals() -> None:
    rows = [ScoreRow(model=m, base_model=m, adapter=None, protocol="cot", language="en", metric="EA/overall",
                     n=n, value=0.5, ci_low=low, ci_high=high, no_interval=why)
            for m, n, low, high, why in (("big", 40, 0.35, 0.65, None), ("small", 3, None, None, "too_few"))]
    fig = chart_figure(rows)
    try:
        ea = fig.axes[1]
        assert ea.get_title() == "EA overall (en), n = 3-40"
        caps = [c for c in ea.containers if getattr(c, "has_yerr", False)]
        assert len(caps) == 1 and len(caps[0].lines[2][0].get_segments()) == 1  # one bar's interval only
        (segment,) = caps[0].lines[2][0].get_segments()
        assert np.allclose(segment[:, 1], [0.35, 0.65])
    finally:
        plt.close(fig)


def test_the_stage_summary_warns_when_the_evaluated_set_is_too_small(tmp_path: Path, monkeypatch) -> None:
    """The chain's fallback (the curated held-out split of the demo: one EA item, no EU item): the
    stage's highlights carry n, "no conclusion" and a plain warning. The engines are faked: the
    report is written from fixed predictions."""
    from ec2er.evaluation import runner
    from ec2er.evaluation.config import EvalConfig
    from ec2er.evaluation.stage import run_evaluation_stage
    from ec2er.stage import StageInputs

    items = items_of(tmp_path, 1, ("EA",))
    preds = [wrong(items[0]), gold_prediction(items[0], "constrained", model=BASE, adapter=ADAPTER)]
    monkeypatch.setattr(runner, "evaluate", lambda config, out: write_report(
        out, preds, {item_key(i): i for i in items}, bootstrap_samples=config.bootstrap_samples, seed=0))
    config = EvalConfig.model_validate({"data": {"benchmark": str(tmp_path / "bench")}, "protocols": ["constrained"],
                                        "models": [{"name": BASE, "engine": {}}]})
    summary = run_evaluation_stage(config, StageInputs(), tmp_path / "out")
    text = "\n".join(summary.highlights)
    assert f"{TUNED}" in text and "EA n = 1: no conclusion (1 of 1)" in text and "1.000" not in text
    warning = [line for line in summary.highlights if "WARNING" in line]
    assert len(warning) == 1 and "en EU n = 0, en EA n = 1" in warning[0] and "cannot be told apart" in warning[0]
    assert warning[0].strip() in summary.details  # `ec2er evaluate` prints the details
