"""The paper recipe as RRSIS / LAVT train: BERT layers 0-9 only, batch norms synced on GPUs."""

from __future__ import annotations

import pytest
import torch

from rrsis.engine.module import RRSISLightningModule, limit_text_training
from rrsis.engine.presets import PAPER_TEXT_LAYERS, TrainConfig, get_preset
from rrsis.errors import RRSISError
from rrsis.models.registry import get_tiny_model


def _trainable_text(model) -> set[str]:
    return {n for n, p in model.text.named_parameters() if p.requires_grad}


def test_paper_preset_trains_the_first_ten_bert_layers() -> None:
    assert PAPER_TEXT_LAYERS == 10
    assert get_preset("paper").text_train_layers == 10
    assert get_preset("default", "lavt_swin_base").text_train_layers == 10
    assert get_preset("default").text_train_layers is None  # frozen MiniLM anyway


def test_only_the_first_layers_keep_gradients() -> None:
    model = get_tiny_model("lavt_swin_base", text_layers=3)
    frozen = limit_text_training(model, 2)
    trainable = _trainable_text(model)
    assert trainable and all(
        n.startswith(("model.encoder.layer.0.", "model.encoder.layer.1.")) for n in trainable
    )
    assert any(n.startswith("model.encoder.layer.1.") for n in trainable)
    assert any(".embeddings." in n for n in frozen) and any(".pooler." in n for n in frozen)
    assert any(".encoder.layer.2." in n for n in frozen)
    # The image side is untouched.
    assert all(p.requires_grad for p in model.vision.parameters())


def test_lightning_module_applies_it_and_the_optimiser_skips_frozen_layers() -> None:
    model = get_tiny_model("lavt_swin_base", text_layers=3)
    config = TrainConfig(model_name="lavt_swin_base", text_train_layers=1, input_size=64)
    module = RRSISLightningModule(model, config)
    assert {n.split(".")[3] for n in _trainable_text(model)} == {"0"}
    image = torch.randn(2, 3, 64, 64)
    ids, mask = model.tokenize(["road", "building along the road"])
    before = {n: p.detach().clone() for n, p in model.text.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2)
    module.train()
    assert model.text.model.training  # the frozen layers still run in training mode, as in LAVT
    logits = module(image, ids, mask)
    logits.mean().backward()
    optimizer.step()
    changed = {n for n, p in model.text.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("model.encoder.layer.0.") for n in changed)


def test_negative_layer_count_is_refused() -> None:
    with pytest.raises(RRSISError, match=">= 0"):
        limit_text_training(get_tiny_model("lavt_swin_base"), -1)


@pytest.mark.parametrize(
    ("sync", "accelerator", "devices", "expected"),
    [
        (True, "gpu", 4, True),
        (True, "cuda", "0,1", True),
        (True, "gpu", [0, 1], True),
        (True, "gpu", 1, False),
        (True, "cpu", 4, False),  # SyncBatchNorm refuses CPU tensors: a CPU DDP run would fail
        (False, "gpu", 4, False),
    ],
)
def test_batch_norms_are_synchronised_on_several_gpus_only(sync, accelerator, devices, expected):
    from rrsis.engine.train import use_sync_batchnorm

    config = TrainConfig(sync_batchnorm=sync)
    assert use_sync_batchnorm(config, accelerator, devices) is expected
    assert get_preset("paper").sync_batchnorm and not get_preset("default").sync_batchnorm
