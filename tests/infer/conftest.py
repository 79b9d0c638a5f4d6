"""Fixtures for the inference tests: fake models with known outputs and tiny GeoTIFF scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn


class _CharTokenizerMixin:
    """Characters -> ids (1..255), 0 is padding; N = ``max_tokens``."""

    max_tokens = 8

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        ids = torch.zeros(len(texts), self.max_tokens, dtype=torch.long)
        for row, text in enumerate(texts):
            codes = [min(ord(c), 255) or 1 for c in text][: self.max_tokens]
            ids[row, : len(codes)] = torch.tensor(codes)
        return ids, (ids > 0).long()


class PixelModel(_CharTokenizerMixin, nn.Module):
    """Per-pixel model: foreground logit = k_e * (red - green) in normalised units.

    Each pixel's output depends only on that pixel (plus the expression's first character, which
    sets k_e), so a tiled prediction must equal a whole-image one wherever no resize happens.
    """

    input_size = 64
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    size_divisor = 32

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.batch_sizes: list[int] = []

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        assert image.shape[-2] % self.size_divisor == 0 and image.shape[-1] % self.size_divisor == 0
        self.calls += 1
        self.batch_sizes.append(image.shape[0])
        scale = (word_ids[:, 0].float() - 96.0).view(-1, 1, 1) / 4.0
        fg = scale * (image[:, 0] - image[:, 1])
        return torch.stack([torch.zeros_like(fg), fg], dim=1)


class ConstModel(_CharTokenizerMixin, nn.Module):
    """Outputs the same logits (0, ``value``) everywhere."""

    input_size = 64
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    size_divisor = 32

    def __init__(self, value: float = 0.7) -> None:
        super().__init__()
        self.value = value

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        b, _, h, w = image.shape
        out = torch.zeros(b, 2, h, w)
        out[:, 1] = self.value
        return out


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def pixel_model() -> PixelModel:
    return PixelModel()


@pytest.fixture
def const_model() -> ConstModel:
    return ConstModel()


def make_geotiff(
    path, height: int, width: int, bands: int = 3, dtype: str = "uint8", crs="EPSG:32640", seed=0
):
    """Write a random georeferenced GeoTIFF with smooth blobs (so masks have real polygons)."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    data = np.zeros((bands, height, width), dtype=np.float64)
    for band in range(bands):
        fx, fy, ph = rng.uniform(0.01, 0.05), rng.uniform(0.01, 0.05), rng.uniform(0, 6)
        data[band] = 0.5 + 0.5 * np.sin(fx * xx + ph) * np.cos(fy * yy - ph)
    if dtype == "uint8":
        data = np.round(data * 255).astype(np.uint8)
    else:
        data = np.round(data * 4000 + 100).astype(dtype)
    transform = from_origin(400000.0, 2700000.0, 0.5, 0.5)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=bands,
        dtype=dtype,
        crs=crs,
        transform=transform,
    ) as dst:
        dst.write(data)
    return path


@pytest.fixture
def geotiff():
    """Factory ``geotiff(path, height, width, bands=3, dtype="uint8", crs="EPSG:32640")``."""
    return make_geotiff
