"""Auxiliary semantic loss: label lookup from a (generated) Dubai tree, batching, training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrsis.data.dubai import DUBAI_COLOURS, DUBAI_TAXONOMY, DubaiLabelLookup, convert_dubai
from rrsis.data.refsegrs import RefSegRS
from rrsis.engine.auxiliary import SemanticAuxiliary
from rrsis.engine.datamodule import PreloadedDataset, RefSegDataModule
from rrsis.engine.transforms import (
    SEMANTIC_IGNORE,
    AddSemantic,
    Collate,
    SampleTransform,
    TransformedDataset,
)
from rrsis.errors import DatasetError


def _fake_dubai(root: Path, tiles: dict[int, tuple[int, int]]) -> Path:
    """A Dubai-layout tree: per tile one part of the given (H, W), blocks of every class."""
    rng = np.random.default_rng(0)
    colours = list(DUBAI_COLOURS.values())
    for tile, (h, w) in tiles.items():
        labels = rng.integers(0, len(colours), size=(h // 16 + 1, w // 16 + 1))
        labels = np.kron(labels, np.ones((16, 16), dtype=int))[:h, :w]
        rgb = np.asarray(colours, dtype=np.uint8)[labels]
        image = (rgb // 2 + rng.integers(0, 60, size=rgb.shape)).astype(np.uint8)
        for sub in ("images", "masks"):
            (root / f"tile{tile}" / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"tile{tile}" / "images" / "image_part_001.jpg")
        Image.fromarray(rgb).save(root / f"tile{tile}" / "masks" / "image_part_001.png")
    return root


@pytest.fixture(scope="module")
def fake_dubai(tmp_path_factory) -> tuple[Path, Path]:
    """(source tree, RefSegRS tree converted from it with 64 px crops)."""
    base = tmp_path_factory.mktemp("aux")
    # Tile 2 is narrower than the crop: the converter resizes it up, so must the lookup.
    src = _fake_dubai(base / "src", {1: (112, 150), 2: (100, 60), 3: (64, 64)})
    out = base / "refsegrs"
    split_tiles = {"train": [1, 2], "val": [3]}
    convert_dubai(src, out, crop=64, stride=40, split_tiles=split_tiles, seed=0)
    return src, out


def test_lookup_recovers_the_class_map_of_every_crop(fake_dubai) -> None:
    src, out = fake_dubai
    ds = RefSegRS(out, "train")
    lookup = DubaiLabelLookup(src)
    checked = set()
    for i in range(len(ds)):
        sample = ds[i]
        labels = lookup(sample["meta"], sample["mask"].shape)
        assert labels is not None and labels.shape == (64, 64) and labels.dtype == np.uint8
        checked.add(sample["meta"]["source"].split("/")[0])
        if sample["meta"]["kind"] in ("category", "attribute", "position"):
            # The referred pixels are all of the expression's class in the class map.
            class_id = DUBAI_TAXONOMY.classes[sample["meta"]["category"]]
            assert (labels[sample["mask"]] == class_id).all()
    assert checked == {"tile1", "tile2"}
    # Samples that do not come from this tree get no map.
    assert lookup({}, (64, 64)) is None
    assert lookup({"source": "synth/scene_1", "crop_yx": [0, 0]}, (64, 64)) is None
    assert lookup({"source": "tile1/image_part_001", "crop_yx": [100, 0]}, (64, 64)) is None
    with pytest.raises(DatasetError):
        DubaiLabelLookup(src / "missing")


def test_transform_and_collate_carry_the_class_map() -> None:
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 6, size=(16, 16)).astype(np.uint8)
    image = np.repeat((ids * 40)[..., None], 3, axis=2).astype(np.uint8)
    base = {"image": image, "mask": ids == 2, "text": "road", "id": "a", "meta": {}}
    transform = SampleTransform(16, (0, 0, 0), (1, 1, 1), augment=True)
    torch.manual_seed(0)
    for _ in range(8):  # random flips/rotations move the map with the image
        out = transform({**base, "semantic": ids})
        assert torch.equal(out["semantic"] == 2, out["mask"].bool())
        assert torch.allclose(out["image"][0] * 255, out["semantic"].float() * 40, atol=1e-3)

    collate = Collate(lambda texts: (torch.ones(len(texts), 2), torch.ones(len(texts), 2)))
    with_map = transform({**base, "semantic": ids})
    without = transform(dict(base))
    batch = collate([with_map, without])
    sem = batch["semantic"]
    assert sem.shape == (2, 16, 16)
    # id k > 0 -> class k - 1; unlabeled (0) and a sample without a map -> ignored.
    expected = torch.where(with_map["semantic"] > 0, with_map["semantic"] - 1, SEMANTIC_IGNORE)
    assert torch.equal(sem[0], expected)
    assert (sem[1] == SEMANTIC_IGNORE).all()
    assert "semantic" not in collate([without])

    wrapped = TransformedDataset(
        [base], AddSemantic(lambda meta, shape: np.zeros(shape, np.uint8) + 3)
    )
    assert (wrapped[0]["semantic"] == 3).all() and "semantic" not in base


def test_training_with_the_auxiliary_loss(fake_dubai, tmp_path) -> None:
    from rrsis.engine.config import TrainRun
    from rrsis.engine.module import RRSISLightningModule
    from rrsis.engine.presets import resolve_recipe
    from rrsis.engine.train import train
    from rrsis.models import registry
    from rrsis.models.io import load_model

    src, data = fake_dubai
    config = resolve_recipe(
        "default", "lgce_effnet_minilm", semantic_weight=0.5, input_size=64, batch_size=2,
        workers=0, epochs=1,
    )  # fmt: skip

    # The head sees the encoder's maps and gets gradients from a batch with class maps.
    model = registry.get_tiny_model("lgce_effnet_minilm")
    module = RRSISLightningModule(model, dataclasses.replace(config, semantic_classes=5))
    image = torch.randn(2, 3, 64, 64)
    ids, mask = model.tokenize(["road", "building"])
    logits = module(image, ids, mask)
    target = torch.randint(0, 5, (2, 64, 64))
    target[1] = SEMANTIC_IGNORE
    loss = module.semantic_aux.loss(target)
    assert torch.isfinite(loss) and loss > 0
    (loss + logits.sum() * 0).backward()
    head_grads = [p.grad for p in module.semantic_aux.parameters()]
    assert all(g is not None for g in head_grads) and any(g.abs().sum() > 0 for g in head_grads)
    with pytest.raises(RuntimeError, match="forward"):
        module.semantic_aux.loss(target)  # maps are consumed by each loss call

    out = tmp_path / "run"
    run = TrainRun(
        [data], out, config, val=data, tiny=True, max_steps=2, progress=False,
        semantic_labels=src, limit_val_batches=1,
    )  # fmt: skip
    train(run)
    record = json.loads((out / "hparams.json").read_text())
    assert record["semantic_labels"] == str(src)
    assert record["train"]["semantic_classes"] == 5
    metrics = (out / "logs" / "metrics.csv").read_text()
    assert "train/semantic_loss" in metrics
    exported = load_model(out / "model.safetensors")  # the head is not part of the model
    assert not any("semantic" in k for k in exported.state_dict())

    with pytest.raises(Exception, match="semantic_labels"):
        train(TrainRun([data], tmp_path / "no_labels", config, val=data, tiny=True))


def test_cli_missing_label_tree_is_one_line(fake_dubai, tmp_path, capsys) -> None:
    from rrsis.cli import main

    _, data = fake_dubai
    argv = ["train", "--tiny", "--data", str(data), "--out", str(tmp_path / "run")]
    argv += ["--semantic-labels", str(tmp_path / "nowhere"), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("workers", [0, 1])
def test_preloaded_samples_match_the_decoded_ones(fake_dubai, workers: int) -> None:

    src, out = fake_dubai
    source = TransformedDataset(RefSegRS(out, "train"), AddSemantic(DubaiLabelLookup(src)))
    # One sample without a class map, as the synthetic scenes have none.
    plain = RefSegRS(out, "val")
    mixed = torch.utils.data.ConcatDataset([source, plain])
    torch.manual_seed(0)
    expected_draw = torch.rand(())
    torch.manual_seed(0)
    preloaded = PreloadedDataset(mixed, 48, workers=workers, progress=False)
    # Preloading leaves torch's global RNG alone, so a run's data order does not change.
    assert torch.rand(()) == expected_draw
    assert len(preloaded) == len(mixed)
    assert preloaded.nbytes == len(mixed) * 48 * 48 * 5
    transform = SampleTransform(48, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    for i in range(len(mixed)):
        reference, cached = transform(mixed[i]), transform(preloaded[i])
        assert cached["text"] == reference["text"] and cached["id"] == reference["id"]
        assert cached["meta"] == reference["meta"]
        assert torch.equal(cached["mask"], reference["mask"])
        assert ("semantic" in cached) == ("semantic" in reference) == (i < len(source))
        if "semantic" in reference:
            assert torch.equal(cached["semantic"], reference["semantic"])
        # Rounded to 8 bit after resizing: at most half a grey level (scaled by 1 / std).
        diff = (cached["image"] - reference["image"]) * transform.std
        assert diff.abs().max() <= 0.5 / 255 + 1e-6
    # The store holds the pixels: the source is no longer read.
    assert preloaded[0]["image"].shape == (48, 48, 3) and preloaded[0]["image"].dtype == np.uint8


def test_datamodule_preload_serves_the_same_batches(fake_dubai) -> None:

    src, out = fake_dubai

    def tokenize(texts):
        ids = torch.tensor([[len(t), 1] for t in texts])
        return ids, torch.ones_like(ids)

    def first_val_batch(preload: bool) -> dict:
        dm = RefSegDataModule(
            [out],
            out,
            tokenize,
            32,
            (0.5,) * 3,
            (0.25,) * 3,
            batch_size=4,
            semantic_lookup=DubaiLabelLookup(src),
            preload=preload,
        )
        dm.setup("fit")
        assert isinstance(dm.train_dataset.dataset, PreloadedDataset) == preload
        train = next(iter(dm.train_dataloader()))
        assert train["image"].shape == (4, 3, 32, 32) and train["semantic"].shape == (4, 32, 32)
        return next(iter(dm.val_dataloader()))

    plain, cached = first_val_batch(False), first_val_batch(True)
    assert plain["id"] == cached["id"] and torch.equal(plain["mask"], cached["mask"])
    assert torch.allclose(plain["image"], cached["image"], atol=0.5 / 255 / 0.25 + 1e-6)


def test_auxiliary_loss_is_the_mean_over_labelled_pixels() -> None:
    """Sum over labelled pixels / their count, and 0 with a graph when no pixel is labelled."""
    import torch.nn.functional as F
    from torch import nn

    class Fused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fusions = nn.ModuleList(nn.Identity() for _ in range(2))

    model = Fused()
    aux = SemanticAuxiliary(model, [4, 4], num_classes=3, stages=[0, 1])
    torch.manual_seed(0)
    maps = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)]
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, :4] = SEMANTIC_IGNORE
    for fusion, x in zip(model.fusions, maps):
        fusion(x)
    logits = aux.head(maps)
    expected = F.cross_entropy(logits, target, ignore_index=SEMANTIC_IGNORE)
    for fusion, x in zip(model.fusions, maps):
        fusion(x)
    assert torch.allclose(aux.loss(target), expected, rtol=1e-6)

    for fusion, x in zip(model.fusions, maps):
        fusion(x)
    empty = aux.loss(torch.full_like(target, SEMANTIC_IGNORE))
    assert empty.item() == 0.0 and empty.requires_grad
