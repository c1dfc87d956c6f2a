"""The data card: DATACARD.md with counts, category tables, rejection reasons, and PNG plots."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ec2er.curation.crisis import datacard_lines as crisis_datacard_lines  # noqa: E402
from ec2er.curation.dedup import tokenize  # noqa: E402
from ec2er.io import write_text  # noqa: E402
from ec2er.schemas import Item  # noqa: E402
from ec2er.schemas.facts import CuratedFiles  # noqa: E402

# The data card's figures, in CuratedFiles.PLOTS
CATEGORIES_PNG, POSITIONS_PNG, LENGTHS_PNG = "categories.png", "gold_positions.png", "scenario_lengths.png"


def _save(fig: plt.Figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)  # atomic like every other output
    return path.name


def plot_categories(distribution: dict[str, dict[str, int]], path: Path) -> str:
    fig, axes = plt.subplots(1, len(distribution), figsize=(5 * len(distribution), 4), squeeze=False)
    for ax, (task, counts) in zip(axes[0], distribution.items(), strict=True):
        ax.barh(list(counts), list(counts.values()), color="tab:blue")
        ax.set_title(f"{task} items per category")
        ax.set_xlabel("items")
    return _save(fig, path)


def plot_positions(positions: dict[str, Any], path: Path) -> str:
    fig, axes = plt.subplots(1, max(len(positions), 1), figsize=(4 * max(len(positions), 1), 3.5), squeeze=False)
    for ax, (field, st) in zip(axes[0], positions.items(), strict=False):
        ax.bar(list(st["histogram"]), list(st["histogram"].values()), color="tab:green")
        ax.set_title(f"{field}: gold letter (p={st['p_value']})")
    return _save(fig, path)


def plot_lengths(items: list[Item], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([len(tokenize(i.scenario)) for i in items] or [0], bins=30, color="tab:orange")
    ax.set_xlabel("scenario length (words)")
    ax.set_ylabel("items")
    return _save(fig, path)


def _table(header: tuple[str, str], rows: dict[str, Any]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---:|"]
    return lines + [f"| {k} | {v} |" for k, v in rows.items()]


def _sense_lines(sense: dict[str, Any] | None) -> list[str]:
    """The reader checks: what each rule rejects and how many items it removed."""
    if not sense:
        return []
    verb = {"reject": "rejected", "flag": "kept, flagged", "skip": "skipped"}[sense["mode"]]
    lines = ["## Reader checks", "",
             f"Is the item a question with answers at all (`checks.sense: {sense['mode']}`: failing items "
             f"{verb}). *Items*: failing the rule; *alone*: removed by this rule and nothing else.", "",
             "| rule | rejects | items | alone |", "|---|---|---:|---:|"]
    lines += [f"| {code} | {r['what']} | {r['items']} | {r['removed_by_it_alone']} |"
              for code, r in sense["rules"].items()]
    return lines + ["", f"Dialogues: {sense['note']}.", ""]


def write_datacard(out_dir: Path, stats: dict[str, Any], train: list[Item], val: list[Item]) -> Path:
    plots = out_dir / CuratedFiles.PLOTS
    cat_png = plot_categories(stats["distribution"]["train+val"], plots / CATEGORIES_PNG)
    pos_png = plot_positions(stats["positions"]["train"], plots / POSITIONS_PNG)
    len_png = plot_lengths(train + val, plots / LENGTHS_PNG)
    note = stats["config"].get("note")
    lines = ["# Data card: curated emotional-reasoning items", "", *([f"> {note}", ""] if note else []),
             f"Input: `{stats['input']}`. Items read: {stats['counts']['read']}; kept: {stats['counts']['kept']} "
             f"(train {stats['counts']['train']}, val {stats['counts']['val']}); rejected: "
             f"{stats['counts']['rejected']}.", "", "## Kept items per category", ""]
    for task, counts in stats["distribution"]["train+val"].items():
        lines += [f"### {task}", "", *_table(("category", "items"), counts), ""]
    lines += [f"![categories]({CuratedFiles.PLOTS}/{cat_png})", "", "## Rejection reasons", "",
              "An item may fail several checks; each is counted.", "",
              *_table(("reason", "items"), stats["rejections"]), "",
              *_sense_lines(stats.get("sense")),
              *crisis_datacard_lines(stats.get("crisis")),
              *(["## Kept, flagged", "", "Quality checks the recipe only flags (`checks.quality: flag`): these items "
                 "were kept and carry the codes in their `flags`.", "",
                 *_table(("flag", "items"), stats["kept_with_flags"]), ""] if stats["kept_with_flags"] else []),
              "## Decontamination", "",
              f"Benchmark: {stats['decontamination'].get('benchmark')}; items dropped: "
              f"{stats['decontamination'].get('dropped', 0)}.", "",
              "## Near-duplicates", "", *_table(("measure", "value"), stats["dedup"]), "",
              "## Gold answer positions", ""]
    for field, st in stats["positions"]["train"].items():
        lines.append(f"- `{field}` ({st['items']} items, {st['options']} options): "
                     f"{st['histogram']}, chi-square p = {st['p_value']}")
    lines += ["", f"![gold positions]({CuratedFiles.PLOTS}/{pos_png})", "", "## Scenario lengths", "",
              f"![scenario lengths]({CuratedFiles.PLOTS}/{len_png})", "", "## Confidence", "",
              *_table(("measure", "value"), stats["confidence"]), "",
              "## Language", "", *_table(("language", "items"),
                                         dict(Counter(i.language.value for i in train + val))), ""]
    path = out_dir / CuratedFiles.DATACARD
    write_text(path, "\n".join(lines))
    return path
