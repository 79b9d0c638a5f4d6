"""Referring segmentation of large GeoTIFF scenes, window by window.

How it works:

* Tiles of ``tile x tile`` px start every ``tile - overlap`` px; the last row/column of tiles is
  moved back so that it ends at the scene border, so every tile has the same size (scenes smaller
  than a tile use one tile of the scene's size).
* Each tile's foreground probabilities are multiplied by a weight that ramps linearly from
  near 0 at the tile border to 1 at ``overlap / 2`` px inside, then summed with the weights; the
  output is ``sum(w * p) / sum(w)``. Seams are therefore blended and a model with constant output
  gives a constant scene.
* Only one band of tile rows is in memory: the scene is read per tile row (windowed reads), and
  once a tile row is done the rows no later tile touches are written to a tiled GeoTIFF. Memory
  grows with the scene width, not its height.
* Output: one band per expression, ``uint8`` 0/255 masks (or ``float32`` probabilities with
  ``probabilities=True``), same CRS and geotransform as the input. Written atomically
  (temporary file in the same directory + rename); an existing output is refused unless
  ``overwrite``.
* Band/dtype rules follow :mod:`rrsis.data.io`: 1 band is replicated, 4 bands keep the first three,
  non-``uint8`` scenes get a per-band 2-98 percentile stretch whose percentiles are estimated
  once for the whole scene from a decimated read (so that tiles share one stretch, no seams).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rrsis.errors import ImageReadError, OutputExistsError, RRSISError
from rrsis.infer.predictor import MIN_SIDE, Segmenter

#: Longest side of the decimated read used to estimate the stretch of non-uint8 scenes.
_STATS_SIDE = 1024


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)``; the last one ends at ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def ramp_weights(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights ``(size,)``: linear from the border to 1 at ``overlap // 2`` px."""
    half = max(overlap // 2, 1)
    idx = np.arange(size, dtype=np.float32)
    dist = np.minimum(idx + 0.5, size - idx - 0.5)
    return np.clip(dist / half, 1e-3, 1.0).astype(np.float32)


class _Stretch:
    """Maps a scene's raw window ``(C, h, w)`` to ``uint8 (h, w, 3)`` with the rrsis.data.io rules."""

    def __init__(self, dataset, path: Path) -> None:
        count = dataset.count
        if count not in (1, 3, 4):
            raise ImageReadError(
                f"unsupported band count {count} (need 1, 3 or 4: grey, RGB, RGBA/RGBN)", path
            )
        self.bands = [1, 1, 1] if count == 1 else [1, 2, 3]
        self.is_uint8 = dataset.dtypes[0] == "uint8"
        self.low = self.high = None
        if not self.is_uint8:
            scale = max(dataset.height, dataset.width) / _STATS_SIDE
            shape = (
                3,
                max(1, int(dataset.height / max(scale, 1))),
                max(1, int(dataset.width / max(scale, 1))),
            )
            sample = dataset.read(self.bands, out_shape=shape).astype(np.float64)
            self.low = np.percentile(sample.reshape(3, -1), 2, axis=1)
            self.high = np.percentile(sample.reshape(3, -1), 98, axis=1)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        data = np.moveaxis(raw, 0, -1)
        if self.is_uint8:
            return np.ascontiguousarray(data)
        data = data.astype(np.float32)
        span = np.where(self.high > self.low, self.high - self.low, 1.0).astype(np.float32)
        scaled = (data - self.low.astype(np.float32)) / span * 255.0
        scaled[..., self.high <= self.low] = 0.0  # constant bands map to black, as in io
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _tmp_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{os.getpid()}.tmp")


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite`` (raises :class:`OutputExistsError`)."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists (use --overwrite to replace it)")


def predict_scene(
    src: str | Path,
    expressions: str | Sequence[str],
    dst: str | Path,
    segmenter: Segmenter,
    tile: int = 512,
    overlap: int = 64,
    batch: int = 4,
    vector: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    probabilities: bool = False,
    simplify: float | None = None,
) -> Path:
    """Segment a GeoTIFF scene for one or several expressions.

    Args:
        src: input raster readable by rasterio (GeoTIFF; 1/3/4 bands, any integer dtype).
        expressions: one expression or a list; the output gets one band per expression.
        dst: output GeoTIFF path.
        segmenter: the :class:`Segmenter` to run on each ``(tile, tile)`` window.
        tile: window side in px.
        overlap: px shared by neighbouring windows (blended).
        batch: windows per forward (times the number of expressions).
        vector: optional GeoJSON path for the mask polygons (scene CRS; see
            :mod:`rrsis.infer.vector`).
        overwrite: replace existing outputs.
        progress: show a tqdm progress bar over windows.
        probabilities: write ``float32`` probabilities instead of ``uint8`` 0/255 masks (the
            vector output still uses the segmenter's threshold).
        simplify: polygon simplification tolerance in CRS units (``None``: exact pixel edges).

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.
    """
    import rasterio
    from rasterio.windows import Window
    from tqdm import tqdm

    from rrsis.infer.vector import BandVectorizer

    src, dst = Path(src), Path(dst)
    vector = None if vector is None else Path(vector)
    names = [expressions] if isinstance(expressions, str) else list(expressions)
    if tile < MIN_SIDE or not 0 <= overlap < tile:
        raise RRSISError(f"need tile >= {MIN_SIDE} and 0 <= overlap < tile, got {tile}/{overlap}")
    if not src.is_file():
        raise ImageReadError("scene file not found", src)
    for out in (dst, vector):
        if out is not None and out.resolve() == src.resolve():
            raise OutputExistsError(f"{out}: output would overwrite the input scene")
        if out is not None:
            check_output(out, overwrite)
    word_ids, word_mask = segmenter.tokenize(names)

    try:
        dataset = rasterio.open(src)
    except rasterio.errors.RasterioIOError as err:
        raise ImageReadError(f"cannot open scene ({err})", src) from err
    with dataset:
        height, width = dataset.height, dataset.width
        if min(height, width) < MIN_SIDE:
            raise ImageReadError(f"scene is {width}x{height} px; need >= {MIN_SIDE} px", src)
        if dataset.crs is None:
            warnings.warn(
                f"{src} has no CRS; the output keeps its pixel grid without one",
                UserWarning,
                stacklevel=2,
            )
        to_rgb = _Stretch(dataset, src)
        tile_h, tile_w = min(tile, height), min(tile, width)
        stride = tile - overlap
        ys, xs = tile_starts(height, tile_h, stride), tile_starts(width, tile_w, stride)
        wy, wx = ramp_weights(tile_h, overlap), ramp_weights(tile_w, overlap)
        tile_weight = wy[:, None] * wx[None, :]
        n_expr = len(names)

        profile = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": n_expr,
            "dtype": "float32" if probabilities else "uint8",
            "crs": dataset.crs,
            "transform": dataset.transform,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_path(dst)
        vectorizer = None
        bar = tqdm(total=len(ys) * len(xs), unit="tile", disable=not progress, desc=src.name)
        try:
            with rasterio.open(tmp, "w", **profile) as out:
                for index, name in enumerate(names, start=1):
                    out.set_band_description(index, name[:200])
                if vector is not None:
                    vectorizer = BandVectorizer(
                        vector, dataset.crs, dataset.transform, height, names, simplify, overwrite
                    )
                # Accumulators for rows [buf_top, buf_top + tile_h): the only rows still open.
                acc = np.zeros((n_expr, tile_h, width), dtype=np.float32)
                wsum = np.zeros((tile_h, width), dtype=np.float32)
                buf_top = 0
                for row, y0 in enumerate(ys):
                    shift = y0 - buf_top
                    if shift:
                        acc = np.concatenate(
                            [acc[:, shift:], np.zeros((n_expr, shift, width), np.float32)], axis=1
                        )
                        wsum = np.concatenate([wsum[shift:], np.zeros((shift, width), np.float32)])
                        buf_top = y0
                    raw = dataset.read(to_rgb.bands, window=Window(0, y0, width, tile_h))
                    strip = to_rgb(raw)  # (tile_h, width, 3)
                    for start in range(0, len(xs), batch):
                        chunk = xs[start : start + batch]
                        tiles = np.stack([strip[:, x0 : x0 + tile_w] for x0 in chunk])
                        probs = segmenter.predict_tiles(tiles, word_ids, word_mask)
                        for k, x0 in enumerate(chunk):
                            acc[:, :, x0 : x0 + tile_w] += probs[:, k] * tile_weight
                            wsum[:, x0 : x0 + tile_w] += tile_weight
                        bar.update(len(chunk))
                    # Rows before the next tile row's start are final.
                    done = (ys[row + 1] - y0) if row + 1 < len(ys) else tile_h
                    result = acc[:, :done] / wsum[None, :done]
                    if probabilities:
                        out.write(result, window=Window(0, y0, width, done))
                    else:
                        masks = result > segmenter.threshold
                        out.write(masks.astype(np.uint8) * 255, window=Window(0, y0, width, done))
                    if vectorizer is not None:
                        vectorizer.add_rows(result > segmenter.threshold, y0)
            if vectorizer is not None:
                vectorizer.close()
            os.replace(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            if vectorizer is not None:
                vectorizer.abort()
            raise
        finally:
            bar.close()
    return dst
