"""Fixtures of the evaluation tests: a tiny RefSegRS tree and a text-reading oracle model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from rrsis.data.refsegrs_writer import RefSegRSWriter
from rrsis.models.base import RRSISModel

SIDE = 32


class BrightDarkModel(RRSISModel):
    """Segments bright pixels for expressions with "bright", dark pixels otherwise.

    It is a perfect model on :func:`oracle_tree` as long as it reads the text, which makes
    protocol and shuffling results exactly predictable.
    """

    input_size = SIDE
    size_divisor = 8
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.config = {"name": "bright_dark", "kwargs": {}}
        self.scale = nn.Parameter(torch.tensor(4.0))

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        # Spare token slots: the expressions are not "truncated".
        ids = torch.tensor([[1 if "bright" in t else 2, 0, 0, 0, 0, 0] for t in texts])
        return ids, (ids > 0).long()

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        self.check_inputs(image, word_ids, word_mask)
        bright = image.mean(dim=1) > 0.5
        wants_bright = (word_ids[:, 0] == 1)[:, None, None]
        foreground = torch.where(wants_bright, bright, ~bright).float()
        # Logit difference +-scale: class 1 wins exactly on the wanted pixels.
        return torch.stack([-foreground, foreground], dim=1) * self.scale


def _samples(side: int) -> list[dict]:
    """Three "bright" samples and one "dark" one on ``side`` x ``side`` tiles."""
    out = []
    layouts = [
        [(2, 6, 2, 6)],  # one 4x4 block
        [(1, 3, 1, 3), (20, 26, 20, 26)],  # two blocks: scattered
        [(0, side, 0, side // 2)],  # half the tile: large
    ]
    for i, blocks in enumerate(layouts):
        mask = np.zeros((side, side), dtype=bool)
        for r0, r1, c0, c1 in blocks:
            mask[r0:r1, c0:c1] = True
        image = np.where(mask[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
        out.append(
            {
                "image": image,
                "mask": mask,
                "text": f"the bright roof {i}",
                "id": f"b{i}",
                "meta": {"kind": "attribute"},
            }
        )
    mask = np.ones((side, side), dtype=bool)
    mask[4:12, 4:12] = False
    image = np.where(mask[..., None], 0, 255).astype(np.uint8).repeat(3, axis=2)
    out.append(
        {
            "image": image,
            "mask": mask,
            "text": "the dark road",
            "id": "d0",
            "meta": {"kind": "category"},
        }
    )
    return out


def write_tree(root: Path, side: int = SIDE) -> Path:
    with RefSegRSWriter(root) as writer:
        for sample in _samples(side):
            writer.add("test", sample)
        for sample in _samples(side)[:2]:
            sample = dict(sample, id="v" + sample["id"])
            writer.add("val", sample)
        for sample in _samples(side):
            writer.add("train", dict(sample, id="t" + sample["id"]))
    return root


@pytest.fixture(scope="session")
def oracle_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RefSegRS tree (train/val/test) of 32x32 tiles that BrightDarkModel solves exactly."""
    return write_tree(tmp_path_factory.mktemp("oracle") / "tree")


@pytest.fixture(scope="session")
def make_tree():
    """``make_tree(root, side=32)`` writes the oracle tree with tiles of another size."""
    return write_tree


@pytest.fixture()
def oracle_model() -> BrightDarkModel:
    torch.manual_seed(0)
    return BrightDarkModel()


class HouseModel(RRSISModel):
    """Segments houses (red channel high) or the road (green channel high) by the last word.

    It reads the class word only, never positions, relations or sizes: the network the
    composition rules help. ``texts`` records every expression it tokenised.
    """

    input_size = 64
    size_divisor = 32
    mean = (0.0, 0.0, 0.0)
    std = (1.0, 1.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.config = {"name": "house", "kwargs": {}}
        self.texts: list[str] = []

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        self.texts += list(texts)
        ids = torch.tensor([[1 if t.split()[-1] == "road" else 2, 0, 0, 0, 0, 0] for t in texts])
        return ids, (ids > 0).long()

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        wants_road = (word_ids[:, 0] == 1).view(-1, 1, 1)
        foreground = torch.where(wants_road, image[:, 1] > 0.5, image[:, 0] > 0.5)
        return torch.stack([torch.zeros_like(image[:, 0]), foreground.float() * 8.0 - 4.0], 1)


def house_samples() -> list[dict]:
    """64 px scene: a big house upper left, small ones on the right, one by the road (a green
    column). Three expressions a rule decides (position, relation, attribute), one it cannot
    read ("the road"), each scored against its true mask."""
    image = np.zeros((64, 64, 3), np.uint8)
    houses = {
        "big_ul": (slice(4, 20), slice(4, 20)),
        "small_ur": (slice(6, 10), slice(50, 54)),
        "small_lr": (slice(50, 54), slice(50, 54)),
        "by_road": (slice(40, 48), slice(20, 28)),
    }
    masks = {}
    for name, (rows, cols) in houses.items():
        image[rows, cols, 0] = 255
        masks[name] = np.zeros((64, 64), bool)
        masks[name][rows, cols] = True
    image[:, 28:32, 1] = 255
    masks["road"] = image[..., 1] > 0
    wanted = [
        ("house in the upper left", masks["big_ul"]),
        ("house along the road", masks["by_road"]),
        ("small house", masks["small_ur"] | masks["small_lr"]),
        ("the road", masks["road"]),
    ]
    return [
        {"image": image, "mask": mask, "text": text, "id": f"h{i}", "meta": {}}
        for i, (text, mask) in enumerate(wanted)
    ]
