"""Natural-image referring-segmentation methods the RRSIS paper benchmarks, re-implemented compactly.

One file per method, each behind the :class:`~rrsis.models.base.RRSISModel` contract and the
shared encoders, so that only the language-fusion design differs from LAVT/LGCE:

* ``rrn_*`` (:mod:`.rrn`): early fusion by tiling a sentence vector with spatial coordinates over
  the deepest map (Hu et al., ECCV 2016) + recurrent refinement over the pyramid (Li et al.,
  CVPR 2018).
* ``cmsa_*`` (:mod:`.cmsa`): cross-modal self-attention over (pixel, word) pairs + gated
  multi-level fusion (Ye et al., CVPR 2019).

The registry (:data:`rrsis.models.registry.MODELS`) lists their factories by name.
"""

from __future__ import annotations

from rrsis.models.baselines.cmsa import CMSA, cmsa_effnet_minilm, cmsa_swin_base
from rrsis.models.baselines.rrn import RRN, rrn_effnet_minilm, rrn_swin_base

__all__ = [
    "CMSA",
    "RRN",
    "cmsa_effnet_minilm",
    "cmsa_swin_base",
    "rrn_effnet_minilm",
    "rrn_swin_base",
]
