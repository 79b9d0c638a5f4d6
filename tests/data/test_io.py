"""Image/mask readers and writers (rrsis.data.io) and object statistics (rrsis.data.stats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from rrsis.data import io as rio
from rrsis.data.io import read_image, read_mask, write_image, write_mask
from rrsis.data.stats import component_bucket, object_stats, size_bucket
from rrsis.errors import ImageReadError


def test_reads_packbits_rgb_tiff_exactly(refsegrs_root: Path) -> None:
    path = refsegrs_root / "images" / "0.tif"
    assert tifffile.TiffFile(path).pages[0].compression == 32773  # PackBits, as RefSegRS
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == (48, 64, 3)
    np.testing.assert_array_equal(image, tifffile.imread(path))


def test_reads_png_and_jpeg_through_pillow(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), pixels)
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    jpeg = read_image(tmp_path / "a.jpg")
    assert jpeg.shape == (9, 13, 3) and jpeg.dtype == np.uint8


def test_sixteen_bit_uses_per_band_2_98_percentile_stretch(tmp_path: Path) -> None:
    ramp = np.arange(100 * 100, dtype=np.uint16).reshape(100, 100)
    # Band 2 is band 1 scaled, band 3 shifted: a per-band stretch maps all three alike.
    data = np.stack([ramp, ramp // 2, ramp + 1000], axis=-1).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="rgb")
    image = read_image(tmp_path / "s.tif")
    assert image.dtype == np.uint8
    low, high = np.percentile(ramp.astype(float), [2, 98])
    expected = np.clip(np.round((ramp - low) / (high - low) * 255), 0, 255)
    np.testing.assert_array_equal(image[..., 0], expected)
    np.testing.assert_allclose(image[..., 1].astype(int), expected, atol=1)
    np.testing.assert_array_equal(image[..., 2], expected)
    # The 2 % darkest saturate to 0 and the 2 % brightest to 255.
    assert (image[..., 0] == 0).mean() == pytest.approx(0.02, abs=0.002)
    assert (image[..., 0] == 255).mean() == pytest.approx(0.02, abs=0.002)


def test_one_band_is_replicated_and_four_bands_keep_first_three(tmp_path: Path) -> None:
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    tifffile.imwrite(tmp_path / "g.tif", grey)
    image = read_image(tmp_path / "g.tif")
    assert image.shape == (4, 5, 3)
    for band in range(3):
        np.testing.assert_array_equal(image[..., band], grey)
    rgbn = np.random.default_rng(1).integers(0, 256, size=(4, 5, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "n.tif", rgbn, photometric="rgb", extrasamples=["unspecified"])
    np.testing.assert_array_equal(read_image(tmp_path / "n.tif"), rgbn[..., :3])


def test_planar_tiff_is_moved_channel_last(tmp_path: Path) -> None:
    hwc = np.random.default_rng(2).integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "p.tif", np.moveaxis(hwc, -1, 0), photometric="rgb", planarconfig="separate"
    )
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), hwc)


@pytest.mark.parametrize("bands", [2, 5])
def test_other_band_counts_are_refused(tmp_path: Path, bands: int) -> None:
    path = tmp_path / f"b{bands}.tif"
    tifffile.imwrite(
        path,
        np.zeros((4, 5, bands), dtype=np.uint8),
        photometric="minisblack",
        planarconfig="contig",
    )
    with pytest.raises(ImageReadError, match=f"unsupported band count {bands}") as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["t.tif", "t.png", "t.jpg"])
def test_truncated_file_raises_image_read_error_naming_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    pixels = np.random.default_rng(3).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    if name.endswith(".tif"):
        tifffile.imwrite(path, pixels, photometric="rgb")
    else:
        Image.fromarray(pixels).save(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_raises_image_read_error(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not found") as info:
        read_mask(tmp_path / "absent.tif")
    assert info.value.path == tmp_path / "absent.tif"


def test_read_mask_threshold_and_first_channel(tmp_path: Path) -> None:
    values = np.array([[0, 30, 50, 51, 255]], dtype=np.uint8)
    tifffile.imwrite(tmp_path / "m.tif", values)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.tif"), [[False, True, True, True, True]])
    np.testing.assert_array_equal(
        read_mask(tmp_path / "m.tif", threshold=50), [[False, False, False, True, True]]
    )
    rgb = np.zeros((1, 5, 3), dtype=np.uint8)
    rgb[..., 0] = values
    rgb[..., 1] = 255  # other channels must be ignored
    Image.fromarray(rgb).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, [[False, True, True, True, True]])


def test_write_image_and_mask_round_trip_as_0_255_tiff(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    mask = rng.random((10, 12)) > 0.5
    write_image(tmp_path / "sub" / "i.tif", image)
    write_mask(tmp_path / "sub" / "m.tif", mask)
    np.testing.assert_array_equal(read_image(tmp_path / "sub" / "i.tif"), image)
    raw = tifffile.imread(tmp_path / "sub" / "m.tif")
    assert raw.dtype == np.uint8 and set(np.unique(raw)) == {0, 255}
    np.testing.assert_array_equal(raw == 255, mask)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["i.tif", "m.tif"]


def test_write_image_without_imagecodecs_is_uncompressed_and_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rio.tiff_compression() == "packbits"  # imagecodecs is a declared dependency
    monkeypatch.setattr(rio, "tiff_compression", lambda: None)
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    write_image(tmp_path / "a.tif", image)
    assert tifffile.TiffFile(tmp_path / "a.tif").pages[0].compression == 1  # none
    np.testing.assert_array_equal(read_image(tmp_path / "a.tif"), image)


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "m.tif"
    write_mask(target, np.ones((4, 4), dtype=bool))
    before = target.read_bytes()

    def failing_imwrite(path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(rio.tifffile, "imwrite", failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        write_mask(target, np.zeros((4, 4), dtype=bool))
    assert target.read_bytes() == before  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["m.tif"]  # no temp file left


def test_write_image_rejects_wrong_layout(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_image(tmp_path / "x.tif", np.zeros((4, 4, 3), dtype=np.float32))
    assert not (tmp_path / "x.tif").exists()


def test_object_stats_uses_eight_connectivity() -> None:
    diagonal = np.eye(5, dtype=bool)
    assert object_stats(diagonal) == {"area_frac": pytest.approx(5 / 25), "n_components": 1}
    two = np.zeros((4, 6), dtype=bool)
    two[0, 0] = two[3, 5] = True
    assert object_stats(two) == {"area_frac": pytest.approx(2 / 24), "n_components": 2}
    assert object_stats(np.zeros((3, 3), dtype=bool)) == {"area_frac": 0.0, "n_components": 0}
    assert isinstance(object_stats(two)["n_components"], int)


def test_buckets_edges() -> None:
    assert [size_bucket(f) for f in (0.0, 0.0099, 0.01, 0.1, 0.1001)] == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
    ]
    assert [component_bucket(n) for n in (0, 1, 2, 5, 6)] == ["1", "1", "2-5", "2-5", ">5"]


def test_float_raster_with_nodata_is_stretched(tmp_path: Path) -> None:
    data = np.linspace(0.0, 1.0, 100, dtype=np.float32).reshape(10, 10)
    data[0, 0] = np.nan
    tifffile.imwrite(tmp_path / "f.tif", data)
    image = read_image(tmp_path / "f.tif")
    assert image.dtype == np.uint8 and image[0, 0, 0] == 0
    assert image[..., 0].max() == 255 and image[5, 5, 0] > image[4, 4, 0]
