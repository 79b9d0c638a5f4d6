"""scripts/probe_tiling.py and probe_windows_val.py: session 13's val-only window probes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from rrsis.models.io import save_model
from rrsis.models.registry import get_tiny_model

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests" / "engine"))
import probe_tiling  # noqa: E402
import probe_windows_val  # noqa: E402
from test_train import make_tree  # noqa: E402

DUBAI = REPO.parent / "shared" / "data" / "dubai-aerial"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiling")
    return save_model(get_tiny_model("lgce_effnet_minilm"), root / "m.safetensors")


def test_windows_probe_one_window_is_the_whole_image(weights, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree", n_val=5, size=64)
    out = tmp_path / "w.json"
    assert probe_windows_val.main([str(weights), str(tree), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 5 and result["image_size"] == [64, 64]
    # Images smaller than a window are one window: both modes see exactly the same pixels.
    assert result["overall"]["always"] == result["overall"]["never"]
    with pytest.raises(SystemExit):
        probe_windows_val.main([str(weights), str(tree), "--split", "test"])


@pytest.mark.skipif(not DUBAI.is_dir(), reason=f"needs the Dubai tiles at {DUBAI}")
def test_tiling_probe_windows_match_predict_scene(weights, tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    assert probe_tiling.main([str(weights), "--src", str(DUBAI), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["tile"] == 5 and result["pairs"] > 9
    # The Segmenter's windows and predict_scene cut the same windows (JPEG decoding aside).
    assert result["mean_iou"]["windows"] == pytest.approx(result["mean_iou"]["tiled"], abs=1.0)
    assert {row["class"] for row in result["rows"]} <= set(result["by_class"])
    with pytest.raises(SystemExit):
        probe_tiling.main([str(weights), "--src", str(DUBAI), "--tile", "6"])
