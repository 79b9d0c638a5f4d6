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
    argv = ["data", "synth", str(out), "--n", "5", "--size", "96", "--overwrite", "--no-progress"]
    assert main(argv) == 0
    assert "synth" not in capsys.readouterr().err  # no progress bar


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


def _big_label_tree(tmp_path, n_images: int = 3, size: int = 160) -> tuple:
    """Images of ``size`` px with a road column and two buildings, ids as 16-bit TIFF labels."""
    import tifffile

    images, labels = tmp_path / "img", tmp_path / "lab"
    images.mkdir()
    labels.mkdir()
    for k in range(n_images):
        lab = np.zeros((size, size), dtype=np.uint16)
        lab[:, 60:76] = 2
        lab[10 + k : 50 + k, 10:50] = 1
        lab[100:140, 100:150] = 1
        image = np.full((size, size, 3), 80 + 10 * k, np.uint8)
        Image.fromarray(image).save(images / f"area{k}.png")
        tifffile.imwrite(labels / f"area{k}.tif", lab)
    taxonomy = {
        "classes": {"building": 1, "road": 2},
        "objects": ["building"],
        "relations": [["building", "along", "road"]],
    }
    (tmp_path / "tax.json").write_text(json.dumps(taxonomy))
    return images, labels, tmp_path / "tax.json"


def _metas(out) -> dict[str, list[dict]]:
    return {
        split: [json.loads(x) for x in (out / f"meta_{split}.jsonl").read_text().splitlines()]
        for split in ("train", "val", "test")
        if (out / f"meta_{split}.jsonl").exists()
    }


def test_from_labels_crops_and_split_file(tmp_path, capsys) -> None:
    images, labels, tax = _big_label_tree(tmp_path)
    split_file = tmp_path / "splits.txt"
    split_file.write_text("# areas\narea0 train\narea1,train\narea2 test  # held out\n")
    out = tmp_path / "out"
    argv = ["data", "from-labels", str(images), str(labels), str(out), "--taxonomy", str(tax)]
    argv += ["--crop", "96", "--stride", "64", "--split-file", str(split_file)]
    assert main(argv) == 0, capsys.readouterr().err
    metas = _metas(out)
    # Splits follow the file, by image: every crop of area2 is in test and nowhere else.
    assert {m["source"] for m in metas["train"]} == {"area0", "area1"}
    assert {m["source"] for m in metas["test"]} == {"area2"}
    assert not metas.get("val")
    # 160 px at crop 96, stride <= 64: origins 0 and 64 on each axis (the last one flush).
    origins = {tuple(m["crop_yx"]) for m in metas["test"]}
    assert origins <= {(0, 0), (0, 64), (64, 0), (64, 64)} and len(origins) >= 2
    ids = (out / "output_phrase_test.txt").read_text().split()
    assert any(i.startswith("area2_y64_x") for i in ids)
    # Crops are crop-sized images; a "road" mask is exactly the label crop's road pixels.
    import tifffile

    from rrsis.data.refsegrs import RefSegRS

    data = RefSegRS(out, "test")
    roads = [i for i in range(len(data)) if data[i]["text"] == "road"]
    assert roads, "every crop holds a road column: expected a 'road' triplet"
    for index in roads:
        sample = data[index]
        y, x = sample["meta"]["crop_yx"]
        lab = tifffile.imread(labels / "area2.tif")[y : y + 96, x : x + 96]
        assert sample["image"].shape == (96, 96, 3)
        np.testing.assert_array_equal(sample["mask"], lab == 2)


def test_from_labels_whole_images_and_short_sides(tmp_path, capsys) -> None:
    images, labels, tax = _big_label_tree(tmp_path, n_images=1)
    out = tmp_path / "whole"
    argv = ["data", "from-labels", str(images), str(labels), str(out), "--taxonomy", str(tax)]
    assert main([*argv, "--crop", "0", "--splits", "1", "0", "0"]) == 0, capsys.readouterr().err
    metas = _metas(out)["train"]
    assert {tuple(m["crop_yx"]) for m in metas} == {(0, 0)}
    from rrsis.data.refsegrs import RefSegRS

    assert RefSegRS(out, "train")[0]["image"].shape == (160, 160, 3)
    # A crop larger than the image keeps the image whole, never padded.
    out2 = tmp_path / "big_crop"
    argv[4] = str(out2)
    assert main([*argv, "--crop", "512", "--splits", "1", "0", "0"]) == 0
    assert RefSegRS(out2, "train")[0]["image"].shape == (160, 160, 3)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ("area0 train\narea1 train\n", "not in the split file"),
        ("area0 train\narea1 train\narea2 holdout\n", "line 3"),
        ("area0 train\narea1 train\narea2 test\nelsewhere val\n", "elsewhere"),
        ("area0 train\narea0 test\narea1 train\narea2 test\n", "two splits"),
    ],
)
def test_from_labels_bad_split_file_is_one_line_error(tmp_path, capsys, lines, message) -> None:
    images, labels, tax = _big_label_tree(tmp_path)
    split_file = tmp_path / "splits.txt"
    split_file.write_text(lines)
    out = tmp_path / "out"
    argv = ["data", "from-labels", str(images), str(labels), str(out), "--taxonomy", str(tax)]
    assert main([*argv, "--split-file", str(split_file)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "output_phrase_train.txt").exists()


@pytest.mark.parametrize(("crop", "stride"), [("16", None), ("96", "0"), ("96", "200")])
def test_from_labels_bad_crop_or_stride(tmp_path, capsys, crop, stride) -> None:
    images, labels, tax = _big_label_tree(tmp_path, n_images=1)
    argv = ["data", "from-labels", str(images), str(labels), str(tmp_path / "o")]
    argv += ["--taxonomy", str(tax), "--crop", crop] + (["--stride", stride] if stride else [])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert ("stride" if stride else "crop") in err and len(err.strip().splitlines()) == 1


def test_from_labels_reads_chosen_bands_of_a_multispectral_stack(tmp_path, capsys) -> None:
    import tifffile

    images, labels, tax = _big_label_tree(tmp_path, n_images=1)
    (images / "area0.png").unlink()
    stack = np.zeros((5, 160, 160), np.uint8)  # planar, as GDAL writes it
    for band in range(5):
        stack[band] = 40 * band + 10
    tifffile.imwrite(images / "area0.tif", stack)
    out = tmp_path / "ms"
    argv = ["data", "from-labels", str(images), str(labels), str(out), "--taxonomy", str(tax)]
    argv += ["--crop", "0", "--splits", "1", "0", "0"]
    # Five bands without --bands: refused in one line, naming the way out.
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--bands" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert main([*argv, "--bands", "5,3,1"]) == 0, capsys.readouterr().err
    from rrsis.data.refsegrs import RefSegRS

    pixel = RefSegRS(out, "train")[0]["image"][0, 0]
    assert pixel.tolist() == [170, 90, 10]
