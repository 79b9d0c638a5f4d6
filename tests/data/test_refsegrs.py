"""RefSegRS reader and writer against the independent fixture tree (tests/data/refsegrs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from rrsis.data.refsegrs import RefSegRS
from rrsis.data.refsegrs_writer import RefSegRSWriter, export_refsegrs
from rrsis.errors import DatasetError, ExpressionError, OutputExistsError


def _expected_mask(boxes, shape=(48, 64)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for r0, r1, c0, c1 in boxes:
        mask[r0:r1, c0:c1] = True
    return mask


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_reads_every_split_of_the_fixture(refsegrs_root: Path, refsegrs_make, split: str) -> None:
    expected = [s for s in refsegrs_make.SAMPLES if s[1] == split]
    dataset = RefSegRS(refsegrs_root, split)
    assert len(dataset) == 3
    assert dataset.ids == [s[0] for s in expected]
    assert dataset.expressions == [s[2] for s in expected]
    for index, (sample_id, _, expression, boxes) in enumerate(expected):
        sample = dataset[index]
        assert set(sample) == {"image", "mask", "text", "id", "meta"}
        assert sample["id"] == sample_id and sample["text"] == expression
        assert sample["image"].dtype == np.uint8 and sample["image"].shape == (48, 64, 3)
        np.testing.assert_array_equal(
            sample["image"], tifffile.imread(refsegrs_root / "images" / f"{sample_id}.tif")
        )
        mask = _expected_mask(boxes)
        assert sample["mask"].dtype == np.bool_
        np.testing.assert_array_equal(sample["mask"], mask)
        # Boxes never touch, so the component count is the number of boxes.
        assert sample["meta"] == {
            "area_frac": pytest.approx(mask.mean()),
            "n_components": len(boxes),
        }


def test_inputs_untouched_by_reading(refsegrs_root: Path, tree_digest) -> None:
    before = tree_digest(refsegrs_root)
    for split in ("train", "val", "test"):
        dataset = RefSegRS(refsegrs_root, split)
        for index in range(len(dataset)):
            dataset[index]
    assert tree_digest(refsegrs_root) == before


def test_mask_threshold_and_transforms(refsegrs_copy: Path) -> None:
    mask = np.zeros((48, 64), dtype=np.uint8)
    mask[:, :10] = 40
    mask[:, 10:20] = 200
    tifffile.imwrite(refsegrs_copy / "masks" / "0.tif", mask, compression="packbits")
    # The reference loaders keep pixels > 50: our default too.
    strict = RefSegRS(refsegrs_copy, "train")[0]["mask"]
    assert not strict[:, :10].any() and strict[:, 10:20].all()
    assert RefSegRS(refsegrs_copy, "train", mask_threshold=0)[0]["mask"][:, :20].all()

    def flip(sample):
        return {**sample, "text": sample["text"].upper()}

    assert RefSegRS(refsegrs_copy, "train", transforms=flip)[0]["text"] == "ROAD"


def test_meta_jsonl_is_merged(refsegrs_copy: Path) -> None:
    lines = [
        {"id": "0", "kind": "category", "area_frac": 0.5, "n_components": 9, "source": "tile_3"},
        {"id": "1", "kind": "category"},
    ]
    (refsegrs_copy / "meta_train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    dataset = RefSegRS(refsegrs_copy, "train")
    # Stored stats are trusted; missing ones are computed from the mask; no meta -> stats only.
    assert dataset[0]["meta"] == {
        "kind": "category",
        "area_frac": 0.5,
        "n_components": 9,
        "source": "tile_3",
    }
    assert dataset[1]["meta"]["kind"] == "category" and dataset[1]["meta"]["n_components"] == 2
    assert set(dataset[2]["meta"]) == {"area_frac", "n_components"}


def test_tolerates_blank_lines_crlf_and_tabs(refsegrs_copy: Path) -> None:
    (refsegrs_copy / "output_phrase_train.txt").write_bytes(
        b"0\troad  \r\n\n   \n1 vehicle in the   parking area\r\n2 building"
    )
    dataset = RefSegRS(refsegrs_copy, "train")
    assert dataset.ids == ["0", "1", "2"]
    assert dataset.expressions == ["road", "vehicle in the   parking area", "building"]


def _write_phrases(root: Path, text: bytes, split: str = "train") -> Path:
    path = root / f"output_phrase_{split}.txt"
    path.write_bytes(text)
    return path


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"0 road\n1\n", 2, "empty expression"),
        (b"0 road\n\n1    \t \n", 3, "empty expression"),
        (b"0 road\n1 caf\xe9\n", 2, "not valid UTF-8"),
        (b"0 road\n1 car\n0 tree\n", 3, "duplicate id '0' (first on line 1)"),
        (b"0 road\n42 car\n", 2, "image of id '42' not found"),
    ],
)
def test_bad_split_file_names_file_and_line(
    refsegrs_copy: Path, content: bytes, line: int, message: str
) -> None:
    path = _write_phrases(refsegrs_copy, content)
    with pytest.raises(DatasetError) as info:
        RefSegRS(refsegrs_copy, "train")
    assert info.value.path == path and info.value.line == line
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_missing_mask_names_file_and_line(refsegrs_copy: Path) -> None:
    (refsegrs_copy / "masks" / "4.tif").unlink()
    with pytest.raises(DatasetError, match=r"output_phrase_val.txt:2: mask of id '4' not found"):
        RefSegRS(refsegrs_copy, "val")


def test_missing_root_and_split_file(tmp_path: Path, refsegrs_copy: Path) -> None:
    with pytest.raises(DatasetError, match="root directory not found") as info:
        RefSegRS(tmp_path / "nope", "train")
    assert info.value.path == tmp_path / "nope"
    (refsegrs_copy / "output_phrase_test.txt").unlink()
    with pytest.raises(
        DatasetError, match=r"split file for 'test' not found \(splits present: train, val\)"
    ):
        RefSegRS(refsegrs_copy, "test")


def test_mask_size_mismatch_is_resized_with_one_warning(refsegrs_copy: Path) -> None:
    """The reference loaders resize image and mask separately: the mask follows its image."""
    import warnings

    from PIL import Image

    small = np.zeros((24, 32), dtype=np.uint8)
    small[:, :8] = 255
    tifffile.imwrite(refsegrs_copy / "masks" / "5.tif", small)
    dataset = RefSegRS(refsegrs_copy, "val")  # cheap __init__ does not read pixels
    dataset[0]
    with pytest.warns(
        UserWarning,
        match=r"output_phrase_val.txt:3: mask of id '5' is 24x32 but its image is 48x64",
    ):
        mask = dataset[2]["mask"]
    expected = np.asarray(Image.fromarray(small).resize((64, 48), Image.NEAREST)) > 127
    np.testing.assert_array_equal(mask, expected)
    assert mask[:, :16].all() and not mask[:, 16:].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        dataset[2]  # once per split


def test_old_mac_line_endings(refsegrs_copy: Path) -> None:
    """A phrase file with old-Mac (CR-only) line endings reads as universal newlines would."""
    path = refsegrs_copy / "output_phrase_val.txt"
    lines = path.read_text().splitlines()
    path.write_bytes("\r".join(lines).encode())
    assert RefSegRS(refsegrs_copy, "val").ids == [line.split()[0] for line in lines]


def test_bad_meta_line_names_file_and_line(refsegrs_copy: Path) -> None:
    (refsegrs_copy / "meta_val.jsonl").write_text('{"id": "3"}\n{not json\n')
    with pytest.raises(DatasetError, match=r"meta_val.jsonl:2: invalid JSON"):
        RefSegRS(refsegrs_copy, "val")


def test_plot_returns_figure_with_expression(refsegrs_root: Path) -> None:
    from matplotlib.figure import Figure

    dataset = RefSegRS(refsegrs_root, "val")
    figure = dataset.plot(dataset[0])
    assert isinstance(figure, Figure)
    assert "car in the parking area" in figure._suptitle.get_text()
    assert len(figure.axes) == 2


def test_writer_round_trip(refsegrs_root: Path, tmp_path: Path) -> None:
    source = {split: RefSegRS(refsegrs_root, split) for split in ("train", "val", "test")}
    out = tmp_path / "out"
    counts = export_refsegrs(source, out, progress=False)
    assert counts == {"train": 3, "val": 3, "test": 3}
    for split, dataset in source.items():
        copy = RefSegRS(out, split)
        assert copy.ids == dataset.ids and copy.expressions == dataset.expressions
        for index in range(len(dataset)):
            a, b = dataset[index], copy[index]
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["mask"], b["mask"])
            assert a["meta"] == b["meta"]
    assert tifffile.TiffFile(out / "masks" / "0.tif").pages[0].compression == 32773
    assert (out / "output_phrase_val.txt").read_text() == (
        refsegrs_root / "output_phrase_val.txt"
    ).read_text()
    meta = [json.loads(line) for line in (out / "meta_val.jsonl").read_text().splitlines()]
    assert [m["id"] for m in meta] == ["3", "4", "5"] and meta[0]["n_components"] == 7


def _sample(sample_id: str, text: str = "road", shape=(8, 8)) -> dict:
    return {
        "image": np.full((*shape, 3), 7, dtype=np.uint8),
        "mask": np.eye(*shape, dtype=bool),
        "text": text,
        "id": sample_id,
        "meta": {"kind": "category"},
    }


def test_writer_refuses_non_empty_root_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with RefSegRSWriter(out) as writer:
        writer.add("train", _sample("a"))
        writer.add("val", _sample("b"))
    with pytest.raises(OutputExistsError, match="not empty"):
        RefSegRSWriter(out)
    with RefSegRSWriter(out, overwrite=True) as writer:
        writer.add("train", _sample("c"))
    # The old val split and old images are gone: no stale samples survive an overwrite.
    assert sorted(p.name for p in out.iterdir()) == [
        "images",
        "masks",
        "meta_train.jsonl",
        "output_phrase_train.txt",
    ]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["c.tif"]
    assert RefSegRS(out, "train").ids == ["c"]


@pytest.mark.parametrize(
    ("sample", "error", "message"),
    [
        (_sample("a b"), DatasetError, "invalid id 'a b'"),
        (_sample("../x"), DatasetError, "invalid id"),
        (_sample("z", text="two\nlines"), ExpressionError, "contains a line break"),
        (_sample("z", text="   "), ExpressionError, "is empty"),
        (
            {**_sample("z"), "mask": np.zeros((4, 4), dtype=bool)},
            DatasetError,
            "mask of id 'z' has shape",
        ),
    ],
)
def test_writer_rejects_bad_samples(
    tmp_path: Path, sample: dict, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        with RefSegRSWriter(tmp_path / "out") as writer:
            writer.add("train", sample)
    assert not (tmp_path / "out" / "output_phrase_train.txt").exists()


def test_writer_ids_unique_across_splits(tmp_path: Path) -> None:
    with RefSegRSWriter(tmp_path / "out") as writer:
        writer.add("train", _sample("a"))
        with pytest.raises(DatasetError, match="duplicate id 'a' \\(already in split 'train'\\)"):
            writer.add("test", _sample("a"))
    assert RefSegRS(tmp_path / "out", "train").ids == ["a"]
    assert not (tmp_path / "out" / "output_phrase_test.txt").exists()


def test_reader_refuses_ids_with_path_separators(refsegrs_copy: Path) -> None:
    path = _write_phrases(refsegrs_copy, b"0 road\n../0 road\n")
    with pytest.raises(DatasetError, match="contains a path separator") as info:
        RefSegRS(refsegrs_copy, "train")
    assert (info.value.path, info.value.line) == (path, 2)


def test_writer_meta_id_and_unserialisable_meta(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with RefSegRSWriter(out) as writer:
        writer.add(
            "train",
            {
                **_sample("a"),
                "meta": {"id": "other", "area_frac": np.float32(0.5), "n_components": np.int64(3)},
            },
        )
        with pytest.raises(DatasetError, match="meta of id 'b' is not JSON-serialisable"):
            writer.add("train", {**_sample("b"), "meta": {"source": object()}})
    assert json.loads((out / "meta_train.jsonl").read_text()) == {
        "id": "a",
        "area_frac": 0.5,
        "n_components": 3,
    }
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.tif"]


def test_committed_fixture_matches_its_script(
    refsegrs_make, refsegrs_root: Path, tmp_path: Path, tree_digest
) -> None:
    refsegrs_make.make(tmp_path / "tree")
    assert tree_digest(tmp_path / "tree") == tree_digest(refsegrs_root)


def test_writer_links_repeated_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    other = image.copy()
    other[0, 0, 0] ^= 1  # one value differs: a different image
    masks = [rng.random((16, 16)) > 0.5 for _ in range(4)]
    samples = [
        {"id": "a0", "image": image, "mask": masks[0], "text": "road"},
        {"id": "a1", "image": image.copy(), "mask": masks[1], "text": "building"},
        {"id": "b0", "image": other, "mask": masks[2], "text": "water"},
        {"id": "a2", "image": image, "mask": masks[3], "text": "sand"},  # not after an "a"
    ]
    for link, root in ((True, tmp_path / "linked"), (False, tmp_path / "copied")):
        with RefSegRSWriter(root, link_duplicates=link) as writer:
            for sample in samples:
                writer.add("train", sample)
        inode = {s["id"]: (root / "images" / f"{s['id']}.tif").stat().st_ino for s in samples}
        assert (inode["a0"] == inode["a1"]) is link
        assert len({inode["a0"], inode["b0"], inode["a2"]}) == 3
        ds = RefSegRS(root, "train")
        for i, sample in enumerate(samples):
            np.testing.assert_array_equal(ds[i]["image"], sample["image"])
            np.testing.assert_array_equal(ds[i]["mask"], sample["mask"])
