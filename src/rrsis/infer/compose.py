"""Read position, relation and attribute phrases with geometry rules instead of the network alone.

A referring expression often names a class and then narrows it down:

* position: "The ship on the upper left" = the class's objects whose centroid lies in that
  region (:data:`rrsis.data.geometry.POSITIONS`);
* relation: "building along the road" = the class's objects within a distance of the other
  class (``along``/``near``/``beside``), or mostly surrounded by it (``in``/``on``);
* attribute: "The large building" / "small building" = objects in the top / bottom third by
  area (when the sizes differ enough), "long building" = principal-axis ratio >= 3, "white car"
  = objects whose mean colour is nearest to white.

The network reads class names well and those narrowing phrases poorly. So
:func:`compose_probability` lets the network segment the class ("building") and, for the
relation, the other class ("road"), and applies the geometry that the dataset builder uses
(:mod:`rrsis.data.geometry`) to the *predicted* objects (connected components at the foreground
threshold). Objects that fail the test get probability 0; the others keep the network's
probability, so thresholding the result gives the composed mask.

The rules step aside, and the network reads the whole expression, when the wording is not one
they know for sure (:func:`parse_expression` returns ``None``; the words are those of
:mod:`rrsis.data.vocabulary`) and when they cannot decide (no object predicted, an empty
relation object, too few objects to rank by size). ``Segmenter(compose=...)`` and ``--compose``
choose which rules run; ``"none"`` is the network alone. See ``docs/compose.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np

from rrsis.data import geometry as geo
from rrsis.data.geometry import region_bounds
from rrsis.data.vocabulary import read_attribute, read_position, read_relation

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

_THRESHOLDS = geo.Thresholds()


def scene_position(expression: str) -> tuple[str, str | None]:
    """Split off a position phrase: ``("building", "upper left")`` for "building in the upper left".

    Returns ``(expression, None)`` unless the expression is a noun phrase followed by a
    position phrase of :data:`rrsis.data.vocabulary.REGION_WORDS` ("the left" alone is kept as
    it is; so is "The harbor is on the left of the ship on the right").
    """
    found = read_position(" ".join(expression.split()))
    if found is None:
        return expression, None
    return found


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
    ``in`` relation), then relations, then a leading attribute word. Only the wording of
    :mod:`rrsis.data.vocabulary` around plain noun phrases is taken; anything else is ``None``.
    """
    text = " ".join(expression.split())
    position = read_position(text)
    if position is not None:
        # A position phrase is never read as a relation, even with the position rule off.
        if "position" in rules:
            return Composition("position", position[0], position[1], expression=text)
        return None
    if "relation" in rules:
        relation = read_relation(text)
        if relation is not None:
            subject, word, obj = relation
            return Composition("relation", subject, word, obj, expression=text)
    if "attribute" in rules:
        attribute = read_attribute(text)
        if attribute is not None:
            return Composition("attribute", attribute[0], attribute[1], expression=text)
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
        return geo.relation_keep(comps, value, other, subject, _THRESHOLDS)
    # attribute
    if value in ("large", "small"):
        groups = geo.size_groups(comps, _THRESHOLDS)
        if groups is None:
            return None
        return groups[0] if value == "large" else groups[1]
    if value == "long":
        return geo.is_long(comps, _THRESHOLDS)
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
    comps = geo.components(subject, _THRESHOLDS.min_component_px)
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
