"""Composition rules (``rrsis.infer.compose``) on hand-made scenes with known objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from rrsis.errors import ModelError
from rrsis.eval.evaluate import evaluate
from rrsis.infer.compose import (
    RULES,
    Composition,
    compose_probability,
    parse_expression,
    parse_rules,
)
from rrsis.infer.predictor import Segmenter

SIDE = 64


class ClassModel(nn.Module):
    """Segments "house" pixels (red channel high) or "road" pixels (green channel high).

    It reads only the class word, never positions, relations or sizes: exactly the network the
    composition rules are meant to help.
    """

    input_size = SIDE
    size_divisor = 32
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        self.texts += list(texts)
        ids = torch.tensor([[1 if t.split()[-1] == "road" else 2, 0, 0, 0] for t in texts])
        return ids, (ids > 0).long()

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        wants_road = (word_ids[:, 0] == 1).view(-1, 1, 1, 1)
        channel = torch.where(wants_road, image[:, 1:2], image[:, 0:1])
        fg = (channel[:, 0] > 0.5).float() * 8.0 - 4.0
        return torch.stack([torch.zeros_like(fg), fg], dim=1)


def scene() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Houses (red): a big one upper left, small ones upper right and lower right, one lower
    left next to the road (green column at x 28-31). Returns the image and the true masks."""
    image = np.zeros((SIDE, SIDE, 3), np.uint8)
    houses = {
        "big_ul": (slice(4, 20), slice(4, 20)),  # 256 px, centroid (11.5, 11.5)
        "small_ur": (slice(6, 10), slice(50, 54)),  # 16 px
        "small_lr": (slice(50, 54), slice(50, 54)),  # 16 px
        "by_road": (slice(40, 48), slice(20, 28)),  # 64 px, 1 px from the road
    }
    masks = {}
    for name, (rows, cols) in houses.items():
        image[rows, cols, 0] = 255
        masks[name] = np.zeros((SIDE, SIDE), bool)
        masks[name][rows, cols] = True
    image[:, 28:32, 1] = 255
    return image, masks


def test_parse_expression_reads_the_builders_templates():
    assert parse_expression("building in the upper left") == Composition(
        "position", "building", "upper left", expression="building in the upper left"
    )
    assert parse_expression("water on the left").value == "left"
    relation = parse_expression("building  along the road")
    assert (relation.rule, relation.subject, relation.value, relation.object) == (
        "relation",
        "building",
        "along",
        "road",
    )
    assert parse_expression("vehicle next to the road").value == "beside"
    assert parse_expression("vehicle in the parking area").value == "in"
    large = parse_expression("large building")
    assert (large.rule, large.subject, large.value) == ("attribute", "building", "large")
    assert parse_expression("grey car").value == "gray"
    assert parse_expression("building") is None
    assert parse_expression("water body") is None


def test_parse_expression_reads_real_wording_or_steps_aside():
    relation = parse_expression("A ground track field is in the gray stadium")
    assert (relation.rule, relation.subject, relation.value, relation.object) == (
        "relation",
        "A ground track field",
        "in",
        "gray stadium",
    )
    attribute = parse_expression("The large gray dam")
    assert (attribute.rule, attribute.subject, attribute.value) == (
        "attribute",
        "The gray dam",
        "large",
    )
    assert parse_expression("A ship on the upper left corner of the image").subject == "A ship"
    # Not sure: the network reads the whole expression.
    for text in (
        "The blue and gray windmill",
        "The bridge is on the upper left of the large green golf field",
        "The harbor is on the left of the ship on the right",
        "A vehicle is similar in size to the vehicle on the left",
        "The bridge is below the large dam",
        "The huge airport",
    ):
        assert parse_expression(text) is None, text


def test_parse_expression_honours_the_rule_set():
    # A position phrase is never an "in" relation, even with the position rule off.
    assert parse_expression("building in the upper left", {"relation"}) is None
    assert parse_expression("building along the road", {"position", "attribute"}) is None
    assert parse_expression("large building", {"position", "relation"}) is None
    assert parse_rules("all") == frozenset(RULES) == parse_rules(True)
    assert parse_rules("none") == frozenset() == parse_rules(None)
    assert parse_rules("position, relation") == {"position", "relation"}
    with pytest.raises(ValueError, match="unknown composition rule"):
        parse_rules("position,colour")


def _probability_of(image: np.ndarray):
    """``text -> probabilities`` of :class:`ClassModel` on ``image`` (0.9 / 0.1)."""

    def probability(text: str) -> np.ndarray:
        channel = 1 if text.split()[-1] == "road" else 0
        return np.where(image[..., channel] > 127, 0.9, 0.1).astype(np.float32)

    return probability


def test_position_keeps_the_objects_whose_centroid_is_in_the_region():
    image, truth = scene()
    prob = compose_probability(
        parse_expression("house in the upper left"), _probability_of(image), 0.5
    )
    assert np.array_equal(prob > 0.5, truth["big_ul"])
    right = compose_probability(parse_expression("house on the right"), _probability_of(image), 0.5)
    assert np.array_equal(right > 0.5, truth["small_ur"] | truth["small_lr"])
    # Kept objects keep the network's probability.
    assert np.allclose(prob[truth["big_ul"]], 0.9)


def test_relation_and_attribute_rules():
    image, truth = scene()
    probability = _probability_of(image)
    along = compose_probability(parse_expression("house along the road"), probability, 0.5)
    assert np.array_equal(along > 0.5, truth["by_road"])
    large = compose_probability(parse_expression("large house"), probability, 0.5)
    assert np.array_equal(large > 0.5, truth["big_ul"] | truth["by_road"])
    small = compose_probability(parse_expression("small house"), probability, 0.5)
    assert np.array_equal(small > 0.5, truth["small_ur"] | truth["small_lr"])
    red = compose_probability(parse_expression("red house"), probability, 0.5, image=image)
    assert (red > 0.5).sum() == sum(m.sum() for m in truth.values())


def test_an_undecidable_rule_falls_back_to_the_whole_expression():
    image, _ = scene()
    probability = _probability_of(image)
    fallback = np.full((SIDE, SIDE), 0.3, np.float32)
    # No house predicted at all, so there is no object to test: the network's answer stays.
    empty = np.zeros_like(image)
    got = compose_probability(
        parse_expression("house in the center"), _probability_of(empty), 0.5, fallback=fallback
    )
    assert np.array_equal(got, fallback)
    # Objects exist but none lies in the region: also the network's answer.
    got = compose_probability(
        parse_expression("house in the center"), probability, 0.5, fallback=fallback
    )
    assert np.array_equal(got, fallback)
    # A relation to a class that is not predicted cannot be tested.
    got = compose_probability(
        parse_expression("house near the lake"), probability, 0.5, fallback=fallback
    )
    assert np.array_equal(got, fallback)
    # Without a fallback given, the whole expression is asked for.
    asked = []

    def recording(text):
        asked.append(text)
        return probability(text)

    compose_probability(parse_expression("house in the center"), recording, 0.5)
    assert asked == ["house", "house in the center"]


def test_segmenter_composes_by_default_and_not_when_told():
    image, truth = scene()
    model = ClassModel()
    composed = Segmenter(model)
    alone = Segmenter(model, compose="none")
    everything = np.logical_or.reduce(list(truth.values()))
    assert np.array_equal(alone(image, "house in the upper left"), everything)
    masks = composed(image, ["house in the upper left", "house along the road", "house"])
    assert np.array_equal(masks[0], truth["big_ul"])
    assert np.array_equal(masks[1], truth["by_road"])
    assert np.array_equal(masks[2], everything)
    # The network read each text it needed once, in one batch: "house" and "road".
    model.texts.clear()
    composed(image, ["house in the upper left", "house along the road", "house"])
    assert model.texts == ["house", "road"]
    probs = composed(image, "house on the right", return_probs=True)
    assert probs.dtype == np.float32 and probs[truth["big_ul"]].max() == 0.0
    with pytest.raises(ModelError, match="unknown composition rule"):
        Segmenter(model, compose="colour")


def test_evaluate_scores_the_composed_masks():
    image, truth = scene()
    dataset = [
        {"image": image, "mask": truth["big_ul"], "text": "house in the upper left", "id": "a"},
        {"image": image, "mask": truth["by_road"], "text": "house along the road", "id": "b"},
        {
            "image": image,
            "mask": truth["small_ur"] | truth["small_lr"],
            "text": "small house",
            "id": "c",
        },
    ]
    model = ClassModel()
    alone = evaluate(model, dataset, progress=False, resamples=0, threshold=0.5, compose="none")
    both = evaluate(model, dataset, progress=False, resamples=0, threshold=0.5, compose="all")
    assert both["composed"]["rules"] == sorted(RULES)
    assert alone["composed"] is None
    assert both["composed"]["overall"]["mIoU"] == pytest.approx(100.0)
    assert alone["overall"]["mIoU"] < 50.0
    # The network-alone scores of a composed run are those of a run without rules.
    assert both["overall"] == alone["overall"]
    only_position = evaluate(
        model, dataset, progress=False, resamples=0, threshold=0.5, compose="position"
    )
    ious = [s["IoU"] for s in only_position["composed"]["samples"]]
    assert ious[0] == pytest.approx(1.0) and max(ious[1:]) < 0.5


def test_predict_scene_composes_inside_each_window(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from rrsis.infer.scene import SceneConfig, predict_scene

    image, truth = scene()
    no_road = image.copy()
    no_road[..., 1] = 0
    # Two windows side by side: the hand-made scene, then its houses without the road.
    raster = np.concatenate([image, no_road], axis=1)
    src = tmp_path / "scene.tif"
    profile = {"driver": "GTiff", "height": SIDE, "width": 2 * SIDE, "count": 3, "dtype": "uint8"}
    profile |= {"crs": "EPSG:32640", "transform": from_origin(400000.0, 2700000.0, 0.5, 0.5)}
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(np.moveaxis(raster, -1, 0))
    houses = np.logical_or.reduce(list(truth.values()))

    def run(expressions, **kwargs) -> np.ndarray:
        out = tmp_path / "mask.tif"
        seg = Segmenter(ClassModel(), threshold=0.5, compose=kwargs.pop("rules", "all"))
        config = SceneConfig(tile=SIDE, overlap=0, progress=False, overwrite=True, **kwargs)
        predict_scene(src, expressions, out, seg, config)
        with rasterio.open(out) as ds:
            return ds.read() > 0

    expressions = ["house along the road", "large house", "house"]
    along, large, every = run(expressions)
    # Left window: the rules on its own objects, as Segmenter reads a 64 px image.
    assert np.array_equal(along[:, :SIDE], truth["by_road"])
    assert np.array_equal(large[:, :SIDE], truth["big_ul"] | truth["by_road"])
    assert np.array_equal(every[:, :SIDE], houses)
    # Right window: no road, so the relation cannot be tested there and the network reads
    # the whole expression (this model then segments road pixels: none).
    assert not along[:, SIDE:].any()
    assert np.array_equal(large[:, SIDE:], truth["big_ul"] | truth["by_road"])
    # compose="none" (or Segmenter(compose="none")): the network alone reads every expression.
    for kwargs in ({"compose": "none"}, {"rules": "none"}):
        alone = run(expressions, **kwargs)
        assert np.array_equal(alone[1], np.concatenate([houses, houses], axis=1))
    # Positions: the scene's upper left by pixels by default, each window's centroids if asked.
    (scene_ul,) = run(["house in the upper left"])
    expected = np.zeros_like(scene_ul)
    expected[: SIDE // 2, :SIDE] = houses[: SIDE // 2]
    assert np.array_equal(scene_ul, expected)
    (window_ul,) = run(["house in the upper left"], positions="window")
    assert np.array_equal(window_ul, np.concatenate([truth["big_ul"]] * 2, axis=1))


def test_compose_tiles_ignores_invalid_pixels():
    image, truth = scene()
    seg = Segmenter(ClassModel(), threshold=0.5)
    valid = np.ones((1, SIDE, SIDE), bool)
    got = seg.compose_tiles(image[None], ["house along the road", "house"], valid=valid)
    assert np.array_equal(got[0, 0] > 0.5, truth["by_road"])
    valid[0, :, 24:] = False  # the road (and what lies right of it) is nodata
    got = seg.compose_tiles(image[None], ["house along the road", "house"], valid=valid)
    # No road left to be along: the whole expression, which this model reads as "road": none.
    assert not (got[0, 0] > 0.5).any()
    assert np.array_equal(got[1, 0] > 0.5, (truth["big_ul"] | truth["by_road"]) & valid[0])
