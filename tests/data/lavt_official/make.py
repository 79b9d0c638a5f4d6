"""Write a tiny official-LAVT checkpoint and the official code's output on it (the reference).

``lavt_tiny.pth`` has the layout LAVT's ``train.py`` saves (``{"model", "bert_model",
"optimizer", "epoch", "args", "lr_scheduler"}``, ``args`` an ``argparse.Namespace``) for a tiny random model built by the official code itself: Swin with embed 8,
depths 2-2-2-2, heads 1-2-4-8, window 4 (a 96 px input gives 24/12/6/3 maps, so the last two
stages pad and the shifted-window masks matter), the SimpleDecoding classifier, and a
one-layer, 8-d BERT. Every weight and batch-norm statistic is random (the official init
zeroes the language gates, which would hide them) and rounded to float16, and the checkpoint
is saved in float16 to stay small; the reference is computed in float32 with the same values.
``reference.safetensors`` holds two 96x96 images, two tokenised expressions and the logits.

This needs a checkout of the official code, which rrsis does not include:

    git clone https://github.com/yz93/LAVT-RIS   # tested at 066bcf26cb07ad6e8ffcbf839fde416fdf94009f
    python tests/data/lavt_official/make.py /path/to/LAVT-RIS

Only ``lib/backbone.py``, ``lib/mask_predictor.py`` and ``lib/_utils.py`` are imported. Their
imports of timm, mmcv and mmseg (initialisation helpers and checkpoint loading, unused here)
are replaced by small stand-ins, and the PWAM's language width, which LAVT fixes at BERT-base's
768, is set to the tiny BERT's. BERT is ``transformers.BertModel``, the same network as the
copy LAVT vendors, and is run as LAVT's ``test.py`` runs it (``bert(ids, attention_mask)[0]``).
"""

from __future__ import annotations

import argparse
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
SIZE = 96
EXPRESSIONS = ["the long building along the road", "water"]


def _stub_modules() -> None:
    """Stand-ins for the official backbone's timm / mmcv / mmseg imports."""

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
    for name, module in {
        "timm": types.ModuleType("timm"),
        "timm.models": types.ModuleType("timm.models"),
        "timm.models.layers": layers,
        "mmseg": types.ModuleType("mmseg"),
        "mmseg.utils": mmseg_utils,
        "lib.mmcv_custom": mmcv_custom,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lavt_repo", type=Path, help="checkout of yz93/LAVT-RIS")
    args = parser.parse_args()
    sys.path.insert(0, str(args.lavt_repo.resolve()))
    # Stubs first: lib/__init__.py or lib/mmcv_custom/__init__.py may import what they replace.
    _stub_modules()
    from lib import backbone as official
    from lib._utils import LAVT
    from lib.mask_predictor import SimpleDecoding

    pwam = official.PWAM

    def narrow_pwam(dim, v_in, l_in, key, value, num_heads=0, dropout=0.0):
        # PWAM.__init__ calls super(PWAM, self) through the module global: restore it meanwhile.
        official.PWAM = pwam
        try:
            return pwam(dim, v_in, TEXT_HIDDEN, key, value, num_heads=num_heads, dropout=dropout)
        finally:
            official.PWAM = narrow_pwam

    official.PWAM = narrow_pwam
    torch.manual_seed(0)
    swin = official.MultiModalSwinTransformer(
        **SWIN,
        ape=False,
        drop_path_rate=0.3,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        use_checkpoint=False,
        num_heads_fusion=[1, 1, 1, 1],
        fusion_drop=0.0,
    )
    lavt = LAVT(swin, SimpleDecoding(8 * SWIN["embed_dim"])).eval()
    bert = BertModel(
        BertConfig(
            vocab_size=30522,
            hidden_size=TEXT_HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=4 * TEXT_HIDDEN,
        )
    ).eval()
    generator = torch.Generator().manual_seed(0)
    _randomise(lavt, generator)
    _randomise(bert, generator)

    from rrsis.models.encoders.text import BertTextEncoder

    word_ids, word_mask = BertTextEncoder(
        hidden_size=TEXT_HIDDEN, num_layers=1, num_heads=2
    ).tokenize(EXPRESSIONS)
    image = torch.randn((len(EXPRESSIONS), 3, SIZE, SIZE), generator=generator)
    with torch.no_grad():
        words = bert(word_ids, attention_mask=word_mask)[0].permute(0, 2, 1)
        logits = lavt(image, words, l_mask=word_mask.unsqueeze(-1))

    def half(state: dict) -> dict:
        return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}

    # The rest of what LAVT's train.py saves: optimiser and schedule states, and its options.
    optimizer = torch.optim.AdamW(
        [{"params": list(lavt.parameters())}, {"params": list(bert.parameters())}], lr=5e-5
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1 - it / 100) ** 0.9)
    options = argparse.Namespace(
        model="lavt",
        swin_type="tiny-test",
        window12=False,
        mha="",
        fusion_drop=0.0,
        lr=5e-5,
        weight_decay=1e-2,
        img_size=SIZE,
        ck_bert="bert-base-uncased",
    )
    torch.save(
        {
            "model": half(lavt.state_dict()),
            "bert_model": half(bert.state_dict()),
            "optimizer": optimizer.state_dict(),
            "epoch": 0,
            "args": options,
            "lr_scheduler": schedule.state_dict(),
        },
        HERE / "lavt_tiny.pth",
    )
    save_file(
        {"image": image, "word_ids": word_ids, "word_mask": word_mask, "logits": logits},
        str(HERE / "reference.safetensors"),
    )
    print(f"wrote {HERE / 'lavt_tiny.pth'} and reference.safetensors; logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
