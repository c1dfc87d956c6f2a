"""Benchmark: near-duplicate removal, MinHash-LSH + rapidfuzz vs all-pairs rapidfuzz ``cdist``.

Synthetic scenarios (Zipf-distributed words from a 20k vocabulary, 40-120 words) with planted
near-duplicates: 5% of items are copies of an earlier item with 1-6 word edits (substitution,
insertion, deletion), case and punctuation noise. Ground truth is rapidfuzz itself: a planted pair
counts when its ratio reaches the threshold; recall is the share of those pairs that end up in one
cluster. At sizes where all-pairs ``cdist`` is feasible it runs too, and its recall of every
above-threshold pair (planted or not) is reported against ours.

    python jobs/bench_dedup.py [--sizes 10000 100000 1000000] [--cdist-max 10000] [--repeats 3]

Every size's scenarios are made once; then the runs go interleaved, --repeats rounds of ours at
each size and all-pairs where feasible (ours@10k cdist@10k ours@100k ours@1M; jobs/benchlib.py),
so that on a shared machine the ratios compare runs made close in time: growth_per_10x (the
largest time ratio between sizes 10x apart) and each size's speedup_vs_cdist (all-pairs seconds
/ ours) are taken within each round. One round at the default sizes takes about 2 minutes
(all-pairs at 10k about 42 s, ours at 1M about 70 s). CPU seconds of the process are reported
beside wall seconds.

The LAST line is one JSON object: per size (``sizes``) the median over rounds of seconds,
cpu_seconds, cdist_seconds and speedup_vs_cdist, with a ``spread`` object beside them (for each:
min, max, relative spread (max - min) / median, per-round values); seconds_1m, recall,
growth_per_10x and growth_per_10x_cpu (medians) with their own ``spread``; recall figures come
from the last round (the method is deterministic: every round finds the same clusters).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import benchlib  # jobs/, this script's folder
import numpy as np
from rapidfuzz import fuzz, process

from ec2er.curation.config import DedupConfig
from ec2er.curation.dedup import deduplicate, normalize

VOCAB = 20_000
DUP_RATE = 0.05


def synthetic_scenarios(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """n texts and the (original, copy) index pairs planted among them."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(VOCAB)], dtype=object)
    ranks = np.minimum(rng.zipf(1.2, size=n * 120) - 1, VOCAB - 1)  # heavy-headed like English
    lengths = rng.integers(40, 121, size=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    texts = [" ".join(words[ranks[offsets[i]:offsets[i + 1]]]) for i in range(n)]
    n_dup = int(n * DUP_RATE)
    copies = rng.choice(np.arange(n // 10, n), size=n_dup, replace=False)
    originals = rng.integers(0, n // 10, size=n_dup)
    for c, o in zip(copies, originals, strict=True):
        texts[c] = _perturb(texts[o], rng, words)
    return texts, np.stack([originals, copies], axis=1)


def _perturb(text: str, rng: np.random.Generator, words: np.ndarray) -> str:
    toks = text.split()
    for _ in range(rng.integers(1, 7)):
        i = int(rng.integers(0, len(toks)))
        op = rng.integers(0, 3)
        if op == 0:
            toks[i] = words[rng.integers(0, VOCAB)]
        elif op == 1:
            toks.insert(i, words[rng.integers(0, VOCAB)])
        elif len(toks) > 1:
            del toks[i]
    out = " ".join(toks)
    return out.capitalize() + "." if rng.random() < 0.5 else out


def planted_recall(texts: list[str], planted: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, int]:
    norm = [normalize(texts[i]) for i in planted.ravel()]
    scores = process.cpdist(norm[0::2], norm[1::2], scorer=fuzz.ratio, workers=-1)
    true_pairs = planted[scores >= threshold * 100]
    hit = labels[true_pairs[:, 0]] == labels[true_pairs[:, 1]]
    return float(hit.mean()) if len(true_pairs) else 1.0, len(true_pairs)


def all_pairs(texts: list[str], threshold: float) -> tuple[float, np.ndarray]:
    norm = [normalize(t) for t in texts]
    t0 = time.perf_counter()
    sim = process.cdist(norm, norm, scorer=fuzz.ratio, score_cutoff=threshold * 100, dtype=np.uint8,
                        workers=-1)
    seconds = time.perf_counter() - t0
    i, j = np.nonzero(np.triu(sim, k=1))
    return seconds, np.stack([i, j], axis=1)


def _growth(sizes: dict[int, dict], key: str) -> float | None:
    """The largest time ratio between sizes 10x apart."""
    ratios = [sizes[10 * n][key] / max(sizes[n][key], 1e-9) for n in sizes if 10 * n in sizes]
    return max(ratios) if ratios else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--cdist-max", type=int, default=10_000, help="largest size for all-pairs cdist")
    benchlib.add_repeats_argument(parser)
    parser.add_argument("--threshold", type=float, default=DedupConfig().threshold)
    args = parser.parse_args()
    cfg = DedupConfig(threshold=args.threshold)
    data = {n: synthetic_scenarios(n) for n in args.sizes}
    rounds = benchlib.run_rounds(_contenders(data, cfg, args.cdist_max), args.repeats)
    figures: dict = {"cpus": os.cpu_count(), "machine": platform.machine(), "threshold": cfg.threshold,
                     "config": cfg.model_dump(), "repeats": args.repeats,
                     "sizes": {n: _size_row(n, data[n], rounds, cfg) for n in args.sizes}}
    for n, row in figures["sizes"].items():
        print(f"n={n:>9,}: { {k: v for k, v in row.items() if k != 'spread'} }", flush=True)
    per_size = [{n: r[f"ours@{n}"] for n in args.sizes} for r in rounds]
    growth = benchlib.summarize({
        "growth_per_10x": [_growth(sizes, "seconds") for sizes in per_size],
        # CPU time of this process: the same ratio, less disturbed by other work on a shared machine
        "growth_per_10x_cpu": [_growth(sizes, "cpu_seconds") for sizes in per_size]}, digits=2)
    print("\n".join(benchlib.describe(growth)), flush=True)
    figures |= growth
    figures["load_average"] = os.getloadavg()
    figures["recall"] = min(r["recall_planted"] for r in figures["sizes"].values())
    figures["seconds_1m"] = figures["sizes"].get(1_000_000, {}).get("seconds")
    print(json.dumps(figures))


def _contenders(data: dict[int, tuple[list[str], np.ndarray]], cfg: DedupConfig, cdist_max: int) -> dict:
    """ours@n for every size, cdist@n beside it where all-pairs is feasible, in size order."""
    def ours(texts: list[str]):
        def run(_round: dict) -> dict:
            t0, c0 = time.perf_counter(), time.process_time()
            result = deduplicate(texts, cfg)
            seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            print(f"ours      n={len(texts):>9,}: {seconds:.2f} s ({cpu_seconds:.2f} s CPU)", flush=True)
            return {"seconds": seconds, "cpu_seconds": cpu_seconds, "result": result}
        return run

    def cdist(texts: list[str]):
        def run(_round: dict) -> dict:
            seconds, truth = all_pairs(texts, cfg.threshold)
            print(f"all-pairs n={len(texts):>9,}: {seconds:.2f} s", flush=True)
            return {"seconds": seconds, "truth": truth}
        return run

    contenders = {}
    for n, (texts, _) in data.items():
        contenders[f"ours@{n}"] = ours(texts)
        if n <= cdist_max:
            contenders[f"cdist@{n}"] = cdist(texts)
    return contenders


def _size_row(n: int, data: tuple[list[str], np.ndarray], rounds: list[dict], cfg: DedupConfig) -> dict:
    texts, planted = data
    ours = [r[f"ours@{n}"] for r in rounds]
    result = ours[-1]["result"]
    recall, n_true = planted_recall(texts, planted, result.labels, cfg.threshold)
    timings = {"seconds": [o["seconds"] for o in ours], "cpu_seconds": [o["cpu_seconds"] for o in ours]}
    row = {"recall_planted": round(recall, 4), "planted_pairs": n_true,
           "phases": benchlib.median_figures([o["result"].seconds for o in ours]),
           "candidates": result.candidates, "verified": result.verified, "removed": int((~result.keep).sum())}
    if f"cdist@{n}" in rounds[0]:
        cdist = [r[f"cdist@{n}"] for r in rounds]
        truth = cdist[-1]["truth"]
        found = result.labels[truth[:, 0]] == result.labels[truth[:, 1]]
        timings |= {"cdist_seconds": [c["seconds"] for c in cdist],
                    "speedup_vs_cdist": [benchlib.ratio(c["seconds"], o["seconds"]) for c, o in zip(cdist, ours, strict=True)]}
        row |= {"cdist_pairs": len(truth), "recall_vs_cdist": round(float(found.mean()) if len(truth) else 1.0, 4)}
    return benchlib.summarize(timings) | row


if __name__ == "__main__":
    main()
