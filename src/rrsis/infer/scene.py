"""Referring segmentation of large GeoTIFF scenes, window by window.

How it works:

* Tiles of ``tile x tile`` px start every ``tile - overlap`` px; the last row/column of tiles is
  moved back so that it ends at the scene border, so every tile has the same size (scenes smaller
  than a tile use one tile of the scene's size).
* Each tile's foreground probabilities are multiplied by a weight that ramps linearly from
  near 0 at the tile border to 1 at ``overlap / 2`` px inside, then summed with the weights; the
  output is ``sum(w * p) / sum(w)``. Seams are therefore blended and a model with constant output
  gives a constant scene.
* Memory stays flat as the scene grows: only the probabilities of one tile row are accumulated
  (``(E, tile, W)`` float32, the weight sum factorises into a row and a column profile), the
  input is read window by window (one batch of tiles at a time), the output is written in whole
  256-row block rows of a tiled GeoTIFF, and GDAL's block cache is capped to match.
* Output: one band per expression, ``uint8`` 0/255 masks (or ``float32`` probabilities with
  ``probabilities=True``), same CRS and geotransform as the input. Written atomically
  (temporary file in the same directory + rename); an existing output is refused unless
  ``overwrite``.
* Positions ("buildings in the upper left") mean the **scene's** upper left, not each window's
  (``positions="scene"``, the default): the position phrase is taken off the expression the model
  sees, and the probabilities outside that part of the scene are set to 0, row band by row band.
  The regions are those of the dataset builder (:data:`rrsis.data.relations.POSITIONS`: quadrants,
  thirds, the centre ninth), applied to pixels rather than to object centroids, so an object
  crossing the border is cut there. ``positions="window"`` feeds the expression as written:
  each window then answers for its own upper left, as the model was trained on 512 px crops.
* Relations and attributes ("buildings along the road", "large building") are read by the
  composition rules of :mod:`rrsis.infer.compose`, as ``rrsis predict`` reads them, inside each
  window: on the window's predicted objects, at the 512 px crop size the rules' distances and
  size thirds were made for. The rules are the segmenter's (``Segmenter(compose=...)``) unless
  ``compose`` says otherwise; with ``positions="window"`` the position rule runs per window too.
  A relation costs one more network pass per window (its other class), and the windows where a
  rule cannot decide (no such object there) one more for the whole expression, batched.
* Nodata (a nodata value, an alpha band or a mask band, as GDAL's dataset mask reports it):
  windows without a valid pixel are not segmented, the network's probabilities are set to 0 on
  invalid pixels before the composition rules look for objects, and the output gets the input's
  validity as its mask band (GIS tools show those pixels as transparent; the bands hold 0 there).
  In floating-point scenes NaN and inf pixels are nodata too, tagged or not (a reprojected
  collar often is not). The percentile stretch of non-``uint8`` scenes is estimated on valid
  pixels only.
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
from rrsis.infer.compose import parse_expression, parse_rules, region_bounds, scene_position
from rrsis.infer.images import MIN_SIDE
from rrsis.infer.predictor import Segmenter
from rrsis.infer.tiling import ramp_weights, tile_starts

#: Longest side of the decimated read used to estimate the stretch of non-uint8 scenes.
_STATS_SIDE = 1024
#: Block side of the tiled output GeoTIFF.
_BLOCK = 256


class _Stretch:
    """Maps a scene's raw window ``(C, h, w)`` to ``uint8 (h, w, 3)`` with the rrsis.data.io rules."""

    def __init__(
        self, dataset, path: Path, masked: bool = False, bands: Sequence[int] | None = None
    ) -> None:
        count = dataset.count
        if bands is not None:
            from rrsis.data.io import check_bands

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
            scale = max(dataset.height, dataset.width) / _STATS_SIDE
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


def _open_output(path: Path, profile: dict):
    """``rasterio.open(path, "w", **profile)``, quiet about a plain image's missing grid."""
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return rasterio.open(path, "w", **profile)


def _add_overviews(path: Path, height: int, width: int, probabilities: bool) -> None:
    """Internal overviews of a written GeoTIFF: factors 2, 4, ... until the shorter side <= 256."""
    import rasterio
    from rasterio.enums import Resampling

    factors = []
    while min(height, width) // 2 ** (len(factors) + 1) >= _BLOCK:
        factors.append(2 ** (len(factors) + 1))
    factors = factors or [2]
    with rasterio.open(path, "r+") as out:
        out.build_overviews(factors, Resampling.average if probabilities else Resampling.nearest)


def _to_cog(tmp: Path, probabilities: bool) -> Path:
    """Rewrite a written GeoTIFF as a Cloud Optimized GeoTIFF (GDAL's COG driver), beside it."""
    from rasterio.shutil import copy

    cog = tmp.with_name(tmp.name + ".cog")
    try:
        copy(
            tmp,
            cog,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=_BLOCK,
            OVERVIEWS="IGNORE_EXISTING",
            RESAMPLING="AVERAGE" if probabilities else "NEAREST",
            BIGTIFF="IF_SAFER",
        )
    except BaseException:
        cog.unlink(missing_ok=True)
        raise
    tmp.unlink()
    return cog


def has_nodata(dataset) -> bool:
    """Whether a rasterio dataset marks some pixels invalid (nodata value, alpha or mask band)."""
    from rasterio.enums import MaskFlags

    return any(MaskFlags.all_valid not in flags for flags in dataset.mask_flag_enums)


class _Validity:
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


def _tmp_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{os.getpid()}.tmp")


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite`` (raises :class:`OutputExistsError`)."""
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: output exists (use --overwrite to replace it)")


def _blended_rows(dataset, to_rgb, window_probs, n_expr, tile, overlap, batch, bar, validity):
    """Yield ``(row, probs (E, rows, W))``: final blended probabilities, band by band, top down.

    ``window_probs(tiles uint8 (B, h, w, 3), valid bool (B, h, w) | None) -> float32
    (E, B, h, w)`` segments a batch of windows. With an active ``validity`` (:class:`_Validity`:
    the scene has nodata, or is float), windows without a valid pixel are not segmented
    (probability 0), and the others get their validity.
    """
    masked = validity.active
    from rasterio.windows import Window

    height, width = dataset.height, dataset.width
    tile_h, tile_w = min(tile, height), min(tile, width)
    stride = tile - overlap
    ys, xs = tile_starts(height, tile_h, stride), tile_starts(width, tile_w, stride)
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
    # Accumulator for rows [top, top + tile_h), the only rows still open.
    acc = np.zeros((n_expr, tile_h, width), np.float32)
    top = 0
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
                    raw = dataset.read(to_rgb.bands, window=window)
                strip_valid = validity.of_raw(window, raw)
                valid = np.stack([strip_valid[:, x0 - left : x0 - left + tile_w] for x0 in chunk])
                keep = valid.reshape(len(chunk), -1).any(axis=1)
                if not keep.any():
                    bar.update(len(chunk))  # nodata only: nothing to segment, probability 0
                    continue
                chunk, valid = [x0 for x0, k in zip(chunk, keep) if k], valid[keep]
            if raw is None:
                raw = dataset.read(to_rgb.bands, window=window)
            strip = to_rgb(raw)
            tiles = np.stack([strip[:, x0 - left : x0 - left + tile_w] for x0 in chunk])
            probs = window_probs(tiles, valid)
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


def _keep_regions(probs: np.ndarray, y0: int, bounds) -> None:
    """Zero, in place, each band's probabilities outside its region (rows ``y0 ...``)."""
    rows = probs.shape[1]
    for band, box in enumerate(bounds):
        if box is None:
            continue
        r0, r1, c0, c1 = box
        inside_top, inside_bottom = max(r0 - y0, 0), min(max(r1 - y0, 0), rows)
        probs[band, :inside_top] = 0.0
        probs[band, inside_bottom:] = 0.0
        probs[band, :, :c0] = 0.0
        probs[band, :, c1:] = 0.0


class _BlockRowWriter:
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
        cut = end if end >= self.height else end // _BLOCK * _BLOCK
        if cut <= self.top:
            self.pending[-1] = rows.copy()  # callers may reuse their buffer
            return
        data = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending, axis=1)
        n = cut - self.top
        self.write(data[:, :n], Window(0, self.top, data.shape[2], n))
        self.pending = [data[:, n:].copy()] if cut < end else []
        self.top = cut


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
    positions: str = "scene",
    compose: str | Sequence[str] | bool | None = None,
    bands: Sequence[int] | None = None,
    overviews: bool = False,
    cog: bool = False,
    min_area: float | None = None,
    vector_crs=None,
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
        min_area: drop polygons smaller than this from ``vector``, in CRS units squared (m² for
            a projected CRS); the raster output is not filtered.
        vector_crs: write the polygons in this CRS (e.g. ``"EPSG:4326"``) instead of the
            scene's; areas stay in the scene CRS's units.
        positions: ``"scene"``: a position phrase ("in the upper left") selects that part of
            the scene (see the module docstring); ``"window"``: each window reads it for itself.
        compose: composition rules applied in each window (``"all"``, ``"none"`` or a comma
            list, as for :class:`Segmenter`); ``None`` uses ``segmenter.compose``. With
            ``positions="scene"`` the position rule is left to the scene.
        bands: 1-based band numbers to read as red, green, blue (e.g. ``(4, 3, 2)`` for a
            Sentinel-2 stack), or one band for grey; ``None``: bands 1-3 (1 band: grey).
        overviews: add internal overviews (2x, 4x, ... down to 256 px; nearest for masks,
            average for probabilities) so that GIS viewers draw the whole scene quickly.
        cog: write a Cloud Optimized GeoTIFF (GDAL's COG driver: tiled, with overviews made
            the same way, laid out for HTTP range reads), e.g. for a web map or object storage.
            The scene is written first and then copied, so it needs twice the output's disk.

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
    if not names:
        raise RRSISError("give at least one expression")
    if positions not in ("scene", "window"):
        raise RRSISError(f"positions must be 'scene' or 'window', got {positions!r}")
    if positions == "scene":
        from rrsis.data.builder import infer_kind

        fed, regions = zip(*(scene_position(name) for name in names))
        for name, region in zip(names, regions):
            if region is None and infer_kind(name) == "position":
                warnings.warn(
                    f"{name!r}: no scene region recognised in its position words (known: in the "
                    "upper left/right, lower left/right, centre; at the top/bottom; on the "
                    "left/right); each window reads them for itself",
                    UserWarning,
                    stacklevel=2,
                )
    else:
        fed, regions = tuple(names), (None,) * len(names)
    if tile < MIN_SIDE or not 0 <= overlap < tile:
        raise RRSISError(f"need tile >= {MIN_SIDE} and 0 <= overlap < tile, got {tile}/{overlap}")
    if not src.is_file():
        raise ImageReadError("scene file not found", src)
    for out in (dst, vector):
        if out is not None and out.resolve() == src.resolve():
            raise OutputExistsError(f"{out}: output would overwrite the input scene")
        if out is not None:
            check_output(out, overwrite)
    try:
        rules = set(segmenter.compose if compose is None else parse_rules(compose))
    except ValueError as error:
        raise RRSISError(str(error)) from None
    if positions == "scene":
        rules.discard("position")  # the scene's regions, not each window's
    fed = segmenter.check_expressions(list(fed))
    word_ids, word_mask = segmenter.tokenize(fed, checked=True)  # warns once about truncated expressions
    if any(parse_expression(text, rules) for text in fed):

        def window_probs(tiles: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # already said once, above
                return segmenter.compose_tiles(tiles, fed, rules, checked=True, valid=valid)

    else:

        def window_probs(tiles: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
            probs = segmenter.predict_tiles(tiles, word_ids, word_mask)
            if valid is not None:
                probs *= valid[None]
            return probs

    try:
        with warnings.catch_warnings():
            # A plain image has no geotransform: the "no CRS" warning below says it once.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            dataset = rasterio.open(src)
            transform = dataset.transform
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
        masked = has_nodata(dataset)
        to_rgb = _Stretch(dataset, src, masked, bands)
        validity = _Validity(dataset, to_rgb.bands, masked)
        n_expr = len(names)
        out_dtype = np.dtype(np.float32 if probabilities else np.uint8)
        profile = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": n_expr,
            "dtype": out_dtype.name,
            "crs": dataset.crs,
            "tiled": True,
            "blockxsize": _BLOCK,
            "blockysize": _BLOCK,
            "compress": "deflate",
            "BIGTIFF": "IF_SAFER",
        }
        if dataset.crs is not None or not transform.is_identity:
            profile["transform"] = transform  # else a plain image: no grid to keep
        # GDAL's block cache defaults to 5 % of RAM and would keep most of a scene's blocks, so
        # memory would grow with the scene: cap it at two output block rows plus the input
        # blocks one batch of tiles touches.
        in_bytes = 3 * np.dtype(dataset.dtypes[0]).itemsize
        cache = 2 * _BLOCK * width * n_expr * out_dtype.itemsize
        cache += 2 * (tile + 2 * _BLOCK) * (batch * tile + 2 * _BLOCK) * in_bytes
        n_tiles = len(tile_starts(height, min(tile, height), tile - overlap)) * len(
            tile_starts(width, min(tile, width), tile - overlap)
        )
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_path(dst)
        vectorizer = None
        bar = tqdm(total=n_tiles, unit="tile", disable=not progress, desc=src.name)
        try:
            with rasterio.Env(GDAL_CACHEMAX=max(8 << 20, cache), GDAL_TIFF_INTERNAL_MASK=True):
                with _open_output(tmp, profile) as out:
                    for index, name in enumerate(names, start=1):
                        out.set_band_description(index, name[:200])
                    if vector is not None:
                        vectorizer = BandVectorizer(
                            vector,
                            dataset.crs,
                            transform,
                            height,
                            names,
                            simplify,
                            overwrite,
                            min_area=min_area,
                            dst_crs=vector_crs,
                        )
                    writer = _BlockRowWriter(
                        lambda data, window: out.write(data, window=window), height
                    )
                    # The input's nodata becomes the output's mask band (GIS tools show it as
                    # transparent); the bands themselves hold 0 there.
                    mask_writer = _BlockRowWriter(
                        lambda data, window: out.write_mask(data[0], window=window), height
                    )
                    bands = _blended_rows(
                        dataset, to_rgb, window_probs, n_expr, tile, overlap, batch, bar, validity
                    )
                    bounds = [
                        None if region is None else region_bounds(region, height, width)
                        for region in regions
                    ]
                    for y0, probs in bands:
                        _keep_regions(probs, y0, bounds)
                        if validity.active:
                            valid = validity.of_window(Window(0, y0, width, probs.shape[1]))
                            probs *= valid > 0
                            mask_writer.add(valid[None])
                        masks = probs > segmenter.threshold
                        writer.add(probs if probabilities else masks.view(np.uint8) * np.uint8(255))
                        if vectorizer is not None:
                            vectorizer.add_rows(masks, y0)
                if cog:  # the COG driver makes its own overviews
                    tmp = _to_cog(tmp, probabilities)
                elif overviews:
                    _add_overviews(tmp, height, width, probabilities)
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
