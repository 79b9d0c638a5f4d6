"""Auxiliary semantic segmentation loss for training LAVT-family models on label-map data.

A referring triplet supervises one binary mask per forward pass, while the label map it was
made from knows the class of every pixel. When the full class map of a training crop is
available (``rrsis.data.dubai.DubaiLabelLookup``), a small head on the encoder's visual maps
predicts it and adds a cross-entropy term, so the image encoder learns every class from every
crop. The head lives in the training module only: exported weights and inference are
unchanged.

The head reads the visual maps entering each PWAM (the input ``visual`` of
``model.fusions[i]``), captured with forward pre-hooks, so it works for any model with LAVT's
``fusions`` list (``lavt_*`` and ``lgce_*``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from rrsis.engine.transforms import SEMANTIC_IGNORE


class SemanticAuxHead(nn.Module):
    """Class logits from several encoder maps (a light FPN-style sum at the finest used stride).

    Args:
        in_channels: channels of the maps it reads, finest first.
        num_classes: classes of the label map (unlabeled excluded).
        dim: width of the projections.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, dim: int = 64) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.head = nn.Sequential(
            nn.BatchNorm2d(dim), nn.ReLU(inplace=True), nn.Conv2d(dim, num_classes, 1)
        )

    def forward(self, maps: Sequence[Tensor]) -> Tensor:
        """``maps`` finest first -> logits ``(B, num_classes, h, w)`` at the first map's size."""
        size = maps[0].shape[-2:]
        out = self.proj[0](maps[0])
        for proj, x in zip(self.proj[1:], maps[1:]):
            out = out + F.interpolate(proj(x), size=size, mode="bilinear", align_corners=False)
        return self.head(out)


class SemanticAuxiliary(nn.Module):
    """Capture a model's pre-fusion visual maps and score them against class maps.

    Args:
        model: a model with a ``fusions`` ``ModuleList`` (one PWAM per encoder stage).
        channels: visual channels entering each fusion (``model.vision.out_channels``).
        num_classes: classes of the label maps.
        stages: which encoder stages feed the head (default: all but the finest, whose
            stride-4 maps cost the most and carry the least semantics).

    Call :meth:`loss` after the model's forward pass of the same batch.
    """

    def __init__(
        self,
        model: nn.Module,
        channels: Sequence[int],
        num_classes: int,
        stages: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        fusions = getattr(model, "fusions", None)
        if fusions is None:
            raise ValueError("the auxiliary semantic loss needs a model with LAVT `fusions`")
        self.stages = list(stages) if stages is not None else list(range(1, len(fusions)))
        self.head = SemanticAuxHead([channels[i] for i in self.stages], num_classes)
        self._maps: dict[int, Tensor] = {}
        # Hooks hold a reference to this dict only, not to the module (no cycle through model).
        maps = self._maps
        for i in self.stages:

            def capture(module: nn.Module, args: tuple, i: int = i) -> None:
                maps[i] = args[0]

            fusions[i].register_forward_pre_hook(capture)

    def loss(self, target: Tensor) -> Tensor:
        """Cross-entropy of the head on the last captured maps; ``target`` ``(B, H, W)`` long.

        Pixels equal to ``SEMANTIC_IGNORE`` do not count; the target is resized (nearest) to
        the head's resolution.
        """
        if not all(i in self._maps for i in self.stages):
            raise RuntimeError("run the model's forward pass before SemanticAuxiliary.loss")
        logits = self.head([self._maps[i] for i in self.stages])
        self._maps.clear()
        if target.shape[-2:] != logits.shape[-2:]:
            target = F.interpolate(target[:, None].float(), size=logits.shape[-2:], mode="nearest")
            target = target[:, 0].long()
        # The mean over labelled pixels, written as sum / count so that it needs no check on
        # the host (a GPU sync every step): a batch with no labelled pixel gives 0 / 1, a zero
        # that still touches the head's graph.
        total = F.cross_entropy(
            logits.float(), target, ignore_index=SEMANTIC_IGNORE, reduction="sum"
        )
        return total / (target != SEMANTIC_IGNORE).sum().clamp(min=1)
