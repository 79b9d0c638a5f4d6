"""The words of referring expressions: one vocabulary for writing, reading and sorting them.

The dataset builder phrases its expressions with these words (:func:`position_phrase`, the
attribute and relation words), the composition rules (:mod:`rrsis.infer.compose`) read them
back with :func:`read_position`, :func:`read_relation` and :func:`read_attribute`, and
:func:`infer_kind` sorts any expression into a kind for the evaluation breakdown. What the
words mean geometrically lives in :mod:`rrsis.data.geometry`.

The readers are deliberately strict: they take an expression only when it is a plain noun
phrase plus one phrase they know ("The large ship on the upper left", "A ground track field is
in the gray stadium", "The gray overpass") and return ``None`` otherwise, so that anything
else ("The bridge is on the upper left of the golf field", "The blue and gray windmill") is
left to the network as written.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from rrsis.data.geometry import COLOUR_PROTOTYPES, POSITIONS

#: Kinds of referring expression (the builder's and the evaluation breakdown's).
KINDS = ("category", "attribute", "relation", "position")

#: Region phrase -> region of :data:`rrsis.data.geometry.POSITIONS`.
REGION_WORDS: dict[str, str] = {
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
#: Prepositions that introduce a region ("on the left", "in the middle", "at the top").
REGION_PREPOSITIONS = ("in", "on", "at")
#: Words that may follow the region ("in the upper left corner").
REGION_NOUNS = ("corner", "part", "side")
#: What a position may be "of" ("on the left of the image").
WHOLE_IMAGE = ("image", "scene", "picture", "photo")

#: Relation phrase -> relation of :data:`rrsis.data.geometry.RELATIONS`.
RELATION_WORDS: dict[str, str] = {
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
#: Participles that may stand between "is" and a relation ("is parked in the parking lot").
RELATION_VERBS = ("parked", "driving", "lying", "located", "standing", "situated", "sitting")
#: Relations no rule tests; they still make an expression a relation for :func:`infer_kind`.
OTHER_RELATION_WORDS = (
    "around", "between", "within", "across", "adjacent to", "surrounded by", "parked",
    "parking on", "behind", "above", "below", "by", "at",
)  # fmt: skip

#: Size words -> the size the rules test (top / bottom third by area).
SIZE_WORDS = {"large": "large", "big": "large", "small": "small", "tiny": "small"}
#: Shape words -> the shape the rules test (principal-axis ratio).
SHAPE_WORDS = {"long": "long"}
#: Colour words -> the colour the rules test (:data:`rrsis.data.geometry.COLOUR_PROTOTYPES`).
COLOUR_WORDS = {name: name for name in COLOUR_PROTOTYPES} | {"grey": "gray"}
#: Every attribute word a rule reads, with the value it reads it as.
ATTRIBUTE_WORDS = SIZE_WORDS | SHAPE_WORDS | COLOUR_WORDS
#: Adjectives no rule tests: they may describe a noun ("oval", "orange") but are left to the
#: network. The first group also makes an expression an attribute for :func:`infer_kind`.
DESCRIPTIVE_WORDS = (
    "huge", "short", "wide", "narrow", "round", "square", "rectangular", "light-duty",
    "heavy-duty", "dark", "bright", "silver", "orange", "brown", "tall", "low-rise", "high-rise",
    "largest", "smallest", "longest",
)  # fmt: skip
UNREAD_ADJECTIVES = ("slender", "oval", "rounded", "little", "cyan", "purple", "pink")

_MODIFIERS = frozenset([*ATTRIBUTE_WORDS, *DESCRIPTIVE_WORDS, *UNREAD_ADJECTIVES])
_DETERMINERS = frozenset(["a", "an", "the"])
_COPULAS = frozenset(["is", "are"])
# Words that end a noun phrase: a phrase containing one is more than a noun phrase.
_NOT_NOUN = frozenset(
    [
        *_DETERMINERS,
        *_COPULAS,
        *(w for phrase in RELATION_WORDS for w in phrase.split()),
        *(w for w in OTHER_RELATION_WORDS if " " not in w),
        "adjacent",
        "surrounded",
        *(w for phrase in REGION_WORDS for w in phrase.split()),
        *"this that these those it its which who was were be has have had".split(),
        *"of to with from for under over through than and or but not all far".split(),
        *"smaller bigger larger longer similar much more less same".split(),
    ]
)
_WORD = re.compile(r"^[a-z0-9][a-z0-9'-]*$")


def position_phrase(region: str) -> str:
    """The builder's wording of a region: "in the upper left", "on the left", "at the top"."""
    if region not in POSITIONS:
        raise ValueError(f"unknown region {region!r}; choose from {', '.join(POSITIONS)}")
    if region in ("left", "right"):
        return f"on the {region}"
    if region in ("top", "bottom"):
        return f"at the {region}"
    return f"in the {region}"


def _lower(words: Sequence[str]) -> list[str]:
    return [w.lower() for w in words]


def is_noun_phrase(words: Sequence[str]) -> bool:
    """Whether ``words`` is a plain noun phrase: ``[a|an|the] adjective* noun+``.

    Adjectives may be joined by "and" ("gray and black"); no verb, preposition, region word or
    other conjunction may appear, and the last word must not be a known adjective.
    """
    low = _lower(words)
    if low and low[0] in _DETERMINERS:
        low = low[1:]
    if not low or low[-1] in _MODIFIERS:
        return False
    for i, word in enumerate(low):
        if word == "and":
            if not (0 < i < len(low) - 1 and low[i - 1] in _MODIFIERS and low[i + 1] in _MODIFIERS):
                return False
        elif word in _NOT_NOUN or not _WORD.match(word):
            return False
    return True


def _split(text: str) -> list[str]:
    return text.rstrip(".!").split()


def _drop_copula(words: list[str]) -> list[str]:
    """ "The vehicle is" -> "The vehicle"; "The car is parked" -> "The car"."""
    low = _lower(words)
    if len(low) >= 2 and low[-1] in RELATION_VERBS and low[-2] in _COPULAS:
        return words[:-2]
    if low and low[-1] in _COPULAS:
        return words[:-1]
    return words


def _match_phrase(low: list[str], start: int, phrases: Collection[str]) -> str | None:
    """The longest of ``phrases`` that ``low`` spells from ``start``."""
    for phrase in sorted(phrases, key=lambda p: -len(p.split())):
        parts = phrase.split()
        if low[start : start + len(parts)] == parts:
            return phrase
    return None


def read_position(text: str) -> tuple[str, str] | None:
    """``("The ship", "upper left")`` for "The ship on the upper left"; else ``None``.

    The position phrase ends the expression ("in|on|at the <region> [corner|part|side] [of the
    image]") and what comes before it is a noun phrase or a relation phrase ("vehicle in the
    parking area"), optionally followed by "is".
    """
    words = _split(text)
    low = _lower(words)
    for i in range(1, len(low) - 1):
        if low[i] not in REGION_PREPOSITIONS or low[i + 1] != "the":
            continue
        region = _match_phrase(low, i + 2, REGION_WORDS)
        if region is None:
            continue
        end = i + 2 + len(region.split())
        if end < len(low) and low[end] in REGION_NOUNS:
            end += 1
        if low[end:] and not (len(low) == end + 3 and low[end : end + 2] == ["of", "the"]):
            continue
        if low[end:] and low[-1] not in WHOLE_IMAGE:
            continue
        subject = _drop_copula(words[:i])
        # The subject may itself be a relation ("vehicle in the parking area"): the network
        # reads it whole, the rule keeps the part of the image the phrase names.
        if is_noun_phrase(subject) or read_relation(" ".join(subject)) is not None:
            return " ".join(subject), REGION_WORDS[region]
    return None


def read_relation(text: str) -> tuple[str, str, str] | None:
    """``("The vehicle", "in", "parking area")`` for "The vehicle is in the parking area".

    The subject is a noun phrase (optionally followed by "is" or "is parked"), the relation is
    one of :data:`RELATION_WORDS`, and the object is a noun phrase (its article is dropped).
    ``None`` for anything else, e.g. "The bridge is on the upper left of the golf field".
    """
    words = _split(text)
    low = _lower(words)
    for i in range(1, len(low)):
        phrase = _match_phrase(low, i, RELATION_WORDS)
        if phrase is None:
            continue
        subject = _drop_copula(words[:i])
        obj = words[i + len(phrase.split()) :]
        if obj and obj[0].lower() in _DETERMINERS:
            obj = obj[1:]
        if is_noun_phrase(subject) and is_noun_phrase(obj):
            return " ".join(subject), RELATION_WORDS[phrase], " ".join(obj)
        return None  # the first relation word decides: the subject ends there
    return None


def read_attribute(text: str) -> tuple[str, str] | None:
    """``("The overpass", "gray")`` for "The gray overpass"; else ``None``.

    The attribute is the first word of the noun phrase (after its article), one of
    :data:`ATTRIBUTE_WORDS`, and what follows it is itself a noun phrase: "The blue and gray
    windmill" is left alone (its colour is not one of the rule's).
    """
    words = _split(text)
    low = _lower(words)
    start = 1 if low and low[0] in _DETERMINERS else 0
    if len(low) < start + 2 or low[start] not in ATTRIBUTE_WORDS or low[start + 1] == "and":
        return None
    rest = words[start + 1 :]
    if not is_noun_phrase(rest):
        return None
    return " ".join(words[:start] + rest), ATTRIBUTE_WORDS[low[start]]


# --- kind of an arbitrary expression ---------------------------------------------------------
def _cues(words: Collection[str]) -> str:
    return "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))


_POSITION_CUES = re.compile(
    r"\b("
    + _cues({w for phrase in REGION_WORDS for w in phrase.split()} | set(REGION_NOUNS[:1]))
    + r"|north|south|east|west)(most|ern)?\b"
)
_RELATION_CUES = re.compile(r"\b(" + _cues([*RELATION_WORDS, *OTHER_RELATION_WORDS]) + r")\b")
_ATTRIBUTE_CUES = re.compile(r"\b(" + _cues([*ATTRIBUTE_WORDS, *DESCRIPTIVE_WORDS]) + r")\b")


def infer_kind(expression: str) -> str:
    """Heuristic kind of any English referring expression.

    Position words win ("building in the upper left"), then relation words ("vehicle in the
    parking area"), then attribute adjectives ("long truck"); anything else is a category.
    Class names that contain such words ("low vegetation", "light-duty vehicle") are handled
    by the attribute list not containing "low" and relation words needing whole-word matches.

    Returns:
        One of :data:`KINDS`.
    """
    text = " ".join(expression.lower().split())
    if _POSITION_CUES.search(text):
        return "position"
    if _RELATION_CUES.search(text):
        return "relation"
    if _ATTRIBUTE_CUES.search(text):
        return "attribute"
    return "category"
