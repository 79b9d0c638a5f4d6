"""Referring segmentation of large GeoTIFF scenes, window by window.

How it works:

* Tiles of ``tile x tile`` px, ``overlap`` px shared and blended (:mod:`rrsis.infer.tiling`:
  the same grid and weights as a :class:`~rrsis.infer.predictor.Segmenter` reading a large
  image in memory), each read by the Segmenter (:meth:`~rrsis.infer.predictor.Segmenter.predict_tiles`,
  or :meth:`~rrsis.infer.predictor.Segmenter.compose_tiles` where a rule applies).
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
  The regions are those of the dataset builder (:data:`rrsis.data.geometry.POSITIONS`: quadrants,
  thirds, the centre ninth), applied to pixels rather than to object centroids, so an object
  crossing the border is cut there. ``positions="window"`` feeds the expression as written:
  each window then answers for its own upper left, as the model was trained on 512 px crops.
* Relations and attributes ("buildings along the road", "large building") are read by the
  composition rules of :mod:`rrsis.infer.compose`, as ``rrsis predict`` reads them, inside each
  window: on the window's predicted objects, at the 512 px crop size the rules' distances and
  size thirds were made for. The rules are the segmenter's (``Segmenter(compose=...)``) unless
  ``compose`` says otherwise (:func:`scene_rules` lists, per expression, the rules that may
  decide its band); with ``positions="window"`` the position rule runs per window too.
  A relation costs one more network pass per window (its other class), and the windows where a
  rule cannot decide (no such object there) one more for the whole expression, batched.
* Nodata (a nodata value, an alpha band or a mask band, as GDAL's dataset mask reports it):
  the windows are laid over the bounding box of the valid pixels as over that part cut out on
  its own, so a nodata margin changes no window; windows without a valid pixel are not
  segmented; inside the others, invalid pixels take the colour of the nearest valid pixel
  before the network reads them (the nodata fill, read as imagery, looked like water beside
  it); the network's probabilities are set to 0 on invalid pixels before the composition rules
  look for objects, and the output gets the input's validity as its mask band (GIS tools show
  those pixels as transparent; the bands hold 0 there).
  In floating-point scenes NaN and inf pixels are nodata too, tagged or not.
* Band/dtype rules follow :mod:`rrsis.data.io` (:class:`rrsis.infer.raster.Stretch`): the
  percentile stretch of non-``uint8`` scenes is estimated once, on valid pixels (no seams).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rrsis.data.files import outputs_of_run, publish, temp_path
from rrsis.data.vocabulary import infer_kind
from rrsis.errors import ImageReadError, OutputExistsError, RRSISError
from rrsis.infer.compose import parse_expression, parse_rules, region_bounds, scene_position
from rrsis.infer.images import MIN_SIDE
from rrsis.infer.layers import MIN_AREA
from rrsis.infer.network import unknown_by_expression
from rrsis.infer.outputs import check_output
from rrsis.infer.predictor import Segmenter
from rrsis.infer.raster import (
    BlockRowWriter,
    Stretch,
    Validity,
    add_overviews,
    blended_rows,
    cache_bytes,
    has_nodata,
    open_output,
    output_profile,
    to_cog,
)
from rrsis.infer.tiling import grid_over
from rrsis.infer.vector import BandVectorizer

POSITION_MODES = ("scene", "window")
#: ``(tiles uint8 (B, h, w, 3), valid bool (B, h, w) | None) -> float32 (E, B, h, w)``.
WindowReader = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


@dataclass
class SceneConfig:
    """How :func:`predict_scene` reads a scene and what it writes.

    Args:
        tile: window side in px.
        overlap: px shared by neighbouring windows (blended).
        batch: windows per forward (times the number of expressions).
        vector: optional GeoJSON path for the mask polygons (scene CRS; see
            :mod:`rrsis.infer.vector`).
        probabilities: write ``float32`` probabilities instead of ``uint8`` 0/255 masks (the
            vector output still uses the segmenter's threshold).
        simplify: polygon simplification tolerance in CRS units (``None``: exact pixel edges).
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
        min_area: drop polygons smaller than this from ``vector``: m² (``area_m2``, measured
            geodesically) on georeferenced scenes, pixels otherwise; default
            :data:`~rrsis.infer.layers.MIN_AREA` (speckle), ``0`` keeps every polygon. The raster
            output is not filtered.
        vector_crs: write the polygons in this CRS (e.g. ``"EPSG:4326"``) instead of the
            scene's; areas stay in the scene CRS's units.
        overwrite: replace existing outputs.
        progress: show a tqdm progress bar over windows.

    Raises:
        RRSISError: a value out of range (one line naming it).
    """

    tile: int = 512
    overlap: int = 64
    batch: int = 4
    vector: str | Path | None = None
    probabilities: bool = False
    simplify: float | None = None
    positions: str = "scene"
    compose: str | Sequence[str] | bool | None = None
    bands: Sequence[int] | None = None
    overviews: bool = False
    cog: bool = False
    min_area: float | None = MIN_AREA
    vector_crs: Any = None
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.positions not in POSITION_MODES:
            raise RRSISError(f"positions must be 'scene' or 'window', got {self.positions!r}")
        if self.tile < MIN_SIDE or not 0 <= self.overlap < self.tile:
            raise RRSISError(
                f"need tile >= {MIN_SIDE} and 0 <= overlap < tile, got {self.tile}/{self.overlap}"
            )
        if self.batch < 1:
            raise RRSISError(f"batch must be at least 1, got {self.batch}")
        for name in ("simplify", "min_area"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise RRSISError(f"{name} must be >= 0, got {value}")
        if self.compose is not None:
            try:
                parse_rules(self.compose)
            except ValueError as error:
                raise RRSISError(str(error)) from None
        if self.vector is not None:
            self.vector = Path(self.vector)


def _window_rules(segmenter: Segmenter, config: SceneConfig) -> set[str]:
    """The composition rules each window applies."""
    rules = set(segmenter.compose if config.compose is None else parse_rules(config.compose))
    if config.positions == "scene":
        rules.discard("position")  # the scene's regions, not each window's
    return rules


def _split_positions(
    names: list[str], positions: str, warn: bool = True
) -> tuple[list[str], list[str | None]]:
    """What each window reads (``fed``) and the scene region of each expression."""
    if positions == "window":
        return list(names), [None] * len(names)
    fed, regions = zip(*(scene_position(name) for name in names))
    for name, region in zip(names, regions):
        if warn and region is None and infer_kind(name) == "position":
            warnings.warn(
                f"{name!r}: no scene region recognised in its position words (known: in the "
                "upper left/right, lower left/right, centre; at the top/bottom; on the "
                "left/right); each window reads them for itself",
                UserWarning,
                stacklevel=4,
            )
    return list(fed), list(regions)


def scene_rules(
    expressions: str | Sequence[str], segmenter: Segmenter, config: SceneConfig | None = None
) -> list[tuple[str | None, str | None]]:
    """The rules that may decide each expression's band in :func:`predict_scene`.

    Returns:
        Per expression ``(scene_rule, window_rule)``: ``"position"`` when a position phrase
        selects a part of the whole scene (``positions="scene"``), else ``None``; and the rule
        the windows apply where it decides (a window where it cannot is read by the network),
        else ``None``. ``(None, None)``: the network alone.
    """
    config = config or SceneConfig()
    names = [expressions] if isinstance(expressions, str) else list(expressions)
    fed, regions = _split_positions(names, config.positions, warn=False)
    rules = _window_rules(segmenter, config)
    out = []
    for text, region in zip(fed, regions):
        composition = parse_expression(text, rules) if rules else None
        out.append(("position" if region else None, composition.rule if composition else None))
    return out


def _window_reader(segmenter: Segmenter, fed: list[str], rules: set[str]) -> WindowReader:
    """How a batch of windows is read: the network alone, or with the rules where they apply."""
    fed = segmenter.check_expressions(fed)
    unknown_by_expression(segmenter.network.model, fed)  # words it never saw: a guess
    word_ids, word_mask = segmenter.tokenize(fed, checked=True)  # warns once, here
    if any(parse_expression(text, rules) for text in fed):

        def read(tiles: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # already said once, above
                return segmenter.compose_tiles(tiles, fed, rules, checked=True, valid=valid)

        return read

    def read_network(tiles: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
        probs = segmenter.predict_tiles(tiles, word_ids, word_mask)
        if valid is not None:
            probs *= valid[None]
        return probs

    return read_network


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


def _check_paths(src: Path, dst: Path, vector: Path | None, overwrite: bool) -> None:
    if not src.is_file():
        raise ImageReadError("scene file not found", src)
    for out in (dst, vector):
        if out is not None and out.resolve() == src.resolve():
            raise OutputExistsError(f"{out}: output would overwrite the input scene")
        if out is not None:
            check_output(out, overwrite)


def _open_scene(src: Path, vector_crs: bool = False):
    """The scene as an open rasterio dataset (warns once when it has no CRS; ``vector_crs``:
    refuses a scene without one, before any work)."""
    import rasterio

    try:
        with warnings.catch_warnings():
            # A plain image has no geotransform: the "no CRS" warning below says it once.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            dataset = rasterio.open(src)
    except rasterio.errors.RasterioIOError as err:
        raise ImageReadError(f"cannot open scene ({err})", src) from err
    if min(dataset.height, dataset.width) < MIN_SIDE:
        dataset.close()
        raise ImageReadError(
            f"scene is {dataset.width}x{dataset.height} px; need >= {MIN_SIDE} px", src
        )
    if dataset.crs is None and vector_crs:
        dataset.close()
        raise ImageReadError("no CRS to reproject its polygons from (--vector-crs)", src)
    if dataset.crs is None:
        warnings.warn(
            f"{src} has no CRS; the output keeps its pixel grid without one",
            UserWarning,
            stacklevel=3,
        )
    return dataset


def _write_bands(out, dataset, rows, regions, validity, segmenter, config, vectorizer) -> None:
    """Write the blended ``rows`` (and the validity mask band) block row by block row."""
    from rasterio.windows import Window

    height, width = dataset.height, dataset.width
    writer = BlockRowWriter(lambda data, window: out.write(data, window=window), height)
    # The input's nodata becomes the output's mask band (GIS tools show it as transparent);
    # the bands themselves hold 0 there.
    mask_writer = BlockRowWriter(
        lambda data, window: out.write_mask(data[0], window=window), height
    )
    bounds = [None if r is None else region_bounds(r, height, width) for r in regions]
    for y0, probs in rows:
        _keep_regions(probs, y0, bounds)
        if validity.active:
            valid = validity.of_window(Window(0, y0, width, probs.shape[1]))
            probs *= valid > 0
            mask_writer.add(valid[None])
        masks = probs > segmenter.threshold
        writer.add(probs if config.probabilities else masks.view(np.uint8) * np.uint8(255))
        if vectorizer is not None:
            vectorizer.add_rows(masks, y0)


def predict_scene(
    src: str | Path,
    expressions: str | Sequence[str],
    dst: str | Path,
    segmenter: Segmenter,
    config: SceneConfig | None = None,
) -> Path:
    """Segment a GeoTIFF scene for one or several expressions.

    Args:
        src: input raster readable by rasterio (GeoTIFF; 1/3/4 bands, any integer dtype).
        expressions: one expression or a list; the output gets one band per expression.
        dst: output GeoTIFF path.
        segmenter: the :class:`Segmenter` that reads each ``(tile, tile)`` window.
        config: tiling, outputs and options (:class:`SceneConfig`); ``None``: the defaults.

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.
    """
    import rasterio
    from tqdm import tqdm

    config = config or SceneConfig()
    src, dst = Path(src), Path(dst)
    names = [expressions] if isinstance(expressions, str) else list(expressions)
    if not names:
        raise RRSISError("give at least one expression")
    fed, regions = _split_positions(names, config.positions)
    _check_paths(src, dst, config.vector, config.overwrite)
    read = _window_reader(segmenter, fed, _window_rules(segmenter, config))
    reprojected = config.vector is not None and config.vector_crs is not None
    with _open_scene(src, reprojected) as dataset:
        masked = has_nodata(dataset)
        stretch = Stretch(dataset, src, masked, config.bands)
        validity = Validity(dataset, stretch.bands, masked)
        height, width = dataset.height, dataset.width
        # The windows of the valid data's bounding box, as if it were cut out: a nodata margin
        # moves no window and is read by none.
        step, tiling = config.tile - config.overlap, (config.overlap, config.batch)
        windows = grid_over(validity.bounds(), (height, width), config.tile, step, MIN_SIDE)
        n_tiles = len(windows)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(dst)
        vectorizer = None
        bar = tqdm(total=n_tiles, unit="tile", disable=not config.progress, desc=src.name)
        env = {
            "GDAL_CACHEMAX": cache_bytes(
                dataset, len(names), config.tile, config.batch, config.probabilities
            )
        }
        try:
            with rasterio.Env(**env, GDAL_TIFF_INTERNAL_MASK=True):
                with open_output(
                    tmp, output_profile(dataset, len(names), config.probabilities)
                ) as out:
                    for index, name in enumerate(names, start=1):
                        out.set_band_description(index, name[:200])
                    if config.vector is not None:
                        vectorizer = BandVectorizer(
                            config.vector,
                            dataset.crs,
                            dataset.transform,
                            height,
                            names,
                            config.simplify,
                            config.overwrite,
                            min_area=config.min_area,
                            dst_crs=config.vector_crs,
                        )
                    rows = blended_rows(
                        dataset, stretch, validity, read, len(names), windows, tiling, bar
                    )
                    _write_bands(
                        out, dataset, rows, regions, validity, segmenter, config, vectorizer
                    )
                if config.cog:  # the COG driver makes its own overviews
                    tmp = to_cog(tmp, config.probabilities, dst)
                elif config.overviews:
                    add_overviews(tmp, height, width, config.probabilities)
            with outputs_of_run():  # both files or neither
                if vectorizer is not None:
                    vectorizer.close()
                publish(tmp, dst, config.overwrite)
        except BaseException:
            tmp.unlink(missing_ok=True)
            if vectorizer is not None:
                vectorizer.abort()
            raise
        finally:
            bar.close()
    return dst
