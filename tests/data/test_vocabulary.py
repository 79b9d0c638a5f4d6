"""One vocabulary: what the builder writes, the rules read back, on templates and real wording."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from rrsis.data.builder import BuildConfig, build_triplets
from rrsis.data.geometry import POSITIONS, RELATIONS
from rrsis.data.synthetic import SYNTHETIC_TAXONOMY, generate_scene
from rrsis.data.vocabulary import (
    ATTRIBUTE_WORDS,
    REGION_WORDS,
    RELATION_WORDS,
    is_noun_phrase,
    position_phrase,
    read_attribute,
    read_position,
    read_relation,
)
from rrsis.infer.compose import parse_expression

REAL = Path(__file__).parent / "expressions" / "rrsisd_parses.tsv"


def test_every_word_reads_as_its_canonical_form() -> None:
    assert set(REGION_WORDS.values()) == set(POSITIONS)
    assert set(RELATION_WORDS.values()) == set(RELATIONS)
    for region in POSITIONS:
        assert read_position(f"building {position_phrase(region)}") == ("building", region)
    for phrase, region in REGION_WORDS.items():
        assert read_position(f"The ship on the {phrase} of the image") == ("The ship", region)
    for phrase, word in RELATION_WORDS.items():
        assert read_relation(f"A car is {phrase} the gray road") == ("A car", word, "gray road")
    for word, value in ATTRIBUTE_WORDS.items():
        assert read_attribute(f"The {word} storage tank") == ("The storage tank", value)
    with pytest.raises(ValueError, match="unknown region"):
        position_phrase("north")


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("The gray and black ship", True),
        ("light-duty vehicle", True),
        ("The bridge is", False),
        ("and gray windmill", False),
        ("upper left of the golf field", False),
        ("The gray", False),
        ("ship and harbor", False),
        ("", False),
    ],
)
def test_noun_phrase(words: str, expected: bool) -> None:
    assert is_noun_phrase(words.split()) is expected


def test_builder_expressions_parse_as_their_kind() -> None:
    rng = np.random.default_rng(3)
    config = BuildConfig(max_per_image=100, kind_caps={}, synonym_prob=0.5)
    samples = []
    for _ in range(3):
        image, labels = generate_scene(192, rng)
        samples += build_triplets(image, labels, SYNTHETIC_TAXONOMY, rng, config)
    kinds = {s["meta"]["kind"] for s in samples}
    assert kinds == {"category", "attribute", "relation", "position"}
    for sample in samples:
        parsed = parse_expression(sample["text"])
        if sample["meta"]["kind"] == "category":
            assert parsed is None, sample["text"]
        else:
            assert parsed is not None and parsed.rule == sample["meta"]["kind"], sample["text"]


def _real_rows() -> list[dict[str, str]]:
    with REAL.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_real_expressions_are_read_as_labelled_or_left_to_the_network(record_property) -> None:
    """Real RRSIS-D wording (tests/data/expressions/make.py): no misreading, no missed parse."""
    rows = _real_rows()
    assert len(rows) >= 150
    misread, missed = [], []
    for row in rows:
        parsed = parse_expression(row["expression"])
        got = None if parsed is None else (parsed.rule, parsed.subject, parsed.value, parsed.object)
        want = None
        if row["rule"] != "network":
            want = (row["rule"], row["subject"], row["value"], row["object"] or None)
        if got != want:
            (missed if got is None else misread).append((row["expression"], got, want))
    taken = sum(row["rule"] != "network" for row in rows)
    record_property("rules_take", f"{taken}/{len(rows)}")
    assert not misread, f"misread: {misread}"
    assert not missed, f"left to the network although labelled: {missed}"
    # The named misreadings of a former parser stay with the network.
    by_text = {row["expression"]: row["rule"] for row in rows}
    assert by_text["The blue and gray windmill"] == "network"
    assert by_text["The bridge is on the upper left of the large green golf field"] == "network"
