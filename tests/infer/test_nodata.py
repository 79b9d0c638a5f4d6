"""Nodata in a scene changes nothing on its valid pixels (:mod:`rrsis.infer.scene`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import Tensor

from rrsis.infer.predictor import Segmenter
from rrsis.infer.scene import SceneConfig, predict_scene
from rrsis.infer.tiling import fill_invalid, grid_over, tile_starts

from .conftest import PixelModel, make_geotiff

DUBAI = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "dubai-aerial"
needs_dubai = pytest.mark.skipif(
    not (DUBAI / "tile4").is_dir(), reason=f"Dubai aerial data not found at {DUBAI}"
)


class ContextModel(PixelModel):
    """Foreground logit = a pixel's red minus its window's mean red: each pixel's answer
    depends on everything its window holds, as a real network's does."""

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        red = image[:, 0]
        fg = 4.0 * (red - red.mean(dim=(-2, -1), keepdim=True))
        return torch.stack([torch.zeros_like(fg), fg], dim=1)


def _with_margin(
    src: Path, dst: Path, top: int, left: int, how: str = "nodata", fill: int = 0
) -> Path:
    """``src`` with ``top`` rows and ``left`` columns of nodata before it: a nodata value,
    an alpha band or an internal mask band, the invalid pixels holding ``fill``."""
    with rasterio.open(src) as ds:
        data, profile = ds.read(), ds.profile
    bands, height, width = data.shape
    wide = np.full((bands, height + top, width + left), fill, data.dtype)
    wide[:, top:, left:] = data
    valid = np.zeros(wide.shape[1:], bool)
    valid[top:, left:] = True
    profile |= {"height": height + top, "width": width + left}
    profile["transform"] = profile["transform"] @ rasterio.Affine.translation(-left, -top)
    if how == "nodata":
        profile["nodata"] = fill
    elif how == "alpha":
        wide = np.concatenate([wide, (valid * 255).astype(wide.dtype)[None]])
        profile |= {"count": bands + 1, "photometric": "RGB", "alpha": "YES"}
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(dst, "w", **profile) as out:
        out.write(wide)
        if how == "mask":
            out.write_mask(valid)
    with rasterio.open(dst) as ds:  # the margin is nodata as GDAL reads it
        assert (ds.dataset_mask() > 0).tolist() == valid.tolist()
    return dst


def _read(path: Path, top: int = 0, left: int = 0) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()[:, top:, left:]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def test_fill_invalid_takes_the_nearest_valid_colour():
    tiles = np.zeros((2, 4, 6, 3), np.uint8)
    tiles[0, :, 3:] = 200
    tiles[0, :, 2] = 90
    valid = np.zeros((2, 4, 6), bool)
    valid[0, :, 2:] = True  # columns 0-1 invalid: nearest valid is column 2
    kept = tiles[0, :, 2:].copy()
    fill_invalid(tiles, valid)
    assert (tiles[0, :, :2] == 90).all()
    np.testing.assert_array_equal(tiles[0, :, 2:], kept)  # valid pixels untouched
    assert (tiles[1] == 0).all()  # no valid pixel: nothing to copy, left as it is


def test_grid_over_the_valid_box_is_the_grid_of_that_part_alone():
    box = (40, 300, 150, 400)  # rows 40-299, columns 150-399 of a 320 x 420 image
    grid = grid_over(box, (320, 420), 64, 48)
    assert grid.ys == [40 + y for y in tile_starts(260, 64, 48)]
    assert grid.xs == [150 + x for x in tile_starts(250, 64, 48)]
    assert (grid.height, grid.width) == (64, 64)
    assert grid_over((0, 320, 0, 420), (320, 420), 64, 48).xs == tile_starts(420, 64, 48)
    small = grid_over((10, 20, 410, 415), (320, 420), 64, 48, min_side=32)
    assert (small.height, small.width, small.ys, small.xs) == (32, 32, [0], [388])
    assert len(grid_over(None, (320, 420), 64, 48)) == 0


@pytest.mark.parametrize(
    ("how", "fill", "dtype"),
    [
        ("nodata", 0, "uint8"),
        ("nodata", 65535, "uint16"),
        ("alpha", 0, "uint8"),
        ("mask", 0, "uint8"),
    ],
)
def test_a_nodata_margin_changes_nothing_on_valid_pixels(tmp_path, how, fill, dtype):
    """The same pixels with and without a nodata margin give the same probabilities."""
    top, left = 40, 90
    plain = make_geotiff(tmp_path / "plain.tif", 150, 230, dtype=dtype, seed=3)
    margin = _with_margin(plain, tmp_path / "margin.tif", top, left, how, fill)
    seg = Segmenter(ContextModel())
    config = SceneConfig(tile=64, overlap=16, progress=False, probabilities=True)
    predict_scene(plain, "zebra", tmp_path / "a.tif", seg, config)
    predict_scene(margin, "zebra", tmp_path / "b.tif", seg, config)
    reference, probs = _read(tmp_path / "a.tif"), _read(tmp_path / "b.tif")
    np.testing.assert_allclose(probs[:, top:, left:], reference, atol=1e-5)
    assert (probs[:, :top] == 0).all() and (probs[:, :, :left] == 0).all()


def test_a_scene_without_valid_pixels_is_all_zero(tmp_path):
    src = make_geotiff(tmp_path / "s.tif", 100, 120)
    with rasterio.open(src) as ds:
        profile = ds.profile
    with rasterio.open(src, "w", **(profile | {"nodata": 0})) as out:
        out.write(np.zeros((3, 100, 120), np.uint8))
    model = ContextModel()
    predict_scene(src, "zebra", tmp_path / "m.tif", Segmenter(model), SceneConfig(progress=False))
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert not ds.read().any() and not ds.dataset_mask().any()
    assert model.calls == 0


@needs_dubai
@pytest.mark.parametrize("how", ["nodata", "alpha"])
def test_shipped_model_sees_no_water_in_a_nodata_strip(tmp_path, how):
    """Real imagery, the shipped model: a strip of zeros tagged as nodata beside a Dubai image
    part made 6 % of the valid pixels next to it "water" (none without the strip)."""
    from PIL import Image

    rgb = np.asarray(Image.open(DUBAI / "tile4/images/image_part_001.jpg").convert("RGB"))
    rgb = rgb[:640, :800]
    plain = tmp_path / "plain.tif"
    profile = {"driver": "GTiff", "height": 640, "width": 800, "count": 3, "dtype": "uint8"}
    profile |= {"crs": "EPSG:32640", "transform": rasterio.Affine(0.5, 0, 3e5, 0, -0.5, 2.78e6)}
    rgb = np.where(rgb.max(axis=-1, keepdims=True) == 0, 1, rgb)  # no valid pixel reads as nodata
    with rasterio.open(plain, "w", **profile) as out:
        out.write(np.moveaxis(rgb, -1, 0))
    left = 192
    margin = _with_margin(plain, tmp_path / "margin.tif", 0, left, how)
    seg = Segmenter.from_pretrained()
    config = SceneConfig(progress=False)
    predict_scene(plain, "water", tmp_path / "a.tif", seg, config)
    predict_scene(margin, "water", tmp_path / "b.tif", seg, config)
    reference, mask = _read(tmp_path / "a.tif")[0] > 0, _read(tmp_path / "b.tif", 0, left)[0] > 0
    assert reference.mean() > 0.01  # some water, so the IoU means something
    assert _iou(mask, reference) >= 0.98
    assert mask[:, :128].mean() <= reference[:, :128].mean() + 0.005


@needs_dubai
def test_shipped_model_reads_a_diagonal_collar_as_the_image_beside_it(tmp_path):
    """A nodata corner cut diagonally (a reprojected footprint's collar) leaves the shipped
    model's mask on the valid pixels as it is with real pixels there: the windows crossing it
    see the nearest valid colours, not the nodata value."""
    from PIL import Image

    rgb = np.asarray(Image.open(DUBAI / "tile4/images/image_part_001.jpg").convert("RGB"))
    rgb = np.where(rgb.max(axis=-1, keepdims=True) == 0, 1, rgb)[:640, :800]
    yy, xx = np.mgrid[0:640, 0:800]
    valid = xx + yy >= 400
    profile = {"driver": "GTiff", "height": 640, "width": 800, "count": 3, "dtype": "uint8"}
    profile |= {"crs": "EPSG:32640", "transform": rasterio.Affine(0.5, 0, 3e5, 0, -0.5, 2.78e6)}
    plain, collar = tmp_path / "plain.tif", tmp_path / "collar.tif"
    with rasterio.open(plain, "w", **profile) as out:
        out.write(np.moveaxis(rgb, -1, 0))
    with rasterio.open(collar, "w", **(profile | {"nodata": 0})) as out:
        out.write(np.moveaxis(np.where(valid[..., None], rgb, 0), -1, 0))
    seg = Segmenter.from_pretrained()
    predict_scene(plain, "water", tmp_path / "a.tif", seg, SceneConfig(progress=False))
    predict_scene(collar, "water", tmp_path / "b.tif", seg, SceneConfig(progress=False))
    reference, mask = _read(tmp_path / "a.tif")[0] > 0, _read(tmp_path / "b.tif")[0] > 0
    assert not mask[~valid].any()
    assert _iou(mask, reference & valid) >= 0.98
