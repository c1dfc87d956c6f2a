"""Writing a run's outputs: predictions.jsonl (the audit trail), results.json (+ lenient and
rotation companions), the Table 1-shaped markdown and CSV, and a PNG chart."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ec2er.schemas.benchmark import ItemKey  # noqa: E402
from ec2er.evaluation.crisis import LANGUAGE as CRISIS_LANGUAGE  # noqa: E402
from ec2er.evaluation.crisis import CrisisReply, crisis_cells, crisis_results, write_replies  # noqa: E402
from ec2er.evaluation.crisis import METRICS as CRISIS_METRICS  # noqa: E402
from ec2er.evaluation.crisis import SAFE as CRISIS_SAFE  # noqa: E402
from ec2er.evaluation.records import Prediction, write_predictions  # noqa: E402
from ec2er.evaluation.scoring import (  # noqa: E402
    MIN_ITEMS_FOR_INTERVAL,
    ScoreRow,
    categories,
    no_conclusion,
    outcome_rows,
    results,
    robustness,
    score_rows,
    with_comparisons,
)
from ec2er.io import atomic_open, write_json, write_text  # noqa: E402
from ec2er.schemas.items import Item  # noqa: E402
from ec2er.schemas.facts import EvaluationFiles as F  # noqa: E402

log = logging.getLogger(__name__)

# Table 1 columns: overall EU and EA, the four EU coarse and four EA categories; then ours, the
# crisis-handling shares last (filled on the protocol's own lines).
TABLE_METRICS = (["EU/overall", *(f"EU/{c}" for c in categories("EU")),
                  "EA/overall", *(f"EA/{c}" for c in categories("EA")),
                  "parse_failure_rate", "lenient/EU/overall", "lenient/EA/overall", *CRISIS_METRICS])


def write_report(out: Path, preds: list[Prediction], index: dict[ItemKey, Item], *,
                 bootstrap_samples: int, seed: int, crisis: Sequence[CrisisReply] = ()) -> dict[str, Path]:
    """Every output file; returned by file name (``EvaluationFiles``). Crisis replies, where
    there are any, go to their own file and their scores into the same results, table and chart."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in (F.PREDICTIONS, F.RESULTS, F.RESULTS_LENIENT, F.SCORES, F.TABLE_MD,
                                           F.TABLE_CSV, F.CHART)}
    write_predictions(paths[F.PREDICTIONS], preds)
    rows = score_rows(preds, index, bootstrap_samples, seed)
    tree = results(preds, index)
    if crisis:
        paths[F.CRISIS] = out / F.CRISIS
        write_replies(paths[F.CRISIS], crisis)
        rows += outcome_rows(crisis_cells(crisis), bootstrap_samples, seed)
        for model, protocols in crisis_results(crisis).items():
            tree.setdefault(model, {}).update(protocols)
    write_json(paths[F.RESULTS], with_comparisons(tree, rows))
    write_json(paths[F.RESULTS_LENIENT], with_comparisons(results(preds, index, lenient=True), rows, lenient=True))
    rotated = robustness(preds, index)
    if rotated:
        paths[F.ROBUSTNESS] = out / F.ROBUSTNESS
        write_json(paths[F.ROBUSTNESS], rotated)
    frame = pd.DataFrame([r.model_dump() for r in rows])
    with atomic_open(paths[F.SCORES]) as f:
        frame.to_csv(f, index=False)
    wide = table(rows)
    with atomic_open(paths[F.TABLE_CSV]) as f:
        wide.to_csv(f, index=False)
    write_text(paths[F.TABLE_MD], markdown(wide))
    chart(rows, paths[F.CHART], unparsed_shares(preds))
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def read_scores(path: Path) -> list[ScoreRow]:
    """The rows of a scores.csv (as ``write_report`` writes them)."""
    frame = pd.read_csv(path, dtype=dict.fromkeys(("model", "base_model", "adapter", "protocol", "language", "metric",
                                                   "no_interval", "no_delta_interval"), object))
    return [ScoreRow.model_validate({k: None if v != v else v for k, v in rec.items()})  # NaN: an empty cell
            for rec in frame.to_dict("records")]


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def value_text(r: ScoreRow) -> str:
    """An accuracy (or share) with its interval and n; below MIN_ITEMS_FOR_INTERVAL items, the count
    behind it and "no conclusion" instead of a bare number."""
    if r.no_interval == "too_few":
        return f"{no_conclusion(r.n, r.no_interval)} ({round(r.value * r.n)} of {r.n})"
    if r.ci_low is None or r.ci_high is None:
        why = {"no_spread": "every item alike: no interval", "disabled": "no interval: bootstrap_samples 0"}
        return f"{r.value:.3f} n={r.n} ({why[r.no_interval or 'disabled']})"
    return f"{r.value:.3f} [{r.ci_low:.2f}, {r.ci_high:.2f}] n={r.n}"


def delta_text(r: ScoreRow) -> str:
    """An adapter's difference from its base with its paired interval, McNemar's p and n, or
    "n = <n>: no conclusion" where there is no interval."""
    assert r.delta is not None and r.paired_n is not None and r.mcnemar_p is not None
    if r.delta_low is None or r.delta_high is None:
        text = no_conclusion(r.paired_n, r.no_delta_interval or "disabled")
        return text if r.no_delta_interval == "too_few" else f"{text}; McNemar {_p(r.mcnemar_p)}"
    return f"{r.delta:+.3f} [{r.delta_low:+.2f}, {r.delta_high:+.2f}] McNemar {_p(r.mcnemar_p)} n={r.paired_n}"


def detectable_text(r: ScoreRow) -> str:
    return f"{'none' if r.mde is None else f'{r.mde:.2f}'} n={r.paired_n}"


# The lines of each model in the table, in order: its numbers; for an adapter, its differences
# from the base and the difference those items are sure (power 0.8) to detect.
LINES = {"": value_text, "Δ vs base": delta_text, "detectable Δ (80% power)": detectable_text}


def table(rows: list[ScoreRow]) -> pd.DataFrame:
    """One line per model x protocol x language (value [95% CI] n); each adapter is followed by a
    line of its deltas against its base model (paired bootstrap over the same items, McNemar's
    p) and one of the difference its n detects with 80% power."""
    lines: dict[tuple, dict[str, str]] = {}
    for r in rows:
        if r.metric not in TABLE_METRICS:
            continue
        key = (r.protocol, r.language, r.base_model, r.adapter or "")
        for order, (kind, text) in enumerate(LINES.items()):
            if kind == "" or (r.adapter is not None and r.delta is not None):
                lines.setdefault(key + (order,), {})[r.metric] = text(r)
    records = []
    for (protocol, lang, base, adapter, order), cells in sorted(lines.items()):
        name = list(LINES)[order] or (f"{base}+{adapter}" if adapter else base)
        records.append({"protocol": protocol, "language": lang, "model": name,
                        **{m: cells.get(m, "") for m in TABLE_METRICS}})
    return pd.DataFrame(records, columns=["protocol", "language", "model", *TABLE_METRICS])


def markdown(frame: pd.DataFrame) -> str:
    header = ("# EmoBench results\n\nStrict scoring (an unparsed answer counts as wrong; see "
              "`parse_failure_rate`); `lenient/...` re-reads the same replies leniently. Cells: accuracy "
              "[bootstrap 95% CI] n=items; with fewer than "
              f"{MIN_ITEMS_FOR_INTERVAL} items no interval means anything, and the cell says "
              "`n = <n>: no conclusion (<right> of <n>)`. `Δ vs base` lines: adapter minus base on the same "
              "items [paired bootstrap 95% CI] and an exact McNemar test; `detectable Δ (80% power)`: a "
              "difference those n items detect with 80% power at alpha 0.05 (exact McNemar) even when the two "
              "models disagree on every item (about 2.80/√n; with less disagreement smaller ones are "
              "detected too; `none`: too few items to detect any). `crisis` lines (where the recipe asks): the "
              "share of crisis messages handled safely by the safety rules' grade (`crisis/safe`: every "
              "message; `crisis/safe_at_risk`: those with risk; `crisis/safe_no_risk`: emotionally charged "
              "but safe ones), as accuracies are."
              "\n\n")
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return header + "\n".join(lines) + "\n"


def unparsed_shares(preds: list[Prediction]) -> dict[tuple[str, str, str, str], float]:
    """(model, protocol, language, task) -> the share of replies the strict parser could not read,
    over the benchmark's own option order (rotation 0), as the accuracies are."""
    groups: dict[tuple[str, str, str, str], list[bool]] = {}
    for p in preds:
        if p.rotation == 0:
            groups.setdefault((p.model, p.protocol, p.language.value, p.task.value), []).append(not p.parsed)
    return {key: sum(flags) / len(flags) for key, flags in groups.items()}


def chart(rows: list[ScoreRow], path: Path, unparsed: dict[tuple[str, str, str, str], float] | None = None) -> None:
    """The PNG of ``chart_figure``."""
    fig = chart_figure(rows, unparsed)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def chart_figure(rows: list[ScoreRow], unparsed: dict[tuple[str, str, str, str], float] | None = None) -> Figure:
    """Overall EU and EA accuracy per protocol (groups) and model (bars), one row per language.
    On each bar a hatched segment marks the replies the strict parser could not read (wrong by
    the rules, but not a wrong answer): a model that never answered in the asked format shows a
    hatched bar, one that answered wrongly an empty one. Each panel's title carries its n, a
    panel without items says so, and the legend sits below the panels, where it covers no bar."""
    unparsed = unparsed or {}
    overall = [r for r in rows if r.metric in ("EU/overall", "EA/overall")]
    crisis = [r for r in rows if r.metric == CRISIS_SAFE]
    langs = sorted({r.language for r in overall})
    protocols = sorted({r.protocol for r in overall})
    models = sorted({r.model for r in overall + crisis})
    fig, axes = plt.subplots(max(1, len(langs)), 3 if crisis else 2, squeeze=False, layout="constrained",
                             figsize=(6 + 1.5 * len(protocols) * len(models) / 2 + (2 + 0.4 * len(models)) * bool(crisis),
                                      3.5 * max(1, len(langs)) + 0.6))
    width = 0.8 / max(1, len(models))
    if crisis:
        _crisis_panel(axes[0][2], crisis, models)
        for row in axes[1:]:
            row[2].set_axis_off()
    for i, lang in enumerate(langs):
        for j, task in enumerate(("EU", "EA")):
            ax = axes[i][j]
            panel = [r for r in overall if r.language == lang and r.metric == f"{task}/overall"]
            ax.set_title(_panel_title(task, lang, panel))
            if not panel:
                ax.text(0.5, 0.5, f"no {task} items in the evaluated set", transform=ax.transAxes,
                        ha="center", va="center", color="dimgray")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            for k, model in enumerate(models):
                pick = {r.protocol: r for r in panel if r.model == model}
                xs = [p + k * width for p, proto in enumerate(protocols) if proto in pick]
                vals = [pick[proto] for proto in protocols if proto in pick]
                bars = ax.bar(xs, [v.value for v in vals], width, label=model, color=f"C{k}")
                ranged = [(x, v.value, v.ci_low, v.ci_high) for x, v in zip(xs, vals, strict=True)
                          if v.ci_low is not None and v.ci_high is not None]
                if ranged:  # real intervals only: a zero-length error bar would read as certainty
                    x, mid, low, high = (list(col) for col in zip(*ranged, strict=True))
                    ax.errorbar(x, mid, yerr=[[max(0.0, m - lo) for m, lo in zip(mid, low, strict=True)],
                                              [max(0.0, hi - m) for m, hi in zip(mid, high, strict=True)]],
                                fmt="none", ecolor="black", capsize=3)
                shares = [unparsed.get((model, proto, lang, task), 0.0) for proto in protocols if proto in pick]
                ax.bar(xs, shares, width, bottom=[v.value for v in vals], color="none", linewidth=0.8,
                       edgecolor=bars.patches[0].get_facecolor() if bars.patches else "gray", hatch="///",
                       label="unparsed (hatched)")
                for x, v, share in zip(xs, vals, shares, strict=True):
                    if share > 0:
                        ax.text(x, v.value + share + 0.01, f"{share:.0%}\nunparsed", ha="center", va="bottom",
                                fontsize=6)
            ax.set_xticks([p + width * (len(models) - 1) / 2 for p in range(len(protocols))], protocols)
            ax.set_ylim(0, 1.15)  # room for the unparsed labels above a full bar
            ax.set_ylabel("accuracy (95% CI)")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    handles = {label: handles[label] for label in sorted(handles, key=lambda x: x not in models)}  # models first
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize="small",
                   ncol=min(len(handles), 3), frameon=False)
    return fig


def _crisis_panel(ax: Any, crisis: list[ScoreRow], models: list[str]) -> None:
    """The share of crisis messages each model handled safely, with its interval, in the models'
    colours; its title carries n."""
    by_model = {r.model: r for r in crisis}
    shown = [(k, by_model[m]) for k, m in enumerate(models) if m in by_model]
    ax.bar([k for k, _ in shown], [r.value for _, r in shown], 0.8, color=[f"C{k}" for k, _ in shown])
    ranged = [(k, r) for k, r in shown if r.ci_low is not None and r.ci_high is not None]
    if ranged:
        ax.errorbar([k for k, _ in ranged], [r.value for _, r in ranged],
                    yerr=[[max(0.0, r.value - (r.ci_low or 0.0)) for _, r in ranged],
                          [max(0.0, (r.ci_high or 0.0) - r.value) for _, r in ranged]],
                    fmt="none", ecolor="black", capsize=3)
    ax.set_title(_panel_title("crisis handled safely", CRISIS_LANGUAGE, crisis).replace(" overall", ""))
    ax.set_xticks([k for k, _ in shown], [""] * len(shown))  # the legend names the models
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("share safe (95% CI)")


def _panel_title(task: str, lang: str, panel: list[ScoreRow]) -> str:
    """The panel's name and its n (a range where models answered different numbers of items);
    below MIN_ITEMS_FOR_INTERVAL, "no conclusion"."""
    sizes = sorted({r.n for r in panel})
    if not sizes:
        return f"{task} overall ({lang}): n = 0"
    n = f"n = {sizes[0]}" if len(sizes) == 1 else f"n = {sizes[0]}-{sizes[-1]}"
    return f"{task} overall ({lang}), {n}" + (": no conclusion" if sizes[-1] < MIN_ITEMS_FOR_INTERVAL else "")
