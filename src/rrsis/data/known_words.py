"""The words a model was trained on, and the content words of an expression outside them.

A model's vocabulary (stored with its weights, :mod:`rrsis.models.vocabulary`) is the words of
its training classes and their synonyms plus the template words of :mod:`rrsis.data.vocabulary`.
An expression's content words are its lower-cased words without articles, prepositions,
pronouns and the position and relation words the rules read; a plural "s" is tolerated.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from rrsis.data import vocabulary as words
from rrsis.data.taxonomy import Taxonomy

_TOKEN = re.compile(r"[a-z0-9][a-z0-9'-]*")

#: Words that carry no object: articles, prepositions, pronouns, copulas, numbers' glue.
STOP_WORDS = frozenset(
    """a an the this that these those it its which who what where there here is are was were
    be been has have had of to with from for under over through than and or but not all far
    in on at by into onto near along beside inside next close off out up down some any one
    two three many few several each every other another only just very more less most much
    same similar""".split()
)

#: Template words of the expression builder and the composition rules.
TEMPLATE_WORDS = frozenset(
    w
    for phrase in (
        *words.REGION_WORDS,
        *words.REGION_PREPOSITIONS,
        *words.REGION_NOUNS,
        *words.WHOLE_IMAGE,
        *words.RELATION_WORDS,
        *words.RELATION_VERBS,
        *words.OTHER_RELATION_WORDS,
        *words.ATTRIBUTE_WORDS,
        *words.DESCRIPTIVE_WORDS,
        *words.UNREAD_ADJECTIVES,
    )
    for w in phrase.split()
)


def vocabulary_of(taxonomies: Iterable[Taxonomy]) -> list[str]:
    """Sorted words of the taxonomies' class, group and synonym names plus :data:`TEMPLATE_WORDS`."""
    found = set(TEMPLATE_WORDS)
    for taxonomy in taxonomies:
        names = [*taxonomy.names(), *(s for alts in taxonomy.synonyms.values() for s in alts)]
        found.update(w for name in names for w in _TOKEN.findall(name.lower()))
    return sorted(found)


def content_words(expression: str) -> list[str]:
    """Lower-cased words of ``expression`` that name things (no stop or template words)."""
    found = _TOKEN.findall(expression.lower())
    return [w for w in found if w not in STOP_WORDS and w not in TEMPLATE_WORDS]


def _known(word: str, vocabulary: Collection[str]) -> bool:
    if word in vocabulary or word.isdigit():
        return True
    singular = [word[:-1]] if word.endswith("s") else []
    if word.endswith("es"):
        singular.append(word[:-2])
    if word.endswith("ies"):
        singular.append(word[:-3] + "y")
    return any(s in vocabulary for s in singular)


def unknown_words(expression: str, vocabulary: Collection[str]) -> tuple[str, ...]:
    """The content words of ``expression`` outside ``vocabulary``, once each, in order."""
    return tuple(dict.fromkeys(w for w in content_words(expression) if not _known(w, vocabulary)))
