"""The benchmark's tables and plot: mean and spread over seeds, paired intervals, size/scatter.

:func:`summarise` turns each model's scored runs (one :func:`rrsis.eval.evaluate.evaluate`
result per seed, network alone) into

* one row per model: mean and sample standard deviation over its runs of Pr@0.5..0.9, oIoU,
  mIoU and the mIoU of every size bucket and scatter group, with the best validation mIoU and
  the **val gain** (best of the last third of epochs minus best before it: near 0 when the
  validation curve was flat at the end, i.e. the budget let the run converge);
* per model and subset (all, small / medium / large, single / scattered): its mIoU minus the
  reference model's with a 95 % interval of a paired bootstrap over the test images and the
  seeds (:func:`rrsis.eval.paired.paired_interval`);
* per model and subset its own mIoU interval (the plot's bars).

:func:`write_tables` writes ``table.md``, ``table.csv``, ``paired.csv`` and ``size_scatter.png``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rrsis.data.files import atomic_write
from rrsis.eval.metrics import METRIC_KEYS
from rrsis.eval.paired import SeedRuns, paired_interval
from rrsis.eval.report import markdown_table

#: Subsets of the paired comparison and the plot: (label, grouping, group).
SUBSETS: tuple[tuple[str, str | None, str | None], ...] = (
    ("all", None, None),
    ("small", "size", "small"),
    ("medium", "size", "medium"),
    ("large", "size", "large"),
    ("single", "scatter", "single"),
    ("scattered", "scatter", "scattered"),
)
#: Metric columns of the per-model table (mean and spread of each).
METRICS: tuple[str, ...] = (
    "mIoU",
    "oIoU",
    *(k for k in METRIC_KEYS if k.startswith("Pr@")),
    *(f"{label} mIoU" for label, grouping, _ in SUBSETS if grouping),
    "best val mIoU",
    "val gain",
)
PAIRED_COLUMNS: tuple[str, ...] = (
    "model",
    "reference",
    "subset",
    "n",
    "n_images",
    "runs",
    "reference mIoU",
    "model mIoU",
    "delta",
    "low",
    "high",
    "p_ahead",
)


@dataclass
class BenchmarkTables:
    """What a benchmark reports (see the module docstring)."""

    reference: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    paired: list[dict[str, Any]] = field(default_factory=list)
    intervals: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "rows": self.rows,
            "paired": self.paired,
            "intervals": self.intervals,
            "counts": self.counts,
        }


def val_gain(curve: Sequence[float]) -> float | None:
    """Best val mIoU of the last third of epochs minus the best before it (< 3 epochs: None)."""
    if len(curve) < 3:
        return None
    cut = len(curve) - max(1, len(curve) // 3)
    return float(max(curve[cut:]) - max(curve[:cut]))


def _run_values(result: Mapping[str, Any]) -> dict[str, float | None]:
    values: dict[str, float | None] = {k: result["overall"][k] for k in METRIC_KEYS}
    breakdown = result.get("breakdown", {})
    for label, grouping, group in SUBSETS:
        if grouping:
            metrics = breakdown.get(grouping, {}).get(group)
            values[f"{label} mIoU"] = None if not metrics else metrics["mIoU"]
    curve = [float(v) for v in result.get("val_curve") or ()]
    # The training module logs val/mIoU in percent, as the evaluation reports it.
    values["best val mIoU"] = max(curve) if curve else None
    values["val gain"] = val_gain(curve)
    return values


def model_row(name: str, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 with one run) over ``results`` of each metric."""
    runs = [_run_values(r) for r in results]
    row: dict[str, Any] = {"model": name, "runs": len(runs), "n": results[0]["overall"]["n"]}
    for key in METRICS:
        values = [v[key] for v in runs if v[key] is not None]
        row[key] = float(np.mean(values)) if values else None
        row[f"{key} sd"] = (
            float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)
        )
    return row


def summarise(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    reference: str,
    resamples: int = 2000,
    seed: int = 0,
) -> BenchmarkTables:
    """The benchmark's tables from each model's evaluation results (one per run).

    Args:
        results: ``{model: [evaluate() result of each run]}``; every run scored on one split.
        reference: the model the others are compared with.
        resamples, seed: of the bootstrap.
    """
    tables = BenchmarkTables(reference=reference)
    runs = {name: SeedRuns.from_samples([r["samples"] for r in rs]) for name, rs in results.items()}
    ref = runs[reference]
    for name, model_results in results.items():
        tables.rows.append(model_row(name, model_results))
        tables.intervals[name] = {}
        for label, grouping, group in SUBSETS:
            subset = {grouping: group} if grouping else None
            own = paired_interval(None, runs[name], subset, resamples=resamples, seed=seed)
            tables.intervals[name][label] = {
                "n": own["n"],
                "mIoU": own["b"],
                "interval": own["interval"],
            }
            tables.counts[label] = own["n"]
            if name == reference:
                continue
            diff = paired_interval(ref, runs[name], subset, resamples=resamples, seed=seed)
            interval = diff["interval"] or [None, None]
            tables.paired.append(
                {
                    "model": name,
                    "reference": reference,
                    "subset": label,
                    "n": diff["n"],
                    "n_images": diff["n_images"],
                    "runs": f"{diff['runs'][1]} vs {diff['runs'][0]}",
                    "reference mIoU": diff["a"],
                    "model mIoU": diff["b"],
                    "delta": diff["delta"],
                    "low": interval[0],
                    "high": interval[1],
                    "p_ahead": diff["p_b_ahead"],
                }
            )
    return tables


def _pm(mean: Any, sd: Any) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.2f} ± {sd:.2f}" if sd is not None else f"{mean:.2f}"


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.2f}"


def tables_markdown(tables: BenchmarkTables, header: str) -> str:
    """``table.md``: the per-model table (mean ± sd over seeds) and the paired differences."""
    columns = ["model", "runs", "n", *METRICS]
    rows = [
        [row["model"], row["runs"], row["n"], *(_pm(row[k], row[f"{k} sd"]) for k in METRICS)]
        for row in tables.rows
    ]
    counts = ", ".join(f"{label} {n}" for label, n in tables.counts.items())
    text = (
        f"{header}\n\nmean ± standard deviation over seeds (percent). Samples per subset: "
        f"{counts}. `val gain`: best validation mIoU of the last third of epochs minus the "
        "best before it (near 0: the run had converged).\n\n" + markdown_table(columns, rows)
    )
    if tables.paired:
        labels = [label for label, _, _ in SUBSETS]
        by_model: dict[str, dict[str, dict[str, Any]]] = {}
        for entry in tables.paired:
            by_model.setdefault(entry["model"], {})[entry["subset"]] = entry
        paired_rows = []
        for name, entries in by_model.items():
            cells = []
            for label in labels:
                e = entries.get(label)
                if e is None or e["delta"] is None:
                    cells.append("-")
                else:
                    cells.append(
                        f"{_signed(e['delta'])} ({_signed(e['low'])} .. {_signed(e['high'])})"
                    )
            paired_rows.append([name, *cells])
        text += (
            f"\nmIoU minus `{tables.reference}`'s, with the 95 % interval of a paired bootstrap "
            "over the test images and the seeds (network alone; an interval that excludes 0 "
            "is a difference this test split and these seeds support):\n\n"
            + markdown_table(["model", *labels], paired_rows)
        )
    return text


def _write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: Path) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns))
            writer.writeheader()
            for row in rows:
                writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})

    atomic_write(path, write, overwrite=True)


def plot_size_scatter(tables: BenchmarkTables, path: str | Path, title: str = "") -> Path:
    """Two panels of grouped bars, one bar per model: mIoU by object size and by scatter,
    mean over seeds with its 95 % interval (images and seeds resampled) as error bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    panels = (
        ("by object size (share of the image)", ("small", "medium", "large")),
        ("by scatter (connected parts)", ("single", "scattered")),
    )
    shares = {"small": "<1%", "medium": "1-10%", "large": ">10%", "single": "1", "scattered": "2+"}
    names = list(tables.intervals)
    width = 0.8 / max(1, len(names))
    fig, axes = plt.subplots(
        1, 2, figsize=(4.0 + 1.4 * len(names), 4.0), gridspec_kw={"width_ratios": [3, 2]}
    )
    for ax, (subtitle, labels) in zip(axes, panels):
        for i, name in enumerate(names):
            xs, heights, errors = [], [], [[], []]
            for j, label in enumerate(labels):
                entry = tables.intervals[name].get(label) or {}
                value, interval = entry.get("mIoU"), entry.get("interval")
                xs.append(j + (i - (len(names) - 1) / 2) * width)
                heights.append(0.0 if value is None else value)
                errors[0].append(0.0 if interval is None else max(0.0, value - interval[0]))
                errors[1].append(0.0 if interval is None else max(0.0, interval[1] - value))
            ax.bar(xs, heights, width=width, yerr=errors, capsize=2, label=name)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(
            [f"{lb} ({shares[lb]})\nn={tables.counts.get(lb, 0)}" for lb in labels], fontsize=8
        )
        ax.set_ylim(0, 100)
        ax.set_title(f"mIoU {subtitle}", fontsize=9)
    axes[0].set_ylabel("mIoU (%), mean over seeds, 95 % interval")
    axes[0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"), overwrite=True)
    finally:
        plt.close(fig)
    return path


def write_tables(
    tables: BenchmarkTables, out: str | Path, header: str, plot_title: str = ""
) -> None:
    """Write ``table.md``, ``table.csv``, ``paired.csv`` and ``size_scatter.png`` into ``out``."""
    out = Path(out)
    text = tables_markdown(tables, header)
    atomic_write(
        out / "table.md", lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True
    )
    columns = ["model", "runs", "n", *(c for k in METRICS for c in (k, f"{k} sd"))]
    _write_csv(tables.rows, columns, out / "table.csv")
    _write_csv(tables.paired, PAIRED_COLUMNS, out / "paired.csv")
    plot_size_scatter(tables, out / "size_scatter.png", title=plot_title)
