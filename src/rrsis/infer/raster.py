"""Reading a GeoTIFF scene window by window and writing its tiled output (:mod:`rrsis.infer.scene`).

* :class:`Stretch`: a window's bands to ``uint8 (h, w, 3)`` with the :mod:`rrsis.data.io` rules
  (1 band replicated, 4 bands keep three, a per-band 2-98 percentile stretch of non-``uint8``
  scenes estimated once for the whole scene, on valid pixels only, so that windows share it).
* :class:`Validity`: which pixels are nodata (GDAL's dataset mask; NaN / inf in float scenes),
  and the bounding box of the valid ones (the windows are laid over it).
* :func:`blended_rows`: the scene's blended probabilities, one band of rows at a time.
* :func:`open_output`, :class:`BlockRowWriter`, :func:`add_overviews`, :func:`to_cog`: the
  tiled output, written in whole block rows, with overviews or as a Cloud Optimized GeoTIFF.

rasterio (GDAL) is imported inside the functions that use it: it loads only when a scene is read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from rrsis.data.bands import default_bands
from rrsis.data.files import temp_path
from rrsis.data.io import check_bands
from rrsis.errors import ImageReadError
from rrsis.infer.tiling import WindowGrid, fill_invalid, ramp_weights

#: Longest side of the decimated read used to estimate the stretch of non-uint8 scenes.
STATS_SIDE = 1024
#: Block side of the tiled output GeoTIFF.
BLOCK = 256


class Stretch:
    """Maps a scene's raw window ``(C, h, w)`` to ``uint8 (h, w, 3)`` with the rrsis.data.io rules."""

    def __init__(
        self, dataset, path: Path, masked: bool = False, bands: Sequence[int] | None = None
    ) -> None:
        count = dataset.count
        if bands is None:
            bands = default_bands(count, [ci.name for ci in dataset.colorinterp], path)
        if bands is not None:
            bands = check_bands(bands, count, path)
            self.bands = bands * 3 if len(bands) == 1 else bands
        elif count in (1, 3, 4):
            self.bands = [1, 1, 1] if count == 1 else [1, 2, 3]
        else:
            raise ImageReadError(
                f"unsupported band count {count} (need 1, 3 or 4: grey, RGB, RGBA/RGBN; for "
                "multispectral scenes choose the red, green and blue bands with --bands R,G,B)",
                path,
            )
        self.is_uint8 = all(dataset.dtypes[b - 1] == "uint8" for b in self.bands)
        self.low = self.high = None
        if not self.is_uint8:
            scale = max(dataset.height, dataset.width) / STATS_SIDE
            shape = (
                3,
                max(1, int(dataset.height / max(scale, 1))),
                max(1, int(dataset.width / max(scale, 1))),
            )
            sample = dataset.read(self.bands, out_shape=shape).astype(np.float64).reshape(3, -1)
            if masked:  # percentiles of the valid pixels only: nodata collars skew them
                valid = dataset.dataset_mask(out_shape=shape[1:]).reshape(-1) > 0
                sample = sample[:, valid] if valid.any() else sample
            sample[~np.isfinite(sample)] = np.nan  # NaN / inf (untagged nodata): not counted
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN band
                self.low = np.nan_to_num(np.nanpercentile(sample, 2, axis=1))
                self.high = np.nan_to_num(np.nanpercentile(sample, 98, axis=1))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        data = np.moveaxis(raw, 0, -1)
        if self.is_uint8:
            return np.ascontiguousarray(data)
        data = data.astype(np.float32)
        span = np.where(self.high > self.low, self.high - self.low, 1.0).astype(np.float32)
        scaled = (data - self.low.astype(np.float32)) / span * 255.0
        scaled[..., self.high <= self.low] = 0.0  # constant bands map to black, as in io
        # NaN / inf become 0 / 255, as in io.
        scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def open_output(path: Path, profile: dict):
    """``rasterio.open(path, "w", **profile)``, quiet about a plain image's missing grid."""
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return rasterio.open(path, "w", **profile)


def add_overviews(path: Path, height: int, width: int, probabilities: bool) -> None:
    """Internal overviews of a written GeoTIFF: factors 2, 4, ... until the shorter side <= 256."""
    import rasterio
    from rasterio.enums import Resampling

    factors = []
    while min(height, width) // 2 ** (len(factors) + 1) >= BLOCK:
        factors.append(2 ** (len(factors) + 1))
    factors = factors or [2]
    with rasterio.open(path, "r+") as out:
        out.build_overviews(factors, Resampling.average if probabilities else Resampling.nearest)


def to_cog(tmp: Path, probabilities: bool, target: Path) -> Path:
    """Rewrite a written GeoTIFF as a Cloud Optimized GeoTIFF (GDAL's COG driver), beside it.

    The copy is another temporary file of ``target`` (:func:`rrsis.data.files.temp_path`).
    """
    from rasterio.shutil import copy

    cog = temp_path(target)
    try:
        copy(
            tmp,
            cog,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=BLOCK,
            OVERVIEWS="IGNORE_EXISTING",
            RESAMPLING="AVERAGE" if probabilities else "NEAREST",
            BIGTIFF="IF_SAFER",
        )
    except BaseException:
        cog.unlink(missing_ok=True)
        raise
    tmp.unlink()
    return cog


def output_profile(dataset, n_expr: int, probabilities: bool) -> dict:
    """The tiled, compressed GeoTIFF profile of the output: one band per expression."""
    profile = {
        "driver": "GTiff",
        "height": dataset.height,
        "width": dataset.width,
        "count": n_expr,
        "dtype": "float32" if probabilities else "uint8",
        "crs": dataset.crs,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if dataset.crs is not None or not dataset.transform.is_identity:
        profile["transform"] = dataset.transform  # else a plain image: no grid to keep
    return profile


def cache_bytes(dataset, n_expr: int, tile: int, batch: int, probabilities: bool) -> int:
    """GDAL block cache: two output block rows of ``n_expr`` bands, plus the input blocks that
    one batch of ``tile`` px windows touches.

    GDAL's default (5 % of RAM) would keep most of a scene's blocks, so memory would grow with
    the scene.
    """
    out_bytes = 4 if probabilities else 1
    in_bytes = 3 * np.dtype(dataset.dtypes[0]).itemsize
    cache = 2 * BLOCK * dataset.width * n_expr * out_bytes
    cache += 2 * (tile + 2 * BLOCK) * (batch * tile + 2 * BLOCK) * in_bytes
    return max(8 << 20, cache)


def has_nodata(dataset) -> bool:
    """Whether a rasterio dataset marks some pixels invalid (nodata value, alpha or mask band)."""
    from rasterio.enums import MaskFlags

    return any(MaskFlags.all_valid not in flags for flags in dataset.mask_flag_enums)


class Validity:
    """Which pixels of a scene are valid: GDAL's dataset mask and, in float scenes, finiteness.

    ``masked``: the scene has a nodata value, alpha or mask band. ``finite``: the bands read are
    floating point, so NaN / inf pixels (nodata nobody tagged, e.g. a reprojected collar) are
    invalid too. ``active`` is False for plain uint8/uint16 scenes without nodata: nothing runs.
    """

    #: Columns read at a time for a row strip's finiteness (bounds the temporary arrays).
    chunk = 2048

    def __init__(self, dataset, bands: Sequence[int], masked: bool) -> None:
        self.dataset, self.bands, self.masked = dataset, list(bands), masked
        self.finite = any(np.dtype(dataset.dtypes[b - 1]).kind == "f" for b in self.bands)
        self.active = masked or self.finite

    def of_raw(self, window, raw: np.ndarray | None) -> np.ndarray:
        """``bool (h, w)`` validity of ``window``; ``raw`` (C, h, w): its bands, read when
        :attr:`finite` (else ``None``)."""
        if self.masked:
            valid = self.dataset.dataset_mask(window=window) > 0
        else:
            valid = np.ones(raw.shape[1:], bool)
        if self.finite:
            valid &= np.isfinite(raw).all(axis=0)
        return valid

    def of_window(self, window) -> np.ndarray:
        """``uint8 (h, w)`` 0/255 validity of ``window``, reading its bands in column chunks."""
        from rasterio.windows import Window

        height, width = int(window.height), int(window.width)
        out = np.full((height, width), 255, np.uint8)
        if self.masked:
            out = self.dataset.dataset_mask(window=window)
        if self.finite:
            for c0 in range(0, width, self.chunk):
                part = Window(
                    window.col_off + c0, window.row_off, min(self.chunk, width - c0), height
                )
                raw = self.dataset.read(self.bands, window=part)
                out[:, c0 : c0 + part.width][~np.isfinite(raw).all(axis=0)] = 0
        return out

    def bounds(self) -> tuple[int, int, int, int] | None:
        """``(r0, r1, c0, c1)``: the rows and columns holding valid pixels (``None``: none).

        One pass over the validity, a block row at a time (the whole scene when inactive).
        """
        from rasterio.windows import Window

        height, width = self.dataset.height, self.dataset.width
        if not self.active:
            return 0, height, 0, width
        rows, cols = np.zeros(height, bool), np.zeros(width, bool)
        for r0 in range(0, height, BLOCK):
            valid = self.of_window(Window(0, r0, width, min(BLOCK, height - r0))) > 0
            rows[r0 : r0 + valid.shape[0]] = valid.any(axis=1)
            cols |= valid.any(axis=0)
        if not rows.any():
            return None
        (r_in,), (c_in,) = np.nonzero(rows), np.nonzero(cols)
        return int(r_in[0]), int(r_in[-1]) + 1, int(c_in[0]), int(c_in[-1]) + 1


class BlockRowWriter:
    """Writes row bands so that every block row of the tiled output is written once, whole.

    Partially written blocks would stay dirty in GDAL's cache (or be compressed twice).
    """

    def __init__(self, write, height: int) -> None:
        self.write = write  # (data (E, n, W), window) -> None
        self.height = height
        self.top = 0
        self.pending: list[np.ndarray] = []

    def add(self, rows: np.ndarray) -> None:
        """Queue ``rows (E, h, W)`` (the next rows of the raster) and write whole block rows."""
        from rasterio.windows import Window

        self.pending.append(rows)
        end = self.top + sum(p.shape[1] for p in self.pending)
        cut = end if end >= self.height else end // BLOCK * BLOCK
        if cut <= self.top:
            self.pending[-1] = rows.copy()  # callers may reuse their buffer
            return
        data = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending, axis=1)
        n = cut - self.top
        self.write(data[:, :n], Window(0, self.top, data.shape[2], n))
        self.pending = [data[:, n:].copy()] if cut < end else []
        self.top = cut


def blended_rows(
    dataset,
    stretch: Stretch,
    validity: Validity,
    read: Callable[[np.ndarray, np.ndarray | None], np.ndarray],
    n_expr: int,
    windows: WindowGrid,
    tiling: tuple[int, int],
    bar,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row, probs (E, rows, W))``: final blended probabilities, band by band, top down.

    Args:
        dataset: the open rasterio scene.
        stretch, validity: its :class:`Stretch` and :class:`Validity`.
        read: ``(tiles uint8 (B, h, w, 3), valid bool (B, h, w) | None) -> float32
            (E, B, h, w)`` segments a batch of windows.
        n_expr: ``E``.
        windows: the windows to read (:func:`rrsis.infer.tiling.grid_over` the bounding box
            of the valid pixels); rows and columns outside them get probability 0.
        tiling: ``(overlap, batch)``: px shared by neighbouring windows, windows per ``read``.
        bar: a progress bar (``update(n)``).

    With an active ``validity`` (the scene has nodata, or is float), windows without a valid
    pixel are not segmented (probability 0), the others get their validity, and their invalid
    pixels take the colour of the nearest valid one before the network reads them
    (:func:`rrsis.infer.tiling.fill_invalid`): the nodata fill is not imagery.
    """
    from rasterio.windows import Window

    overlap, batch = tiling
    masked = validity.active
    height, width = dataset.height, dataset.width
    tile_h, tile_w, ys, xs = windows.height, windows.width, windows.ys, windows.xs
    wy, wx = ramp_weights(tile_h, overlap), ramp_weights(tile_w, overlap)
    tile_weight = wy[:, None] * wx[None, :]
    # The tile grid is a product of row and column offsets, so the weight sum factorises into a
    # row profile times a column profile: no weight buffer the size of the accumulator.
    row_sum = np.zeros(height, np.float32)
    col_sum = np.zeros(width, np.float32)
    for y0 in ys:
        row_sum[y0 : y0 + tile_h] += wy
    for x0 in xs:
        col_sum[x0 : x0 + tile_w] += wx
    col_sum[col_sum == 0] = 1.0  # columns no window covers: 0 / 1, not 0 / 0
    first, end = (ys[0], ys[-1] + tile_h) if ys else (height, height)
    yield from _zero_rows(n_expr, 0, first, width, tile_h)
    # Accumulator for rows [top, top + tile_h), the only rows still open.
    acc = np.zeros((n_expr, tile_h, width), np.float32)
    top = first
    for row, y0 in enumerate(ys):
        shift = y0 - top
        if shift:
            # Shift up row by row: no temporary copy of the whole buffer (peak memory).
            for r in range(tile_h - shift):
                acc[:, r] = acc[:, r + shift]
            acc[:, tile_h - shift :] = 0.0
            top = y0
        for start in range(0, len(xs), batch):
            chunk = xs[start : start + batch]
            left, right = chunk[0], chunk[-1] + tile_w
            # Read only the columns this batch covers: memory does not grow with the width.
            window = Window(left, y0, right - left, tile_h)
            valid = raw = None
            if masked:
                if validity.finite:  # finiteness needs the pixels themselves
                    raw = dataset.read(stretch.bands, window=window)
                strip_valid = validity.of_raw(window, raw)
                valid = np.stack([strip_valid[:, x0 - left : x0 - left + tile_w] for x0 in chunk])
                keep = valid.reshape(len(chunk), -1).any(axis=1)
                if not keep.any():
                    bar.update(len(chunk))  # nodata only: nothing to segment, probability 0
                    continue
                chunk, valid = [x0 for x0, k in zip(chunk, keep) if k], valid[keep]
            if raw is None:
                raw = dataset.read(stretch.bands, window=window)
            strip = stretch(raw)
            tiles = np.stack([strip[:, x0 - left : x0 - left + tile_w] for x0 in chunk])
            if valid is not None:
                fill_invalid(tiles, valid)
            probs = read(tiles, valid)
            for k, x0 in enumerate(chunk):
                acc[:, :, x0 : x0 + tile_w] += probs[:, k] * tile_weight
            bar.update(len(keep) if masked else len(chunk))
        # Rows above the next tile row's start get no more contributions.
        done = ys[row + 1] - y0 if row + 1 < len(ys) else tile_h
        # Normalise in place: these rows leave the accumulator at the next shift anyway.
        final = acc[:, :done]
        final /= row_sum[y0 : y0 + done, None]
        final /= col_sum[None, :]
        yield y0, final  # a view: valid until the next iteration
    yield from _zero_rows(n_expr, end, height, width, tile_h)


def _zero_rows(
    n_expr: int, start: int, stop: int, width: int, rows: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Probability 0 for rows ``[start, stop)`` (no window there), ``rows`` at a time."""
    for y0 in range(start, stop, rows):
        yield y0, np.zeros((n_expr, min(rows, stop - y0), width), np.float32)
