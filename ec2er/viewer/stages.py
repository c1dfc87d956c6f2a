"""What each stage's documented files show: the overview of a run, curation's decisions, training's
loss and preview, evaluation's predictions side by side. Everything is read from the stage folders
``RunFolder`` found; nothing is written, no model is loaded.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import threading
from pathlib import Path
from typing import Any

from ec2er.adapters import TRAINING_RECORD
from ec2er.schemas.facts import BenchmarkFiles, CuratedFiles, EvaluationFiles, GenerationFiles, TrainingFiles
from ec2er.schemas.facts import STAGE_RECORD
from ec2er.viewer.folder import RunFolder, StageFolder
from ec2er.viewer.jsonl import JsonlFiles, Source, raw_needle, text_contains
from ec2er.viewer.queries import Results

PREVIEW_SHOWN = 20  # examples of preview.jsonl on the page
PREVIEW_CHARS = 20_000  # of one example's text
STATE_FILES = {"generate": (GenerationFiles.STATS, GenerationFiles.PROGRESS, GenerationFiles.FINGERPRINT),
               "curate": (CuratedFiles.STATS,), "train": (TRAINING_RECORD,),
               "evaluate": (EvaluationFiles.RESULTS, EvaluationFiles.RESULTS_LENIENT, EvaluationFiles.ROBUSTNESS)}


# ---------------------------------------------------------------- overview

def overview(folder: RunFolder, results: dict[str, Results]) -> dict[str, Any]:
    """The run at a glance: its stages with their summaries, and each stage's headline files."""
    stages = folder.stages()
    chain = folder.chain()
    out: dict[str, Any] = {"run": folder.name, "uri": folder.uri,
                           "chain": {"seconds": chain.get("seconds")} if isinstance(chain, dict) else None,
                           "stages": [{"key": s.key, "label": s.label, "kind": s.kind, "summary": _summary(s, chain),
                                       "damaged": damaged_files(folder, s)} for s in stages]}
    for s in stages:
        part = {"generate": lambda: generation_overview(folder, s, results[s.key]),
                "curate": lambda: curation_overview(folder, s),
                "train": lambda: training_overview(folder, s),
                "evaluate": lambda: evaluation_overview(folder, s)}.get(s.kind)
        if part is not None:
            out.setdefault(s.kind, []).append({"key": s.key, **part()})
    return out


def damaged_files(folder: RunFolder, stage: StageFolder) -> list[str]:
    """The stage's JSON records that are there but cannot be read, each named with why: the page
    shows them as damaged, never as "not written yet"."""
    names = (STAGE_RECORD, *STATE_FILES.get(stage.kind, ()))
    found = (folder.damaged(folder.join(stage.key, name)) for name in names)
    return [problem for problem in found if problem]


def _summary(stage: StageFolder, chain: Any) -> dict[str, Any] | None:
    """The stage's summary: the chain's record of it (which also says whether it was reused)."""
    if isinstance(chain, dict):
        for name, summary in (chain.get("stages") or {}).items():
            if name == stage.key.replace("/", ":") or (isinstance(summary, dict) and str(summary.get("output") or "")
                                                       .rstrip("/").endswith("/" + stage.key)):
                return summary
    return stage.summary


def generation_overview(folder: RunFolder, stage: StageFolder, results: Results) -> dict[str, Any]:
    files = results.files()
    return {"stats": folder.read_json(folder.join(stage.key, GenerationFiles.STATS)),
            "progress": folder.read_json(folder.join(stage.key, GenerationFiles.PROGRESS)),
            "written": sum(f.rows for f in files), "files": len(files)}


def progress(folder: RunFolder, stage: StageFolder, results: Results) -> dict[str, Any]:
    files = results.files()
    return {"progress": folder.read_json(folder.join(stage.key, GenerationFiles.PROGRESS)),
            "written": sum(f.rows for f in files), "files": len(files)}


# ---------------------------------------------------------------- curation

DECISIONS = {"train": CuratedFiles.TRAIN, "val": CuratedFiles.VAL, "rejected": CuratedFiles.REJECTS}


def curation_overview(folder: RunFolder, stage: StageFolder) -> dict[str, Any]:
    stats = folder.read_json(folder.join(stage.key, CuratedFiles.STATS)) or {}
    decontamination = {k: v for k, v in (stats.get("decontamination") or {}).items() if k != "items"}
    plots = [posixpath.join(stage.key, "plots", c.base_name) for c in folder.children(folder.join(stage.key, "plots"))
             if c.base_name.endswith(".png")]
    datacard = folder.join(stage.key, CuratedFiles.DATACARD)
    return {"counts": stats.get("counts"), "rejections": stats.get("rejections"), "dedup": stats.get("dedup"),
            "decontamination": decontamination, "kept_with_flags": stats.get("kept_with_flags"),
            "datacard": posixpath.join(stage.key, CuratedFiles.DATACARD) if folder.is_file(datacard) else None,
            "plots": plots}


def curation_page(folder: RunFolder, jsonl: JsonlFiles, stage: StageFolder, decision: str | None,
                  reason: str | None, task: str | None, q: str | None, offset: int, limit: int) -> dict[str, Any]:
    """Every item with its decision: kept (train, val) or rejected with its reasons."""
    chosen = [decision] if decision in DECISIONS else list(DECISIONS)
    sources = [Source(folder.join(stage.key, DECISIONS[d]), d) for d in chosen]
    if reason:
        sources = [s for s in sources if s.tag == "rejected"]
    needle = reason.encode() if reason and reason.isascii() else raw_needle(q)
    lowered = q.lower() if q else None

    def keep(source: Source, record: dict[str, Any]) -> bool:
        item = record.get("item") if source.tag == "rejected" else record
        if reason and not any(r.get("code") == reason for r in record.get("reasons") or []):
            return False
        if task and _task(item) != task:
            return False
        return not lowered or text_contains(record, lowered)

    filtered = bool(reason or task or q)
    page = jsonl.page(sources, offset, limit, keep if filtered else None, needle if filtered else None)
    page["rows"] = [_decision_row(r) for r in page["rows"]]
    counts = (folder.read_json(folder.join(stage.key, CuratedFiles.STATS)) or {}).get("counts") or {}
    known = [counts.get(s.tag) for s in sources]
    page["total"] = None if filtered or None in known else sum(known)
    return page


def _task(item: Any) -> str | None:
    if not isinstance(item, dict):
        return None
    return "EU" if "emotion_choices" in item else "EA" if "choices" in item else None


def _decision_row(row: dict[str, Any]) -> dict[str, Any]:
    record = row["record"]
    if row["source"] == "rejected":
        item = record.get("item") if isinstance(record.get("item"), dict) else {}
        return {"decision": "rejected", "line": row["line"], "qid": record.get("qid"), "task": _task(item),
                "item": item, "reasons": record.get("reasons") or [], "matches": record.get("matches") or [],
                "where": f"{record.get('file')}:{record.get('line')}"}
    return {"decision": row["source"], "line": row["line"], "qid": record.get("qid"), "task": _task(record),
            "item": record, "reasons": [], "matches": []}


class Benchmarks:
    """Benchmark items a curation run matched, read from the benchmark folder the run recorded
    (never a path a request names; never copied anywhere)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int], dict[tuple[str, str, str], dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def item(self, folder: RunFolder, stage: StageFolder, ref: str) -> dict[str, Any] | None:
        stats = folder.read_json(folder.join(stage.key, CuratedFiles.STATS)) or {}
        source = (stats.get("decontamination") or {}).get("benchmark")
        try:
            name, language, qid = ref.split(":", 2)
        except ValueError:
            return None
        if not source or name not in BenchmarkFiles.ALL:
            return None
        path = _benchmark_file(str(source), name)
        if path is None:
            return {"missing": f"benchmark {source} is not readable here"}
        rows = self._load(path)
        found = rows.get((name, language, qid))
        return {"benchmark": str(source), "ref": ref, "item": found} if found else None

    def _load(self, path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            if key in self._rows:
                return self._rows[key]
        rows = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows[(path.name, str(row.get("language", "?")), str(row.get("qid", "?")))] = row
        with self._lock:
            self._rows = {key: rows}  # one benchmark at a time: small, and rarely more than one
        return rows


def _benchmark_file(source: str, name: str) -> Path | None:
    """The benchmark's EU.jsonl or EA.jsonl as curation found it: in the folder (searched as
    curation searches it), or in the hub's local cache (never downloaded here)."""
    folder = Path(source)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(source, repo_type="dataset", local_files_only=True,
                                            allow_patterns=[f"*{n}" for n in BenchmarkFiles.ALL]))
        except Exception:  # not cached here, or not a hub id: the page says so
            return None
    matches = sorted(folder.rglob(name))
    return matches[0] if matches else None


# ---------------------------------------------------------------- training

def training_overview(folder: RunFolder, stage: StageFolder) -> dict[str, Any]:
    path = folder.join(stage.key, TRAINING_RECORD)
    record = folder.read_json(path)
    if not isinstance(record, dict):
        damaged = folder.damaged(path) or (f"{TRAINING_RECORD}: damaged: not a JSON object" if record is not None
                                           else None)
        return {"record": None, "damaged": damaged}
    loss = record.get("loss") or {}
    return {"record": {"adapter": record.get("adapter"), "base_model": record.get("base_model"),
                       "loss_first": loss.get("first"), "loss_final": loss.get("final"),
                       "val_final": loss.get("val_final"), "steps": record.get("steps"),
                       "epochs": record.get("epochs"), "tokens_per_s": record.get("tokens_per_s"),
                       "examples": ((record.get("data") or {}).get("train") or {}).get("kept"),
                       "timings": record.get("timings")}}


def training_view(folder: RunFolder, stage: StageFolder) -> dict[str, Any]:
    record = folder.read_json(folder.join(stage.key, TRAINING_RECORD))
    out: dict[str, Any] = {"key": stage.key, **training_overview(folder, stage)}
    if isinstance(record, dict):
        loss = record.get("loss") or {}
        config = record.get("config") or {}
        out["curves"] = {"train": loss.get("train_curve") or [], "val": loss.get("val_curve") or []}
        out["data"] = record.get("data")
        out["config"] = {k: config.get(k) for k in ("model", "lora", "optim", "max_length", "packing", "epochs")
                         if k in config}
    out["preview"] = _preview(folder, stage)
    return out


def _preview(folder: RunFolder, stage: StageFolder) -> list[dict[str, Any]]:
    path = folder.join(stage.key, TrainingFiles.PREVIEW)
    if not folder.is_file(path):
        return []
    examples = []
    for _, line in JsonlFiles(folder.fs).lines(path):
        try:
            example = json.loads(line)
        except ValueError:
            continue
        spans, used = [], 0
        for span in example.get("spans") or []:
            text = str(span.get("text", ""))[: max(PREVIEW_CHARS - used, 0)]
            used += len(text)
            spans.append({"text": text, "trained": bool(span.get("trained"))})
        examples.append({"example_id": example.get("example_id"), "spans": spans})
        if len(examples) >= PREVIEW_SHOWN:
            break
    return examples


# ---------------------------------------------------------------- evaluation

def evaluation_overview(folder: RunFolder, stage: StageFolder) -> dict[str, Any]:
    table_path = folder.join(stage.key, EvaluationFiles.TABLE_CSV)
    table = list(csv.DictReader(io.StringIO(folder.read_bytes(table_path).decode("utf-8")))) \
        if folder.is_file(table_path) else []
    chart = posixpath.join(stage.key, EvaluationFiles.CHART) if folder.is_file(folder.join(stage.key, EvaluationFiles.CHART)) else None
    return {"table": table, "chart": chart, "results": folder.read_json(folder.join(stage.key, EvaluationFiles.RESULTS))}


class Predictions:
    """A predictions.jsonl, grouped by item (protocol, language, task, qid, rotation) so every
    model's reply to the same item sits side by side. Held whole per file version: a benchmark
    run is bounded by the benchmark (EmoBench: 800 items x protocols x models)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int], list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()

    def groups(self, folder: RunFolder, stage: StageFolder) -> list[dict[str, Any]]:
        path = folder.join(stage.key, EvaluationFiles.PREDICTIONS)
        info = folder.info(path)
        if not folder.is_file(path):
            return []
        version = (info.size, info.mtime_ns or 0)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == version:
                return cached[1]
        groups: dict[tuple, dict[str, Any]] = {}
        for number, line in JsonlFiles(folder.fs).lines(path):
            try:
                p = json.loads(line)
            except ValueError:
                continue
            if not isinstance(p, dict):
                continue
            # a null rotation is the benchmark's own order, as an absent one is
            key = (p.get("protocol"), p.get("language"), p.get("task"), str(p.get("qid")), p.get("rotation") or 0)
            group = groups.setdefault(key, {"protocol": key[0], "language": key[1], "task": key[2], "qid": key[3],
                                            "rotation": key[4], "predictions": []})
            group["predictions"].append({**p, "line": number})
        out = []
        for group in groups.values():
            group["predictions"].sort(key=lambda p: (p.get("base_model") or "", p.get("adapter") is not None,
                                                     p.get("adapter") or ""))
            answers = {json.dumps(p.get("answer"), sort_keys=True) for p in group["predictions"]}
            group["disagree"] = len(group["predictions"]) > 1 and len(answers) > 1
            group["gold"] = next((p.get("gold") for p in group["predictions"] if p.get("gold") is not None), None)
            out.append(group)
        out.sort(key=lambda g: (str(g["protocol"] or ""), str(g["language"] or ""), str(g["task"] or ""),
                                _natural(g["qid"]), _natural(str(g["rotation"]))))
        with self._lock:
            self._cache = {path: (version, out)}
        return out


def _natural(qid: str) -> tuple[int, str]:
    return (int(qid), "") if qid.isdigit() else (1 << 62, qid)


def predictions_page(groups: list[dict[str, Any]], protocol: str | None, language: str | None, task: str | None,
                     model: str | None, disagree: bool, unparsed: bool, wrong: bool, q: str | None,
                     offset: int, limit: int) -> dict[str, Any]:
    lowered = q.lower() if q else None

    def keep(g: dict[str, Any]) -> bool:
        preds = g["predictions"]
        return ((not protocol or g["protocol"] == protocol) and (not language or g["language"] == language)
                and (not task or g["task"] == task) and (not model or any(p.get("model") == model for p in preds))
                and (not disagree or g["disagree"]) and (not unparsed or any(not p.get("parsed") for p in preds))
                and (not wrong or any(not p.get("correct") for p in preds))
                and (not lowered or any(text_contains(p.get("response"), lowered) or g["qid"] == q
                                        or text_contains(p.get("prompts"), lowered) for p in preds)))

    kept = [g for g in groups if keep(g)]
    return {"rows": kept[offset:offset + limit], "offset": offset, "limit": limit, "total": len(kept)}


def evaluation_view(folder: RunFolder, stage: StageFolder, predictions: Predictions) -> dict[str, Any]:
    """The table, the chart's numbers (accuracy and the unparsed share per model, protocol,
    language and task, over the benchmark's own option order) and what the filters offer."""
    groups = predictions.groups(folder, stage)
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for g in groups:
        if g["rotation"] == 0:
            for p in g["predictions"]:
                cells.setdefault((p.get("model"), g["protocol"], g["language"], g["task"]), []).append(p)
    bars = [{"model": m, "protocol": proto, "language": lang, "task": task, "n": len(ps),
             "accuracy": sum(bool(p.get("correct")) for p in ps) / len(ps),
             "unparsed": sum(not p.get("parsed") for p in ps) / len(ps),
             "lenient_accuracy": sum(bool(p.get("lenient_correct")) for p in ps) / len(ps)}
            for (m, proto, lang, task), ps in sorted(cells.items(), key=lambda kv: tuple(str(x) for x in kv[0]))]
    facets = {name: sorted({str(g[name]) for g in groups}) for name in ("protocol", "language", "task")}
    facets["model"] = sorted({str(p.get("model")) for g in groups for p in g["predictions"]})
    return {"key": stage.key, **evaluation_overview(folder, stage), "bars": bars, "facets": facets,
            "items": len(groups), "disagree": sum(g["disagree"] for g in groups)}
