"""scripts/probe_inference.py: test-time augmentation and input sizes, scored on val."""

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
import probe_inference  # noqa: E402
from test_train import make_tree  # noqa: E402


def test_probe_matches_evaluate_without_augmentation(tmp_path: Path) -> None:
    torch.manual_seed(0)
    weights = save_model(get_tiny_model("lgce_effnet_minilm"), tmp_path / "m.safetensors")
    tree = make_tree(tmp_path / "tree", n_val=6, size=64)
    out = tmp_path / "probe.json"
    size = load_model(weights).input_size
    result = probe_inference.main(
        [str(weights), "--root", str(tree), "--sizes", str(size), "--out", str(out)]
    )
    assert json.loads(out.read_text()) == result and result["n"] == 6
    plain = result["results"][f"{size}/none"]
    # One pass at the model's size and the arg-max threshold is what `rrsis evaluate` scores.
    reference = evaluate(
        load_model(weights), open_dataset(tree, "val"), threshold=0.5, progress=False
    )
    assert plain["curve"]["0.5"][0] == pytest.approx(round(reference["overall"]["mIoU"], 2))
    assert plain["curve"]["0.5"][1] == pytest.approx(round(reference["overall"]["oIoU"], 2))
    with pytest.raises(SystemExit):
        probe_inference.main([str(weights), "--root", str(tree), "--split", "test"])


class _PixelModel(torch.nn.Module):
    """Foreground where red exceeds green, plus an optional left-to-right logit ramp."""

    input_size, mean, std = 64, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def __init__(self, ramp: float) -> None:
        super().__init__()
        self.ramp = ramp

    def tokenize(self, texts):
        return torch.ones(len(texts), 2, dtype=torch.long), torch.ones(len(texts), 2)

    def forward(self, image, word_ids, word_mask):
        ramp = torch.linspace(-self.ramp, self.ramp, image.shape[-1])
        foreground = 10 * (image[:, 0] - image[:, 1]) - 2 + ramp
        return torch.stack([torch.zeros_like(foreground), foreground], 1)


@pytest.mark.parametrize("ramp", [0.0, 8.0])
def test_views_are_mapped_back(tmp_path: Path, monkeypatch, ramp: float) -> None:
    import rrsis.models.io

    monkeypatch.setattr(rrsis.models.io, "load_model", lambda path: _PixelModel(ramp))
    tree = make_tree(tmp_path / "tree", n_val=6, size=64)
    result = probe_inference.main(["unused", "--root", str(tree), "--sizes", "64"])["results"]
    curves = {mode: result[f"64/{mode}"]["curve"] for mode in probe_inference.MODES}
    if ramp == 0:
        # A per-pixel model commutes with flips and rotations: every view, mapped back, agrees.
        assert curves["none"]["0.5"][0] > 90
        assert curves["hflip"] == curves["flip_rot"] == curves["none"]
    else:
        # The ramp pushes the right half to foreground; the flipped view cancels it.
        assert curves["hflip"]["0.5"][0] > curves["none"]["0.5"][0] + 5
