"""Build the official LAVT (yz93/LAVT-RIS) from a checkout, and our converted copy of it.

The official code is never part of rrsis: the benchmarks that compare against it take the
path of a checkout (``git clone https://github.com/yz93/LAVT-RIS``) and import its ``lib``
modules, as ``tests/data/lavt_official/make.py`` does. Their timm / mmcv / mmseg imports
(initialisation helpers and checkpoint loading) and its vendored BERT's import are replaced by small stand-ins; the stand-in
``DropPath`` is real stochastic depth, so training steps cost what they cost with timm. The
pixel-word attention's language width, fixed at BERT-base's 768 in LAVT, is set to the text
encoder's width so that a tiny configuration can be built too.

BERT is ``transformers.BertModel`` (the network LAVT vendors), run as LAVT runs it:
``bert(ids, attention_mask)[0]`` transposed to ``(B, C, N)``, then the LAVT model with
``l_mask = mask[..., None]``.
"""

from __future__ import annotations

import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class LavtShape:
    """Sizes of an official LAVT: Swin, BERT and the input side."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    text_hidden: int
    text_layers: int
    text_heads: int
    size: int


#: LAVT as published: Swin-B (window 12) + BERT-base at 480 px.
FULL = LavtShape(128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 768, 12, 12, 480)
#: A tiny Swin-T-like LAVT: every code path of the full model (the last two stages pad and
#: use the shift masks) at a size that trains in milliseconds on a CPU.
TINY = LavtShape(32, (2, 2, 6, 2), (1, 2, 4, 8), 4, 32, 1, 2, 96)


class _DropPath(nn.Module):
    """Stochastic depth as timm's ``DropPath``: drop the whole branch per sample."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x.div(keep) * x.new_empty(shape).bernoulli_(keep)


def _stub_modules() -> None:
    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = _DropPath
    layers.to_2tuple = lambda x: tuple(x) if isinstance(x, tuple | list) else (x, x)
    layers.trunc_normal_ = lambda tensor, std=1.0: nn.init.trunc_normal_(tensor, std=std)
    mmseg_utils = types.ModuleType("mmseg.utils")
    mmseg_utils.get_root_logger = lambda: None
    mmcv_custom = types.ModuleType("lib.mmcv_custom")
    mmcv_custom.load_checkpoint = lambda *args, **kwargs: None
    # lib/_utils.py imports LAVT's vendored BERT (whose file utilities need requests); the
    # models built here use transformers' BertModel, the same network.
    from transformers import BertModel

    vendored_bert = types.ModuleType("bert.modeling_bert")
    vendored_bert.BertModel = BertModel
    for name, module in {
        "timm": types.ModuleType("timm"),
        "timm.models": types.ModuleType("timm.models"),
        "timm.models.layers": layers,
        "mmseg": types.ModuleType("mmseg"),
        "mmseg.utils": mmseg_utils,
        "lib.mmcv_custom": mmcv_custom,
        "bert": types.ModuleType("bert"),
        "bert.modeling_bert": vendored_bert,
    }.items():
        sys.modules.setdefault(name, module)


class OfficialLavt(nn.Module):
    """The official LAVT and its BERT as one module: ``(image, ids, mask) -> logits``."""

    def __init__(self, lavt: nn.Module, bert: nn.Module) -> None:
        super().__init__()
        self.lavt = lavt
        self.bert = bert

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        words = self.bert(word_ids, attention_mask=word_mask)[0].permute(0, 2, 1)
        return self.lavt(image, words, l_mask=word_mask.unsqueeze(-1))


def build_official(checkout: str | Path, shape: LavtShape, seed: int = 0) -> OfficialLavt:
    """The official LAVT of ``shape`` with random weights (official initialisation).

    The language gates, which LAVT initialises to zero, get random weights so that they
    matter in the logits comparison.
    """
    root = str(Path(checkout).resolve())
    if not (Path(root) / "lib" / "backbone.py").is_file():
        raise SystemExit(f"{checkout}: not a LAVT-RIS checkout (no lib/backbone.py)")
    if root not in sys.path:
        sys.path.insert(0, root)
    _stub_modules()
    from lib import backbone as official
    from lib._utils import LAVT
    from lib.mask_predictor import SimpleDecoding
    from transformers import BertConfig, BertModel

    pwam = official.PWAM
    width = shape.text_hidden

    def narrow_pwam(dim, v_in, l_in, key, value, num_heads=0, dropout=0.0):
        # PWAM.__init__ calls super(PWAM, self) through the module global: restore it meanwhile.
        official.PWAM = pwam
        try:
            return pwam(dim, v_in, width, key, value, num_heads=num_heads, dropout=dropout)
        finally:
            official.PWAM = narrow_pwam

    official.PWAM = narrow_pwam
    try:
        torch.manual_seed(seed)
        swin = official.MultiModalSwinTransformer(
            embed_dim=shape.embed_dim,
            depths=list(shape.depths),
            num_heads=list(shape.num_heads),
            window_size=shape.window_size,
            ape=False,
            drop_path_rate=0.3,
            patch_norm=True,
            out_indices=(0, 1, 2, 3),
            use_checkpoint=False,
            num_heads_fusion=[1, 1, 1, 1],
            fusion_drop=0.0,
        )
        swin.init_weights(None)
    finally:
        official.PWAM = pwam
    lavt = LAVT(swin, SimpleDecoding(8 * shape.embed_dim))
    with torch.no_grad():
        for name, param in lavt.named_parameters():
            if "res_gate" in name:
                param.normal_(0.0, 0.05)
    bert = BertModel(
        BertConfig(
            hidden_size=shape.text_hidden,
            num_hidden_layers=shape.text_layers,
            num_attention_heads=shape.text_heads,
            intermediate_size=4 * shape.text_hidden,
        ),
        add_pooling_layer=True,
    )
    return OfficialLavt(lavt, bert)


def convert_official(official: OfficialLavt, shape: LavtShape) -> nn.Module:
    """Our ``lavt_swin_base`` with the official model's weights, via ``convert_lavt_checkpoint``."""
    from rrsis.models.convert import convert_lavt_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lavt.pth"
        torch.save(
            {"model": official.lavt.state_dict(), "bert_model": official.bert.state_dict()}, path
        )
        return convert_lavt_checkpoint(path, text_heads=shape.text_heads)
