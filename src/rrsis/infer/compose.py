"""Read position, relation and attribute phrases with geometry rules instead of the network alone.

A referring expression built by our templates (:mod:`rrsis.data.builder`) names a class and
then narrows it down:

* position: "building in the upper left" = the class's objects whose centroid lies in that
  region (:data:`rrsis.data.relations.POSITIONS`);
* relation: "building along the road" = the class's objects within a distance of the other
  class (``along``/``near``/``beside``), or mostly surrounded by it (``in``/``on``);
* attribute: "large building" / "small building" = objects in the top / bottom third by area
  (when the sizes differ enough), "long building" = principal-axis ratio >= 3, "white car" =
  objects whose mean colour is nearest to white.

The network reads class names well and those narrowing phrases poorly (on our validation
tile a model trained without it scored category expressions at 62 mIoU and positions at 31). So
:func:`compose_probability` lets the network segment the class ("building") and, for the
relation, the other class ("road"), and applies the builder's own geometry to the *predicted*
objects (connected components at the foreground threshold). Objects that fail the test get
probability 0; the others keep the network's probability, so thresholding the result gives the
composed mask. When the rule cannot decide (no object predicted, an empty relation object, too
few objects to rank by size), the network's prediction of the whole expression is used.

Each rule was adopted because it raised mIoU on the validation tile for a model that had never
seen it (``docs/results/session11/``); ``Segmenter(compose=...)`` and ``rrsis evaluate --compose``
choose which rules run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from rrsis.data import relations as geo
from rrsis.data.builder import BuildConfig, relation_keep, size_groups

__all__ = [
    "RULES",
    "Composition",
    "compose_decided",
    "compose_probability",
    "parse_expression",
    "parse_rules",
    "region_bounds",
    "scene_position",
]

#: Kinds of phrase a rule can read.
RULES: tuple[str, ...] = ("position", "relation", "attribute")

_CONFIG = BuildConfig()


def alternation(words: Collection[str]) -> str:
    """A regex alternation of ``words``, escaped, longest first ("top left" before "top")."""
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


# "in the upper left", "on the left", "at the top", "in the centre/middle" (the builder's
# wording, rrsis.data.relations.position_phrase, and its common variants).
_REGION_WORDS = {
    "upper left": "upper left",
    "top left": "upper left",
    "upper right": "upper right",
    "top right": "upper right",
    "lower left": "lower left",
    "bottom left": "lower left",
    "lower right": "lower right",
    "bottom right": "lower right",
    "top": "top",
    "bottom": "bottom",
    "left": "left",
    "right": "right",
    "center": "center",
    "centre": "center",
    "middle": "center",
}
_POSITION_PHRASE = re.compile(
    r"\s*\b(?:in|on|at)\s+the\s+("
    + alternation(_REGION_WORDS)
    + r")(?:\s+(?:corner|part|side))?(?:\s+of\s+the\s+(?:image|scene))?\b(?!\s+of\b)",
    re.IGNORECASE,
)


def scene_position(expression: str) -> tuple[str, str | None]:
    """Split off a position phrase: ``("building", "upper left")`` for "building in the upper left".

    Returns ``(expression, None)`` when the expression has no position phrase of the builder's
    regions (:data:`rrsis.data.relations.POSITIONS`). Only a phrase that can be removed leaving
    words behind counts ("the left" alone is kept as it is).
    """
    match = _POSITION_PHRASE.search(expression)
    if match is None:
        return expression, None
    rest = " ".join((expression[: match.start()] + " " + expression[match.end() :]).split())
    if not rest:
        return expression, None
    return rest, _REGION_WORDS[match.group(1).lower()]


def region_bounds(region: str, height: int, width: int) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` pixel bounds of a named region of a ``height x width`` scene."""
    (r0, r1), (c0, c1) = geo.POSITIONS[region]
    return (round(r0 * height), round(r1 * height), round(c0 * width), round(c1 * width))


_RELATION_WORDS = {
    "along": "along",
    "alongside": "along",
    "near": "near",
    "close to": "near",
    "beside": "beside",
    "next to": "beside",
    "in": "in",
    "inside": "in",
    "on": "on",
}
_RELATION = re.compile(
    r"^(?P<subject>.+?)\s+(?P<word>"
    + alternation(_RELATION_WORDS)
    + r")\s+(?:the\s+)?(?P<object>.+)$",
    re.IGNORECASE,
)
_SIZE_WORDS = {"large": "large", "big": "large", "small": "small", "tiny": "small", "long": "long"}
_COLOUR_WORDS = {name: name for name in geo.COLOUR_PROTOTYPES} | {"grey": "gray"}
_ATTRIBUTE = re.compile(
    r"^(?:the\s+)?(?P<word>"
    + alternation([*_SIZE_WORDS, *_COLOUR_WORDS])
    + r")\s+(?P<subject>.+)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Composition:
    """A parsed expression: what the network segments and which rule narrows it down.

    Attributes:
        rule: one of :data:`RULES`.
        subject: the expression the network segments ("building").
        value: the region ("upper left"), relation word ("along") or attribute ("large").
        object: the relation's other class ("road"); ``None`` for other rules.
        expression: the whole expression, which the network reads when the rule cannot decide.
    """

    rule: str
    subject: str
    value: str
    object: str | None = None
    expression: str = ""

    def texts(self) -> list[str]:
        """The expressions the network must segment for this composition."""
        return [self.subject] if self.object is None else [self.subject, self.object]


def parse_rules(spec: str | Collection[str] | bool | None) -> frozenset[str]:
    """``"all"``/``True`` -> every rule, ``"none"``/``False``/``None`` -> none, else a comma list.

    Raises:
        ValueError: an unknown rule name.
    """
    if spec is True or spec == "all":
        return frozenset(RULES)
    if spec is None or spec is False or spec == "none" or spec == "":
        return frozenset()
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    unknown = sorted(set(names) - set(RULES))
    if unknown:
        raise ValueError(
            f"unknown composition rule(s) {', '.join(unknown)}; choose from {', '.join(RULES)}, "
            "'all' or 'none'"
        )
    return frozenset(names)


def parse_expression(expression: str, rules: Collection[str] = RULES) -> Composition | None:
    """The :class:`Composition` of ``expression`` under ``rules``, or ``None`` (network alone).

    Position phrases are looked for first ("building in the upper left" is a position, not an
    ``in`` relation), then relations, then a leading attribute word.
    """
    text = " ".join(expression.split())
    rest, region = scene_position(text)
    if region is not None:
        # A position phrase is never read as a relation, even with the position rule off.
        if "position" in rules:
            return Composition("position", rest, region, expression=text)
    elif "relation" in rules:
        match = _RELATION.match(text)
        if match:
            return Composition(
                "relation",
                match["subject"],
                _RELATION_WORDS[match["word"].lower()],
                match["object"],
                expression=text,
            )
    if "attribute" in rules:
        match = _ATTRIBUTE.match(text)
        if match and not _RELATION.match(match["subject"]):
            word = match["word"].lower()
            value = _SIZE_WORDS.get(word) or _COLOUR_WORDS[word]
            return Composition("attribute", match["subject"], value, expression=text)
    return None


def _keep(
    composition: Composition,
    comps: geo.Components,
    subject: np.ndarray,
    other: np.ndarray | None,
    image: np.ndarray | None,
) -> np.ndarray | None:
    """``(n,)`` bool: the predicted components the rule keeps; ``None`` = cannot decide."""
    shape = subject.shape
    rule, value = composition.rule, composition.value
    if rule == "position":
        return geo.in_region(comps, shape, value)
    if rule == "relation":
        if other is None or not (other & ~subject).any():
            return None
        return relation_keep(comps, value, other, subject, _CONFIG)
    # attribute
    if value in ("large", "small"):
        groups = size_groups(comps, _CONFIG)
        if groups is None:
            return None
        return groups[0] if value == "large" else groups[1]
    if value == "long":
        return geo.elongation(comps) >= _CONFIG.long_ratio
    if image is None or image.shape[:2] != shape:
        return None
    return np.array(geo.colour_names(comps, image)) == value


def compose_decided(
    composition: Composition,
    probability: Callable[[str], np.ndarray],
    threshold: float,
    image: np.ndarray | None = None,
) -> np.ndarray | None:
    """The rule's probabilities, or ``None`` when it cannot decide (see :func:`compose_probability`)."""
    subject_p = np.asarray(probability(composition.subject), dtype=np.float32)
    subject = subject_p > threshold
    comps = geo.components(subject, _CONFIG.min_component_px)
    keep = None
    if comps.n:
        other = None
        if composition.object is not None:
            other = np.asarray(probability(composition.object)) > threshold
        keep = _keep(composition, comps, subject, other, image)
    if keep is None or not np.any(keep):
        return None
    return np.where(comps.select(keep), subject_p, np.float32(0.0)).astype(np.float32)


def compose_probability(
    composition: Composition,
    probability: Callable[[str], np.ndarray],
    threshold: float,
    image: np.ndarray | None = None,
    fallback: np.ndarray | None = None,
) -> np.ndarray:
    """Foreground probabilities of a composed expression.

    Args:
        composition: from :func:`parse_expression`.
        probability: ``text -> float (H, W)`` foreground probabilities of the network.
        threshold: the foreground cut that defines predicted objects.
        image: ``uint8 (H, W, 3)`` at the probabilities' size (colour attributes only).
        fallback: the network's probabilities of the whole expression, used when the rule
            cannot decide; computed through ``probability`` when not given.

    Returns:
        ``float32 (H, W)``: the subject's probabilities on the objects the rule keeps, 0 elsewhere.
    """
    decided = compose_decided(composition, probability, threshold, image)
    if decided is not None:
        return decided
    if fallback is None:
        fallback = probability(composition.expression)
    return np.asarray(fallback, dtype=np.float32)
