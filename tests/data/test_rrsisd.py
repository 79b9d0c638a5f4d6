"""RRSIS-D reader against the tiny fixture tree (tests/data/rrsisd)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rrsis.data.rrsisd import RRSISD, decode_segmentation, load_refs, rrsisd_splits
from rrsis.errors import DatasetError


def _box(box, shape=(40, 56)) -> np.ndarray:
    r0, r1, c0, c1 = box
    mask = np.zeros(shape, dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_one_sample_per_sentence_with_exact_masks(
    rrsisd_root: Path, rrsisd_make, split: str
) -> None:
    refs = [r for r in rrsisd_make.REFS if r[2] == split]
    expected = [
        (f"{ref_id}_{sid}", text, ann) for ref_id, ann, _, sents in refs for sid, text in sents
    ]
    dataset = RRSISD(rrsisd_root, split)
    assert dataset.ids == [e[0] for e in expected]
    assert dataset.expressions == [e[1] for e in expected]
    categories = {c["id"]: c["name"] for c in rrsisd_make.CATEGORIES}
    for index, (sample_id, text, ann_id) in enumerate(expected):
        sample = dataset[index]
        image_id, category_id, box, _ = rrsisd_make.ANNOTATIONS[ann_id]
        assert sample["id"] == sample_id and sample["text"] == text
        assert sample["image"].shape == (40, 56, 3) and sample["image"].dtype == np.uint8
        np.testing.assert_array_equal(
            sample["image"],
            np.asarray(Image.open(rrsisd_root / "JPEGImages" / f"{image_id:05d}.jpg")),
        )
        np.testing.assert_array_equal(sample["mask"], _box(box))
        meta = sample["meta"]
        assert meta["category"] == categories[category_id]
        assert meta["ref_id"] == int(sample_id.split("_")[0]) and meta["ann_id"] == ann_id
        assert meta["area_frac"] == pytest.approx(_box(box).mean()) and meta["n_components"] == 1


def test_every_segmentation_encoding_is_covered(rrsisd_root: Path) -> None:
    instances = json.loads((rrsisd_root / "instances.json").read_text())
    kinds = {
        "str"
        if isinstance(a["segmentation"], dict) and isinstance(a["segmentation"]["counts"], str)
        else "list"
        if isinstance(a["segmentation"], dict)
        else "polygon"
        for a in instances["annotations"]
    }
    assert kinds == {"str", "list", "polygon"}


def test_decode_segmentation_unions_parts() -> None:
    polygons = [[0, 0, 2, 0, 2, 2, 0, 2], [4, 4, 6, 4, 6, 6, 4, 6]]
    mask = decode_segmentation(polygons, 8, 8)
    assert mask.sum() == 8 and mask[0:2, 0:2].all() and mask[4:6, 4:6].all()
    with pytest.raises(ValueError, match="unrecognised"):
        decode_segmentation([7], 8, 8)


def test_splits_and_inputs_untouched(rrsisd_root: Path, tree_digest) -> None:
    before = tree_digest(rrsisd_root)
    assert rrsisd_splits(rrsisd_root) == ["train", "val", "test"]
    for split in ("train", "val", "test"):
        dataset = RRSISD(rrsisd_root, split)
        for index in range(len(dataset)):
            dataset[index]
    assert tree_digest(rrsisd_root) == before


def test_rmsin_nested_layout(rrsisd_copy: Path) -> None:
    (rrsisd_copy / "rrsisd").mkdir()
    for name in ("refs(unc).p", "instances.json"):
        (rrsisd_copy / name).rename(rrsisd_copy / "rrsisd" / name)
    (rrsisd_copy / "images" / "rrsisd").mkdir(parents=True)
    shutil.move(rrsisd_copy / "JPEGImages", rrsisd_copy / "images" / "rrsisd" / "JPEGImages")
    dataset = RRSISD(rrsisd_copy, "val")
    assert dataset.ids == ["13_1004"] and dataset[0]["mask"].any()


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_restricted_unpickler_refuses_code(
    rrsisd_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(rrsisd_copy)
    path = rrsisd_copy / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"x": _Exploit()}]))
    with pytest.raises(DatasetError, match=r"refuses to unpickle (posix|nt|os)\.system") as info:
        RRSISD(rrsisd_copy, "train")
    assert info.value.path == path
    assert not (rrsisd_copy / "pwned").exists()
    # Plain containers, including sets and tuples, are allowed.
    path.write_bytes(
        pickle.dumps(
            [{"ref_id": 1, "ann_id": 2, "image_id": 3, "split": "x", "sentences": (), "s": {1}}]
        )
    )
    assert load_refs(path)[0]["s"] == {1}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x80\x04\x95garbage", "cannot read pickle"),
        (pickle.dumps({"not": "a list"}), "expected a list of refs"),
        (pickle.dumps([{"ref_id": 1}]), "ref #0 lacks ann_id, image_id, split, sentences"),
    ],
)
def test_malformed_refs(rrsisd_copy: Path, payload: bytes, message: str) -> None:
    (rrsisd_copy / "refs(unc).p").write_bytes(payload)
    with pytest.raises(DatasetError, match=message) as info:
        RRSISD(rrsisd_copy, "train")
    assert info.value.path == rrsisd_copy / "refs(unc).p"


def _edit_refs(root: Path, edit) -> None:
    path = root / "refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    edit(refs)
    path.write_bytes(pickle.dumps(refs))


def test_inconsistent_refs_name_the_ref(rrsisd_copy: Path) -> None:
    _edit_refs(rrsisd_copy, lambda refs: refs[2].update(ann_id=999))
    with pytest.raises(
        DatasetError,
        match=r"refs\(unc\).p: ref #2 \(ref_id 13\): annotation 999 not in instances.json",
    ):
        RRSISD(rrsisd_copy, "val")
    (rrsisd_copy / "JPEGImages" / "00002.jpg").unlink()
    with pytest.raises(
        DatasetError, match=r"ref #1 \(ref_id 12\): image file not found: .*00002.jpg"
    ):
        RRSISD(rrsisd_copy, "train")


def test_empty_sentence_and_unknown_split(rrsisd_copy: Path) -> None:
    with pytest.raises(
        DatasetError, match=r"no refs in split 'testA' \(splits present: test, train, val\)"
    ):
        RRSISD(rrsisd_copy, "testA")
    _edit_refs(rrsisd_copy, lambda refs: refs[3]["sentences"][0].update(sent=" ", raw=""))
    with pytest.raises(
        DatasetError, match=r"ref #3 \(ref_id 14\) has an empty sentence \(sent_id 1005\)"
    ):
        RRSISD(rrsisd_copy, "test")


def test_missing_files_and_bad_json(rrsisd_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="root directory not found"):
        RRSISD(tmp_path / "nope", "train")
    (rrsisd_copy / "instances.json").write_text('{"images": [],\n  oops}')
    with pytest.raises(DatasetError) as info:
        RRSISD(rrsisd_copy, "train")
    assert info.value.path == rrsisd_copy / "instances.json" and info.value.line == 2
    (rrsisd_copy / "refs(unc).p").unlink()
    with pytest.raises(DatasetError, match=r"refs\(unc\).p not found"):
        RRSISD(rrsisd_copy, "train")


def test_mask_size_mismatch_is_resized_with_one_warning(rrsisd_copy: Path, rrsisd_make) -> None:
    """RMSIN never compares mask and image sizes: the mask follows the image, and we say so."""
    Image.new("RGB", (28, 20)).save(rrsisd_copy / "JPEGImages" / "00003.jpg")
    dataset = RRSISD(rrsisd_copy, "val")
    with pytest.warns(
        UserWarning, match=r"annotation 103: mask is 40x56 but image 00003.jpg is 20x28"
    ):
        sample = dataset[0]
    box = rrsisd_make.ANNOTATIONS[103][2]
    expected = Image.fromarray(_box(box).astype(np.uint8) * 255).resize((28, 20), Image.NEAREST)
    np.testing.assert_array_equal(sample["mask"], np.asarray(expected) > 127)
    assert sample["mask"].any()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        dataset[0]  # once per split


def test_text_is_the_raw_sentence_as_rmsin_reads_it(rrsisd_root: Path) -> None:
    refs = load_refs(rrsisd_root / "refs(unc).p")
    sentence = next(s for r in refs for s in r["sentences"] if s["sent_id"] == 1003)
    assert sentence["sent"] == "the gray small windmill"  # REFER's cleaned copy differs
    dataset = RRSISD(rrsisd_root, "train")
    assert dataset.expressions[dataset.ids.index("12_1003")] == "The gray small windmill."


def test_numpy_numbers_and_arrays_in_refs_load(rrsisd_copy: Path) -> None:
    def to_numpy(refs):
        refs[0]["ann_id"] = np.int64(refs[0]["ann_id"])
        refs[0]["bbox"] = np.array([1.0, 2.0, 3.0, 4.0])

    _edit_refs(rrsisd_copy, to_numpy)
    dataset = RRSISD(rrsisd_copy, "train")
    assert dataset[0]["mask"].any()


def test_malformed_sentences(rrsisd_copy: Path) -> None:
    _edit_refs(rrsisd_copy, lambda refs: refs[0].update(sentences="the airplane"))
    with pytest.raises(
        DatasetError, match=r"ref #0 \(ref_id 11\): sentences must be a list of dicts"
    ):
        RRSISD(rrsisd_copy, "train")


def test_committed_fixture_matches_its_script(
    rrsisd_make, rrsisd_root: Path, tmp_path: Path, tree_digest
) -> None:
    rrsisd_make.make(tmp_path / "tree")
    assert tree_digest(tmp_path / "tree") == tree_digest(rrsisd_root)
