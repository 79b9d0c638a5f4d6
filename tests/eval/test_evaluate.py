"""evaluate(): both protocols, saved predictions, expression shuffling, tiny registry model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrsis.data.refsegrs import RefSegRS
from rrsis.errors import ModelError, OutputExistsError
from rrsis.eval.calibrate import sweep_thresholds
from rrsis.eval.evaluate import LAVT_SIZE, evaluate, shuffled_order
from rrsis.models import registry

from .conftest import HouseModel, house_samples


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_native_protocol_scores_at_mask_resolution(
    oracle_tree: Path, oracle_model, tmp_path
) -> None:
    dataset = RefSegRS(oracle_tree, "test")
    out = tmp_path / "pred"
    result = evaluate(oracle_model, dataset, batch_size=3, save_predictions=out, progress=False)
    assert result["protocol"] == "native" and result["n"] == 4
    assert result["overall"]["mIoU"] == pytest.approx(100.0)
    assert result["overall"]["oIoU"] == pytest.approx(100.0)
    assert result["overall"]["Pr@0.9"] == pytest.approx(100.0)
    breakdown = result["breakdown"]
    assert breakdown["scatter"]["scattered"]["n"] == 1
    assert breakdown["kind"]["attribute"]["n"] == 3
    assert breakdown["size"]["large"]["n"] == 2
    # One 0/255 PNG per sample at the mask's own resolution, equal to the ground truth here:
    # the network alone, and with the rules (none applies here) under composed/.
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["b0.png", "b1.png", "b2.png", "d0.png"]
    assert sorted(p.name for p in (out / "composed").iterdir()) == pngs
    saved = np.asarray(Image.open(out / "b1.png"))
    assert saved.shape == (32, 32) and set(np.unique(saved)) == {0, 255}
    np.testing.assert_array_equal(saved == 255, dataset[1]["mask"])
    # The directory is now non-empty: refused unless overwriting.
    with pytest.raises(OutputExistsError):
        evaluate(oracle_model, dataset, save_predictions=out, progress=False)
    evaluate(oracle_model, dataset, save_predictions=out, progress=False, overwrite=True)


def test_lavt_protocol_scores_at_480(oracle_tree: Path, oracle_model, tmp_path) -> None:
    dataset = RefSegRS(oracle_tree, "test")
    out = tmp_path / "pred"
    result = evaluate(oracle_model, dataset, protocol="lavt", save_predictions=out, progress=False)
    assert result["input_size"] == LAVT_SIZE
    records = {r["id"]: r for r in result["samples"]}
    # Straight edges survive the 15x bilinear upsampling exactly; block corners get rounded
    # (the 0.5 level set of a bilinear corner is a hyperbola), so small blocks lose a little.
    assert records["b2"]["IoU"] == 1.0
    assert 0.95 < records["b0"]["IoU"] < 1.0
    assert result["overall"]["mIoU"] > 97.0
    saved = np.asarray(Image.open(out / "b0.png"))
    assert saved.shape == (LAVT_SIZE, LAVT_SIZE)
    # Ground truth: the 4x4 block of 32 px becomes 60x60 px at 480 (nearest, 15 px per pixel),
    # and the rounded prediction lies inside it, so U is the ground-truth area.
    assert records["b0"]["U"] == 60 * 60
    assert int((saved == 255).sum()) == records["b0"]["I"]
    # Statistics come from the original 32x32 mask: 16 / 1024 = 1.6 % is medium.
    assert records["b0"]["size"] == "medium"


def test_lavt_protocol_resizes_image_and_truth_as_the_reference_loaders(oracle_model) -> None:
    """PIL bilinear for the image and PIL NEAREST for the ground truth, as LAVT / RMSIN load them.

    Thin stripes on a 512 px tile are where the resizers disagree: torch's bilinear does not
    anti-alias and its ``nearest-exact`` picks other source columns than PIL's NEAREST.
    """
    import torch.nn.functional as F

    side = 512
    mask = np.zeros((side, side), dtype=bool)
    mask[:, ::3] = True
    mask[100:140, :] = True
    image = np.where(mask[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
    sample = {"image": image, "mask": mask, "text": "bright stripes", "id": "s", "meta": {}}
    result = evaluate(oracle_model, [sample], protocol="lavt", progress=False, resamples=0)
    record = result["samples"][0]

    def counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
        return int((pred & truth).sum()), int((pred | truth).sum())

    size = (LAVT_SIZE, LAVT_SIZE)
    pil_image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    pil_truth = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST))
    expected = counts(pil_image.mean(axis=2) / 255.0 > 0.5, pil_truth > 127)
    assert (record["I"], record["U"]) == expected
    # The check can fail: torch's resizers give other counts on this tile.
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    torch_image = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0]
    torch_truth = F.interpolate(
        torch.from_numpy(mask)[None, None].float(), size=size, mode="nearest-exact"
    )[0, 0]
    assert counts(torch_image.mean(0).numpy() > 0.5, torch_truth.numpy() > 0.5) != expected


def test_native_resizes_to_input_size(tmp_path: Path, oracle_model, make_tree) -> None:
    # 48 px tiles through a 32 px model: scored and saved at 48x48.
    root = make_tree(tmp_path / "tree48", side=48)
    out = tmp_path / "pred"
    result = evaluate(oracle_model, RefSegRS(root, "test"), save_predictions=out, progress=False)
    assert np.asarray(Image.open(out / "d0.png")).shape == (48, 48)
    records = {r["id"]: r for r in result["samples"]}
    # Counted at 48 px: the 4x4 block has 16 ground-truth pixels (a 32 px score would give 7).
    assert records["b0"]["I"] <= 16 < records["b0"]["U"] < 48 * 48
    # Down- then up-sampling is lossy for small blocks but large regions survive.
    assert records["b2"]["IoU"] > 0.95 and records["d0"]["IoU"] > 0.95


def test_shuffled_expressions_break_a_text_reading_model(oracle_tree: Path, oracle_model) -> None:
    dataset = RefSegRS(oracle_tree, "test")
    normal = evaluate(oracle_model, dataset, progress=False)
    shuffled = evaluate(oracle_model, dataset, shuffle_expressions=True, progress=False)
    assert shuffled["shuffle_expressions"] is True
    # The dark sample necessarily gets a "bright" expression (no fixed points): IoU 0 there.
    records = {r["id"]: r for r in shuffled["samples"]}
    assert records["d0"]["IoU"] == 0.0
    assert shuffled["overall"]["mIoU"] < normal["overall"]["mIoU"]
    # Fixed seed: the same shuffle every time.
    again = evaluate(oracle_model, dataset, shuffle_expressions=True, progress=False)
    assert again["overall"] == shuffled["overall"]


def test_shuffled_order_is_a_derangement() -> None:
    for n in (2, 3, 10, 101):
        order = shuffled_order(n)
        assert sorted(order.tolist()) == list(range(n))
        assert not np.any(order == np.arange(n))
    np.testing.assert_array_equal(shuffled_order(10), shuffled_order(10))


def test_batch_size_does_not_change_results(oracle_tree: Path, oracle_model) -> None:
    dataset = RefSegRS(oracle_tree, "test")
    one = evaluate(oracle_model, dataset, batch_size=1, shuffle_expressions=True, progress=False)
    four = evaluate(oracle_model, dataset, batch_size=4, shuffle_expressions=True, progress=False)
    assert one["overall"] == four["overall"]
    assert one["breakdown"] == four["breakdown"]


def test_bad_arguments(oracle_tree: Path, oracle_model) -> None:
    dataset = RefSegRS(oracle_tree, "test")
    with pytest.raises(ValueError, match="protocol"):
        evaluate(oracle_model, dataset, protocol="coco", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(oracle_model, dataset, batch_size=0, progress=False)


def test_tiny_registry_model_both_protocols(oracle_tree: Path) -> None:
    # The smallest tiny model of the paper's family; any registered model would do.
    model = registry.get_tiny_model("lgce_swin_base")
    dataset = RefSegRS(oracle_tree, "test")
    for protocol in ("native", "lavt"):
        result = evaluate(model, dataset, protocol=protocol, batch_size=2, progress=False)
        assert result["n"] == 4
        for value in result["overall"].values():
            assert 0.0 <= value <= 100.0 or value == 4


def test_lavt_protocol_checks_size_divisor(oracle_tree: Path, oracle_model) -> None:
    from rrsis.errors import ModelError

    oracle_model.size_divisor = 64  # 480 is not a multiple of 64
    with pytest.raises(ModelError, match="multiple of 64, got 480"):
        evaluate(oracle_model, RefSegRS(oracle_tree, "test"), protocol="lavt", progress=False)


def test_threshold_default_explicit_and_sweep(oracle_tree: Path, oracle_model) -> None:
    dataset = RefSegRS(oracle_tree, "test")
    # The oracle gives unwanted pixels logits (0, 0), i.e. probability exactly 0.5: the
    # arg-max (default) rejects them, any cut below 0.5 takes them in.
    default = evaluate(oracle_model, dataset, progress=False)
    assert default["threshold"] == 0.5 and default["overall"]["mIoU"] == pytest.approx(100.0)
    low = evaluate(oracle_model, dataset, threshold=0.4, progress=False)
    high = evaluate(oracle_model, dataset, threshold=0.6, progress=False)
    assert low["overall"]["mIoU"] < 90.0 and high["overall"] == default["overall"]
    # A model that carries a recommended threshold is scored at it unless told otherwise.
    oracle_model.recommended_threshold = 0.4
    assert evaluate(oracle_model, dataset, progress=False)["overall"] == low["overall"]
    assert evaluate(oracle_model, dataset, threshold=0.5, progress=False)["threshold"] == 0.5
    # One pass of the sweep gives what evaluate gives at each threshold.
    sweep = sweep_thresholds(oracle_model, dataset, [0.4, 0.6])
    for t, result in ((0.4, low), (0.6, high)):
        assert sweep[t]["mIoU"] == pytest.approx(result["overall"]["mIoU"])
        assert sweep[t]["oIoU"] == pytest.approx(result["overall"]["oIoU"])
        assert sweep[t]["Pr@0.5"] == pytest.approx(result["overall"]["Pr@0.5"])
    # The Segmenter's rule: a probability in [0, 1].
    for wrong in (1.5, -0.1):
        with pytest.raises(ModelError, match="threshold"):
            evaluate(oracle_model, dataset, threshold=wrong, progress=False)


def test_network_alone_and_composed_in_one_run(tmp_path: Path) -> None:
    model = HouseModel()
    out = tmp_path / "pred"
    both = evaluate(
        model, house_samples(), progress=False, resamples=0, threshold=0.5, save_predictions=out
    )
    texts = list(model.texts)
    alone = evaluate(model, house_samples(), progress=False, resamples=0, compose="none")
    # The network-alone scores are exactly those of a run without rules.
    assert alone["composed"] is None
    for key in ("n", "overall", "breakdown", "samples"):
        assert both[key] == alone[key], key
    composed = both["composed"]
    assert composed["rules"] == ["attribute", "position", "relation"]
    assert composed["decided_by"] == {"network": 1, "attribute": 1, "position": 1, "relation": 1}
    decided = [s["decided_by"] for s in composed["samples"]]
    assert decided == ["position", "relation", "attribute", "network"]
    assert composed["overall"]["mIoU"] == pytest.approx(100.0)
    assert both["overall"]["mIoU"] < 50.0
    assert composed["breakdown"]["kind"].keys() == both["breakdown"]["kind"].keys()
    # Only the pairs a rule decided are forwarded again with their whole expression; the
    # one no rule reads is forwarded once.
    assert texts.count("the road") == 1
    assert all(texts.count(s["text"]) == 1 for s in house_samples()[:3])
    # Saved masks: the network alone at the top, the composed ones under composed/.
    truth = house_samples()[0]["mask"]
    composed_png = np.asarray(Image.open(out / "composed" / "h0.png")) == 255
    np.testing.assert_array_equal(composed_png, truth)
    assert not np.array_equal(np.asarray(Image.open(out / "h0.png")) == 255, truth)


def test_compose_selects_the_rules_of_the_composed_scores() -> None:
    only = evaluate(HouseModel(), house_samples(), progress=False, resamples=0, compose="position")
    assert only["composed"]["rules"] == ["position"]
    decided = [s["decided_by"] for s in only["composed"]["samples"]]
    assert decided == ["position", "network", "network", "network"]
    ious = [s["IoU"] for s in only["composed"]["samples"]]
    assert ious[0] == pytest.approx(1.0) and max(ious[1:3]) < 0.5
    with pytest.raises(ValueError, match="unknown composition rule"):
        evaluate(HouseModel(), house_samples(), progress=False, compose="colour")


def test_batches_of_mixed_image_sizes(oracle_tree: Path, oracle_model, make_tree, tmp_path):
    # Two image sizes, interleaved: a batch holds one size; results as one sample at a time.
    small = RefSegRS(oracle_tree, "test")
    large = RefSegRS(make_tree(tmp_path / "tree48", side=48), "test")
    dataset = [dict(s, id=f"{s['id']}-{i}") for i in range(4) for s in (small[i], large[i])]
    batched = evaluate(oracle_model, dataset, batch_size=4, progress=False, resamples=0)
    single = evaluate(oracle_model, dataset, batch_size=1, progress=False, resamples=0)
    assert batched["n"] == 8 and batched["samples"] == single["samples"]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_batch_size_bounds_every_forward_pass(batch_size: int, monkeypatch) -> None:
    """``batch_size`` caps the rows of each forward, the rules' extra passes included."""
    model = HouseModel()
    rows: list[int] = []
    forward = model.forward
    monkeypatch.setattr(
        model, "forward", lambda image, *a: rows.append(len(image)) or forward(image, *a)
    )
    evaluate(model, house_samples() * 3, batch_size=batch_size, progress=False, resamples=0)
    assert rows and max(rows) == batch_size
