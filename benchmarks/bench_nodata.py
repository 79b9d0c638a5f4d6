"""Does a scene's nodata change the shipped model's masks on its valid pixels?

A CC0 Dubai image part (``../shared/data/dubai-aerial``) is written as a georeferenced GeoTIFF
on its own (the reference), and again with a nodata margin: a strip of zeros tagged
``nodata=0`` on its left, an RGBA scene whose alpha is 0 on that strip, and a diagonal nodata
collar (the corner of a reprojected footprint; there the reference is the same image with the
same collar filled by real pixels). ``predict_scene`` reads each with the shipped model, and the
masks are compared on the valid pixels: the foreground share in the ``--beside`` px next to the
margin, the share on all valid pixels, and the IoU with the reference.

    python benchmarks/bench_nodata.py [--image tile4/images/image_part_001.jpg] \
        [--expression water] [--margin 256] [--beside 128]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dubai-aerial"
ALPHA = "alpha"


def write_scene(path: Path, rgb: np.ndarray, valid: np.ndarray | None, how: str | None) -> Path:
    """``rgb (H, W, 3)`` as a UTM GeoTIFF; ``valid (H, W)`` marked by ``how`` ("nodata"/"alpha")."""
    import rasterio
    from rasterio.transform import from_origin

    bands = np.moveaxis(rgb, -1, 0).copy()
    profile = {
        "driver": "GTiff",
        "height": rgb.shape[0],
        "width": rgb.shape[1],
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:32640",
        "transform": from_origin(300000.0, 2780000.0, 0.5, 0.5),
    }
    if how == "nodata":
        bands[:, ~valid] = 0
        bands[:, valid & (bands.max(axis=0) == 0)] = 1  # a black valid pixel stays valid
        profile["nodata"] = 0
    elif how == ALPHA:
        bands = np.concatenate([bands, (valid * 255).astype(np.uint8)[None]])
        bands[:3, ~valid] = 0
        profile["count"] = 4
        profile["photometric"] = "RGB"
        profile["alpha"] = "YES"  # GTiff creation option: band 4 is alpha (ExtraSamples)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
    return path


def segment(path: Path, expression: str, segmenter, out: Path) -> np.ndarray:
    import rasterio

    from rrsis.infer.scene import SceneConfig, predict_scene

    predict_scene(path, expression, out, segmenter, SceneConfig(progress=False, overwrite=True))
    with rasterio.open(out) as ds:
        return ds.read(1) > 0


def compare(mask: np.ndarray, reference: np.ndarray, valid: np.ndarray, beside: np.ndarray) -> dict:
    mask, reference = mask & valid, reference & valid
    union = (mask | reference).sum()
    return {
        "share_beside": round(float(mask[beside].mean()), 4),
        "reference_share_beside": round(float(reference[beside].mean()), 4),
        "share_valid": round(float(mask[valid].mean()), 4),
        "reference_share_valid": round(float(reference[valid].mean()), 4),
        "iou_valid": round(float((mask & reference).sum() / union) if union else 1.0, 4),
        "invalid_foreground_px": int((mask & ~valid).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="tile4/images/image_part_001.jpg")
    parser.add_argument("--expression", default="water")
    parser.add_argument("--margin", type=int, default=256, help="nodata strip width, px")
    parser.add_argument("--beside", type=int, default=128, help="valid px next to it measured")
    args = parser.parse_args()

    from PIL import Image

    from rrsis.infer.predictor import Segmenter

    rgb = np.asarray(Image.open(DATA / args.image).convert("RGB"))
    height, width = rgb.shape[:2]
    start = time.perf_counter()
    segmenter = Segmenter.from_pretrained()
    margin = args.margin
    results = {
        "image": args.image,
        "expression": args.expression,
        "margin_px": margin,
        "beside_px": args.beside,
    }
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(tmp)
        reference = segment(
            write_scene(tmp / "ref.tif", rgb, None, None), args.expression, segmenter, tmp / "r.tif"
        )
        # A strip of nodata on the left: the scene is the image with ``margin`` px before it.
        wide = np.zeros((height, width + margin, 3), np.uint8)
        wide[:, margin:] = rgb
        valid = np.zeros(wide.shape[:2], bool)
        valid[:, margin:] = True
        beside = np.zeros_like(valid)
        beside[:, margin : margin + args.beside] = True
        for how in ("nodata", ALPHA):
            path = write_scene(tmp / f"{how}.tif", wide, valid, how)
            mask = segment(path, args.expression, segmenter, tmp / f"{how}_mask.tif")
            padded = np.zeros_like(valid)
            padded[:, margin:] = reference
            results[f"strip_{how}"] = compare(mask, padded, valid, beside)
        # A diagonal collar over the image's upper left corner, as a reprojected footprint has.
        yy, xx = np.mgrid[0:height, 0:width]
        collar_valid = xx + yy >= margin * 2
        beside = collar_valid & (xx + yy < margin * 2 + args.beside)
        path = write_scene(tmp / "collar.tif", rgb, collar_valid, "nodata")
        mask = segment(path, args.expression, segmenter, tmp / "collar_mask.tif")
        results["diagonal_collar_nodata"] = compare(mask, reference, collar_valid, beside)
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
