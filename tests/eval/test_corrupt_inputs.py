"""`evaluate` on corrupted copies of a dataset: refused with the file named, or scored after a
repair that the result and the printed table report."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from rrsis.cli import main
from rrsis.data.refsegrs import RefSegRS
from rrsis.errors import DatasetError, DataWarning
from rrsis.eval.calibrate import THRESHOLD_GRID, sweep_thresholds
from rrsis.eval.evaluate import evaluate, open_dataset
from rrsis.models import io as model_io

RRSISD_TREE = Path(__file__).parents[1] / "data" / "rrsisd" / "tree"


@pytest.fixture()
def oracle_cli(monkeypatch: pytest.MonkeyPatch, oracle_model):
    """``rrsis evaluate --model oracle`` runs the text-reading oracle of conftest.py."""
    monkeypatch.setattr(model_io, "resolve_model", lambda spec, **_: (oracle_model, False))

    def run(*argv: object) -> int:
        return main(
            ["evaluate", "--model", "oracle", "--no-progress", "--resamples", "0"]
            + [str(a) for a in argv]
        )

    return run


def _shrink_mask(root: Path, sample_id: str) -> np.ndarray:
    """Store the mask of ``sample_id`` at half its image's size; returns the full-size mask."""
    path = root / "masks" / f"{sample_id}.tif"
    full = tifffile.imread(path)
    tifffile.imwrite(path, full[::2, ::2])
    return full > 0


def test_evaluate_refuses_an_empty_split(
    make_tree, oracle_model, oracle_cli, tmp_path: Path, capsys
) -> None:
    root = make_tree(tmp_path / "tree")
    phrases = root / "output_phrase_test.txt"
    phrases.write_text("", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"output_phrase_test.txt: split 'test' has no samples"):
        open_dataset(root, "test")
    out = tmp_path / "pred"
    with pytest.raises(DatasetError, match=r"output_phrase_test.txt: split 'test' has no samples"):
        evaluate(oracle_model, RefSegRS(root, "test"), save_predictions=out, progress=False)
    assert not out.exists()  # refused before any output
    with pytest.raises(DatasetError, match=r"output_phrase_test.txt: split 'test' has no samples"):
        sweep_thresholds(oracle_model, RefSegRS(root, "test"), THRESHOLD_GRID)
    assert oracle_cli("--data", root, "--split", "test") == 2
    captured = capsys.readouterr()
    assert captured.err == f"rrsis: error: {phrases}: split 'test' has no samples\n"
    assert "overall" not in captured.out


def test_evaluate_refuses_an_rrsisd_split_without_sentences(
    oracle_cli, tmp_path: Path, capsys
) -> None:
    root = shutil.copytree(RRSISD_TREE, tmp_path / "rrsisd")
    refs = pickle.loads((root / "refs(unc).p").read_bytes())
    for ref in refs:
        if ref["split"] == "test":
            ref["sentences"] = []
    (root / "refs(unc).p").write_bytes(pickle.dumps(refs))
    assert oracle_cli("--data", root, "--split", "test") == 2
    err = capsys.readouterr().err
    assert err == f"rrsis: error: {root / 'refs(unc).p'}: split 'test' has no samples\n"


def test_evaluate_resizes_a_mismatched_mask_and_says_so(
    make_tree, oracle_model, oracle_cli, tmp_path: Path, capsys
) -> None:
    root = make_tree(tmp_path / "tree")
    _shrink_mask(root, "b2")  # half the tile: nearest back up restores it exactly
    expected = r"mask of id 'b2' is 16x16 but its image is 32x32; the mask is resized"
    with pytest.warns(DataWarning, match=expected):
        result = evaluate(oracle_model, RefSegRS(root, "test"), progress=False, resamples=0)
    assert len(result["data_warnings"]) == 1 and "'b2' is 16x16" in result["data_warnings"][0]
    # Scored against the mask at its image's size: the oracle stays perfect.
    assert result["overall"]["mIoU"] == pytest.approx(100.0)
    out = tmp_path / "res.json"
    assert oracle_cli("--data", root, "--split", "test", "--out", out) == 0
    printed = capsys.readouterr().out
    warning_lines = [line for line in printed.splitlines() if line.startswith("data warning: ")]
    assert len(warning_lines) == 1 and "mask of id 'b2' is 16x16" in warning_lines[0]
    assert json.loads(out.read_text())["data_warnings"] == result["data_warnings"]
    assert "data warning: " in out.with_suffix(".md").read_text()


def test_evaluate_of_intact_data_has_no_data_warnings(oracle_tree: Path, oracle_model) -> None:
    result = evaluate(oracle_model, RefSegRS(oracle_tree, "test"), progress=False, resamples=0)
    assert result["data_warnings"] == []


def test_evaluate_refuses_an_rle_whose_counts_miss_its_size(
    oracle_cli, tmp_path: Path, capsys
) -> None:
    root = shutil.copytree(RRSISD_TREE, tmp_path / "rrsisd")
    instances = json.loads((root / "instances.json").read_text(encoding="utf-8"))
    for annotation in instances["annotations"]:
        if annotation["id"] == 102:  # ref 12, train; uncompressed counts
            annotation["segmentation"]["counts"].pop()
    (root / "instances.json").write_text(json.dumps(instances), encoding="utf-8")
    assert oracle_cli("--data", root, "--split", "train") == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(
        f"rrsis: error: {root / 'instances.json'}: annotation 102 (ref_id 12): cannot decode "
        "segmentation (RLE counts sum to "
    )
    assert captured.err.endswith("not its size 40x56 = 2240)\n")
    assert "overall" not in captured.out


def test_evaluate_reads_a_phrase_file_with_a_bom(make_tree, oracle_model, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    path = root / "output_phrase_test.txt"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    result = evaluate(oracle_model, open_dataset(root, "test"), progress=False, resamples=0)
    assert result["n"] == 4 and result["overall"]["mIoU"] == pytest.approx(100.0)
    assert result["samples"][0]["id"] == "b0"


def test_rrsisd_mask_of_another_size_is_reported_by_evaluate(oracle_model, tmp_path: Path) -> None:
    root = shutil.copytree(RRSISD_TREE, tmp_path / "rrsisd")
    Image.new("RGB", (28, 20)).save(root / "JPEGImages" / "00003.jpg")
    with pytest.warns(DataWarning, match=r"annotation 103: mask is 40x56 but image 00003.jpg"):
        result = evaluate(oracle_model, open_dataset(root, "val"), progress=False, resamples=0)
    assert len(result["data_warnings"]) == 1 and result["n"] == 1
