"""Markdown / CSV / plot writers of evaluation results."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from rrsis.eval.metrics import RefSegMetrics
from rrsis.eval.report import (
    BENCHMARK_COLUMNS,
    benchmark_markdown,
    benchmark_row,
    evaluation_markdown,
    plot_size_buckets,
    write_csv,
)


def _result() -> dict:
    """Two 10x10 samples: a large single object half found, a scattered pair fully found."""
    target = np.zeros((2, 10, 10), bool)
    target[0, :4] = True  # 40 % -> large, single
    target[1, 0, 0] = target[1, 9, 9] = True  # 2 % -> medium, scattered
    pred = target.copy()
    pred[0, :2] = False  # I = 20, U = 40
    metrics = RefSegMetrics()
    metrics.update(pred, target, metas=[{"kind": "category"}, {"kind": "relation"}])
    return {
        "protocol": "native",
        "overall": metrics.compute(),
        "breakdown": metrics.compute_breakdown(),
    }


def test_evaluation_markdown_rows() -> None:
    table = evaluation_markdown(_result())
    lines = table.splitlines()
    assert lines[0] == "Results (protocol `native`)"
    assert lines[2].startswith("| subset | n | Pr@0.5 |")
    # overall: mIoU = (0.5 + 1) / 2, oIoU = 22 / 42
    assert lines[4] == "| overall | 2 | 100.00 | 50.00 | 50.00 | 50.00 | 50.00 | 52.38 | 75.00 |"
    assert any(line.startswith("| size: large | 1 |") for line in lines)
    assert any(line.startswith("| scatter: scattered | 1 |") for line in lines)
    assert not any("size: small" in line for line in lines)  # empty groups are left out


def test_benchmark_row_csv_and_markdown(tmp_path: Path) -> None:
    row = benchmark_row("m", _result())
    assert row["large mIoU"] == 50.0 and row["scattered mIoU"] == 100.0
    assert row["small mIoU"] is None
    path = write_csv([row], tmp_path / "t.csv")
    (read,) = list(csv.DictReader(path.open()))
    assert list(read) == list(BENCHMARK_COLUMNS)
    assert read["small mIoU"] == "" and float(read["mIoU"]) == 75.0
    table = benchmark_markdown([row])
    assert table.splitlines()[2].startswith("| m | 2 | 100.00 |")
    assert "| - |" in table  # absent small bucket


def test_plot_size_buckets_writes_png(tmp_path: Path) -> None:
    rows = [benchmark_row("a", _result()), benchmark_row("b", _result())]
    path = plot_size_buckets(rows, tmp_path / "plots" / "size.png", counts={"large": 1})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
