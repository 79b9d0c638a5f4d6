"""Dubai conversion on the real CC0 data (skipped where ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rrsis.data.dubai import (
    DUBAI_COLOURS,
    DUBAI_TAXONOMY,
    UNLABELED,
    convert_dubai,
    crop_origins,
    labels_from_colours,
)
from rrsis.errors import DatasetError

SRC = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "dubai-aerial"
needs_data = pytest.mark.skipif(
    not (SRC / "tile6").is_dir(), reason=f"Dubai aerial data not found at {SRC}"
)


def test_colours_map_exactly_and_unknown_is_unlabeled() -> None:
    rgb = np.zeros((2, 4, 3), dtype=np.uint8)
    rgb[0, 0] = DUBAI_COLOURS["building"]
    rgb[0, 1] = DUBAI_COLOURS["water"]
    rgb[0, 2] = (155, 155, 155)
    rgb[0, 3] = (61, 16, 152)  # one off building: not an exact match
    labels = labels_from_colours(rgb)
    assert labels[0, 0] == DUBAI_TAXONOMY.classes["building"]
    assert labels[0, 1] == DUBAI_TAXONOMY.classes["water"]
    assert (labels[0, 2:] == UNLABELED).all() and (labels[1] == UNLABELED).all()


def test_crop_origins_cover_the_part() -> None:
    assert crop_origins(512, 512, 512) == [0]
    assert crop_origins(859, 512, 512) == [0, 347]
    starts = crop_origins(1126, 512, 384)
    assert starts[0] == 0 and starts[-1] == 1126 - 512
    assert max(np.diff(starts)) <= 384


def test_tile_in_two_splits_is_refused(tmp_path) -> None:
    with pytest.raises(DatasetError, match="tile 6"):
        convert_dubai(SRC, tmp_path / "out", split_tiles={"train": [6], "test": [6]})


@needs_data
def test_convert_two_tiles(tmp_path) -> None:
    from rrsis.data.refsegrs import RefSegRS

    out = tmp_path / "dubai"
    # Tile 2 (509 px wide, resized up) and tile 6, one part each, keep the test fast.
    counts = convert_dubai(SRC, out, split_tiles={"train": [2], "test": [6]}, max_parts=1)
    assert sum(counts["train"].values()) > 0 and sum(counts["test"].values()) > 0
    tiles_of: dict[str, set[str]] = {}
    for split in ("train", "test"):
        ds = RefSegRS(out, split)
        assert len(ds) == sum(counts[split].values())
        for i in range(len(ds)):
            sample = ds[i]
            assert sample["image"].shape == (512, 512, 3)
            assert sample["mask"].any()
            tiles_of.setdefault(split, set()).add(sample["meta"]["source"].split("/")[0])
    assert tiles_of == {"train": {"tile2"}, "test": {"tile6"}}
    again = convert_dubai(
        SRC, tmp_path / "again", split_tiles={"train": [2], "test": [6]}, max_parts=1
    )
    assert again == counts
    phrases = (out / "output_phrase_test.txt").read_text()
    assert phrases == (tmp_path / "again" / "output_phrase_test.txt").read_text()


@needs_data
def test_existing_output_needs_overwrite(tmp_path) -> None:
    from rrsis.errors import OutputExistsError

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        convert_dubai(SRC, tmp_path / "x", split_tiles={"test": [6]}, max_parts=1)


def _crop_ids(root: Path) -> list[str]:
    """The crop part (``tileN_partK_yY_xX``) of every triplet id of the train split."""
    lines = (root / "output_phrase_train.txt").read_text().splitlines()
    return [line.split(" ", 1)[0].rsplit("_", 1)[0] for line in lines]


@needs_data
def test_denser_crops_and_builder_config(tmp_path) -> None:
    from rrsis.data.builder import BuildConfig

    # The training script adds crops 128 px apart from the training tiles: more crops than
    # 512 px apart, all from the same tile; and the builder rules are the caller's to set.
    convert_dubai(SRC, tmp_path / "sparse", split_tiles={"train": [6]}, max_parts=1)
    counts = convert_dubai(
        SRC,
        tmp_path / "dense",
        stride=128,
        split_tiles={"train": [6]},
        max_parts=1,
        config=BuildConfig(max_per_image=1),
    )
    dense, sparse = _crop_ids(tmp_path / "dense"), _crop_ids(tmp_path / "sparse")
    assert len(dense) == sum(counts["train"].values()) > 0
    assert len(dense) == len(set(dense))  # max_per_image=1: one expression per crop
    assert len(set(dense)) > len(set(sparse)) > 0
    assert all(crop.startswith("tile6_") for crop in dense)
