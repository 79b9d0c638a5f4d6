"""Writers of evaluation results: markdown tables, CSV, JSON and the size-bucket plot.

One evaluation (``rrsis evaluate``) becomes a table with one row for the whole split and one
per breakdown group; a benchmark (``rrsis benchmark``) becomes a paper-style table with one row
per model plus the per-size and per-scatter mIoU columns.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rrsis.eval.breakdown import GROUPINGS
from rrsis.eval.metrics import METRIC_KEYS

#: Breakdown columns of the benchmark table: (grouping, group) -> column name.
BENCHMARK_GROUP_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("size", "small", "small mIoU"),
    ("size", "medium", "medium mIoU"),
    ("size", "large", "large mIoU"),
    ("scatter", "single", "single mIoU"),
    ("scatter", "scattered", "scattered mIoU"),
)
BENCHMARK_COLUMNS: tuple[str, ...] = (
    "model",
    "n",
    *METRIC_KEYS,
    *(column for _, _, column in BENCHMARK_GROUP_COLUMNS),
)
# Groupings shown in the single-evaluation table (``components`` refines ``scatter``).
_TABLE_GROUPINGS = ("size", "scatter", "components", "kind", "category")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def evaluation_markdown(result: Mapping[str, Any]) -> str:
    """Markdown table of one :func:`rrsis.eval.evaluate.evaluate` result.

    Rows: ``overall`` then ``grouping: group`` for every non-empty breakdown group; columns:
    ``n``, ``Pr@0.5 .. Pr@0.9``, ``oIoU``, ``mIoU`` (percent, two decimals).
    """
    header = ("subset", "n", *METRIC_KEYS)
    overall = result["overall"]
    rows: list[list[Any]] = [["overall", overall["n"], *(overall[k] for k in METRIC_KEYS)]]
    breakdown = result.get("breakdown", {})
    for grouping in _TABLE_GROUPINGS:
        # Dataset-specific groupings (category) list their groups in the result's order.
        for group in GROUPINGS[grouping] or tuple(breakdown.get(grouping, {})):
            metrics = breakdown.get(grouping, {}).get(group)
            if metrics:
                rows.append(
                    [f"{grouping}: {group}", metrics["n"], *(metrics[k] for k in METRIC_KEYS)]
                )
    title = f"protocol `{result.get('protocol', '?')}`"
    if result.get("compose"):
        title += f", composition rules: {', '.join(result['compose'])}"
    if result.get("shuffle_expressions"):
        title += ", expressions shuffled across samples"
    return f"Results ({title})\n\n" + _markdown(header, rows) + interval_line(result)


def interval_line(result: Mapping[str, Any]) -> str:
    """One sentence giving the overall bootstrap interval of a result, or ``""`` without one."""
    interval = result.get("interval")
    if not interval:
        return ""
    units = "images" if interval["unit"] == "image" else "expressions"
    return (
        f"\n{100 * interval['level']:.0f} % interval (bootstrap over {interval['n_units']} "
        f"{units}, {interval['resamples']} resamples): mIoU {_fmt(interval['mIoU'][0])} - "
        f"{_fmt(interval['mIoU'][1])}, oIoU {_fmt(interval['oIoU'][0])} - "
        f"{_fmt(interval['oIoU'][1])}\n"
    )


def compare_markdown(comparison: Mapping[str, Any]) -> str:
    """Table of a ``rrsis compare`` result: one row per subset, B - A with its interval."""
    rows = []
    first = None
    for name, row in comparison["rows"].items():
        first = first or row
        m, o = row["mIoU"], row["oIoU"]
        rows.append(
            [
                name,
                row["n"],
                m["a"],
                m["b"],
                f"{m['delta']:+.2f}",
                f"{m['interval'][0]:+.2f} .. {m['interval'][1]:+.2f}",
                f"{100 * m['p_b_ahead']:.1f} %",
                f"{o['delta']:+.2f}",
                f"{o['interval'][0]:+.2f} .. {o['interval'][1]:+.2f}",
            ]
        )
    header = (
        "subset",
        "n",
        "A mIoU",
        "B mIoU",
        "B - A mIoU",
        "interval",
        "resamples B ahead",
        "B - A oIoU",
        "interval",
    )
    intro = f"A = {comparison['a']}\nB = {comparison['b']}\n"
    if first is not None:
        units = "images" if first["unit"] == "image" else "expressions"
        intro += (
            f"{100 * first['level']:.0f} % intervals of the paired difference, bootstrap over "
            f"{first['n_units']} {units} ({first['resamples']} resamples, seed {first['seed']}); "
            "sampling noise only, not training noise.\n"
        )
    return intro + "\n" + _markdown(header, rows)


def benchmark_row(name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """One benchmark table row (see :data:`BENCHMARK_COLUMNS`); absent groups are ``None``."""
    row: dict[str, Any] = {"model": name, "n": result["overall"]["n"]}
    row.update({key: result["overall"][key] for key in METRIC_KEYS})
    breakdown = result.get("breakdown", {})
    for grouping, group, column in BENCHMARK_GROUP_COLUMNS:
        metrics = breakdown.get(grouping, {}).get(group)
        row[column] = None if not metrics else metrics["mIoU"]
    return row


def benchmark_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Paper-style markdown table, one row per model."""
    return _markdown(BENCHMARK_COLUMNS, [[row.get(c) for c in BENCHMARK_COLUMNS] for row in rows])


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write benchmark rows as CSV (full precision, empty cell for an absent group)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(BENCHMARK_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in BENCHMARK_COLUMNS})
    return path


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented UTF-8 JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def plot_size_buckets(
    rows: Sequence[Mapping[str, Any]],
    path: str | Path,
    counts: Mapping[str, int] | None = None,
) -> Path:
    """Grouped bars: mIoU per object-size bucket (small / medium / large), one bar per model.

    Args:
        rows: benchmark rows (:func:`benchmark_row`).
        path: output image (``.png``).
        counts: samples per bucket (``{"small": n, ...}``), shown under the bucket names so
            that a bar resting on a handful of samples is read as such.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    columns = [c for g, _, c in BENCHMARK_GROUP_COLUMNS if g == "size"]
    buckets = [c.split()[0] for c in columns]
    n_models = max(1, len(rows))
    width = 0.8 / n_models
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(buckets) + 0.6 * n_models), 3.6))
    for i, row in enumerate(rows):
        values = [row.get(c) for c in columns]
        heights = [0.0 if v is None else float(v) for v in values]
        xs = [b + (i - (n_models - 1) / 2) * width for b in range(len(buckets))]
        bars = ax.bar(xs, heights, width=width, label=str(row["model"]))
        for bar, value in zip(bars, values):
            label = "n/a" if value is None else f"{value:.1f}"
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(range(len(buckets)))
    labels = []
    for bucket, share in zip(buckets, ("<1%", "1-10%", ">10%")):
        n = None if counts is None else counts.get(bucket, 0)
        labels.append(f"{bucket} ({share})" + ("" if n is None else f"\nn={n}"))
    ax.set_xticklabels(labels)
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 105)
    ax.set_title("mIoU by object size (share of the tile)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
