"""Scenes and in-memory reads pick bands by GeoTIFF colour tags, and say when they guess."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from rrsis.data.io import stretch_to_uint8
from rrsis.errors import DataWarning
from rrsis.infer.images import to_rgb_uint8

rasterio = pytest.importorskip("rasterio")


def test_scene_stretch_uses_tagged_bands_and_warns_when_guessing(
    tmp_path: Path, write_4band
) -> None:
    from rrsis.infer.raster import Stretch

    tagged, plain = tmp_path / "bgrn.tif", tmp_path / "plain.tif"
    write_4band(tagged, ["blue", "green", "red", "undefined"])
    write_4band(plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with rasterio.open(tagged) as ds:
            assert Stretch(ds, tagged).bands == [3, 2, 1]
        with rasterio.open(plain) as ds:
            assert Stretch(ds, plain, bands=[1, 2, 3]).bands == [1, 2, 3]
    with pytest.warns(DataWarning, match="--bands R,G,B") as caught:
        with rasterio.open(plain) as ds:
            assert Stretch(ds, plain).bands == [1, 2, 3]
    assert sum(issubclass(w.category, DataWarning) for w in caught) == 1


def test_to_rgb_uint8_reads_tagged_bands(tmp_path: Path, write_4band) -> None:
    path = tmp_path / "bgrn.tif"
    data = write_4band(path, ["blue", "green", "red", "undefined"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = to_rgb_uint8(path)
    np.testing.assert_array_equal(image, stretch_to_uint8(np.moveaxis(data[[2, 1, 0]], 0, -1)))
