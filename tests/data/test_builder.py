"""Builder on hand-made label maps: every mask must match its expression exactly."""

from __future__ import annotations

import numpy as np
import pytest

from rrsis.data.builder import BuildConfig, Relation, Taxonomy, build_triplets, infer_kind
from rrsis.data.geometry import components, elongation
from rrsis.data.stats import object_stats
from rrsis.errors import DatasetError

ROAD, CAR, LOT, BUILDING, TRUCK = 1, 2, 3, 4, 5

TAX = Taxonomy(
    classes={"road": ROAD, "car": CAR, "parking area": LOT, "building": BUILDING, "truck": TRUCK},
    groups={"vehicle": ["car", "truck"]},
    objects=("car", "truck", "vehicle", "building"),
    relations=(Relation("vehicle", "in", "parking area"), Relation("building", "along", "road")),
)
# Everything below the generous caps so tests see every candidate.
ALL = BuildConfig(
    min_pixels=4,
    min_frac=0.0,
    min_component_px=4,
    along_frac=0.05,
    max_per_image=100,
    kind_caps=dict.fromkeys(("category", "attribute", "relation", "position"), 100),
    synonym_prob=0.0,
)


def _scene() -> np.ndarray:
    """64x64: a vertical road, a lot with two cars, one car and a truck on the road, buildings."""
    lab = np.zeros((64, 64), dtype=np.int32)
    lab[:, 28:36] = ROAD
    lab[4:24, 4:24] = LOT
    lab[8:11, 8:14] = CAR  # in the lot
    lab[16:19, 8:14] = CAR  # in the lot
    lab[40:46, 30:33] = CAR  # on the road
    lab[50:62, 30:33] = TRUCK  # on the road, long
    lab[22:26, 30:34] = TRUCK  # on the road, square
    lab[40:44, 38:43] = BUILDING  # 3 px from the road: along it, middle-sized
    lab[44:62, 4:20] = BUILDING  # far, large
    lab[40:60, 50:64] = BUILDING  # far, large
    lab[4:7, 50:53] = BUILDING  # far, small, upper right
    lab[26:29, 50:53] = BUILDING  # far, small, upper right
    lab[30:33, 4:7] = BUILDING  # far, small, upper left
    return lab


def _by_text(samples: list[dict]) -> dict[str, dict]:
    return {s["text"]: s for s in samples}


def test_relation_masks_hold_exactly_the_satisfying_components() -> None:
    lab = _scene()
    got = _by_text(
        build_triplets(np.zeros((64, 64, 3), np.uint8), lab, TAX, np.random.default_rng(0), ALL)
    )
    parked = np.zeros_like(lab, dtype=bool)
    parked[8:11, 8:14] = parked[16:19, 8:14] = True
    assert np.array_equal(got["vehicle in the parking area"]["mask"], parked)
    along = np.zeros_like(parked)
    along[40:44, 38:43] = True
    assert np.array_equal(got["building along the road"]["mask"], along)
    assert got["building along the road"]["meta"]["kind"] == "relation"


def test_size_and_shape_attributes_split_components() -> None:
    lab = _scene()
    got = _by_text(
        build_triplets(np.zeros((64, 64, 3), np.uint8), lab, TAX, np.random.default_rng(0), ALL)
    )
    large = np.zeros((64, 64), dtype=bool)
    large[44:62, 4:20] = large[40:60, 50:64] = True
    assert np.array_equal(got["large building"]["mask"], large)
    small = np.zeros((64, 64), dtype=bool)
    small[4:7, 50:53] = small[26:29, 50:53] = small[30:33, 4:7] = True
    assert np.array_equal(got["small building"]["mask"], small)
    assert got["small building"]["meta"]["n_components"] == 3
    assert got["small building"]["meta"]["kind"] == "attribute"
    # The 12x3 truck is the only long vehicle (cars are 3x6, the other truck 4x4); "long
    # truck" and "long vehicle" are the same mask, so exactly one of them survives.
    long_texts = [t for t in ("long truck", "long vehicle") if t in got]
    assert len(long_texts) == 1
    assert np.array_equal(got[long_texts[0]]["mask"], _rect(50, 62, 30, 33))


def _rect(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    out = np.zeros((64, 64), dtype=bool)
    out[r0:r1, c0:c1] = True
    return out


def test_position_uses_centroids() -> None:
    lab = _scene()
    got = _by_text(
        build_triplets(np.zeros((64, 64, 3), np.uint8), lab, TAX, np.random.default_rng(0), ALL)
    )
    upper_right = np.zeros((64, 64), dtype=bool)
    upper_right[4:7, 50:53] = upper_right[26:29, 50:53] = True
    assert np.array_equal(got["building in the upper right"]["mask"], upper_right)


def test_meta_matches_mask_and_contract() -> None:
    samples = build_triplets(
        np.zeros((64, 64, 3), np.uint8), _scene(), TAX, np.random.default_rng(0), ALL, source="s1"
    )
    ids = [s["id"] for s in samples]
    assert len(set(ids)) == len(ids)
    for s in samples:
        assert s["mask"].dtype == bool and s["mask"].any()
        assert s["meta"]["source"] == "s1"
        assert s["meta"]["kind"] in ("category", "attribute", "relation", "position")
        stats = object_stats(s["mask"])
        assert s["meta"]["area_frac"] == pytest.approx(stats["area_frac"])
        assert s["meta"]["n_components"] == stats["n_components"]


def test_identical_masks_keep_one_expression() -> None:
    lab = np.zeros((32, 32), dtype=np.int32)
    lab[4:10, 4:10] = CAR  # only cars: "car" and "vehicle" are the same mask
    samples = build_triplets(
        np.zeros((32, 32, 3), np.uint8), lab, TAX, np.random.default_rng(0), ALL
    )
    keys = [s["mask"].tobytes() for s in samples]
    assert len(keys) == len(set(keys))
    assert len([s for s in samples if s["text"] in ("car", "vehicle")]) == 1


def test_min_area_drops_small_masks() -> None:
    lab = np.zeros((32, 32), dtype=np.int32)
    lab[0:2, 0:2] = CAR  # 4 px
    lab[10:30, 10:30] = BUILDING
    cfg = BuildConfig(min_pixels=10, min_frac=0.0, synonym_prob=0.0)
    texts = {
        s["text"]
        for s in build_triplets(
            np.zeros((32, 32, 3), np.uint8), lab, TAX, np.random.default_rng(0), cfg
        )
    }
    assert "building" in texts and "car" not in texts and "vehicle" not in texts
    cfg = BuildConfig(min_pixels=1, min_frac=0.5, synonym_prob=0.0)
    assert (
        build_triplets(np.zeros((32, 32, 3), np.uint8), lab, TAX, np.random.default_rng(0), cfg)
        == []
    )


def test_deterministic_with_seed_and_caps_respected() -> None:
    lab = _scene()
    img = np.zeros((64, 64, 3), np.uint8)
    cfg = BuildConfig(
        min_pixels=4,
        min_frac=0.0,
        min_component_px=4,
        max_per_image=5,
        kind_caps={"category": 2, "attribute": 2, "relation": 1, "position": 1},
    )
    a = build_triplets(img, lab, TAX, np.random.default_rng(3), cfg)
    b = build_triplets(img, lab, TAX, np.random.default_rng(3), cfg)
    assert [s["text"] for s in a] == [s["text"] for s in b]
    assert all(np.array_equal(x["mask"], y["mask"]) for x, y in zip(a, b))
    assert len(a) == 5
    kinds = [s["meta"]["kind"] for s in a]
    assert kinds.count("relation") <= 1 and kinds.count("position") <= 1
    # Balanced: with caps reached the round-robin takes every kind before repeating one.
    assert set(kinds) == {"category", "attribute", "relation", "position"}


def test_colour_attribute_from_image() -> None:
    tax = Taxonomy(classes={"car": 1}, objects=("car",), colour_names=("car",))
    lab = np.zeros((32, 32), dtype=np.int32)
    img = np.zeros((32, 32, 3), np.uint8)
    lab[2:6, 2:10] = 1
    img[2:6, 2:10] = (240, 240, 240)
    lab[20:24, 20:28] = 1
    img[20:24, 20:28] = (180, 30, 30)
    got = _by_text(build_triplets(img, lab, tax, np.random.default_rng(0), ALL))
    assert np.array_equal(got["white car"]["mask"], (lab == 1) & (np.arange(32)[:, None] < 10))
    assert np.array_equal(got["red car"]["mask"], (lab == 1) & (np.arange(32)[:, None] >= 10))


def test_elongation_of_a_bar_and_a_square() -> None:
    mask = np.zeros((40, 40), dtype=bool)
    mask[2:6, 2:30] = True  # 4x28
    mask[20:30, 20:30] = True  # square
    ratio = elongation(components(mask))
    assert ratio[0] > 5 and ratio[1] == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("road", "category"),
        ("low vegetation", "category"),
        ("impervious surface", "category"),
        ("long truck", "attribute"),
        ("light-duty vehicle", "attribute"),
        ("vehicle in the parking area", "relation"),
        ("building along the road", "relation"),
        ("building in the upper left", "position"),
        ("The gray small windmill", "attribute"),
    ],
)
def test_infer_kind(text: str, kind: str) -> None:
    assert infer_kind(text) == kind


def test_taxonomy_rejects_unknown_names_and_round_trips() -> None:
    with pytest.raises(DatasetError):
        Taxonomy(classes={"car": 1}, groups={"vehicle": ["car", "boat"]})
    with pytest.raises(DatasetError):
        Taxonomy(classes={"car": 1}, relations=(Relation("car", "under", "car"),))
    again = Taxonomy.from_json(TAX.to_json())
    assert again.ids_for("vehicle") == (CAR, TRUCK)
    assert again.relations == TAX.relations
