"""The benchmarks' shared timing arithmetic (jobs/benchlib.py): interleaving, ratios per round,
median and spread, on hand-made numbers."""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

import benchlib  # noqa: E402


def test_schedule_interleaves_contenders_round_by_round():
    assert list(benchlib.schedule(["a", "b", "c"], 2)) == [(0, "a"), (0, "b"), (0, "c"),
                                                          (1, "a"), (1, "b"), (1, "c")]


def _recording_contenders(calls: list):
    def contender(name):
        def run(so_far):
            calls.append((name, sorted(so_far)))
            return len(calls)
        return run
    return {"a": contender("a"), "b": contender("b"), "c": contender("c")}


def test_rounds_run_in_order_and_see_their_own_round_only():
    calls: list = []
    console = io.StringIO()
    rounds = benchlib.run_rounds(_recording_contenders(calls), 2, console)
    assert [name for name, _ in calls] == ["a", "b", "c", "a", "b", "c"]
    # each contender sees the earlier contenders of its own round, never the previous round's
    assert [seen for _, seen in calls] == [[], ["a"], ["a", "b"], [], ["a"], ["a", "b"]]
    assert rounds == [{"a": 1, "b": 2, "c": 3}, {"a": 4, "b": 5, "c": 6}]
    assert console.getvalue().splitlines() == ["-- round 1/2", "-- round 2/2"]


def test_async_rounds_keep_the_same_order():
    order: list[str] = []

    def contender(name):
        async def run(so_far):
            await asyncio.sleep(0)
            order.append(name)
            return name.upper()
        return run

    rounds = asyncio.run(benchlib.arun_rounds({n: contender(n) for n in "xy"}, 3, io.StringIO()))
    assert order == ["x", "y"] * 3
    assert rounds == [{"x": "X", "y": "Y"}] * 3


def test_ratios_are_taken_within_each_round():
    # the load doubles in round 2: both contenders slow down, their ratio does not move
    rounds = [{"a": {"rate": 10.0}, "b": {"rate": 20.0}},
              {"a": {"rate": 5.0}, "b": {"rate": 10.0}},
              {"a": {"rate": 8.0}, "b": {"rate": 0.0}}]
    values = benchlib.per_round(rounds, lambda r: benchlib.ratio(r["b"]["rate"], r["a"]["rate"]))
    assert values == [2.0, 2.0, 0.0]
    assert benchlib.per_round(rounds, lambda r: benchlib.ratio(r["a"]["rate"], r["b"]["rate"])) == [0.5, 0.5, None]


def test_median_and_spread_on_hand_made_numbers():
    s = benchlib.spread([0.96, 0.76, 0.90])
    assert s == {"median": 0.9, "min": 0.76, "max": 0.96, "relative": 0.222, "rounds": [0.96, 0.76, 0.9]}
    even = benchlib.spread([1.0, 3.0, 2.0, 4.0])  # even count: the mean of the middle two
    assert (even["median"], even["relative"]) == (2.5, 1.2)
    missing = benchlib.spread([None, 2.0, float("nan")])
    assert (missing["median"], missing["min"], missing["max"], missing["relative"]) == (2.0, 2.0, 2.0, 0.0)
    assert missing["rounds"][:2] == [None, 2.0]
    assert benchlib.spread([None, None])["median"] is None
    assert benchlib.spread([0.0, 0.0])["relative"] is None  # no spread relative to zero


def test_summarize_keeps_plain_keys_as_medians_and_describes_them():
    summary = benchlib.summarize({"b_over_a": [2.9, 3.1, 3.0], "b_over_c": [0.96, 0.76, 0.9]})
    assert summary["b_over_a"] == 3.0 and summary["b_over_c"] == 0.9
    assert summary["spread"]["b_over_c"] == {"min": 0.76, "max": 0.96, "relative": 0.222,
                                             "rounds": [0.96, 0.76, 0.9]}
    lines = benchlib.describe(summary)
    assert lines[1].split() == ["b_over_c", "median", "0.9", "min", "0.76", "max", "0.96",
                                "spread", "22.2%", "rounds:", "0.96", "0.76", "0.9"]


def test_median_figures_of_one_contender_across_rounds():
    runs = [{"tokens_per_s": 10.0001, "steps": 4, "model": "m", "inner": {"p50_ms": 100.0}},
            {"tokens_per_s": 30.0, "steps": 4, "model": "m", "inner": {"p50_ms": 300.0}},
            {"tokens_per_s": 20.00001, "steps": 5, "model": "m", "inner": {"p50_ms": None}}]
    out = benchlib.median_figures(runs)
    assert out == {"tokens_per_s": 20.0, "steps": 4, "model": "m", "inner": {"p50_ms": 100.0}}
    assert isinstance(out["steps"], int)


def test_repeats_must_be_positive():
    parser = argparse.ArgumentParser()
    benchlib.add_repeats_argument(parser, default=2, why="one round takes long")
    assert parser.parse_args([]).repeats == 2
    assert parser.parse_args(["--repeats", "5"]).repeats == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["--repeats", "0"])
