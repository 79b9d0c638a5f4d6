"""``rrsis data synth | from-labels | dubai`` through the real CLI entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from rrsis.cli import main


def test_synth_writes_and_reports(tmp_path, capsys) -> None:
    out = tmp_path / "s"
    assert main(["data", "synth", str(out), "--n", "5", "--seed", "1", "--size", "96"]) == 0
    printed = capsys.readouterr().out
    assert f"to {out}" in printed and "train:" in printed
    n_lines = len((out / "output_phrase_train.txt").read_text().splitlines())
    assert f"train: {n_lines} (" in printed
    # Writing into the same non-empty directory needs --overwrite: one-line error, exit 2.
    assert main(["data", "synth", str(out), "--n", "5", "--size", "96"]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["data", "synth", str(out), "--n", "5", "--size", "96", "--overwrite"]) == 0


def _label_tree(tmp_path, colours: bool) -> tuple:
    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    palette = {"building": [200, 0, 0], "road": [0, 0, 200]}
    for k in range(3):
        lab = np.zeros((48, 48), dtype=np.uint8)
        lab[:, 20:28] = 2  # road
        lab[4 + k : 16 + k, 4:14] = 1  # building
        lab[30:44, 34:46] = 1
        Image.fromarray(np.full((48, 48, 3), 90 + k, np.uint8)).save(images / f"p{k}.png")
        if colours:
            rgb = np.zeros((48, 48, 3), np.uint8)
            rgb[lab == 1] = palette["building"]
            rgb[lab == 2] = palette["road"]
            Image.fromarray(rgb).save(labels / f"p{k}.png")
        else:
            Image.fromarray(lab).save(labels / f"p{k}.png")
    taxonomy = {
        "classes": {"building": 1, "road": 2},
        "objects": ["building"],
        "relations": [["building", "along", "road"]],
    }
    if colours:
        taxonomy["palette"] = palette
    (tmp_path / "tax.json").write_text(json.dumps(taxonomy))
    return images, labels, tmp_path / "tax.json"


@pytest.mark.parametrize("colours", [False, True])
def test_from_labels_with_ids_or_colours(tmp_path, capsys, colours: bool) -> None:
    images, labels, tax = _label_tree(tmp_path, colours)
    out = tmp_path / "out"
    code = main(["data", "from-labels", str(images), str(labels), str(out), "--taxonomy", str(tax)])
    assert code == 0, capsys.readouterr().err
    texts = []
    for path in out.glob("output_phrase_*.txt"):
        texts += [line.split(" ", 1)[1] for line in path.read_text().splitlines()]
    assert "road" in texts and "building" in texts
    metas = [json.loads(x) for p in out.glob("meta_*.jsonl") for x in p.read_text().splitlines()]
    assert {m["source"] for m in metas} == {"p0", "p1", "p2"}


def test_from_labels_bad_taxonomy_is_one_line_error(tmp_path, capsys) -> None:
    images, labels, tax = _label_tree(tmp_path, colours=True)
    tax.write_text('{"classes": {"building": 1}, "groups": {"x": ["boat"]}}')
    argv = ["data", "from-labels", str(images), str(labels), str(tmp_path / "o")]
    argv += ["--taxonomy", str(tax)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "boat" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    tax.write_text("{not json")
    assert main(argv) == 2
    err = capsys.readouterr().err
    # The message names the file and line of the JSON error.
    assert "tax.json:1" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_dubai_missing_source_is_one_line_error(tmp_path, capsys) -> None:
    assert main(["data", "dubai", str(tmp_path / "nowhere"), str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
