"""GeoTIFF colour tags pick the red, green and blue bands; a guess is reported once."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from rrsis.data.io import read_image, stretch_to_uint8
from rrsis.errors import DataWarning

rasterio = pytest.importorskip("rasterio")


def test_bgr_nir_colour_tags_read_bands_3_2_1_silently(tmp_path: Path, write_4band) -> None:
    path = tmp_path / "bgrn.tif"
    data = write_4band(path, ["blue", "green", "red", "undefined"], height=40, width=48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_image(path)
    np.testing.assert_array_equal(image, stretch_to_uint8(np.moveaxis(data[[2, 1, 0]], 0, -1)))


def test_untagged_4band_warns_once_naming_file_and_bands_option(
    tmp_path: Path, write_4band
) -> None:
    path = tmp_path / "plain4.tif"
    data = write_4band(path, height=40, width=48)
    with pytest.warns(DataWarning) as caught:
        image = read_image(path)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 1
    assert str(path) in messages[0] and "--bands R,G,B" in messages[0]
    assert "bands 1,2,3" in messages[0] and "\n" not in messages[0]
    np.testing.assert_array_equal(image, stretch_to_uint8(np.moveaxis(data[:3], 0, -1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # chosen bands: nothing is guessed
        read_image(path, bands=[3, 2, 1])


def test_plain_rgb_rgba_and_grey_files_stay_silent(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tifffile.imwrite(tmp_path / "rgb.tif", rng.integers(0, 256, (8, 9, 3), dtype=np.uint8))
    rgba = rng.integers(0, 256, (8, 9, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    tifffile.imwrite(tmp_path / "grey.tif", rng.integers(0, 9000, (8, 9), dtype=np.uint16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("rgb.tif", "rgba.tif", "grey.tif"):
            assert read_image(tmp_path / name).shape == (8, 9, 3)
