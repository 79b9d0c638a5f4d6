"""Write a tiny official-RMSIN checkpoint and the official code's output on it (the reference).

``rmsin_tiny.pth`` has the layout RMSIN's ``train.py`` saves with its default ``--model
lavt_one`` (``{"model", "optimizer", "epoch", "args", "lr_scheduler"}``, BERT inside the model as
``text_encoder.*`` without its pooler, ``args`` an ``argparse.Namespace``) for a tiny random
model built by the official modules themselves: the multi-modal Swin with embed 8, depths
2-2-2-2, heads 1-2-4-8, window 4 (the 120/60/30/15 maps of a 480 px input: the last two stages
pad, so the shifted-window masks matter), the PWAMs, gates and "various receptive" branches,
the CIM, the SimpleDecoding classifier with its adaptive rotated convolutions, and a one-layer,
8-d BERT. Every weight is random and every batch-norm statistic is that of its input on the
fixture batch (values rounded to float16: the checkpoint is saved in float16 to stay small; the
reference is computed in float64 with the same values and stored in float32).
The input is 480 x 480 because the official CIM fixes its attention to 15 x 15 tokens.

``reference.safetensors`` holds two 96 x 96 images (the model sees them enlarged 5 x by pixel
repetition to 480 x 480, so the 4 x 4 patches are not constant), two tokenised expressions and
the logits at every fourth row and column (2 x 2 x 120 x 120; the full output is 480 x 480).
Both rotation tables of the adaptive rotated convolution take part (angles of both signs).

This needs a checkout of the official code, which rrsis does not include, and einops (which its
rotated convolution's routing function uses):

    git clone https://github.com/Lsan2401/RMSIN   # tested at b4a9b27c40cdc875d15de5ae2d36e7c10012371e
    pip install --target /tmp/einops einops
    PYTHONPATH=src:/tmp/einops python tests/data/rmsin_official/make.py /path/to/RMSIN

``--count`` instead builds the full-size official model (Swin-B window 12, BERT-base, random
weights) and prints its parameter count.

Only ``lib/backbone.py``, ``lib/cross_scale_interaction.py``, ``lib/various_receptive.py``,
``lib/mask_predictor.py``, ``lib/_utils.py`` and ``arc/`` are imported. Their imports of timm,
mmcv and mmseg (initialisation helpers, drop-path (identity in eval mode) and checkpoint
loading) are replaced by small stand-ins; BERT is ``transformers.BertModel`` (the network the
official ``bert/`` copy vendors; the stand-in only replaces ``from_pretrained``). Two widths that
the official code fixes for Swin-B + BERT-base are set to the tiny model's: the PWAM's language
width (768) and the CIM's stage channels (128-256-512-1024).
"""

from __future__ import annotations

import argparse
import functools
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import BertConfig, BertModel

HERE = Path(__file__).resolve().parent
TEXT_HIDDEN = 8
SWIN = {"embed_dim": 8, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8], "window_size": 4}
SIZE = 480
SMALL = 96
EXPRESSIONS = ["the gray small windmill on the left", "vehicle"]
TINY_BERT = {"hidden_size": TEXT_HIDDEN, "num_hidden_layers": 1, "num_attention_heads": 2}


def enlarge(small: torch.Tensor) -> torch.Tensor:
    """The model input: ``(B, 3, 96, 96)`` -> ``(B, 3, 480, 480)`` by pixel repetition."""
    factor = SIZE // small.shape[-1]
    return small.float().repeat_interleave(factor, -1).repeat_interleave(factor, -2)


def _stub_modules(bert_config: BertConfig) -> None:
    """Stand-ins for the official imports of timm / mmcv / mmseg and BERT's ``from_pretrained``."""

    class DropPath(nn.Module):  # identity in eval mode, which is all we run
        def __init__(self, p: float = 0.0) -> None:
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, (tuple, list)) else (x, x)
    layers.trunc_normal_ = lambda tensor, std=1.0: nn.init.trunc_normal_(tensor, std=std)
    mmseg_utils = types.ModuleType("mmseg.utils")
    mmseg_utils.get_root_logger = lambda: None
    mmcv_custom = types.ModuleType("lib.mmcv_custom")
    mmcv_custom.load_checkpoint = lambda *args, **kwargs: None

    class OfficialBert(BertModel):
        @classmethod
        def from_pretrained(cls, name: str, *args, **kwargs) -> BertModel:
            return cls(bert_config)

    modeling_bert = types.ModuleType("bert.modeling_bert")
    modeling_bert.BertModel = OfficialBert
    for name, module in {
        "timm": types.ModuleType("timm"),
        "timm.models": types.ModuleType("timm.models"),
        "timm.models.layers": layers,
        "mmseg": types.ModuleType("mmseg"),
        "mmseg.utils": mmseg_utils,
        "lib.mmcv_custom": mmcv_custom,
        "bert": types.ModuleType("bert"),
        "bert.modeling_bert": modeling_bert,
    }.items():
        sys.modules[name] = module


def _randomise(module: nn.Module, generator: torch.Generator) -> None:
    """Random values, rounded to float16, for every parameter and batch-norm statistic."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                values = 0.5 + torch.rand(tensor.shape, generator=generator)
            elif name.endswith(("norm.weight", "LayerNorm.weight")) or ".norm" in name:
                values = 1.0 + 0.1 * torch.randn(tensor.shape, generator=generator)
            else:
                values = 0.2 * torch.randn(tensor.shape, generator=generator)
            tensor.copy_(values.half().float())


def _calibrate_batch_norms(model: nn.Module, image: torch.Tensor, word_ids, word_mask) -> None:
    """Set every batch norm's statistics to those of its input on the fixture batch.

    With random statistics, some maps are pushed far from the range their layers expect (the
    "various receptive" branch's ReLU, for one, then sees only negative values and the branch
    stops depending on its weights); calibrated, every module shapes the output.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one batch gives its own statistics
    model.train()
    with torch.no_grad():
        model(image, word_ids, l_mask=word_mask)
    model.eval()
    with torch.no_grad():
        for norm in norms:
            norm.running_mean.copy_(norm.running_mean.half().float())
            norm.running_var.copy_(norm.running_var.half().float())


def _build(official, bert_config: BertConfig, swin: dict, window12: bool) -> nn.Module:
    from lib._utils import LAVTOne
    from lib.mask_predictor import SimpleDecoding

    backbone = official.MultiModalSwinTransformer(
        **swin,
        ape=False,
        drop_path_rate=0.3,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        use_checkpoint=False,
        num_heads_fusion=[1, 1, 1, 1],
        fusion_drop=0.0,
    )
    backbone.init_weights()
    options = argparse.Namespace(ck_bert="bert-base-uncased", window12=window12)
    return LAVTOne(backbone, SimpleDecoding(8 * swin["embed_dim"]), options)


def _count(official) -> None:
    """Parameters of the official full-size model (Swin-B window 12 + BERT-base)."""
    sys.modules["bert.modeling_bert"].BertModel.from_pretrained = classmethod(
        lambda cls, name, *a, **k: cls(BertConfig())
    )
    swin = {"embed_dim": 128, "depths": [2, 2, 18, 2], "num_heads": [4, 8, 16, 32]}
    model = _build(official, BertConfig(), {**swin, "window_size": 12}, window12=True)
    total = sum(p.numel() for p in model.parameters())
    text = sum(p.numel() for p in model.text_encoder.parameters())
    print(f"official RMSIN (lavt_one, Swin-B window 12 + BERT-base): {total} parameters")
    print(f"  of which BERT (pooler removed, as train.py does): {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rmsin_repo", type=Path, help="checkout of Lsan2401/RMSIN")
    parser.add_argument("--count", action="store_true", help="print the full-size model's size")
    args = parser.parse_args()
    sys.path.insert(0, str(args.rmsin_repo.resolve()))
    bert_config = BertConfig(vocab_size=30522, intermediate_size=4 * TEXT_HIDDEN, **TINY_BERT)
    # Stubs first: lib/mmcv_custom/__init__.py imports mmcv.
    _stub_modules(bert_config)
    from lib import backbone as official
    from lib import cross_scale_interaction

    if args.count:
        _count(official)
        return

    pwam = official.PWAM

    def narrow_pwam(dim, v_in, l_in, key, value, num_heads=0, dropout=0.0):
        # PWAM.__init__ calls super(PWAM, self) through the module global: restore it meanwhile.
        official.PWAM = pwam
        try:
            return pwam(dim, v_in, TEXT_HIDDEN, key, value, num_heads=num_heads, dropout=dropout)
        finally:
            official.PWAM = narrow_pwam

    official.PWAM = narrow_pwam
    channels = [SWIN["embed_dim"] * 2**i for i in range(4)]
    official.CIM = functools.partial(cross_scale_interaction.CIM, channels=channels)
    torch.manual_seed(0)
    model = _build(official, bert_config, SWIN, window12=False).eval()
    generator = torch.Generator().manual_seed(0)
    _randomise(model, generator)

    angles = []
    for level in ("4", "3", "2"):
        routing = getattr(model.classifier, f"conv2_{level}").rounting_func
        routing.register_forward_hook(lambda m, i, out: angles.append(out[1].flatten()))

    from rrsis.models.encoders.text import BertTextEncoder

    word_ids, word_mask = BertTextEncoder(
        hidden_size=TEXT_HIDDEN, num_layers=1, num_heads=2
    ).tokenize(EXPRESSIONS)
    small = torch.randn((len(EXPRESSIONS), 3, SMALL, SMALL), generator=generator).half()
    _calibrate_batch_norms(model, enlarge(small), word_ids, word_mask)
    angles.clear()
    with torch.no_grad():
        model(enlarge(small), word_ids, l_mask=word_mask)
    if not ((torch.cat(angles) > 0).any() and (torch.cat(angles) < 0).any()):
        # Both tables of the kernel rotation (angles >= 0 and < 0) must take part: turn the
        # middle level the other way (its angle head has no bias: angles change sign).
        with torch.no_grad():
            model.classifier.conv2_3.rounting_func.fc_theta.weight.neg_()
        _calibrate_batch_norms(model, enlarge(small), word_ids, word_mask)
    angles.clear()
    with torch.no_grad():
        # As test.py runs a lavt_one model: ids and (B, N) mask; the model reads BERT itself.
        # In float64, so that the comparison is not limited by float32 rounding (which the
        # calibrated batch norms of near-constant maps amplify to ~1e-5).
        logits = model.double()(enlarge(small).double(), word_ids, l_mask=word_mask)
    model.float()
    angles = torch.cat(angles)
    assert (angles > 0).any() and (angles < 0).any(), angles

    def half(state: dict) -> dict:
        return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}

    # The rest of what RMSIN's train.py saves: optimiser and schedule states, and its options.
    optimizer = torch.optim.AdamW([{"params": list(model.parameters())}], lr=3e-5)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1 - it / 100) ** 0.9)
    options = argparse.Namespace(
        model="lavt_one",
        model_id="RMSIN",
        swin_type="tiny-test",
        window12=False,
        mha="",
        fusion_drop=0.0,
        lr=3e-5,
        weight_decay=1e-2,
        img_size=SIZE,
        epochs=40,
        batch_size=2,
        ck_bert="bert-base-uncased",
    )
    torch.save(
        {
            "model": half(model.state_dict()),
            "optimizer": optimizer.state_dict(),
            "epoch": 0,
            "args": options,
            "lr_scheduler": schedule.state_dict(),
        },
        HERE / "rmsin_tiny.pth",
    )
    save_file(
        {
            "image": small,
            "word_ids": word_ids,
            "word_mask": word_mask,
            "logits": logits[:, :, ::4, ::4].float().contiguous(),
        },
        str(HERE / "reference.safetensors"),
    )
    print(
        f"wrote {HERE / 'rmsin_tiny.pth'} and reference.safetensors; logits "
        f"{tuple(logits.shape)}, |max| {logits.abs().max():.3g}; rotation angles (deg) "
        f"{[round(a, 1) for a in (angles * 180 / torch.pi).tolist()]}"
    )


if __name__ == "__main__":
    main()
