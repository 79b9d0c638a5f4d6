"""What ``POST /api/predict`` answers per expression: mask, share, time, polygons, GeoTIFF.

Polygons come from :class:`rrsis.infer.vector.BandVectorizer` (the writer of ``--vector``):
in lon/lat (RFC 7946 GeoJSON) for a georeferenced image, in pixel corners ``(col, row)``
otherwise. The GeoTIFF mask is written by :func:`rrsis.infer.outputs.write_geotiff` on the
input's grid. Both are written into the request's temporary folder and read back.
"""

from __future__ import annotations

import base64
import json
import warnings
from pathlib import Path

import numpy as np

from rrsis.infer.inputs import slug
from rrsis.infer.outputs import write_geotiff
from rrsis.infer.reading import Prediction
from rrsis.infer.vector import BandVectorizer
from rrsis.serve.images import LoadedImage, png_base64


def polygons_by_expression(image: LoadedImage, masks: np.ndarray, folder: Path) -> list[dict]:
    """One GeoJSON FeatureCollection per mask of ``masks (E, H, W)``."""
    from affine import Affine

    crs, transform = image.georef or (None, Affine.identity())
    path = folder / "polygons.geojson"
    names = [f"mask {index + 1}" for index in range(len(masks))]
    writer = BandVectorizer(
        path, crs, transform, masks.shape[1], names, dst_crs=None if crs is None else "EPSG:4326"
    )
    writer.add_rows(masks, 0)
    with warnings.catch_warnings():
        # Pixel coordinates have no CRS by design; the GeoJSON writer would say so each time.
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        writer.close()
    features = json.loads(path.read_text(encoding="utf-8")).get("features", [])
    collections: list[dict] = [{"type": "FeatureCollection", "features": []} for _ in masks]
    for feature in features:
        band = int(feature["properties"]["band"]) - 1
        collections[band]["features"].append(feature)
    return collections


def encode_results(
    image: LoadedImage, timed: list[tuple[Prediction, float]], folder: Path
) -> list[dict]:
    """The JSON answer of each expression (see ``docs/serve.md`` for the fields)."""
    masks = np.stack([prediction.mask for prediction, _ in timed])
    polygons = polygons_by_expression(image, masks, folder)
    stem = Path(image.name).stem
    results = []
    for index, ((prediction, seconds), mask) in enumerate(zip(timed, masks)):
        for feature in polygons[index]["features"]:
            feature["properties"]["expression"] = prediction.expression
        result = {
            "expression": prediction.expression,
            "foreground": round(float(mask.mean()), 6),
            "seconds": round(seconds, 4),
            "decided_by": prediction.decided_by,
            "unknown_words": list(prediction.unknown_words),
            "file_stem": f"{stem}_{slug(prediction.expression)}",
            "mask_png": png_base64(mask.astype(np.uint8) * np.uint8(255)),
            "polygons": polygons[index],
        }
        if image.georef is not None:
            tif = folder / f"mask_{index}.tif"
            write_geotiff(tif, mask.astype(np.uint8) * np.uint8(255), *image.georef)
            result["mask_geotiff"] = base64.b64encode(tif.read_bytes()).decode("ascii")
        if image.grid is not None:
            band = image.grid.warp(mask.astype(np.uint8) * np.uint8(255), *image.georef, True)
            result["map_mask_png"] = png_base64(band)
        results.append(result)
    return results
