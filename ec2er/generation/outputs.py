"""A generation run's folder (a local path or any URI pyarrow understands: s3://, gs://)::

    fingerprint.json   what shapes the data; a resumed run must match it
    plan/              one row per planned dialogue (dialogue_id, spec): Parquet, written by Ray Data
    results/           one row per finished dialogue: Parquet, written by Ray Data from the workers
    checkpoints/       Ray Data's record of the dialogue ids already written (resume skips them)
    stats.json         counts and distributions

Each ``results`` row holds a dialogue's metadata, its transcript and its EU/EA items (JSON text,
EmoBench's layout), plus small columns the stats read without parsing anything. Curation reads
this folder directly; ``ec2er generate export`` writes eu.jsonl, ea.jsonl, dialogues.jsonl and
metadata.jsonl for people.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from ec2er.generation.dialogue import DialogueResult
from ec2er.safety.dialogue import safety_metadata
from ec2er.schemas.facts import GenerationFiles
from ec2er.schemas.taxonomy import EU_FINE_TO_COARSE, EUFineCategory

log = logging.getLogger(__name__)

PLAN, RESULTS, CHECKPOINTS = GenerationFiles.PLAN, GenerationFiles.RESULTS, GenerationFiles.CHECKPOINTS

RESULT_SCHEMA = pa.schema([
    ("dialogue_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("theme_category", pa.string()), ("stop_reason", pa.string()), ("turns", pa.int32()),
    ("eu_fine", pa.list_(pa.string())), ("ea_category", pa.list_(pa.string())),
    ("ea_question_type", pa.list_(pa.string())), ("item_failures", pa.int32()),
    ("prompt_tokens", pa.int64()), ("cached_prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
    ("metadata", pa.string()), ("dialogue", pa.string()), ("eu", pa.list_(pa.string())),
    ("ea", pa.list_(pa.string())),
])
STAT_COLUMNS = ["status", "theme_category", "stop_reason", "turns", "eu_fine", "ea_category", "ea_question_type",
                "item_failures", "prompt_tokens", "cached_prompt_tokens", "completion_tokens"]


def result_table(results: list[DialogueResult]) -> pa.Table:
    """Results as rows of the results dataset (an explicit schema: blocks whose lists are all
    empty must still agree with the others)."""
    rows = []
    for r in results:
        m = r.metadata
        rows.append({
            "dialogue_id": m["dialogue_id"], "status": m["status"], "error": m["error"],
            "theme_category": m["theme_category"], "stop_reason": m["stop_reason"], "turns": m["turns"],
            "eu_fine": [x["finegrained_category"] for x in r.eu], "ea_category": [x["category"] for x in r.ea],
            "ea_question_type": [x["question type"] for x in r.ea], "item_failures": len(m["item_failures"]),
            "prompt_tokens": m["prompt_tokens"], "cached_prompt_tokens": m["cached_prompt_tokens"],
            "completion_tokens": m["completion_tokens"],
            "metadata": json.dumps(m | safety_metadata(r.dialogue), ensure_ascii=False),
            "dialogue": r.dialogue.model_dump_json() if r.dialogue is not None else None,
            "eu": [json.dumps(x, ensure_ascii=False) for x in r.eu],
            "ea": [json.dumps(x, ensure_ascii=False) for x in r.ea],
        })
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def finished_result_files(folder: str) -> Iterator[Any]:
    """The Parquet fragments of a run's results that are whole. Ray Data's writers create each
    file in place and write its footer last, so a reader of a run in progress (the viewer, the
    export, progress, tests) can meet a file still being written (0 bytes, or no footer yet): such
    a file is skipped, not an error; it is read once its writer has finished it."""
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(_absolute(folder))
    base = f"{root.rstrip('/')}/{RESULTS}"
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return
    files = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    parquet = ds.ParquetFileFormat()
    for info in sorted(files, key=lambda f: f.path):
        if info.type != pafs.FileType.File or info.base_name.startswith((".", "_")):
            continue  # hidden and temporary files, as pyarrow's own dataset discovery skips them
        # one fragment per file, not ds.dataset(): its discovery reads every footer to infer a
        # schema and fails as a whole on a single unfinished file
        fragment = parquet.make_fragment(info.path, filesystem=fs)
        try:
            fragment.ensure_complete_metadata()  # reads the footer: absent while being written
        except (pa.ArrowInvalid, OSError) as e:
            log.debug("%s: not finished yet, skipped (%s)", fragment.path, e)
            continue
        yield fragment


def iter_result_batches(folder: str, columns: list[str] | None = None) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(file, batch) over a run's finished results files, a few thousand rows at a time (never
    the whole run)."""
    for fragment in finished_result_files(folder):
        for batch in fragment.to_batches(columns=columns, batch_size=4096):
            yield fragment.path, batch


def iter_items(folder: str) -> Iterator[tuple[str, int, str]]:
    """(where, n, item JSON line) for every item of a run: ``where`` names the results file and
    the dialogue, n counts items within it."""
    for path, batch in iter_result_batches(folder, ["dialogue_id", "eu", "ea"]):
        for dialogue_id, eu, ea in zip(*(batch.column(c).to_pylist() for c in ("dialogue_id", "eu", "ea")), strict=True):
            for n, line in enumerate([*eu, *ea], start=1):
                yield f"{path}#{dialogue_id}", n, line


def done_ids(folder: str) -> set[str]:
    """The dialogue ids a run has written (for tests and the export; the job itself skips written
    ids through Ray Data's checkpoints)."""
    return {i for _, b in iter_result_batches(folder, ["dialogue_id"]) for i in b.column(0).to_pylist()}


def run_stats(folder: str, config: Any, session: dict[str, Any]) -> dict[str, Any]:
    """Counts and distributions over everything the run has written: one scan of the small
    columns, at the end of a session (progress during it comes from running counters)."""
    c: dict[str, Counter] = {k: Counter() for k in ("eu_fine", "ea_category", "ea_question_type", "theme",
                                                      "stop", "turns")}
    n = ok = failed_items = 0
    tokens = Counter()
    for _, batch in iter_result_batches(folder, STAT_COLUMNS):
        cols = {name: batch.column(name).to_pylist() for name in STAT_COLUMNS}
        for i in range(batch.num_rows):
            n += 1
            ok += cols["status"][i] == "ok"
            failed_items += cols["item_failures"][i]
            c["eu_fine"].update(cols["eu_fine"][i])
            c["ea_category"].update(cols["ea_category"][i])
            c["ea_question_type"].update(cols["ea_question_type"][i])
            c["stop"][cols["stop_reason"][i]] += 1
            if cols["theme_category"][i]:
                c["theme"][cols["theme_category"][i]] += 1
            if cols["status"][i] == "ok":
                c["turns"][str(cols["turns"][i])] += 1
            for key in ("prompt_tokens", "cached_prompt_tokens", "completion_tokens"):
                tokens[key] += cols[key][i]
    eu_coarse = Counter()
    for fine, k in c["eu_fine"].items():
        eu_coarse[EU_FINE_TO_COARSE[EUFineCategory(fine)].value] += k
    return {
        "pipeline": config.pipeline, "model": config.engine.model,
        "dialogues": {"committed": n, "ok": ok, "failed": n - ok, "planned": config.num_dialogues},
        "items": {"eu": sum(c["eu_fine"].values()), "ea": sum(c["ea_category"].values()), "failed": failed_items},
        "distributions": {
            "eu_coarse": dict(eu_coarse), "eu_fine": dict(c["eu_fine"]), "ea_category": dict(c["ea_category"]),
            "ea_question_type": dict(c["ea_question_type"]), "theme_category": dict(c["theme"]),
            "stop_reason": dict(c["stop"]), "turns": dict(c["turns"]),
        },
        "tokens": {"prompt": tokens["prompt_tokens"], "cached_prompt": tokens["cached_prompt_tokens"],
                   "completion": tokens["completion_tokens"]},
        "session": session,
    }


def export(folder: str, out: str) -> dict[str, int]:
    """eu.jsonl, ea.jsonl, dialogues.jsonl and metadata.jsonl for people (in results order),
    streamed: each file is written to a temporary sibling and renamed into place."""
    from ec2er.io import atomic_open

    counts = Counter()
    names = (GenerationFiles.EU, GenerationFiles.EA, GenerationFiles.DIALOGUES, GenerationFiles.METADATA)
    with atomic_open(f"{out}/{names[0]}") as eu, atomic_open(f"{out}/{names[1]}") as ea, \
            atomic_open(f"{out}/{names[2]}") as dialogues, atomic_open(f"{out}/{names[3]}") as metadata:
        for _, batch in iter_result_batches(folder, ["eu", "ea", "dialogue", "metadata"]):
            for row in batch.to_pylist():
                for key, handle in (("eu", eu), ("ea", ea)):
                    for line in row[key]:
                        handle.write(line + "\n")
                        counts[key] += 1
                if row["dialogue"] is not None:
                    dialogues.write(row["dialogue"] + "\n")
                metadata.write(row["metadata"] + "\n")
                counts["dialogues"] += 1
    return dict(counts)


def _absolute(folder: str) -> str:
    """A local folder as an absolute path (pyarrow wants one); URIs unchanged."""
    import os

    return folder if "://" in folder else os.path.abspath(folder)
