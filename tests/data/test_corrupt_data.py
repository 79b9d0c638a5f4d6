"""Corrupted copies of the fixture trees: refused with the file named, or repaired with a warning.

Each case builds its corruption in a copy (``refsegrs_copy``, ``rrsisd_copy``); the committed
trees stay valid.
"""

from __future__ import annotations

import codecs
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from pycocotools import mask as mask_utils

from rrsis.data.formats import compute_stats, format_table, open_splits, require_samples
from rrsis.data.from_labels import read_split_file
from rrsis.data.refsegrs import RefSegRS
from rrsis.data.rrsisd import RRSISD, decode_segmentation
from rrsis.errors import DatasetError, DataWarning


def _edit_instances(root: Path, ann_id: int, edit) -> None:
    path = root / "instances.json"
    instances = json.loads(path.read_text(encoding="utf-8"))
    annotation = next(a for a in instances["annotations"] if a["id"] == ann_id)
    edit(annotation["segmentation"])
    path.write_text(json.dumps(instances), encoding="utf-8")


def _string_rle(height: int, width: int) -> str:
    mask = np.zeros((height, width), np.uint8, order="F")
    mask[2:9, 3:20] = 1
    return mask_utils.encode(mask)["counts"].decode("ascii")


def _add_bom(path: Path) -> None:
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())


# -- RLE counts that do not cover the mask ---------------------------------------------------


@pytest.mark.parametrize(
    ("ann_id", "split", "index", "edit"),
    [
        # Compressed string counts (ann 101, ref 11) of a 40x50 mask under the size 40x56.
        (101, "train", 0, lambda seg: seg.update(counts=_string_rle(40, 50))),
        # Uncompressed list counts (ann 102, ref 12): one run too many, then one too few.
        (102, "train", 2, lambda seg: seg["counts"].append(7)),
        (102, "train", 2, lambda seg: seg["counts"].pop()),
    ],
)
def test_rle_whose_counts_miss_its_size_is_refused(
    rrsisd_copy: Path, ann_id: int, split: str, index: int, edit
) -> None:
    _edit_instances(rrsisd_copy, ann_id, edit)
    dataset = RRSISD(rrsisd_copy, split)
    ref_id = dataset.ids[index].split("_")[0]
    with pytest.raises(DatasetError) as info:
        dataset[index]
    message = str(info.value)
    assert message.startswith(f"{rrsisd_copy / 'instances.json'}: annotation {ann_id} ")
    assert f"ref_id {ref_id}" in message and "40x56 = 2240" in message
    assert len(message.splitlines()) == 1


def test_rle_decoding_checks_counts_and_size() -> None:
    good = {"size": [2, 3], "counts": [1, 2, 3]}
    assert decode_segmentation(good, 2, 3).sum() == 2
    for bad, reason in [
        ({"size": [2, 3], "counts": [1, 2]}, "sum to 3"),
        ({"size": [2, 3], "counts": [1, -2, 7]}, "negative"),
        ({"size": [2], "counts": [6]}, "size"),
        ({"size": [2, 3], "counts": "6P"}, "truncated"),
        ({"size": [2, 3], "counts": "6 "}, "holds ' '"),
        ({"size": [2, 3], "counts": _string_rle(2, 4)}, "sum to 8, not its size 2x3 = 6"),
    ]:
        with pytest.raises(ValueError, match=reason):
            decode_segmentation(bad, 2, 3)


# -- masks of another size than their image ---------------------------------------------------


def test_refsegrs_stats_resize_a_mismatched_mask_with_a_warning(refsegrs_copy: Path) -> None:
    small = np.zeros((24, 32), dtype=np.uint8)
    small[:, :16] = 255
    tifffile.imwrite(refsegrs_copy / "masks" / "5.tif", small)
    with pytest.warns(
        DataWarning, match=r"output_phrase_val.txt:3: mask of id '5' is 24x32 but its image is"
    ) as caught:
        stats = compute_stats(open_splits(refsegrs_copy), progress=False)
    assert len([w for w in caught if issubclass(w.category, DataWarning)]) == 1
    assert stats["splits"]["val"]["n"] == 3 and stats["splits"]["val"]["size"]["large"] == 1


def test_refsegrs_stats_from_stored_meta_still_check_mask_sizes(refsegrs_copy: Path) -> None:
    """A tree written by rrsis stores each mask's statistics; stats check the sizes anyway."""
    ids = RefSegRS(refsegrs_copy, "val").ids
    (refsegrs_copy / "meta_val.jsonl").write_text(
        "".join(json.dumps({"id": i, "area_frac": 0.2, "n_components": 1}) + "\n" for i in ids),
        encoding="utf-8",
    )
    tifffile.imwrite(refsegrs_copy / "masks" / "4.tif", np.zeros((80, 100), np.uint8))
    with pytest.warns(DataWarning, match=r"mask of id '4' is 80x100 but its image is 48x64"):
        stats = compute_stats(open_splits(refsegrs_copy), progress=False)
    assert stats["splits"]["val"]["size"]["large"] == 3  # the stored statistics


def test_refsegrs_sample_warns_with_the_data_category(refsegrs_copy: Path) -> None:
    tifffile.imwrite(refsegrs_copy / "masks" / "5.tif", np.zeros((10, 8), np.uint8))
    with pytest.warns(DataWarning, match="mask of id '5' is 10x8 but its image is 48x64"):
        assert RefSegRS(refsegrs_copy, "val")[2]["mask"].shape == (48, 64)


def test_rrsisd_stats_resize_a_mismatched_mask_with_a_warning(rrsisd_copy: Path) -> None:
    Image.new("RGB", (28, 20)).save(rrsisd_copy / "JPEGImages" / "00003.jpg")
    with pytest.warns(DataWarning, match=r"annotation 103: mask is 40x56 but image 00003.jpg"):
        stats = compute_stats(open_splits(rrsisd_copy), progress=False)
    assert stats["splits"]["val"]["n"] == 1


# -- empty splits -----------------------------------------------------------------------------


def test_empty_refsegrs_split_is_reported_by_stats_and_refused_where_scored(
    refsegrs_copy: Path,
) -> None:
    phrases = refsegrs_copy / "output_phrase_test.txt"
    phrases.write_text("\n\n", encoding="utf-8")
    stats = compute_stats(open_splits(refsegrs_copy), progress=False)
    assert stats["splits"]["test"]["n"] == 0 and stats["total"]["n"] == 6
    assert stats["notes"] == [f"split 'test' has no samples ({phrases})"]
    assert format_table(stats).splitlines()[-1] == f"note: split 'test' has no samples ({phrases})"
    with pytest.raises(DatasetError, match=r"output_phrase_test.txt: split 'test' has no samples"):
        require_samples(RefSegRS(refsegrs_copy, "test"))
    require_samples(RefSegRS(refsegrs_copy, "val"))  # a split with samples passes


def test_rrsisd_split_without_sentences_is_refused(rrsisd_copy: Path) -> None:
    refs_path = rrsisd_copy / "refs(unc).p"
    refs = pickle.loads(refs_path.read_bytes())
    for ref in refs:
        if ref["split"] == "val":
            ref["sentences"] = []
    refs_path.write_bytes(pickle.dumps(refs))
    dataset = RRSISD(rrsisd_copy, "val")
    with pytest.raises(DatasetError, match=r"refs\(unc\).p: split 'val' has no samples"):
        require_samples(dataset)
    stats = compute_stats(open_splits(rrsisd_copy), progress=False)
    assert stats["splits"]["val"]["n"] == 0 and len(stats["notes"]) == 1


def test_stats_without_empty_splits_have_no_notes(refsegrs_root: Path) -> None:
    stats = compute_stats(open_splits(refsegrs_root), progress=False)
    assert stats["notes"] == []
    assert not any(line.startswith("note:") for line in format_table(stats).splitlines())


# -- byte-order marks -------------------------------------------------------------------------


def test_phrase_and_meta_files_with_a_bom_read_as_without(refsegrs_copy: Path) -> None:
    before = RefSegRS(refsegrs_copy, "val")
    (refsegrs_copy / "meta_val.jsonl").write_text(
        "".join(json.dumps({"id": i, "kind": "position"}) + "\n" for i in before.ids),
        encoding="utf-8",
    )
    _add_bom(refsegrs_copy / "output_phrase_val.txt")
    _add_bom(refsegrs_copy / "meta_val.jsonl")
    dataset = RefSegRS(refsegrs_copy, "val")
    assert dataset.ids == before.ids and dataset.expressions == before.expressions
    assert dataset.meta_of(0) == {"kind": "position"}
    assert dataset[0]["id"] == before.ids[0]


def test_instances_json_with_a_bom_reads_as_without(rrsisd_copy: Path) -> None:
    _add_bom(rrsisd_copy / "instances.json")
    dataset = RRSISD(rrsisd_copy, "train")
    assert len(dataset) == 3 and dataset[0]["mask"].any()


def test_split_file_with_a_bom_reads_as_without(tmp_path: Path) -> None:
    path = tmp_path / "splits.txt"
    path.write_bytes(codecs.BOM_UTF8 + b"tile_1 train\ntile_2 val\n")
    assert read_split_file(path) == {"tile_1": "train", "tile_2": "val"}


def test_stats_cli_prints_the_resize_warning_as_one_line(refsegrs_copy: Path, capsys) -> None:
    from rrsis.cli import main

    small = np.zeros((24, 32), dtype=np.uint8)
    tifffile.imwrite(refsegrs_copy / "masks" / "5.tif", small)
    assert main(["data", "stats", str(refsegrs_copy)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rrsis: warning: ") and "mask of id '5'" in err[0]
