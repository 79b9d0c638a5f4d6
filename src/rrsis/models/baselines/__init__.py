"""Natural-image referring-segmentation methods the RRSIS paper benchmarks, re-implemented compactly.

One file per method, each behind the :class:`~rrsis.models.base.RRSISModel` contract and the
shared encoders, so that only the language-fusion design differs from LAVT/LGCE:

* ``rrn_*`` (:mod:`.rrn`): early fusion by tiling a sentence vector with spatial coordinates over
  the deepest map (Hu et al., ECCV 2016) + recurrent refinement over the pyramid (Li et al.,
  CVPR 2018).
* ``cmsa_*`` (:mod:`.cmsa`): cross-modal self-attention over (pixel, word) pairs + gated
  multi-level fusion (Ye et al., CVPR 2019).

Importing this package adds the entries of :data:`BASELINES` to the model registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rrsis.models.base import RRSISModel
from rrsis.models.baselines.cmsa import CMSA, cmsa_effnet_minilm, cmsa_swin_base
from rrsis.models.baselines.rrn import RRN, rrn_effnet_minilm, rrn_swin_base
from rrsis.models.encoders.presets import TINY_EFFNET_MINILM, TINY_SWIN_BERT
from rrsis.models.registry import register_model

# Tiny random offline configurations (tests); the same sizes the core uses for LAVT/LGCE.
_TINY_EFFNET: dict[str, Any] = {**TINY_EFFNET_MINILM, "input_size": 64}
_TINY_SWIN: dict[str, Any] = {**TINY_SWIN_BERT, "input_size": 64}
_TINY_RRN = {"sentence_dim": 16, "fusion_dim": 16, "refine_dim": 8}
_TINY_CMSA = {"key_dim": 8, "value_dim": 16, "key_pool": 2, "skip_dim": 8}

#: name -> (factory, tiny kwargs, description)
BASELINES: dict[str, tuple[Callable[..., RRSISModel], dict[str, Any], str]] = {
    "rrn_effnet_minilm": (
        rrn_effnet_minilm,
        {**_TINY_EFFNET, **_TINY_RRN},
        "RRN (Li et al. 2018) + tiling fusion (Hu et al. 2016), EfficientNet-Lite0 + MiniLM",
    ),
    "cmsa_effnet_minilm": (
        cmsa_effnet_minilm,
        {**_TINY_EFFNET, **_TINY_CMSA},
        "CMSA (Ye et al. 2019), EfficientNet-Lite0 + MiniLM",
    ),
    "rrn_swin_base": (
        rrn_swin_base,
        {**_TINY_SWIN, **_TINY_RRN},
        "RRN (Li et al. 2018) + tiling fusion (Hu et al. 2016), Swin-B + BERT-base",
    ),
    "cmsa_swin_base": (
        cmsa_swin_base,
        {**_TINY_SWIN, **_TINY_CMSA},
        "CMSA (Ye et al. 2019), Swin-B + BERT-base",
    ),
}

for _name, (_factory, _tiny, _description) in BASELINES.items():
    register_model(_name, _factory, _tiny, _description)

__all__ = [
    "BASELINES",
    "CMSA",
    "RRN",
    "cmsa_effnet_minilm",
    "cmsa_swin_base",
    "rrn_effnet_minilm",
    "rrn_swin_base",
]
