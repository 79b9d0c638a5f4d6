"""Bootstrap intervals and paired comparisons (rrsis.eval.uncertainty, `rrsis compare`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rrsis.cli import main
from rrsis.errors import RRSISError
from rrsis.eval.metrics import RefSegMetrics
from rrsis.eval.report import evaluation_markdown
from rrsis.eval.uncertainty import bootstrap_interval, image_key, paired_difference


def records(ious: list[float], images: list[str] | None = None, kinds=None) -> list[dict]:
    """Per-sample records with U = 100 and I = 100 * IoU."""
    out = []
    for k, iou in enumerate(ious):
        record = {"id": f"s{k}", "I": round(100 * iou), "U": 100, "IoU": iou}
        if images is not None:
            record["image"] = images[k]
        if kinds is not None:
            record["kind"] = kinds[k]
        out.append(record)
    return out


def test_image_key_prefers_image_id_then_source_and_crop() -> None:
    assert image_key({"image_id": 7, "source": "x"}, "a") == "image:7"
    assert image_key({"source": "tile6/image_part_001", "crop_yx": [0, 512]}, "a") == (
        "source:tile6/image_part_001@0,512"
    )
    assert image_key({}, "a") == "sample:a"


def test_interval_brackets_the_score_and_shrinks_with_more_samples() -> None:
    rng = np.random.default_rng(0)
    small = rng.uniform(0, 1, 50)
    large = rng.uniform(0, 1, 2000)
    widths = []
    for ious in (small, large):
        inter, union = np.round(ious * 1000), np.full(ious.size, 1000)
        result = bootstrap_interval(inter, union, resamples=500)
        miou = 100 * float(np.mean(inter / union))
        low, high = result["mIoU"]
        assert low < miou < high
        assert result["unit"] == "expression" and result["n_units"] == ious.size
        widths.append(high - low)
    # Standard error ~ 1/sqrt(n): 40x the samples, ~6x narrower.
    assert widths[1] < widths[0] / 4
    # Identical scores leave nothing to resample.
    flat = bootstrap_interval([50] * 10, [100] * 10, resamples=200)
    assert flat["mIoU"] == [50.0, 50.0] and flat["oIoU"] == [50.0, 50.0]


def test_interval_resamples_whole_images() -> None:
    # Two images, each with 20 identical expressions (one all right, one all wrong): over
    # expressions the mean looks precise; over images there are only two draws.
    inter = [100] * 20 + [0] * 20
    union = [100] * 40
    by_expression = bootstrap_interval(inter, union, resamples=1000)
    by_image = bootstrap_interval(inter, union, clusters=["a"] * 20 + ["b"] * 20, resamples=1000)
    assert by_image["unit"] == "image" and by_image["n_units"] == 2
    assert by_image["mIoU"] == [0.0, 100.0]  # both images drawn twice happens 1 time in 4
    assert by_expression["mIoU"][1] - by_expression["mIoU"][0] < 40


def test_interval_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval([1], [2], resamples=10)
    with pytest.raises(ValueError, match="same length"):
        bootstrap_interval([1, 2], [2], resamples=100)
    with pytest.raises(ValueError, match="cluster keys"):
        bootstrap_interval([1, 2], [2, 2], clusters=["a"], resamples=100)


def test_paired_difference_sees_a_consistent_small_gain() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0.05, 0.9, 300)
    a = records(list(base))
    b = records(list(np.clip(base + 0.02, 0, 1)))  # +2 points on every sample
    diff = paired_difference(a, b, resamples=500)
    assert diff["n"] == 300
    assert diff["mIoU"]["delta"] == pytest.approx(diff["mIoU"]["b"] - diff["mIoU"]["a"], abs=0.01)
    assert 1.5 < diff["mIoU"]["delta"] < 2.5
    low, high = diff["mIoU"]["interval"]
    assert 0 < low <= diff["mIoU"]["delta"] <= high
    assert diff["mIoU"]["p_b_ahead"] == 1.0
    # The same gain is invisible to two separate intervals, which overlap.
    ia = bootstrap_interval([r["I"] for r in a], [r["U"] for r in a], resamples=500)
    ib = bootstrap_interval([r["I"] for r in b], [r["U"] for r in b], resamples=500)
    assert ib["mIoU"][0] < ia["mIoU"][1]
    # Swapping A and B flips the sign; comparing a model with itself gives exactly 0.
    swapped = paired_difference(b, a, resamples=500)
    assert swapped["mIoU"]["delta"] == -diff["mIoU"]["delta"]
    assert swapped["mIoU"]["p_b_ahead"] == 0.0
    same = paired_difference(a, a, resamples=200)
    assert same["mIoU"]["delta"] == 0 and same["mIoU"]["interval"] == [0.0, 0.0]


def test_paired_difference_pairs_by_id_subsets_and_refuses_other_samples() -> None:
    a = records([0.2, 0.4, 0.6, 0.8], kinds=["category", "position", "category", "position"])
    b = records([0.2, 0.9, 0.6, 0.9], kinds=["category", "position", "category", "position"])
    diff = paired_difference(list(reversed(a)), b, resamples=200)  # order does not matter
    assert diff["mIoU"]["delta"] == pytest.approx(15.0)
    position = paired_difference(a, b, resamples=200, subset={"kind": "position"})
    assert position["n"] == 2 and position["mIoU"]["delta"] == pytest.approx(30.0)
    category = paired_difference(a, b, resamples=200, subset={"kind": "category"})
    assert category["mIoU"]["delta"] == 0
    with pytest.raises(RRSISError, match="different samples"):
        paired_difference(a, b[:3], resamples=200)
    with pytest.raises(RRSISError, match="no samples match"):
        paired_difference(a, b, resamples=200, subset={"kind": "relation"})
    with pytest.raises(RRSISError, match="appears twice"):
        paired_difference(a + a[:1], b, resamples=200)


def test_metrics_records_carry_the_image_and_the_interval() -> None:
    metrics = RefSegMetrics()
    target = np.zeros((4, 8, 8), bool)
    target[:, :4] = True
    pred = target.copy()
    pred[2:] = False
    metas = [
        {"id": f"x{k}", "source": "tile5/image_part_001", "crop_yx": [0, 512 * (k // 2)]}
        for k in range(4)
    ]
    metrics.update(pred, target, metas=metas)
    samples = metrics.samples()
    assert [s["image"] for s in samples] == [
        "source:tile5/image_part_001@0,0",
        "source:tile5/image_part_001@0,0",
        "source:tile5/image_part_001@0,512",
        "source:tile5/image_part_001@0,512",
    ]
    interval = metrics.interval(resamples=400)
    assert interval["unit"] == "image" and interval["n_units"] == 2
    assert interval["mIoU"] == [0.0, 100.0]
    text = evaluation_markdown({"overall": metrics.compute(), "interval": interval})
    assert "95 % interval (bootstrap over 2 images, 400 resamples): mIoU 0.00 - 100.00" in text


def write_result(path: Path, samples: list[dict], split: str = "val") -> Path:
    path.write_text(json.dumps({"split": split, "protocol": "native", "samples": samples}))
    return path


def test_compare_cli(tmp_path: Path, capsys) -> None:
    kinds = ["category", "position"] * 20
    rng = np.random.default_rng(2)
    base = rng.uniform(0.1, 0.8, 40)
    a = write_result(tmp_path / "a.json", records(list(base), kinds=kinds))
    better = np.where(np.array(kinds) == "position", base + 0.15, base)
    b = write_result(tmp_path / "b.json", records(list(better), kinds=kinds))
    out = tmp_path / "cmp.json"
    argv = ["compare", str(a), str(b), "--by", "kind", "--resamples", "300", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| overall | 40 |" in printed and "| kind: position | 20 |" in printed
    saved = json.loads(out.read_text())
    assert saved["rows"]["kind: position"]["mIoU"]["delta"] == pytest.approx(15.0, abs=0.1)
    assert saved["rows"]["kind: category"]["mIoU"]["delta"] == 0
    assert saved["rows"]["overall"]["mIoU"]["p_b_ahead"] == 1.0
    assert out.with_suffix(".md").is_file()
    # Refusals are one line each.
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    other = write_result(tmp_path / "test.json", records(list(base), kinds=kinds), split="test")
    assert main(["compare", str(a), str(other)]) == 2
    assert "differ in split" in capsys.readouterr().err
    (tmp_path / "bare.json").write_text(json.dumps({"overall": {}}))
    assert main(["compare", str(a), str(tmp_path / "bare.json")]) == 2
    assert "no per-sample records" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--by", "colour"]) == 2
    err = capsys.readouterr().err
    assert "unknown grouping 'colour'" in err and len(err.splitlines()) == 1


def test_compare_picks_the_network_or_the_composed_scores(tmp_path: Path, capsys) -> None:
    kinds = ["category", "position"] * 20
    base = list(np.random.default_rng(3).uniform(0.1, 0.8, 40))
    lifted = [v + 0.1 for v in base]

    def write(name: str, network: list[float], composed: list[float] | None) -> Path:
        result = {"split": "val", "protocol": "native", "samples": records(network, kinds=kinds)}
        result["composed"] = composed and {
            "rules": ["position"],
            **{"samples": records(composed, kinds=kinds)},
        }
        (tmp_path / name).write_text(json.dumps(result))
        return tmp_path / name

    # B's network equals A's; only B's composed masks are better.
    a = write("a.json", base, base)
    b = write("b.json", base, lifted)
    assert main(["compare", str(a), str(b), "--by", "", "--out", str(tmp_path / "n.json")]) == 0
    assert "scores compared: the network alone" in capsys.readouterr().out
    network = json.loads((tmp_path / "n.json").read_text())
    assert network["scores"] == "network" and network["rows"]["overall"]["mIoU"]["delta"] == 0
    argv = ["compare", str(a), str(b), "--by", "", "--scores", "composed"]
    assert main([*argv, "--out", str(tmp_path / "c.json")]) == 0
    composed = json.loads((tmp_path / "c.json").read_text())
    assert composed["rows"]["overall"]["mIoU"]["delta"] == pytest.approx(10.0)
    # A result scored with --compose none has no composed scores: one line says so.
    alone = write("alone.json", base, None)
    capsys.readouterr()
    assert main(["compare", str(a), str(alone), "--scores", "composed"]) == 2
    err = capsys.readouterr().err
    assert "no composed scores" in err and len(err.splitlines()) == 1
