"""Writers of evaluation results: markdown tables and JSON.

One evaluation (``rrsis evaluate``) becomes a table with one row for the whole split and one
per breakdown group; the benchmark's tables (one row per model, mean over seeds, paired
intervals) and its plot are in :mod:`rrsis.eval.benchmark_report`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rrsis.data.files import atomic_write
from rrsis.eval.breakdown import GROUPINGS
from rrsis.eval.metrics import METRIC_KEYS

# Groupings shown in the single-evaluation table (``components`` refines ``scatter``).
_TABLE_GROUPINGS = ("size", "scatter", "components", "kind", "category")
#: Metric columns of the evaluation table, the headline metrics first.
TABLE_KEYS: tuple[str, ...] = ("mIoU", "oIoU", *(k for k in METRIC_KEYS if k.startswith("Pr@")))
#: The two sets of scores of an evaluation: the network alone and with the composition rules.
SCORES: tuple[str, ...] = ("network", "composed")


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; floats with two decimals, ``None`` and NaN as ``-``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def scores(result: Mapping[str, Any], which: str = "network") -> Mapping[str, Any] | None:
    """The ``network`` (alone) or ``composed`` scores of an evaluation result, or ``None``.

    Scores are ``{"overall", "interval", "breakdown", "samples"}``. Results of
    :func:`rrsis.eval.evaluate.evaluate` keep the network alone at the top level and the composed
    scores under ``"composed"``; files without that key hold one set of scores, composed when
    their ``"compose"`` lists rules.
    """
    if which not in SCORES:
        raise ValueError(f"scores must be one of {', '.join(SCORES)}, got {which!r}")
    if "composed" in result:
        return result if which == "network" else result["composed"]
    composed = bool(result.get("compose"))
    return result if composed == (which == "composed") else None


def evaluation_markdown(result: Mapping[str, Any]) -> str:
    """Markdown table of one :func:`rrsis.eval.evaluate.evaluate` result, and how it was scored.

    Rows: ``overall`` then ``grouping: group`` for every non-empty breakdown group. Columns:
    ``n`` and ``mIoU``, ``oIoU``, ``Pr@0.5 .. Pr@0.9`` (percent, two decimals) of the network
    alone; with composed scores each metric has the network's column then the composed one, and
    ``by rules`` counts the expressions a rule decided. A ``data warning:`` line follows per
    entry of the result's ``data_warnings``.
    """
    network, composed = result, result.get("composed")
    header: list[str] = ["subset", "n"]
    for key in TABLE_KEYS:
        header += [f"{key} network", f"{key} composed"] if composed else [key]
    rows = [_table_row("overall", network["overall"], composed, {})]
    breakdown = network.get("breakdown", {})
    for grouping in _TABLE_GROUPINGS:
        # Dataset-specific groupings (category) list their groups in the result's order.
        for group in GROUPINGS[grouping] or tuple(breakdown.get(grouping, {})):
            metrics = breakdown.get(grouping, {}).get(group)
            if metrics:
                subset = {grouping: group}
                rows.append(_table_row(f"{grouping}: {group}", metrics, composed, subset))
    if composed:
        header.append("by rules")
    title = f"protocol `{result.get('protocol', '?')}`"
    if result.get("threshold") is not None:
        title += f", threshold {result['threshold']:g}"
    if result.get("shuffle_expressions"):
        title += ", expressions shuffled across samples"
    text = f"Results ({title})\n\n" + markdown_table(header, rows)
    if composed:
        text += (
            "\nnetwork: the network reads each whole expression (`--compose none` scores this "
            "alone); it is what compares with published methods.\ncomposed: the geometry rules "
            f"({', '.join(composed['rules'])}) read position, relation and attribute phrases on "
            "the network's objects, as `rrsis predict` does (docs/compose.md); `by rules` counts "
            "the expressions a rule decided, the others keep the network's mask.\n"
        )
        text += interval_line(network, "network") + interval_line(composed, "composed")
    else:
        text += interval_line(network)
    # The ground truth was repaired (e.g. masks resized to their images): the table says so.
    notes = [f"data warning: {note}\n" for note in result.get("data_warnings") or ()]
    return text + ("\n" + "".join(notes) if notes else "")


def _table_row(
    name: str,
    metrics: Mapping[str, Any],
    composed: Mapping[str, Any] | None,
    subset: Mapping[str, str],
) -> list[Any]:
    """One table row: the network's metrics, each followed by the composed one when present,
    and then how many expressions of ``subset`` (``{}``: all) a rule decided."""
    row: list[Any] = [name, metrics["n"]]
    if composed is None:
        return row + [metrics[key] for key in TABLE_KEYS]
    grouping, group = next(iter(subset.items()), (None, None))
    other = composed["overall"] if grouping is None else composed["breakdown"][grouping][group]
    for key in TABLE_KEYS:
        row += [metrics[key], other[key]]
    records = composed["samples"]
    in_subset = [s for s in records if grouping is None or str(s.get(grouping)) == group]
    return row + [sum(1 for s in in_subset if s.get("decided_by") != "network")]


def interval_line(result: Mapping[str, Any], label: str = "") -> str:
    """One sentence giving the overall bootstrap interval of a result, or ``""`` without one."""
    interval = result.get("interval")
    if not interval:
        return ""
    units = "images" if interval["unit"] == "image" else "expressions"
    label = f", {label}" if label else ""
    return (
        f"\n{100 * interval['level']:.0f} % interval{label} (bootstrap over "
        f"{interval['n_units']} {units}, {interval['resamples']} resamples): mIoU "
        f"{_fmt(interval['mIoU'][0])} - {_fmt(interval['mIoU'][1])}, oIoU "
        f"{_fmt(interval['oIoU'][0])} - {_fmt(interval['oIoU'][1])}\n"
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
    if comparison.get("scores"):
        which = "the network alone" if comparison["scores"] == "network" else "composed masks"
        intro += f"scores compared: {which}\n"
    if first is not None:
        units = "images" if first["unit"] == "image" else "expressions"
        intro += (
            f"{100 * first['level']:.0f} % intervals of the paired difference, bootstrap over "
            f"{first['n_units']} {units} ({first['resamples']} resamples, seed {first['seed']}); "
            "sampling noise only, not training noise.\n"
        )
    return intro + "\n" + markdown_table(header, rows)


def write_json(data: Any, path: str | Path) -> Path:
    """Write ``data`` as indented UTF-8 JSON."""
    path = Path(path)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)
    return path
