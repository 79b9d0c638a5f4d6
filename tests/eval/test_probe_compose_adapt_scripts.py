"""scripts/probe_compose.py, probe_adapt.py, probe_semantic_head.py: session 11's val-only probes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from rrsis.eval.evaluate import evaluate, open_dataset
from rrsis.models.io import load_model, save_model
from rrsis.models.registry import get_tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
import probe_adapt  # noqa: E402
import probe_compose  # noqa: E402
import probe_semantic_head  # noqa: E402
from test_train import make_tree  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    torch.manual_seed(0)
    weights = save_model(get_tiny_model("lgce_effnet_minilm"), root / "m.safetensors")
    return weights, make_tree(root / "tree", n_val=6, size=64)


def test_compose_probe_matches_evaluate(tiny, tmp_path: Path) -> None:
    weights, tree = tiny
    out = tmp_path / "compose.json"
    result = probe_compose.main([str(weights), "--root", str(tree), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    # "the red roof" is a colour attribute: every variant with the attribute rule parses it.
    assert result["n_parsed"] == {"none": 0, "position": 0, "relation": 0, "attribute": 6, "all": 6}
    for variant, rules in (("none", "none"), ("all", "all")):
        reference = evaluate(
            load_model(weights),
            open_dataset(tree, "val"),
            threshold=0.5,
            progress=False,
            resamples=0,
            compose=rules,
        )
        row = result["table"][variant]["0.5"]
        assert row["mIoU"] == pytest.approx(reference["overall"]["mIoU"], abs=1e-6)
        assert row["oIoU"] == pytest.approx(reference["overall"]["oIoU"], abs=1e-6)
    with pytest.raises(SystemExit):
        probe_compose.main([str(weights), "--root", str(tree), "--split", "test"])


def test_adapt_batchnorm_changes_only_statistics_and_restores_them(tiny) -> None:
    weights, tree = tiny
    model = load_model(weights).eval()
    dataset = open_dataset(tree, "val")
    layers = probe_adapt.batchnorm_layers(model, "vision")
    assert layers and all(name.startswith("vision.") for name in layers)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = list(probe_adapt.adaptation_batches(model, dataset, model.input_size, 3))
    saved = probe_adapt.adapt_batchnorm(model, batches, scope="vision")
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(
        k.rsplit(".", 1)[0] in layers
        and k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")
        for k in changed
    )
    assert not model.training
    probe_adapt.restore_batchnorm(model, saved)
    restored = model.state_dict()
    assert all(
        torch.equal(before[k], restored[k]) for k in before if not k.endswith("num_batches_tracked")
    )
    # blend 0 keeps the trained statistics.
    probe_adapt.adapt_batchnorm(model, batches, scope="all", blend=0.0)
    assert all(
        torch.allclose(before[k], model.state_dict()[k])
        for k in before
        if k.endswith(("running_mean", "running_var"))
    )
    with pytest.raises(ValueError):
        probe_adapt.adapt_batchnorm(model, [], scope="all")


def test_semantic_head_probe_scores_category_expressions(tmp_path: Path) -> None:
    import numpy as np

    from rrsis.data.refsegrs import RefSegRSWriter
    from rrsis.engine.auxiliary import SemanticAuxiliary

    torch.manual_seed(0)
    model = get_tiny_model("lgce_effnet_minilm")
    aux = SemanticAuxiliary(model, model.vision.out_channels, 5)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state |= {f"semantic_aux.{k}": v for k, v in aux.state_dict().items()}
    torch.save({"state_dict": state}, run / "checkpoints" / "last.ckpt")
    hparams = {"model_config": model.config, "train": {"semantic_classes": 5}}
    (run / "hparams.json").write_text(json.dumps(hparams))
    rng = np.random.default_rng(0)
    with RefSegRSWriter(tmp_path / "tree") as writer:
        for i, (kind, category) in enumerate(
            [("category", "water"), ("category", "building"), ("position", "water")]
        ):
            writer.add(
                "val",
                {
                    "image": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
                    "mask": rng.random((64, 64)) > 0.5,
                    "text": category,
                    "id": f"v{i}",
                    "meta": {"kind": kind, "category": category},
                },
            )
    result = probe_semantic_head.main([str(run), "--root", str(tmp_path / "tree")])
    # Only the two category expressions are scored, by both heads.
    assert result["n_category_expressions"] == 2
    assert set(result["table"]["semantic_argmax"]["by_category"]) == {"water", "building"}
    assert 0.0 <= result["table"]["referring"]["mIoU"] <= 100.0
    with pytest.raises(SystemExit):
        probe_semantic_head.main([str(run), "--root", str(tmp_path / "tree"), "--split", "test"])


def test_position_rule_variants_on_known_objects() -> None:
    import numpy as np
    import probe_position_rule

    side = 64
    boxes = {  # the region is rows 0-31, columns 0-31
        "small": (slice(4, 12), slice(4, 8)),  # inside it
        "tall": (slice(2, 44), slice(10, 14)),  # centroid inside, reaches below row 32
        "band": (slice(24, 40), slice(30, 64)),  # big (> 10 %), centroid outside, enters it
    }
    subject = np.zeros((side, side), np.float32)
    masks = {}
    for name, (rows, cols) in boxes.items():
        subject[rows, cols] = 0.9
        masks[name] = np.zeros((side, side), bool)
        masks[name][rows, cols] = True
    region = np.zeros((side, side), bool)
    region[:32, :32] = True
    full = np.full((side, side), 0.3, np.float32)
    got = probe_position_rule.position_variants(subject, full, "upper left", 0.5, 12, 0.10)
    whole = masks["small"] | masks["tall"]
    assert np.array_equal(got["network"], full)
    assert np.array_equal(got["centroid"] > 0.5, whole)
    assert np.array_equal(got["pixel"] > 0.5, (whole | masks["band"]) & region)
    assert np.array_equal(got["union"] > 0.5, whole | (masks["band"] & region))
    assert np.array_equal(got["big_pixel"] > 0.5, whole | (masks["band"] & region))
    # Nothing of the class in the region: every rule falls back to the whole expression.
    elsewhere = np.zeros((side, side), np.float32)
    elsewhere[40:50, 40:50] = 0.9
    got = probe_position_rule.position_variants(elsewhere, full, "upper left", 0.5, 12, 0.10)
    assert all(np.array_equal(p, full) for p in got.values())
    with pytest.raises(SystemExit):
        probe_position_rule.main(["m.safetensors", "--split", "test"])


def test_check_fast_inference_compares_the_paths(tiny, tmp_path: Path) -> None:
    import check_fast_inference

    weights, tree = tiny
    out = tmp_path / "fast.json"
    argv = [*("--model", str(weights), "--data", str(tree)), "--limit", "3", "--out", str(out)]
    assert check_fast_inference.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 3 and result["fused"]["batch_norms"] > 0
    fused, bf16 = result["paths"]["fused"], result["paths"]["bf16"]
    assert fused["pixel_agreement_pct"] > 99.9 and fused["max_prob_diff"] < 1e-3
    assert fused["mIoU"] == pytest.approx(result["paths"]["plain"]["mIoU"], abs=0.05)
    assert 0 < bf16["max_prob_diff"]  # bfloat16 really ran
