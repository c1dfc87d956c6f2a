"""Writing a run's outputs: predictions.jsonl (the audit trail), results.json (+ lenient and
rotation companions), the Table 1-shaped markdown and CSV, and a PNG chart."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ec2er.schemas.benchmark import ItemKey  # noqa: E402
from ec2er.evaluation.records import Prediction, write_predictions  # noqa: E402
from ec2er.evaluation.scoring import ScoreRow, categories, results, robustness, score_rows  # noqa: E402
from ec2er.io import atomic_open, write_json, write_text  # noqa: E402
from ec2er.schemas.items import Item  # noqa: E402
from ec2er.schemas.facts import EvaluationFiles as F  # noqa: E402

log = logging.getLogger(__name__)

# Table 1 columns: overall EU and EA, the four EU coarse and four EA categories; then ours.
TABLE_METRICS = (["EU/overall", *(f"EU/{c}" for c in categories("EU")),
                  "EA/overall", *(f"EA/{c}" for c in categories("EA")),
                  "parse_failure_rate", "lenient/EU/overall", "lenient/EA/overall"])


def write_report(out: Path, preds: list[Prediction], index: dict[ItemKey, Item], *,
                 bootstrap_samples: int, seed: int) -> dict[str, Path]:
    """Every output file; returned by file name (``EvaluationFiles``)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in (F.PREDICTIONS, F.RESULTS, F.RESULTS_LENIENT, F.SCORES, F.TABLE_MD,
                                           F.TABLE_CSV, F.CHART)}
    write_predictions(paths[F.PREDICTIONS], preds)
    write_json(paths[F.RESULTS], results(preds, index))
    write_json(paths[F.RESULTS_LENIENT], results(preds, index, lenient=True))
    rotated = robustness(preds, index)
    if rotated:
        paths[F.ROBUSTNESS] = out / F.ROBUSTNESS
        write_json(paths[F.ROBUSTNESS], rotated)
    rows = score_rows(preds, index, bootstrap_samples, seed)
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


def _cell(value: float | None, low: float | None, high: float | None, signed: bool = False) -> str:
    if value is None:
        return ""
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text + (f" [{low:+.2f}, {high:+.2f}]" if signed else f" [{low:.2f}, {high:.2f}]") \
        if low is not None and high is not None else text


def table(rows: list[ScoreRow]) -> pd.DataFrame:
    """One line per model x protocol x language (value [95% CI]); each adapter is followed by a
    line of its deltas against its base model (paired bootstrap over the same items)."""
    lines: dict[tuple, dict[str, str]] = {}
    for r in rows:
        if r.metric not in TABLE_METRICS:
            continue
        key = (r.protocol, r.language, r.base_model, r.adapter or "")
        lines.setdefault(key + ("",), {})[r.metric] = _cell(r.value, r.ci_low, r.ci_high)
        if r.adapter is not None and r.delta is not None:
            lines.setdefault(key + ("Δ vs base",), {})[r.metric] = _cell(r.delta, r.delta_low, r.delta_high, True)
    records = []
    for (protocol, lang, base, adapter, kind), cells in sorted(lines.items()):
        name = kind or (f"{base}+{adapter}" if adapter else base)
        records.append({"protocol": protocol, "language": lang, "model": name,
                        **{m: cells.get(m, "") for m in TABLE_METRICS}})
    return pd.DataFrame(records, columns=["protocol", "language", "model", *TABLE_METRICS])


def markdown(frame: pd.DataFrame) -> str:
    header = ("# EmoBench results\n\nStrict scoring (an unparsed answer counts as wrong; see "
              "`parse_failure_rate`); `lenient/...` re-reads the same replies leniently. Cells: accuracy "
              "[bootstrap 95% CI]; `Δ vs base` lines: adapter minus base on the same items.\n\n")
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
    """Overall EU and EA accuracy per protocol (groups) and model (bars), one row per language.
    On each bar a hatched segment marks the replies the strict parser could not read (wrong by
    the rules, but not a wrong answer): a model that never answered in the asked format shows a
    hatched bar, one that answered wrongly an empty one."""
    unparsed = unparsed or {}
    overall = [r for r in rows if r.metric in ("EU/overall", "EA/overall")]
    langs = sorted({r.language for r in overall})
    protocols = sorted({r.protocol for r in overall})
    models = sorted({r.model for r in overall})
    fig, axes = plt.subplots(len(langs), 2, figsize=(6 + 1.5 * len(protocols) * len(models) / 2, 3.5 * len(langs)),
                             squeeze=False)
    width = 0.8 / len(models)
    for i, lang in enumerate(langs):
        for j, task in enumerate(("EU", "EA")):
            ax = axes[i][j]
            for k, model in enumerate(models):
                pick = {r.protocol: r for r in overall
                        if r.language == lang and r.model == model and r.metric == f"{task}/overall"}
                xs = [p + k * width for p, proto in enumerate(protocols) if proto in pick]
                vals = [pick[proto] for proto in protocols if proto in pick]
                errs = [[max(0.0, v.value - (v.ci_low if v.ci_low is not None else v.value)) for v in vals],
                        [max(0.0, (v.ci_high if v.ci_high is not None else v.value) - v.value) for v in vals]]
                bars = ax.bar(xs, [v.value for v in vals], width, yerr=errs, capsize=3, label=model)
                shares = [unparsed.get((model, proto, lang, task), 0.0) for proto in protocols if proto in pick]
                ax.bar(xs, shares, width, bottom=[v.value for v in vals], color="none", linewidth=0.8,
                       edgecolor=bars.patches[0].get_facecolor() if bars.patches else "gray", hatch="///",
                       label="unparsed (hatched)" if k == len(models) - 1 else None)
                for x, v, share in zip(xs, vals, shares, strict=True):
                    if share > 0:
                        ax.text(x, v.value + share + 0.01, f"{share:.0%}\nunparsed", ha="center", va="bottom",
                                fontsize=6)
            ax.set_xticks([p + width * (len(models) - 1) / 2 for p in range(len(protocols))], protocols)
            ax.set_ylim(0, 1.15)  # room for the unparsed labels above a full bar
            ax.set_title(f"{task} overall ({lang})")
            ax.set_ylabel("accuracy (95% CI)")
    axes[0][1].legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
