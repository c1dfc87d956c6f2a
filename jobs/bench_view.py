"""Benchmark: the viewer on a 1M-dialogue generation run, over HTTP, as a person uses it.

A synthetic results folder (``--dialogues`` rows in ``--files`` Parquet files, written with
pyarrow in the results schema; realistic column sizes: a transcript of 8-14 turns of ~350
characters, a ~1 KB metadata line, 4 items of ~900 characters; 5% failed dialogues; every text
unique) is built once and cached under the temporary folder. Then ``ec2er view`` serves it in a
subprocess and the bench measures, cold (the server's first sight of the run):

- first_page_ms: the first page of the list (50 dialogues);
- filter_ms: the first page of a filter on small columns (failed dialogues of one theme, ~1%);
- filter_count_ms: that filter's exact count over the whole run (every file's small columns);
- deep_page_ms: a page in the middle of the unfiltered list;
- dialogue_ms: one dialogue in full, by id, after it was listed;
- search_ms: a free-text search for a rare word (reads the big text columns; time-budgeted);
- server_peak_mb: the server's peak resident memory (VmHWM) after all of the above.

Targets (issue 18): first page < 1 s, filter < 3 s, memory bounded (never all rows).

    python jobs/bench_view.py [--dialogues 1000000] [--files 100] [--cache DIR]

The LAST line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ec2er.generation.outputs import RESULT_SCHEMA
from ec2er.schemas.facts import GenerationFiles
from ec2er.schemas.taxonomy import EACategory, EUFineCategory, ThemeCategory

POOL = 4000  # distinct texts per column; each row is made unique by its id
RARE_WORD = "quixotically"  # in 1 of POOL transcripts
FORMAT_VERSION = 1  # bump when the synthetic data changes: the cache key
COMPLETE = "complete.json"  # written last into a cached data folder: it is whole


_LETTERS = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
_VOCAB = ["".join(np.random.default_rng(i).choice(_LETTERS, size=3 + i % 7)) for i in range(20_000)]


def _words(rng: np.random.Generator, n: int) -> str:
    """Words of a 20,000-word vocabulary in Zipf's proportions (compresses about as English does)."""
    ranks = np.minimum(rng.zipf(1.1, size=n) - 1, len(_VOCAB) - 1)
    return " ".join(_VOCAB[k] for k in ranks)


def _pools(rng: np.random.Generator) -> dict[str, list[str]]:
    dialogues, metadata, eu, ea = [], [], [], []
    for k in range(POOL):
        turns = [{"index": i, "speaker": "CLIENT" if i % 2 == 0 else "THERAPIST", "text": _words(rng, 60)}
                 for i in range(int(rng.integers(8, 15)))]
        if k == 7:
            turns[3]["text"] += f" {RARE_WORD}"
        dialogues.append(json.dumps({"pipeline": "mads", "persona_id": f"p{k}", "theme_id": "t",
                                     "background": _words(rng, 90), "turns": turns, "verdicts": []}))
        metadata.append(json.dumps({"pipeline": "mads", "persona": _words(rng, 25), "attributes": None,
                                    "verdicts": [{"reason": _words(rng, 20), "scenario_clear": True}] * 3,
                                    "supervisor_errors": [], "item_failures": [], "model": "synthetic",
                                    "notes": _words(rng, 60)}))
        eu.append(json.dumps({"language": "en", "scenario": _words(rng, 60), "subject": "Ana",
                              "emotion_choices": ["Joy", "Anger", "Fear", "Sadness", "Guilt", "Pride"],
                              "emotion_label": "Joy", "cause_choices": [_words(rng, 8) for _ in range(4)],
                              "explanation": _words(rng, 30), "provenance": {"turn_indices": [1, 2]}}))
        ea.append(json.dumps({"language": "en", "category": "Social-Self", "scenario": _words(rng, 60),
                              "subject": "Ana", "choices": [_words(rng, 10) for _ in range(4)],
                              "explanation": _words(rng, 30)}))
    return {"dialogue": dialogues, "metadata": metadata, "eu": eu, "ea": ea}


def _table(first: int, n: int, pools: dict[str, pa.Array], rng: np.random.Generator) -> pa.Table:
    ids = pa.array([f"mads-s0-{i:07d}" for i in range(first, first + n)])
    failed = rng.random(n) < 0.05
    pick = lambda: pa.array(rng.integers(0, POOL, size=n))  # noqa: E731

    def unique(column: str) -> pa.Array:  # '{"dialogue_id": "<id>", ' + a pool text without its '{'
        body = pc.utf8_slice_codeunits(pools[column].take(pick()), 1)
        return pc.binary_join_element_wise(pa.array(['{"dialogue_id": "'] * n), ids, pa.array(['", '] * n), body, "")

    def items(column: str, k: int) -> pa.Array:
        flat = pc.binary_join_element_wise(pa.array(['{"qid": "'] * (n * k)), pc.cast(pa.array(np.arange(n * k)), pa.string()),
                                           pa.array(['", '] * (n * k)),
                                           pc.utf8_slice_codeunits(pools[column].take(pa.array(rng.integers(0, POOL, n * k))), 1), "")
        return pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), flat)

    fines, eas, themes = [f.value for f in EUFineCategory], [c.value for c in EACategory], [t.value for t in ThemeCategory]
    stop = np.where(failed, "failed", np.where(rng.random(n) < 0.7, "all_met", "max_turns"))
    columns = {
        "dialogue_id": ids, "status": pa.array(np.where(failed, "failed", "ok")),
        "error": pa.array([("turn: invalid_json: expected an object" if f else None) for f in failed], pa.string()),
        "theme_category": pa.array(rng.choice(themes, size=n)), "stop_reason": pa.array(stop),
        "turns": pa.array(rng.integers(8, 15, size=n).astype(np.int32)),
        "eu_fine": pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), pa.array(rng.choice(fines, size=2 * n))),
        "ea_category": pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), pa.array(rng.choice(eas, size=2 * n))),
        "ea_question_type": pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), pa.array(["Action"] * 2 * n)),
        "item_failures": pa.array(np.zeros(n, dtype=np.int32)),
        "prompt_tokens": pa.array(rng.integers(2000, 9000, size=n)), "cached_prompt_tokens": pa.array(np.zeros(n, dtype=np.int64)),
        "completion_tokens": pa.array(rng.integers(500, 3000, size=n)),
        "metadata": unique("metadata"), "dialogue": unique("dialogue"), "eu": items("eu", 2), "ea": items("ea", 2),
    }
    return pa.Table.from_pydict(columns).cast(RESULT_SCHEMA)


def build(folder: Path, dialogues: int, files: int) -> Path:
    """The synthetic run (made once: a marker file says it is whole)."""
    done = folder / COMPLETE
    if done.is_file():
        return folder
    results = folder / GenerationFiles.RESULTS
    results.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pools = {k: pa.array(v) for k, v in _pools(rng).items()}
    per_file = -(-dialogues // files)
    start = time.perf_counter()
    for f in range(files):
        first = f * per_file
        n = min(per_file, dialogues - first)
        if n <= 0:
            break
        pq.write_table(_table(first, n, pools, rng), results / f"{f:05d}.parquet")  # pyarrow's defaults, as Ray Data
        print(f"built {f + 1}/{files} files ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    size = sum(p.stat().st_size for p in results.iterdir())
    done.write_text(json.dumps({"dialogues": dialogues, "files": files, "bytes": size}))
    return folder


def _get(url: str) -> tuple[float, dict]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = json.loads(r.read())
    return (time.perf_counter() - start) * 1000, body


def _peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dialogues", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ec2er-bench-view")
    args = ap.parse_args()
    folder = build(args.cache / f"v{FORMAT_VERSION}-{args.dialogues}-{args.files}", args.dialogues, args.files)
    info = json.loads((folder / COMPLETE).read_text())
    server = subprocess.Popen([sys.executable, "-m", "ec2er.cli", "view", str(folder), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        base = re.search(r"(http://127\.0\.0\.1:\d+/)", line).group(1)
        first_ms, first = _get(base + "api/dialogues?limit=50")
        warm_ms, _ = _get(base + "api/dialogues?limit=50&offset=50")
        filter_ms, filtered = _get(base + "api/dialogues?limit=50&status=failed&theme=Health&ea=Social-Self")
        count_ms, count = _get(base + "api/dialogues/count?status=failed&theme=Health&ea=Social-Self")
        deep_ms, deep = _get(base + f"api/dialogues?limit=50&offset={args.dialogues // 2}")
        one_ms, one = _get(base + "api/dialogue?id=" + first["rows"][17]["id"])
        search_ms, search = _get(base + f"api/dialogues?limit=50&q={RARE_WORD}")
        facets_ms, _ = _get(base + "api/dialogues/facets")
        peak = _peak_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert first["total"] == args.dialogues and len(first["rows"]) == 50 and len(filtered["rows"]) == 50
    assert deep["rows"][0]["id"] == f"mads-s0-{args.dialogues // 2:07d}" and one["dialogue"]["turns"]
    print(json.dumps({
        "dialogues": args.dialogues, "files": args.files, "data_gb": round(info["bytes"] / 1e9, 2),
        "first_page_ms": round(first_ms), "next_page_ms": round(warm_ms), "filter_ms": round(filter_ms),
        "filter_count_ms": round(count_ms), "filter_count": count["count"], "filter_count_exact": count["exact"],
        "deep_page_ms": round(deep_ms), "dialogue_ms": round(one_ms), "facets_ms": round(facets_ms),
        "search_ms": round(search_ms), "search_found": len(search["rows"]), "search_partial": search["partial"],
        "search_scanned_share": round(search["scanned_rows"] / max(search["total_rows"], 1), 3),
        "server_peak_mb": round(peak), "cpus": os.cpu_count(), "python": platform.python_version()}))


if __name__ == "__main__":
    main()
