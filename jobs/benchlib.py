"""Contenders measured interleaved and repeated; each ratio taken within a round; median and spread.

On a shared machine the load changes while a benchmark runs, so contenders run once, one after
another, are measured under different loads (the same bench_generate once gave b/c 0.96, once
0.76). Here every round runs every contender once, in the same order (a b c a b c ...), each
ratio is computed inside its round from two measurements taken one after the other, and a
figure is reported as the median of its rounds with its spread:

    {"fraction_of_raw": 0.95, ..., "spread": {"fraction_of_raw":
        {"min": 0.93, "max": 0.96, "relative": 0.032, "rounds": [0.93, 0.95, 0.96]}}}

``relative`` is (max - min) / median: 0.03 means the rounds agreed within 3%.
No ec2er import: this is plain timing arithmetic, usable by any benchmark under jobs/.
(pyperf and timeit repeat one callable and keep its best or mean; neither interleaves several
contenders of a ratio nor takes the ratio per round, which is the point here.)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO, TypeVar

T = TypeVar("T")
Round = dict[str, Any]  # contender name -> what it returned in that round

DEFAULT_REPEATS = 3


def add_repeats_argument(parser: argparse.ArgumentParser, default: int = DEFAULT_REPEATS, why: str = "") -> None:
    """The one ``--repeats N`` every benchmark takes: rounds of all its contenders."""
    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return value

    parser.add_argument("--repeats", type=positive, default=default,
                        help=f"rounds, each running every contender once, interleaved (default {default}"
                             + (f": {why}" if why else "") + ")")


def schedule(names: Sequence[str], repeats: int) -> Iterator[tuple[int, str]]:
    """(round, contender) in the order they run: a b c a b c ..."""
    for index in range(repeats):
        for name in names:
            yield index, name


def run_rounds(contenders: Mapping[str, Callable[[Round], T]], repeats: int,
               console: TextIO | None = None) -> list[Round]:
    """Run every contender once per round, rounds one after another. Each contender is called with
    what the earlier contenders of its round returned (e.g. a replay of the round's requests)."""
    rounds: list[Round] = []
    for index, name in schedule(list(contenders), repeats):
        if index == len(rounds):
            rounds.append({})
            _announce(index, repeats, console)
        rounds[index][name] = contenders[name](rounds[index])
    return rounds


async def arun_rounds(contenders: Mapping[str, Callable[[Round], Awaitable[T]]], repeats: int,
                      console: TextIO | None = None) -> list[Round]:
    """``run_rounds`` for coroutines (contenders sharing one event loop and engine)."""
    rounds: list[Round] = []
    for index, name in schedule(list(contenders), repeats):
        if index == len(rounds):
            rounds.append({})
            _announce(index, repeats, console)
        rounds[index][name] = await contenders[name](rounds[index])
    return rounds


def _announce(index: int, repeats: int, console: TextIO | None) -> None:
    print(f"-- round {index + 1}/{repeats}", file=console or sys.stdout, flush=True)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None where either is missing or the denominator is zero."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def spread(values: Sequence[float | None], digits: int = 3) -> dict[str, Any]:
    """Median, min, max, relative spread ((max - min) / median) and the values themselves;
    missing (None) or non-finite rounds are listed but left out of the statistics."""
    known = [v for v in values if v is not None and math.isfinite(v)]
    rounds = [None if v is None else round(v, digits) for v in values]
    if not known:
        return {"median": None, "min": None, "max": None, "relative": None, "rounds": rounds}
    middle, low, high = statistics.median(known), min(known), max(known)
    return {"median": round(middle, digits), "min": round(low, digits), "max": round(high, digits),
            "relative": round((high - low) / abs(middle), 3) if middle else None, "rounds": rounds}


def summarize(per_round: Mapping[str, Sequence[float | None]], digits: int = 3) -> dict[str, Any]:
    """{name: median, ..., "spread": {name: {min, max, relative, rounds}}} for figures given as
    one value per round: the medians keep the plain keys readers already use."""
    stats = {name: spread(values, digits) for name, values in per_round.items()}
    return {**{name: s["median"] for name, s in stats.items()},
            "spread": {name: {k: v for k, v in s.items() if k != "median"} for name, s in stats.items()}}


def per_round(rounds: Sequence[Round], figure: Callable[[Round], float | None]) -> list[float | None]:
    """One figure computed within each round, e.g. ``lambda r: ratio(r["b"]["x"], r["a"]["x"])``."""
    return [figure(r) for r in rounds]


def median_figures(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The median of each number across runs of one contender (nested dicts too); anything that is
    not a number is taken from the first run. For tables of absolute figures."""
    first = runs[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        values = [run.get(key) for run in runs]
        if isinstance(value, Mapping) and all(isinstance(v, Mapping) for v in values):
            out[key] = median_figures(values)
        elif all(_is_number(v) for v in values):
            middle = statistics.median(values)
            out[key] = round(middle, 4) if isinstance(value, float) or middle != int(middle) else int(middle)
        else:
            out[key] = value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def describe(summary: Mapping[str, Any]) -> list[str]:
    """One console line per figure of a ``summarize`` result."""
    lines = []
    for name, s in summary["spread"].items():
        relative = "n/a" if s["relative"] is None else f"{s['relative']:.1%}"
        values = " ".join("-" if v is None else f"{v:g}" for v in s["rounds"])
        lines.append(f"{name:<28} median {summary[name]}  min {s['min']}  max {s['max']}  "
                     f"spread {relative}  rounds: {values}")
    return lines
