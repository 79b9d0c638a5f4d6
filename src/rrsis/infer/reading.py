"""How a batch of expressions is read: the network's texts in batched passes, then the rules.

Each expression the composition rules can read (:func:`rrsis.infer.compose.parse_expression`)
asks the network for its class and, for a relation, the other class; the others ask for the
whole expression. Every such text goes through the network once for all tiles; the rules then
run on each tile's own predicted objects (:func:`rrsis.infer.compose.compose_decided`). Where a
rule cannot decide, the network reads the whole expression: one more pass, for those tiles only.
Every result says what decided it: ``"network"`` or the rule (``"position"``, ``"relation"``,
``"attribute"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rrsis.infer.compose import Composition, compose_decided

#: What can decide a mask: the network alone, or one of the composition rules.
DECIDERS = ("network", "position", "relation", "attribute")
#: ``texts -> (word_ids, word_mask)`` of checked texts.
Tokenize = Callable[[list[str]], tuple[Any, Any]]
#: ``(tiles uint8 (B, H, W, 3), word_ids, word_mask) -> float32 (E, B, H, W)``.
Network = Callable[[np.ndarray, Any, Any], np.ndarray]


@dataclass
class Prediction:
    """One expression's result on one image (:meth:`rrsis.Segmenter.predict`).

    Attributes:
        expression: the expression as read (whitespace collapsed).
        mask: ``bool (H, W)``, the probabilities above the Segmenter's threshold.
        probability: ``float32 (H, W)`` foreground probabilities.
        decided_by: ``"network"`` (the network alone read the expression) or the composition
            rule that produced the mask (``"position"``, ``"relation"``, ``"attribute"``).
        unknown_words: the expression's content words outside the vocabulary stored with the
            model's weights (:mod:`rrsis.data.known_words`): its mask is a guess. Empty when all
            are known or the model has no stored vocabulary.
    """

    expression: str
    mask: np.ndarray
    probability: np.ndarray
    decided_by: str
    unknown_words: tuple[str, ...] = ()


def texts_to_read(
    expressions: Sequence[str], compositions: Sequence[Composition | None]
) -> list[str]:
    """Every text the network must read for ``expressions``, once each, in order."""
    needed: dict[str, None] = {}
    for expression, composition in zip(expressions, compositions):
        for text in composition.texts() if composition else [expression]:
            needed.setdefault(text)
    return list(needed)


def read_tiles(
    tiles: np.ndarray,
    expressions: Sequence[str],
    compositions: Sequence[Composition | None],
    threshold: float,
    tokenize: Tokenize,
    network: Network,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, list[list[str]]]:
    """Probabilities of every (expression, tile), and what decided each.

    Args:
        tiles: ``uint8 (B, H, W, 3)``.
        expressions: ``E`` checked expressions; ``compositions``: their parses (``None``: the
            network reads the expression as it is).
        threshold: the foreground threshold the rules find objects at.
        tokenize, network: the Segmenter's.
        valid: optional ``bool (B, H, W)``: pixels outside it get probability 0 before the
            rules look for objects.

    Returns:
        ``float32 (E, B, H, W)`` probabilities and ``decided_by[e][b]``.
    """
    needed = texts_to_read(expressions, compositions)
    word_ids, word_mask = tokenize(needed)
    batched = network(tiles, word_ids, word_mask)
    if valid is not None:
        batched *= valid[None]
    index = {text: i for i, text in enumerate(needed)}
    out = np.empty((len(expressions), *batched.shape[1:]), np.float32)
    decided_by = [["network"] * tiles.shape[0] for _ in expressions]
    undecided: dict[str, list[tuple[int, int]]] = {}  # whole expression -> [(e, b)]
    for e, (expression, composition) in enumerate(zip(expressions, compositions)):
        for b in range(tiles.shape[0]):
            decided = None
            if composition is not None:
                decided = compose_decided(
                    composition,
                    lambda text, b=b: batched[index[text], b],
                    threshold,
                    image=tiles[b],
                )
            if decided is not None:
                out[e, b] = decided
                decided_by[e][b] = composition.rule
            elif expression in index:
                out[e, b] = batched[index[expression], b]
            else:
                undecided.setdefault(expression, []).append((e, b))
    for expression, where in undecided.items():
        ids, mask = tokenize([expression])
        rows = [b for _, b in where]
        probs = network(tiles[rows], ids, mask)[0]
        if valid is not None:
            probs *= valid[rows]
        for (e, b), prob in zip(where, probs):
            out[e, b] = prob
    return out, decided_by


def read_pairs(
    images: np.ndarray,
    expressions: Sequence[str],
    compositions: Sequence[Composition | None],
    threshold: float,
    pair_probabilities: Callable[[np.ndarray, list[tuple[int, str]]], dict],
) -> tuple[np.ndarray, list[str]]:
    """:func:`read_tiles` for pairs: image ``b`` read with expression ``b`` only.

    Args:
        images: ``uint8 (B, H, W, 3)``; ``expressions``: ``B`` checked expressions;
            ``compositions``: their parses.
        threshold: the foreground threshold the rules find objects at.
        pair_probabilities: ``(images, [(b, text)]) -> {(b, text): float32 (H, W)}``.

    Returns:
        ``float32 (B, H, W)`` probabilities and ``decided_by[b]``.
    """
    wanted = [
        (b, text)
        for b, (expression, composition) in enumerate(zip(expressions, compositions))
        for text in (composition.texts() if composition else [expression])
    ]
    probs = pair_probabilities(images, wanted)
    out = np.empty((len(expressions), *images.shape[1:3]), np.float32)
    decided_by: list[str] = []
    undecided: list[tuple[int, str]] = []
    for b, (expression, composition) in enumerate(zip(expressions, compositions)):
        decided = None
        if composition is not None:
            decided = compose_decided(
                composition, lambda t, b=b: probs[b, t], threshold, image=images[b]
            )
        if decided is not None:
            out[b] = decided
            decided_by.append(composition.rule)
            continue
        decided_by.append("network")
        if (b, expression) in probs:
            out[b] = probs[b, expression]
        else:
            undecided.append((b, expression))
    for (b, _), prob in pair_probabilities(images, undecided).items():
        out[b] = prob
    return out, decided_by
