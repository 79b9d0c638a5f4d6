"""Semantic label maps -> referring triplets, the way RefSegRS was made from SkyScapes.

For each class or inclusion group of a :class:`~rrsis.data.taxonomy.Taxonomy` present in a
label map, :func:`build_triplets` writes candidate expressions of four kinds:

* ``category``: "road", "vehicle" (every pixel of the class or group);
* ``attribute``: "large building", "small vehicle" (component area quantiles), "long truck"
  (principal-axis ratio), "white car" (mean colour, for the taxonomy's ``colour_names``);
* ``relation``: "vehicle in the parking area", "building along the road" (component geometry);
* ``position``: "building in the upper left" (component centroid in a quadrant or third).

Each mask holds exactly the components the expression describes. Masks that are too small
are dropped, identical masks keep one expression (the simplest kind wins), and kinds are
balanced round-robin under per-image caps. All randomness comes from the ``rng`` argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from rrsis.data import geometry as geo
from rrsis.data.stats import object_stats
from rrsis.data.taxonomy import Relation, Taxonomy
from rrsis.data.vocabulary import KINDS, infer_kind, position_phrase

__all__ = [
    "KINDS",
    "BuildConfig",
    "Relation",
    "Taxonomy",
    "build_triplets",
    "infer_kind",
]


@dataclass
class BuildConfig:
    """Rules of :func:`build_triplets`.

    The geometry thresholds (``min_component_px`` to ``surround_frac``) default to those of
    :class:`rrsis.data.geometry.Thresholds`, which the composition rules read with.

    Attributes:
        min_pixels: smallest mask (pixels) worth a triplet.
        min_frac: smallest mask as a fraction of the image.
        min_component_px: components under this size are noise: never an object on their own.
        size_ratio: "large"/"small" only when the two groups differ at least this much in area.
        long_ratio: principal-axis ratio from which a component is "long".
        touch_px: "beside" distance; ``along_frac``/``near_frac``: distances as a fraction of
            the shorter image side for "along" and "near".
        surround_frac: share of a component's outline on the object class for "in"/"on".
        max_per_image: cap on triplets per image; ``kind_caps`` caps each kind.
        synonym_prob: chance of naming a class by one of its synonyms.
    """

    min_pixels: int = 64
    min_frac: float = 0.0005
    # The geometry's limits, with the defaults of geo.Thresholds (one place for each value).
    min_component_px: int = geo.Thresholds.min_component_px
    size_ratio: float = geo.Thresholds.size_ratio
    long_ratio: float = geo.Thresholds.long_ratio
    touch_px: float = geo.Thresholds.touch_px
    along_frac: float = geo.Thresholds.along_frac
    near_frac: float = geo.Thresholds.near_frac
    surround_frac: float = geo.Thresholds.surround_frac
    max_per_image: int = 8
    kind_caps: dict[str, int] = field(
        default_factory=lambda: {"category": 3, "attribute": 3, "relation": 3, "position": 2}
    )
    synonym_prob: float = 0.2

    @property
    def thresholds(self) -> geo.Thresholds:
        """The geometry thresholds of this configuration."""
        return geo.Thresholds.of(self)


#: Caps for crops cut from large labelled images (``rrsis data dubai``, ``rrsis data
#: from-labels``): at most 6 triplets per crop and 2 per kind, so that neighbouring crops do not
#: flood a split with near-identical expressions, and components under 24 px are noise.
CROP_CONFIG = BuildConfig(
    max_per_image=6,
    kind_caps={"category": 2, "attribute": 2, "relation": 2, "position": 2},
    min_component_px=24,
)


@dataclass
class _Candidate:
    kind: str
    text: str
    category: str
    template: str
    mask: np.ndarray


def _name(taxonomy: Taxonomy, name: str, rng: np.random.Generator, prob: float) -> str:
    options = taxonomy.synonyms.get(name, [])
    if options and rng.random() < prob:
        return str(options[int(rng.integers(len(options)))])
    return name


def _subset_candidates(
    name: str,
    said: str,
    comps: geo.Components,
    image: np.ndarray,
    taxonomy: Taxonomy,
    config: BuildConfig,
) -> list[_Candidate]:
    """Attribute and position candidates of one class (``said`` = the words used for it)."""
    out: list[_Candidate] = []
    if comps.n == 0:
        return out

    def add(kind: str, text: str, template: str, keep: np.ndarray) -> None:
        # A subset equal to all components says nothing beyond the category; dedupe would
        # drop it anyway, skipping here saves the mask work.
        if keep.any() and not keep.all():
            out.append(_Candidate(kind, text, name, template, comps.select(keep)))

    groups = geo.size_groups(comps, config.thresholds) if taxonomy.is_object(name) else None
    if groups is not None:
        add("attribute", f"large {said}", "large {category}", groups[0])
        add("attribute", f"small {said}", "small {category}", groups[1])
    if taxonomy.is_object(name):
        add(
            "attribute",
            f"long {said}",
            "long {category}",
            geo.is_long(comps, config.thresholds),
        )
    if name in taxonomy.colour_names:
        colours = np.array(geo.colour_names(comps, image))
        for colour in sorted(set(colours.tolist())):
            add("attribute", f"{colour} {said}", "{colour} {category}", colours == colour)
    if taxonomy.is_object(name) or comps.n >= 2:
        for region in geo.POSITIONS:
            add(
                "position",
                f"{said} {position_phrase(region)}",
                "{category} " + position_phrase(region),
                geo.in_region(comps, image.shape[:2], region),
            )
    return out


def _relation_candidates(
    rel: Relation,
    said: str,
    comps: geo.Components,
    subject_mask: np.ndarray,
    labels: np.ndarray,
    taxonomy: Taxonomy,
    config: BuildConfig,
) -> list[_Candidate]:
    target = taxonomy.mask(labels, rel.object)
    if comps.n == 0 or not target.any():
        return []
    keep = geo.relation_keep(comps, rel.word, target, subject_mask, config.thresholds)
    if not keep.any():
        return []
    template = "{category} " + rel.word + " the {object}"
    return [_Candidate("relation", rel.phrase(said), rel.subject, template, comps.select(keep))]


def build_triplets(
    image: np.ndarray,
    label_map: np.ndarray,
    taxonomy: Taxonomy,
    rng: np.random.Generator,
    config: BuildConfig | None = None,
    source: str = "",
) -> list[dict]:
    """Referring triplets of one image.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        label_map: ``(H, W)`` int class ids (ids unknown to the taxonomy are ignored).
        taxonomy: names, groups and relations to use.
        rng: source of every random choice (synonyms, order, which candidates survive caps).
        config: rules; defaults to :class:`BuildConfig`.
        source: scene/tile id stored in ``meta["source"]`` and used as the id prefix.

    Returns:
        Samples ``{"image", "mask": bool (H, W), "text", "id", "meta"}`` with meta ``kind``,
        ``category``, ``template``, ``area_frac``, ``n_components``, ``source``.
    """
    config = config or BuildConfig()
    image = np.asarray(image)
    labels = np.asarray(label_map)
    if image.ndim != 3 or image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape} and label map {labels.shape} do not match")
    n_pixels = labels.size
    min_pixels = max(config.min_pixels, config.min_frac * n_pixels)

    by_kind: dict[str, list[_Candidate]] = {k: [] for k in KINDS}
    for name in taxonomy.names():
        mask = taxonomy.mask(labels, name)
        if mask.sum() < min_pixels:
            continue
        said = _name(taxonomy, name, rng, config.synonym_prob)
        by_kind["category"].append(_Candidate("category", said, name, "{category}", mask))
        comps = geo.components(mask, config.min_component_px)
        for cand in _subset_candidates(name, said, comps, image, taxonomy, config):
            by_kind[cand.kind].append(cand)
        for rel in taxonomy.relations:
            if rel.subject == name:
                by_kind["relation"] += _relation_candidates(
                    rel, said, comps, mask, labels, taxonomy, config
                )

    # Shuffle within each kind, then dedupe in kind order so the simplest expression of a
    # mask survives ("vehicle" beats "vehicle in the parking area" when all vehicles park).
    seen: set[bytes] = set()
    queues: dict[str, list[_Candidate]] = {}
    for kind in KINDS:
        cands = by_kind[kind]
        order = rng.permutation(len(cands)) if cands else []
        queue = []
        for i in order:
            cand = cands[int(i)]
            if cand.mask.sum() < min_pixels:
                continue
            key = np.packbits(cand.mask).tobytes()
            if key in seen:
                continue
            seen.add(key)
            queue.append(cand)
        queues[kind] = queue[: config.kind_caps.get(kind, config.max_per_image)]

    # Round-robin over kinds so that a class-rich image does not fill its cap with categories.
    chosen: list[_Candidate] = []
    while len(chosen) < config.max_per_image and any(queues.values()):
        for kind in KINDS:
            if queues[kind] and len(chosen) < config.max_per_image:
                chosen.append(queues[kind].pop(0))

    prefix = re.sub(r"[^A-Za-z0-9]+", "_", source).strip("_") or "img"
    samples = []
    for k, cand in enumerate(chosen):
        meta = {
            "kind": cand.kind,
            "category": cand.category,
            "template": cand.template,
            **object_stats(cand.mask),
            "source": source,
        }
        samples.append(
            {
                "image": image,
                "mask": cand.mask,
                "text": cand.text,
                "id": f"{prefix}_{k}",
                "meta": meta,
            }
        )
    return samples
