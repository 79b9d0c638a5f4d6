"""Markdown writers of evaluation results."""

from __future__ import annotations

import numpy as np

from rrsis.eval.metrics import RefSegMetrics
from rrsis.eval.report import evaluation_markdown, markdown_table


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
    assert lines[2].startswith("| subset | n | mIoU | oIoU | Pr@0.5 |")
    # overall: mIoU = (0.5 + 1) / 2, oIoU = 22 / 42
    assert lines[4] == "| overall | 2 | 75.00 | 52.38 | 100.00 | 50.00 | 50.00 | 50.00 | 50.00 |"
    assert any(line.startswith("| size: large | 1 |") for line in lines)
    assert any(line.startswith("| scatter: scattered | 1 |") for line in lines)
    assert not any("size: small" in line for line in lines)  # empty groups are left out


def test_evaluation_markdown_network_and_composed_side_by_side() -> None:
    result = _result()
    # Composed scores made up for the layout: other masks, one sample decided by a rule.
    target = np.zeros((2, 10, 10), bool)
    target[0, :4] = True
    target[1, 0, 0] = target[1, 9, 9] = True
    pred = target.copy()
    pred[0, :3] = False  # I = 10, U = 40
    metrics = RefSegMetrics()
    metrics.update(pred, target, metas=[{"kind": "category"}, {"kind": "relation"}])
    samples = metrics.samples()
    samples[1]["decided_by"] = "relation"
    samples[0]["decided_by"] = "network"
    result["threshold"] = 0.35
    result["composed"] = {
        "rules": ["position", "relation"],
        "overall": metrics.compute(),
        "interval": None,
        "breakdown": metrics.compute_breakdown(),
        "samples": samples,
    }
    lines = evaluation_markdown(result).splitlines()
    assert lines[0] == "Results (protocol `native`, threshold 0.35)"
    assert lines[2].startswith(
        "| subset | n | mIoU network | mIoU composed | oIoU network | oIoU composed | "
        "Pr@0.5 network | Pr@0.5 composed |"
    )
    assert lines[2].endswith("| Pr@0.9 composed | by rules |")
    # Network first, then composed, for each metric; the last column counts rule decisions.
    assert lines[4].startswith("| overall | 2 | 75.00 | 62.50 | 52.38 | 28.57 |")
    assert lines[4].endswith("| 1 |")
    (kind_row,) = [line for line in lines if line.startswith("| kind: relation |")]
    assert kind_row.startswith("| kind: relation | 1 | 100.00 | 100.00 |") and kind_row.endswith(
        "| 1 |"
    )
    (category_row,) = [line for line in lines if line.startswith("| kind: category |")]
    assert category_row.startswith("| kind: category | 1 | 50.00 | 25.00 |")
    assert category_row.endswith("| 0 |")
    text = "\n".join(lines)
    assert "network: the network reads each whole expression (`--compose none`" in text
    assert "composed: the geometry rules (position, relation)" in text


def test_markdown_table_formats_floats_and_missing_values() -> None:
    table = markdown_table(["a", "b", "c"], [["x", 1.234, None], ["y", float("nan"), 3]])
    assert table.splitlines() == [
        "| a | b | c |",
        "|---|---|---|",
        "| x | 1.23 | - |",
        "| y | - | 3 |",
    ]
