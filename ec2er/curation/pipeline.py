"""The curation stage: generation outputs in, train/val/rejects/stats/data card out.

Order: read (a malformed line is a reject naming its file and line) -> validate -> decontaminate
-> near-duplicates -> balance -> stratified split -> answer positions -> confidence -> write.
Every check runs on every item, so ``rejects.jsonl`` lists EVERY reason an item failed, and
``matches`` what a near-duplicate or contaminated item matched (the kept item's qid, place and
scenario; the benchmark's file, language and qid); a near-duplicate cluster keeps an item that
passed the other checks when it has one. All outputs are
written atomically; rerunning on the same input and recipe gives the same files (seeded).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ec2er.curation import quality as v
from ec2er.curation.balance import distribution, over_quota
from ec2er.curation.config import CurateConfig
from ec2er.curation.confidence import judge_confidence, no_judge_stats
from ec2er.curation.crisis import reject_unsafe_crisis_handling
from ec2er.curation.datacard import write_datacard
from ec2er.curation.decontaminate import benchmark_ref, benchmark_scenarios, contamination
from ec2er.curation.dedup import deduplicate
from ec2er.curation.positions import balance_positions, position_stats
from ec2er.curation.preprocess import clean_dialogues
from ec2er.curation.sense import EXPLANATION_SHARED, DialogueText, sense_reasons, sense_stats, shared_explanations
from ec2er.errors import DataError
from ec2er.io import iter_jsonl, json_error, write_json, write_jsonl
from ec2er.llm import ChatEngine
from ec2er.schemas import Item, detect_task
from ec2er.schemas.facts import CuratedFiles, GenerationFiles

log = logging.getLogger(__name__)
MALFORMED_SHOWN = 5  # malformed input lines named on the console (all are in rejects.jsonl)


@dataclass
class Record:
    """One input line and what curation decided about it."""

    file: str
    line: int
    raw: dict[str, Any] | None
    item: Item | None = None
    reasons: list[v.Reason] = field(default_factory=list)
    # what a near-duplicate or contamination reason points at, for people to compare side by side
    matches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def scenario(self) -> str | None:
        s = (self.raw or {}).get("scenario")
        return s if isinstance(s, str) else None

    def reject_line(self) -> dict[str, Any]:
        raw = self.raw or {}
        line = {"file": self.file, "line": self.line, "qid": raw.get("qid"),
                "reasons": [r.model_dump() for r in self.reasons], "item": self.raw}
        return line | ({"matches": self.matches} if self.matches else {})


def _input_lines(input_dir: Path):
    """(file, line, object or DataError) of every item: from a generation run's results (where
    'file' names the results file and the dialogue, 'line' the item within it), or from
    eu.jsonl / ea.jsonl files (an exported run, or items from elsewhere)."""
    from ec2er.generation.outputs import RESULTS, iter_items

    if (input_dir / RESULTS).is_dir():
        for where, n, text in iter_items(str(input_dir)):
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                obj = DataError(f"{where}:{n}: {json_error(e)}")
            yield where, n, obj
        return
    paths = [input_dir / name for name in GenerationFiles.ITEMS if (input_dir / name).is_file()]
    if not paths:
        raise DataError(f"{input_dir}: no {RESULTS}/ folder and no {' or '.join(GenerationFiles.ITEMS)} to curate")
    for path in paths:
        for line, obj in iter_jsonl(path):
            yield str(path), line, obj


def read_input_lines(input_dir: Path) -> list[Record]:
    """Every item of the generation run as a Record; a malformed line becomes a reject (named on
    the console: the first few by file and line, then a count)."""
    records, malformed = [], []
    for where, line, obj in _input_lines(input_dir):
        if isinstance(obj, DataError):
            malformed.append(str(obj))
            records.append(Record(where, line, None, reasons=[v.Reason(code=v.MALFORMED_LINE, detail=str(obj))]))
        else:
            records.append(Record(where, line, obj))
    for message in malformed[:MALFORMED_SHOWN]:
        log.warning("rejected a malformed line: %s", message)
    if len(malformed) > MALFORMED_SHOWN:
        log.warning("... and %d more malformed lines (all in %s)", len(malformed) - MALFORMED_SHOWN, CuratedFiles.REJECTS)
    return records


def _validate(records: list[Record], cfg: CurateConfig) -> None:
    seen: dict[tuple[str, str], str] = {}
    for r in records:
        if r.raw is None:
            continue
        r.item, reasons = v.validate_item(r.raw, cfg.checks)
        r.reasons += reasons
        key = (r.file, str(r.raw.get("qid")))
        if key in seen:  # qid is the item's identity: a second one is not the same item
            r.item = None
            r.reasons.append(v.Reason(code=v.DUPLICATE_QID, detail=f"qid already used at {seen[key]}"))
        seen.setdefault(key, f"{r.file}:{r.line}")


def _sense(records: list[Record], cfg: CurateConfig, dialogues: dict[str, DialogueText]) -> dict[str, int]:
    """The reader checks (``ec2er.curation.sense``) on every item, each item with its dialogue
    when the input has it (a generation run's results; an export's dialogues.jsonl)."""
    mode, coverage = cfg.checks.sense, {"with_dialogue": 0, "without_dialogue": 0}
    if mode == "skip":
        return coverage
    shared = shared_explanations([r.raw for r in records], cfg.checks.explanation_max_shared)
    for i, r in enumerate(records):
        if r.raw is None:
            continue
        try:
            task = detect_task(r.raw)
        except ValueError:
            continue  # schema_invalid already
        provenance = r.raw.get("provenance")
        dialogue = dialogues.get(provenance.get("dialogue_id")) if isinstance(provenance, dict) else None
        coverage["with_dialogue" if dialogue else "without_dialogue"] += 1
        reasons = sense_reasons(r.raw, task, cfg.checks, dialogue)
        if i in shared:
            reasons.append(v.Reason(code=EXPLANATION_SHARED, detail=shared[i]))
        if mode == "flag":  # as quality's flag mode: a valid item is kept with the codes in its flags
            if r.item is not None and reasons:
                flags = sorted({*(r.item.flags or []), *(x.code for x in reasons)})
                r.item = r.item.model_copy(update={"flags": flags})
            continue
        r.reasons = v.unique(r.reasons + reasons)
        if reasons:
            r.item = None
    return coverage


def _decontaminate(records: list[Record], cfg: CurateConfig) -> dict[str, Any]:
    source = cfg.decontaminate.benchmark
    if not source:
        return {"benchmark": None, "note": "no benchmark configured: not decontaminated"}
    bench = benchmark_scenarios(source)
    with_text = [r for r in records if r.scenario is not None]
    hits = contamination([r.scenario for r in with_text], bench, cfg.decontaminate.threshold)
    where = str(Path(source).resolve()) if Path(source).is_dir() else str(source)  # found from any cwd
    dropped = []
    for i, (ref, score) in sorted(hits.items()):
        rec = with_text[i]
        rec.reasons.append(v.Reason(code=v.CONTAMINATED, detail=f"near {ref} (score {score:.0f})"))
        # the benchmark item by reference only: its text stays in the benchmark's own files
        rec.matches.append({"code": v.CONTAMINATED, "benchmark": where, **benchmark_ref(ref),
                            "score": round(score, 1)})
        dropped.append({"qid": rec.raw.get("qid"), "file": rec.file, "line": rec.line, "benchmark": ref,
                        "score": round(score, 1)})
    return {"benchmark": where, "benchmark_scenarios": len(bench), "threshold": cfg.decontaminate.threshold,
            "dropped": len(dropped), "items": dropped}


def _deduplicate(records: list[Record], cfg: CurateConfig) -> dict[str, Any]:
    with_text = [r for r in records if r.scenario is not None]
    preferred = np.array([not r.reasons for r in with_text], dtype=bool)
    result = deduplicate([r.scenario for r in with_text], cfg.dedup, preferred)
    for i in np.nonzero(~result.keep)[0]:
        kept = with_text[result.representative[i]]
        with_text[i].reasons.append(v.Reason(code=v.NEAR_DUPLICATE,
                                             detail=f"near-duplicate of qid {kept.raw.get('qid')} "
                                                    f"({kept.file}:{kept.line})"))
        with_text[i].matches.append({"code": v.NEAR_DUPLICATE, "qid": kept.raw.get("qid"), "file": kept.file,
                                     "line": kept.line, "scenario": kept.scenario})
    return {"threshold": cfg.dedup.threshold, "backend": cfg.dedup.backend, "candidate_pairs": result.candidates,
            "verified_pairs": result.verified, "clusters_with_duplicates": result.clusters_with_duplicates,
            "removed": int((~result.keep).sum())}


def _balance(records: list[Record], cfg: CurateConfig) -> None:
    survivors = [r for r in records if not r.reasons]
    for i, detail in over_quota([r.item for r in survivors], cfg.balance.factor, cfg.seed).items():
        survivors[i].reasons.append(v.Reason(code=v.OVER_QUOTA, detail=detail))


def stratified_split(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Validation share taken per (task, category), so val mirrors train's mix; with a share
    asked for and at least two items, never an empty validation split (each group's share may
    round to 0 on a small run, and the chain evaluates on this split where it has no benchmark)."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, str], list[Item]] = defaultdict(list)
    for item in items:
        groups[(item.task.value, item.category)].append(item)
    train, val = [], []
    for key in sorted(groups):
        members = [groups[key][j] for j in rng.permutation(len(groups[key]))]
        n_val = math.floor(fraction * len(members) + 0.5)
        val += members[:n_val]
        train += members[n_val:]
    if fraction > 0 and not val and len(train) >= 2:
        val.append(train.pop(int(rng.integers(len(train)))))
    order = {id(it): k for k, it in enumerate(items)}  # keep input order inside each split
    return sorted(train, key=lambda it: order[id(it)]), sorted(val, key=lambda it: order[id(it)])


def read_dialogue_rows(input_dir: Path) -> list[tuple[str, int, Any]] | None:
    from ec2er.generation.outputs import RESULTS, iter_result_batches

    if (input_dir / RESULTS).is_dir():
        return [(path, i, json.loads(text)) for path, batch in iter_result_batches(str(input_dir), ["dialogue"])
                for i, text in enumerate(batch.column(0).to_pylist()) if text is not None]
    path = input_dir / GenerationFiles.DIALOGUES
    return [(str(path), line, obj) for line, obj in iter_jsonl(path)] if path.is_file() else None


def dialogue_texts(rows: list[tuple[str, int, Any]] | None) -> dict[str, DialogueText]:
    """dialogue_id -> its raw turns and background (every turn, repeats included: an option
    copying a turn that preprocessing drops is still a copy)."""
    return {obj["dialogue_id"]: DialogueText.from_raw(obj) for _, _, obj in rows or []
            if isinstance(obj, dict) and isinstance(obj.get("dialogue_id"), str)}


def _dialogues(rows: list[tuple[str, int, Any]] | None, out_dir: Path, cfg: CurateConfig) -> dict[str, Any]:
    if rows is None:
        return {"present": False}
    dialogues, report = clean_dialogues(rows, cfg.repeat_turn_threshold)
    write_jsonl(out_dir / CuratedFiles.DIALOGUES, dialogues)
    return {"present": True, "dialogues": report.dialogues, "turns_dropped": report.turns_dropped,
            "speaker_tags_normalized": report.speakers_renamed, "invalid": report.invalid}


def curate(input_dir: Path, out_dir: Path, cfg: CurateConfig, judge: ChatEngine | None = None) -> dict[str, Any]:
    """Run the stage; returns the stats written to stats.json."""
    if cfg.dedup.backend == "ray":
        from ec2er.ray_utils import init_ray

        init_ray()
    records = read_input_lines(input_dir)
    log.info("curate: %d input lines from %s", len(records), input_dir)
    _validate(records, cfg)
    dialogue_rows = read_dialogue_rows(input_dir)
    coverage = _sense(records, cfg, dialogue_texts(dialogue_rows))
    crisis = reject_unsafe_crisis_handling(records, dialogue_rows)  # ec2er.curation.crisis
    decontamination = _decontaminate(records, cfg)
    dedup = _deduplicate(records, cfg)
    _balance(records, cfg)
    kept = [r.item for r in records if not r.reasons]
    train, val = stratified_split(kept, cfg.val_fraction, cfg.seed)
    train, val = balance_positions(train, cfg.seed), balance_positions(val, cfg.seed + 1)
    confidence = no_judge_stats()
    if judge is not None and cfg.judge is not None:
        scored, confidence = judge_confidence(train + val, judge, cfg.judge)
        train, val = scored[:len(train)], scored[len(train):]
    rejects = [r for r in records if r.reasons]
    stats = {
        "input": str(input_dir), "config": cfg.model_dump(mode="json"),
        "counts": {"read": len(records), "kept": len(kept), "train": len(train), "val": len(val),
                   "rejected": len(rejects)},
        "rejections": dict(Counter(code for r in rejects for code in {x.code for x in r.reasons}).most_common()),
        "kept_with_flags": dict(Counter(f for it in train + val for f in it.flags or []).most_common()),
        "distribution": {"train+val": distribution(train + val), "train": distribution(train),
                         "val": distribution(val)},
        "positions": {"train": position_stats(train), "val": position_stats(val)},
        "decontamination": decontamination, "dedup": dedup, "confidence": confidence,
        "dialogues": _dialogues(dialogue_rows, out_dir, cfg),
        "crisis": crisis,
        "sense": sense_stats(cfg.checks.sense, [{x.code for x in r.reasons} for r in records],
                             [set(it.flags or []) for it in train + val], coverage),
    }
    write_jsonl(out_dir / CuratedFiles.TRAIN, train)
    write_jsonl(out_dir / CuratedFiles.VAL, val)
    write_jsonl(out_dir / CuratedFiles.REJECTS, [r.reject_line() for r in rejects])
    write_json(out_dir / CuratedFiles.STATS, stats)
    write_datacard(out_dir, stats, train, val)
    log.info("curate: kept %d (train %d, val %d), rejected %d -> %s", len(kept), len(train), len(val),
             len(rejects), out_dir)
    return stats
