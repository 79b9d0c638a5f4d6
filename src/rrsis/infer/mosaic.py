"""One layer and one mosaic for a batch of tiles (``predict-batch --merged-vector``, ``--vrt``).

Both are built at the end of a run from the mask files on disk, so a resumed run
(``--skip-existing``) covers the tiles of the earlier run too.

- **Merged polygons**: every tile's polygons in one file (any format of
  :data:`~rrsis.infer.layers.VECTOR_FORMATS`), fields ``expression``, ``source`` (the input
  image) and ``area_m2`` (geodesic). One CRS: ``--vector-crs`` if given, else the tiles' CRS
  when they share one, else EPSG:4326 (lon/lat). Tiles without a CRS are left out (with a
  warning) unless no tile has one: the layer is then in pixel coordinates with ``area`` in px.
- **VRT mosaic**: a GDAL VRT with one band per expression over the GeoTIFF masks of the
  georeferenced tiles, on the first such tile's CRS and pixel size; tiles in another CRS, rotated
  grids and non-TIFF masks are left out (with a warning). Areas no tile covers read as 0.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from rrsis.data.files import atomic_write
from rrsis.errors import RRSISError
from rrsis.infer.layers import vector_driver, write_layer
from rrsis.infer.outputs import TIFF_SUFFIXES, georeference
from rrsis.infer.vector import BandVectorizer

VRT_TYPES = {"uint8": "Byte", "float32": "Float32"}


def check_mosaic_paths(merged_vector: Path | None, vrt: Path | None) -> None:
    """Refuse an unknown vector format or a VRT path without ``.vrt``, in one line."""
    if merged_vector is not None:
        vector_driver(merged_vector)
    if vrt is not None and Path(vrt).suffix.lower() != ".vrt":
        raise RRSISError(f"{vrt}: a VRT mosaic needs a .vrt path")


def _read_mask(path: Path, threshold: float) -> np.ndarray:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            band = ds.read(1)
    return band > 127 if band.dtype == np.uint8 else band >= threshold


def _target_crs(crs_list: list, vector_crs):
    from rasterio.crs import CRS

    if vector_crs is not None:
        return vector_crs
    unique = list(dict.fromkeys(c.to_wkt() for c in crs_list))
    return crs_list[0] if len(unique) == 1 else CRS.from_epsg(4326)


def write_merged_layer(
    path: Path,
    tiles: Sequence[tuple[Path, str, Path]],
    *,
    threshold: float = 0.5,
    min_area: float | None = None,
    vector_crs=None,
    overwrite: bool = False,
) -> int:
    """Write the polygons of every ``(image, expression, mask file)`` into one layer.

    Returns:
        The number of polygons written.
    """
    items = []
    for image, expression, mask_path in tiles:
        mask = _read_mask(mask_path, threshold)
        items.append((image, expression, mask, georeference(image, mask.shape)))
    crs_list = [g[0] for *_, g in items if g is not None and g[0] is not None]
    unreferenced = sorted({str(i) for i, _, _, g in items if g is None or g[0] is None})
    if crs_list and unreferenced:
        warnings.warn(
            f"{path}: left out {len(unreferenced)} image(s) without a CRS ({unreferenced[0]}, ...)",
            UserWarning,
            stacklevel=2,
        )
        items = [item for item in items if item[3] is not None and item[3][0] is not None]
    target = _target_crs(crs_list, vector_crs) if crs_list else None
    geometries: list = []
    fields: dict[str, list] = {"expression": [], "source": [], "area_m2" if target else "area": []}
    from affine import Affine  # comes with rasterio

    for image, expression, mask, georef in items:
        crs, transform = georef or (None, Affine.identity())
        same = crs is None or crs == target
        writer = BandVectorizer(
            path, crs, transform, mask.shape[0], [expression], overwrite=True,
            min_area=min_area, dst_crs=None if same else target,
        )  # fmt: skip
        writer.add_rows(mask[None], 0)
        writer.finish()
        geometries += writer.geometries
        fields["expression"] += writer.fields["expression"]
        fields["source"] += [str(image)] * writer.count
        area_field = "area_m2" if target else "area"
        fields[area_field] += writer.fields[area_field]
    write_layer(path, geometries, fields, target, overwrite)
    return len(geometries)


def _grid(path: Path):
    import rasterio

    with rasterio.open(path) as ds:
        return ds.crs, ds.transform, ds.width, ds.height, ds.dtypes[0]


def write_vrt(
    path: Path,
    expressions: Sequence[str],
    tiles: Sequence[Sequence[Path]],
    overwrite: bool = False,
) -> int:
    """Write a VRT mosaic: band ``k`` is every tile's mask of ``expressions[k]``.

    Args:
        path: the ``.vrt`` file; sources are referenced relative to it.
        expressions: one per band.
        tiles: per tile, its mask files (one per expression).
        overwrite: replace an existing file.

    Returns:
        The number of tiles in the mosaic (0: no VRT written).
    """
    grids = []
    for masks in tiles:
        if masks[0].suffix.lower() not in TIFF_SUFFIXES:
            continue
        crs, transform, width, height, dtype = _grid(masks[0])
        if crs is not None and transform.b == 0 and transform.d == 0:
            grids.append((masks, crs, transform, width, height, dtype))
    kept = [g for g in grids if g[1] == grids[0][1]] if grids else []
    if len(kept) < len(tiles):
        warnings.warn(
            f"{path}: {len(tiles) - len(kept)} of {len(tiles)} mask(s) left out (no GeoTIFF, no "
            "CRS, a rotated grid or another CRS than the first)",
            UserWarning,
            stacklevel=2,
        )
    if not kept:
        return 0
    res_x, res_y = kept[0][2].a, -kept[0][2].e
    left = min(t.c for _, _, t, _, _, _ in kept)
    top = max(t.f for _, _, t, _, _, _ in kept)
    right = max(t.c + t.a * w for _, _, t, w, _, _ in kept)
    bottom = min(t.f + t.e * h for _, _, t, _, h, _ in kept)
    width, height = round((right - left) / res_x), round((top - bottom) / res_y)
    dtype = VRT_TYPES.get(kept[0][5], "Float32")
    lines = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f"  <SRS>{escape(kept[0][1].to_wkt())}</SRS>",
        f"  <GeoTransform>{left!r}, {res_x!r}, 0, {top!r}, 0, {-res_y!r}</GeoTransform>",
    ]
    for band, expression in enumerate(expressions):
        lines += [f'  <VRTRasterBand dataType="{dtype}" band="{band + 1}">']
        lines += [f"    <Description>{escape(expression)}</Description>"]
        for masks, _, t, w, h, _ in kept:
            source = os.path.relpath(Path(masks[band]).resolve(), Path(path).resolve().parent)
            x, y = (t.c - left) / res_x, (top - t.f) / res_y
            size_x, size_y = w * t.a / res_x, h * -t.e / res_y
            lines += [
                "    <SimpleSource>",
                f'      <SourceFilename relativeToVRT="1">{escape(source)}</SourceFilename>',
                "      <SourceBand>1</SourceBand>",
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
                f'      <DstRect xOff="{x!r}" yOff="{y!r}" xSize="{size_x!r}" ySize="{size_y!r}"/>',
                "    </SimpleSource>",
            ]
        lines += ["  </VRTRasterBand>"]
    text = "\n".join([*lines, "</VRTDataset>", ""])
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=overwrite)
    return len(kept)


def write_mosaics(config, images, expressions, rows: list[dict], threshold: float) -> None:
    """The merged layer and the VRT of a batch's images segmented or kept (``config``:
    its :class:`~rrsis.infer.batch.BatchConfig`, ``images``: its planned images)."""
    done = [r for r in rows if r["status"] in ("ok", "skipped")]
    replace = config.overwrite or config.skip_existing
    if config.merged_vector is not None:
        tiles = [(Path(r["image"]), r["expression"], Path(r["mask"])) for r in done]
        write_merged_layer(
            config.merged_vector, tiles, threshold=threshold, min_area=config.min_area,
            vector_crs=config.vector_crs, overwrite=replace,
        )  # fmt: skip
    if config.vrt is not None:
        done_images = {r["image"] for r in done}
        tiles = [plan.masks for plan in images if str(plan.image) in done_images]
        write_vrt(config.vrt, expressions, tiles, overwrite=replace)
