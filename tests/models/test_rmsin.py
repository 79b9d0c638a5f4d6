"""RMSIN: converted official checkpoints give the official code's logits; the rotation is right.

The fixture (``tests/data/rmsin_official/make.py``) is a tiny random checkpoint built and run by
the official RMSIN modules, so these tests compare our Swin wiring, PWAMs, gates, visual
branches, CIM, rotated decoder and BERT with RMSIN's own code, not with a re-reading of it.
"""

from __future__ import annotations

import argparse
import copy
import math
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rrsis.cli import main
from rrsis.engine.presets import get_preset
from rrsis.errors import ModelError
from rrsis.models.convert_rmsin import (
    convert_rmsin_checkpoint,
    read_rmsin_checkpoint,
    rmsin_kwargs_from_state,
)
from rrsis.models.io import load_model
from rrsis.models.registry import get_tiny_model
from rrsis.models.rotated_conv import rotate_kernels, rotation_matrices

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "rmsin_official"
CHECKPOINT = FIXTURE / "rmsin_tiny.pth"
TEXT_HEADS = 2  # the fixture's BERT; width 8 / 64 would give 1
# The reference is the official code's float64 output stored in float32; ours in float64 must
# match it to that rounding. In float32, rounding differences reach ~1e-5: batch norms whose
# (calibrated) inputs vary little amplify them. The smallest perturbation below moves 5e-3.
FP64_TOLERANCE = {"atol": 1e-7, "rtol": 0.0}
TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "reference.safetensors"))


@pytest.fixture(scope="module")
def converted():
    return convert_rmsin_checkpoint(CHECKPOINT, text_heads=TEXT_HEADS)


def _logits(model, reference, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The model's logits at the stored positions (every 4th row and column of 480 x 480)."""
    small = reference["image"].to(dtype)  # (B, 3, 96, 96), enlarged as make.py does
    image = small.repeat_interleave(5, -1).repeat_interleave(5, -2)
    with torch.no_grad():
        logits = model.to(dtype)(image, reference["word_ids"], reference["word_mask"])
    model.float()
    return logits[:, :, ::4, ::4].to(reference["logits"].dtype)


def test_converted_checkpoint_gives_the_official_logits(converted, reference) -> None:
    kwargs = converted.config["kwargs"]
    assert converted.config["name"] == "rmsin_swin_base"
    assert kwargs["embed_dim"] == 8 and kwargs["depths"] == [2, 2, 2, 2]
    assert kwargs["num_heads"] == [1, 2, 4, 8] and kwargs["window_size"] == 4
    assert kwargs["decoder_channels"] == 32 and kwargs["text_hidden"] == 8
    expected = reference["logits"]
    float64 = _logits(converted, reference, torch.float64)
    torch.testing.assert_close(float64, expected, **FP64_TOLERANCE)
    torch.testing.assert_close(_logits(converted, reference), expected, **TOLERANCE)


# One weight of each of RMSIN's own parts, and of the parts it shares with LAVT.
PERTURBED = [
    "visual_branches.1.second.kxk.2.weight",  # intra-scale "various receptive" branch
    "visual_gates.2.net.0.weight",  # its gate
    "cim.block.0.csa1.m.attention.proj.weight",  # cross-scale attention
    "cim.block.0.intra_ff.m.ff3.m.conv2.weight",  # per-scale feed-forward
    "cim.fusion.0.global_act.weight",  # scale-aware gate
    "decoder.levels.0.3.routing.fc_theta.weight",  # rotation angle
    "decoder.levels.2.3.weight",  # rotated kernel
    "fusions.0.query.0.weight",  # PWAM
    "vision.layers.3.blocks.1.attn.relative_position_bias_table",  # shifted, padded window
]


@pytest.mark.parametrize("name", PERTURBED)
def test_the_comparison_fails_when_one_module_is_perturbed(converted, reference, name) -> None:
    model = copy.deepcopy(converted)
    weight = model.state_dict()[name]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight += 0.05 * torch.randn(weight.shape, generator=generator)
    difference = (_logits(model, reference) - reference["logits"]).abs().max()
    assert difference > 1e-3, f"perturbing {name} moved the logits by only {difference:.2e}"


def test_rotation_by_quarter_turns_and_zero() -> None:
    """The interpolated rotation is exact at 0 and +-90 degrees (a permutation of the taps)."""
    kernel = torch.arange(9.0).view(1, 1, 1, 3, 3)
    ones = torch.ones(1, 1)
    same = rotate_kernels(kernel, ones, torch.zeros(1, 1))
    torch.testing.assert_close(same, kernel[0])
    for angle in (math.pi / 2, -math.pi / 2):
        rotated = rotate_kernels(kernel, ones, torch.full((1, 1), angle))[0, 0]
        expected = torch.rot90(kernel[0, 0, 0], k=1 if angle > 0 else -1)
        torch.testing.assert_close(rotated, expected, atol=1e-6, rtol=0)
    # Every rotation keeps the sum of the taps (rows of the 9x9 map sum to one).
    sums = rotation_matrices(torch.linspace(-0.7, 0.7, 15).view(15, 1)).sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_checkpoint_layouts_and_refusals(tmp_path, reference) -> None:
    with pytest.raises(pickle.UnpicklingError):  # a plain weights-only load refuses the options
        torch.load(CHECKPOINT, weights_only=True)
    state, bert = read_rmsin_checkpoint(CHECKPOINT)
    # train.py --model lavt: BERT beside the model, both saved through DDP ("module.").
    path = tmp_path / "lavt_layout.pth"
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in state.items()},
            "bert_model": {f"module.{k}": v for k, v in bert.items()},
            "args": argparse.Namespace(mha=""),
        },
        path,
    )
    model = convert_rmsin_checkpoint(path, text_heads=TEXT_HEADS)
    torch.testing.assert_close(_logits(model, reference), reference["logits"], **TOLERANCE)
    evil = tmp_path / "evil.pth"
    torch.save({"model": state, "args": _Payload()}, evil)
    with pytest.raises(ModelError, match="refused"):
        read_rmsin_checkpoint(evil)
    lavt = tmp_path / "lavt.pth"
    plain = {k: v for k, v in state.items() if ".cim." not in k}
    torch.save({"model": plain, "bert_model": bert}, lavt)
    with pytest.raises(ModelError, match="convert-lavt"):
        read_rmsin_checkpoint(lavt)
    broken = tmp_path / "broken.pth"
    torch.save(
        {"model": {**state, "classifier.extra.weight": torch.zeros(1)}, "bert_model": bert}, broken
    )
    with pytest.raises(ModelError, match="1 not understood"):
        convert_rmsin_checkpoint(broken, text_heads=TEXT_HEADS)


def test_cli_writes_a_file_every_command_reads(tmp_path, reference, capsys) -> None:
    out = tmp_path / "rmsin.safetensors"
    argv = ["models", "convert-rmsin", str(CHECKPOINT), "-o", str(out), "--text-heads", "2"]
    assert main(argv) == 0
    assert "rmsin_swin_base" in capsys.readouterr().out
    model = load_model(out)
    assert model.input_size == 480
    torch.testing.assert_close(_logits(model, reference), reference["logits"], **TOLERANCE)
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err


def test_other_input_sizes_run() -> None:
    """The CIM pools to a fixed grid, so sizes other than the design size work too."""
    model = get_tiny_model("rmsin_swin_base").eval()
    assert model.cim.grid == 2 and converted_grid() == 15
    word_ids, word_mask = model.tokenize(["the gray small windmill"])
    with torch.no_grad():
        for size in (64, 96, 160):
            assert model(torch.randn(1, 3, size, size), word_ids, word_mask).shape[-1] == size
    with pytest.raises(ModelError, match="cim_grid"):
        get_tiny_model("rmsin_swin_base", cim_grid=0)


def converted_grid() -> int:
    state, bert = read_rmsin_checkpoint(CHECKPOINT)
    return rmsin_kwargs_from_state(state, bert, TEXT_HEADS)["cim_grid"]


class _Payload:
    def __reduce__(self):
        return (print, ("pickle executed",))


def test_rmsin_preset_is_the_official_recipe() -> None:
    recipe = get_preset("rmsin")
    assert recipe.model_name == "rmsin_swin_base"
    assert (recipe.lr, recipe.weight_decay, recipe.poly_power, recipe.epochs) == (
        3e-5,
        1e-2,
        0.9,
        40,
    )
    assert (recipe.batch_size, recipe.input_size, recipe.text_train_layers) == (8, 480, 10)
    assert recipe.class_weights == (0.9, 1.1)
    # 0.9 CE + 0.1 Dice summed over 2 samples per GPU = CE + 0.22 Dice per sample.
    assert recipe.dice_weight == pytest.approx(0.2222, abs=1e-4)
    assert get_preset("rmsin", "rmsin_effnet_minilm").model_name == "rmsin_effnet_minilm"


@pytest.mark.parametrize("name", ["rmsin_swin_base", "rmsin_effnet_minilm"])
def test_cached_word_features_give_the_same_logits(name: str) -> None:
    """``forward_words`` (the ONNX graph and cached-feature path) runs RMSIN's own modules."""
    torch.manual_seed(0)
    model = get_tiny_model(name).eval()
    side = model.input_size
    image = torch.randn(2, 3, side, side)
    ids = torch.randint(1, 50, (2, 6))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = model(image, ids, mask)
        cached = model.forward_words(image, model.text(ids, mask), mask)
    torch.testing.assert_close(cached, expected)
