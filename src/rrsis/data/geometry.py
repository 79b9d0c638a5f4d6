"""Geometry of objects: components, sizes, shapes, colours, regions and relations.

The one definition that the dataset builder (:mod:`rrsis.data.builder`, on label maps) and the
composition rules (:mod:`rrsis.infer.compose`, on the network's predicted objects) both use, so
that "large", "in the upper left" or "along the road" mean the same thing when an expression is
written and when it is read. The words for these live in :mod:`rrsis.data.vocabulary`.

Everything works on one labelled component image at a time and is vectorised with
``scipy.ndimage`` reductions, so a 512x512 map with hundreds of objects costs milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

# 8-connectivity: diagonal neighbours belong to the same object, so a thin diagonal road or a
# rotated vehicle is one component, not a staircase of pieces. rrsis.data.stats counts objects
# with it too.
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)

#: Relations with a geometric test (:func:`relation_keep`).
RELATIONS = ("in", "on", "along", "near", "beside")

# Colour prototypes (RGB) for naming a component's mean colour.
COLOUR_PROTOTYPES: dict[str, tuple[int, int, int]] = {
    "white": (225, 225, 225),
    "black": (30, 30, 30),
    "gray": (128, 128, 128),
    "red": (180, 40, 40),
    "blue": (40, 70, 170),
    "green": (60, 130, 60),
    "yellow": (210, 190, 60),
}


@dataclass(frozen=True)
class Thresholds:
    """Where sizes, shapes and relations change meaning.

    Attributes:
        min_component_px: components under this size are noise: never an object on their own.
        size_ratio: "large"/"small" only when the top and bottom thirds differ at least this
            much in area.
        long_ratio: principal-axis ratio from which a component is "long".
        touch_px: "beside" distance in pixels; ``along_frac``/``near_frac``: the "along" and
            "near" distances as a fraction of the shorter image side.
        surround_frac: share of a component's outline on the other class for "in"/"on".
    """

    min_component_px: int = 12
    size_ratio: float = 2.0
    long_ratio: float = 3.0
    touch_px: float = 2.0
    along_frac: float = 0.03
    near_frac: float = 0.08
    surround_frac: float = 0.5

    @classmethod
    def of(cls, config: object) -> Thresholds:
        """The thresholds of any object with attributes of the same names (a build config)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass
class Components:
    """The connected components of one class mask.

    Attributes:
        labels: ``(H, W)`` int32, 0 = background, 1..n = components kept (``area >= min_area``).
        areas: ``(n,)`` pixel counts.
        centroids: ``(n, 2)`` (row, col) centroids.
    """

    labels: np.ndarray
    areas: np.ndarray
    centroids: np.ndarray

    @property
    def n(self) -> int:
        return len(self.areas)

    def select(self, keep: np.ndarray) -> np.ndarray:
        """``(H, W)`` bool mask of the components where ``keep`` (``(n,)`` bool) is true."""
        lut = np.concatenate([[False], np.asarray(keep, dtype=bool)])
        return lut[self.labels]


def components(mask: np.ndarray, min_area: int = 1) -> Components:
    """Label the 8-connected components of ``mask`` and drop those under ``min_area`` pixels."""
    labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if n == 0:
        return Components(labels.astype(np.int32), np.zeros(0, int), np.zeros((0, 2)))
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    keep = areas >= min_area
    # Relabel to 1..k so that per-component arrays stay dense.
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[1:][keep] = np.arange(1, int(keep.sum()) + 1)
    labels = lut[labels]
    k = int(keep.sum())
    rows, cols = np.nonzero(labels)
    lab = labels[rows, cols] - 1
    area = areas[keep].astype(float)
    centroids = np.stack(
        [np.bincount(lab, rows, k) / area, np.bincount(lab, cols, k) / area], axis=1
    ).reshape(-1, 2)
    return Components(labels, areas[keep], centroids)


def elongation(comps: Components) -> np.ndarray:
    """``(n,)`` ratio of the principal axis lengths (1 = round/square, large = long and thin)."""
    if comps.n == 0:
        return np.zeros(0)
    rows, cols = np.nonzero(comps.labels)
    lab = comps.labels[rows, cols] - 1
    dr = rows - comps.centroids[lab, 0]
    dc = cols - comps.centroids[lab, 1]
    area = comps.areas.astype(float)
    # Second central moments; +1/12 is the variance of a unit pixel so one-pixel-wide objects
    # do not get an infinite ratio.
    crr = np.bincount(lab, dr * dr, comps.n) / area + 1 / 12
    ccc = np.bincount(lab, dc * dc, comps.n) / area + 1 / 12
    crc = np.bincount(lab, dr * dc, comps.n) / area
    half_trace = (crr + ccc) / 2
    disc = np.sqrt(((crr - ccc) / 2) ** 2 + crc**2)
    return np.sqrt((half_trace + disc) / np.maximum(half_trace - disc, 1e-9))


def colour_names(comps: Components, image: np.ndarray) -> list[str]:
    """Nearest :data:`COLOUR_PROTOTYPES` name of each component's mean RGB."""
    if comps.n == 0:
        return []
    index = np.arange(1, comps.n + 1)
    means = np.stack(
        [ndimage.mean(image[..., c].astype(float), comps.labels, index) for c in range(3)], axis=1
    )
    protos = np.array(list(COLOUR_PROTOTYPES.values()), dtype=float)
    dist = ((means[:, None, :] - protos[None]) ** 2).sum(-1)
    names = list(COLOUR_PROTOTYPES)
    return [names[i] for i in dist.argmin(1)]


def distance_to(comps: Components, target: np.ndarray) -> np.ndarray:
    """``(n,)`` smallest Euclidean distance (pixels) from each component to ``target`` pixels.

    Touching components get 1 (neighbouring pixel); an empty target gives ``inf``.
    """
    if comps.n == 0:
        return np.zeros(0)
    if not target.any():
        return np.full(comps.n, np.inf)
    dist = ndimage.distance_transform_edt(~target)
    # np.minimum.at over component pixels only: ndimage.minimum sorts the whole image.
    inside = comps.labels > 0
    out = np.full(comps.n, np.inf)
    np.minimum.at(out, comps.labels[inside] - 1, dist[inside])
    return out


def surrounded_fraction(
    comps: Components, target: np.ndarray, transparent: np.ndarray, ring: int = 2
) -> np.ndarray:
    """``(n,)`` share of each component's outer ring (``ring`` px) that lies on ``target``.

    Ring pixels in ``transparent`` (e.g. other vehicles next to a parked car) are not counted,
    so a car in a packed parking lot is still "in the parking area".
    """
    if comps.n == 0:
        return np.zeros(0)
    # For every pixel, distance to and index of the nearest component pixel: the ring pixel's
    # owner is the component it is closest to.
    dist, (ri, ci) = ndimage.distance_transform_edt(comps.labels == 0, return_indices=True)
    in_ring = (dist > 0) & (dist <= ring) & ~transparent
    owner = comps.labels[ri[in_ring], ci[in_ring]] - 1
    total = np.bincount(owner, minlength=comps.n)
    hits = np.bincount(owner, target[in_ring].astype(float), minlength=comps.n)
    return np.where(total > 0, hits / np.maximum(total, 1), 0.0)


POSITIONS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    # name -> ((row lo, row hi), (col lo, col hi)) as fractions of the image.
    "upper left": ((0, 0.5), (0, 0.5)),
    "upper right": ((0, 0.5), (0.5, 1)),
    "lower left": ((0.5, 1), (0, 0.5)),
    "lower right": ((0.5, 1), (0.5, 1)),
    "top": ((0, 1 / 3), (0, 1)),
    "bottom": ((2 / 3, 1), (0, 1)),
    "left": ((0, 1), (0, 1 / 3)),
    "right": ((0, 1), (2 / 3, 1)),
    "center": ((1 / 3, 2 / 3), (1 / 3, 2 / 3)),
}


def in_region(comps: Components, shape: tuple[int, int], region: str) -> np.ndarray:
    """``(n,)`` bool: component centroid lies in the named :data:`POSITIONS` region."""
    (r0, r1), (c0, c1) = POSITIONS[region]
    h, w = shape
    r = comps.centroids[:, 0] / h
    c = comps.centroids[:, 1] / w
    return (r >= r0) & (r < r1) & (c >= c0) & (c < c1)


def region_bounds(region: str, height: int, width: int) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` pixel bounds of a named region of a ``height x width`` image."""
    (r0, r1), (c0, c1) = POSITIONS[region]
    return (round(r0 * height), round(r1 * height), round(c0 * width), round(c1 * width))


def size_groups(
    comps: Components, thresholds: Thresholds = Thresholds()
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(large, small)``: ``(n,)`` bool of the components in the top / bottom third by area.

    ``None`` when there are fewer than three components or the thirds differ less than
    ``thresholds.size_ratio`` in area ("large" would say nothing).
    """
    if comps.n < 3:
        return None
    lo, hi = np.quantile(comps.areas, [1 / 3, 2 / 3])
    if hi < thresholds.size_ratio * lo:
        return None
    return comps.areas >= hi, comps.areas <= lo


def is_long(comps: Components, thresholds: Thresholds = Thresholds()) -> np.ndarray:
    """``(n,)`` bool: components at least ``thresholds.long_ratio`` times longer than wide."""
    return elongation(comps) >= thresholds.long_ratio


def relation_keep(
    comps: Components,
    word: str,
    target: np.ndarray,
    subject_mask: np.ndarray,
    thresholds: Thresholds = Thresholds(),
) -> np.ndarray:
    """``(n,)`` bool: the components (of ``subject_mask``) in relation ``word`` to ``target``.

    ``in``/``on``: at least ``surround_frac`` of the component's outline lies on ``target``
    (other subject pixels do not count); ``beside``/``along``/``near``: within ``touch_px``,
    ``along_frac`` or ``near_frac`` of the shorter image side of the target's pixels outside
    the subject.
    """
    if word not in RELATIONS:
        raise ValueError(f"relation word must be one of {RELATIONS}, got {word!r}")
    if word in ("in", "on"):
        return surrounded_fraction(comps, target, subject_mask) >= thresholds.surround_frac
    side = min(subject_mask.shape)
    limit = {
        "beside": thresholds.touch_px,
        "along": thresholds.along_frac * side,
        "near": thresholds.near_frac * side,
    }[word]
    return distance_to(comps, target & ~subject_mask) <= limit
