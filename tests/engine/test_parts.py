"""Unit tests of the engine's pieces: presets, loss, optimiser groups, schedule, transforms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from rrsis.engine.callbacks import FitScheduleToTime, retarget_poly
from rrsis.engine.config import parse_max_time
from rrsis.engine.datamodule import RefSegDataModule, median_image_side
from rrsis.engine.losses import SegmentationLoss, WeightedCrossEntropy, soft_dice_loss
from rrsis.engine.optim import build_optimizer, param_groups, poly_lambda
from rrsis.engine.presets import TrainConfig, get_preset
from rrsis.engine.sampling import EpochSampler, balance_weights, sample_categories
from rrsis.engine.transforms import (
    Collate,
    SampleTransform,
    TransformedDataset,
    colour_free,
    orientation_free,
)
from rrsis.errors import RRSISError
from rrsis.models.encoders.base import TextEncoder, VisionEncoder


class _Vision(VisionEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.LayerNorm(4)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(3, 2))


class _Text(TextEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.vision = _Vision()
        self.text = _Text()
        self.head = nn.Conv2d(4, 2, 1)
        self.gn = nn.GroupNorm(2, 4)


def _group(groups, name):
    return next(g for g in groups if g["name"] == name)


def test_param_groups_decay_lr_and_frozen_text():
    net = _Net()
    net.text.requires_grad_(False)
    groups = param_groups(net, lr=1e-3, weight_decay=0.01, pretrained_lr_scale=0.1)
    ids = {id(p) for g in groups for p in g["params"]}
    assert id(net.text.embed.weight) not in ids  # frozen text encoder never reaches AdamW
    decay = _group(groups, "pretrained_decay")
    assert [id(p) for p in decay["params"]] == [id(net.vision.conv.weight)]
    assert decay["lr"] == pytest.approx(1e-4) and decay["weight_decay"] == 0.01
    no_decay = {id(p) for p in _group(groups, "pretrained_no_decay")["params"]}
    expected = {
        net.vision.conv.bias,
        net.vision.norm.weight,
        net.vision.norm.bias,
        net.vision.relative_position_bias_table,
    }
    assert no_decay == {id(p) for p in expected}
    new_no_decay = _group(groups, "new_no_decay")
    assert {id(p) for p in new_no_decay["params"]} == {
        id(net.head.bias),
        id(net.gn.weight),
        id(net.gn.bias),
    }
    assert new_no_decay["weight_decay"] == 0.0 and new_no_decay["lr"] == 1e-3
    assert len(ids) == sum(p.requires_grad for p in net.parameters())


def test_poly_schedule_per_iteration():
    factor = poly_lambda(100, 0.9)
    assert factor(0) == 1.0
    assert factor(50) == pytest.approx(0.5**0.9)
    assert factor(100) == 0.0 and factor(150) == 0.0
    net = _Net()
    optimizer, scheduler = build_optimizer(param_groups(net, 0.1, 0.0), total_steps=10)
    lrs = []
    for _ in range(10):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1 * 0.9**0.9) and lrs[-1] == 0.0
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_weighted_cross_entropy_matches_definition():
    logits = torch.randn(2, 2, 4, 4)
    target = torch.rand(2, 4, 4) > 0.5
    loss = WeightedCrossEntropy((0.9, 1.1))(logits, target)
    logp = logits.log_softmax(1)
    picked = torch.where(target, logp[:, 1], logp[:, 0])
    weights = torch.where(target, 1.1, 0.9)
    assert loss.item() == pytest.approx(
        (-(picked * weights).sum() / weights.sum()).item(), rel=1e-5
    )
    # A half-size target is resized (nearest) to the logits rather than rejected: the same loss
    # as the full-size target each of whose 2x2 blocks repeats one pixel.
    small = target[:, ::2, ::2]
    blocky = small.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    loss_fn = WeightedCrossEntropy()
    assert loss_fn(logits, small).item() == pytest.approx(loss_fn(logits, blocky).item())


def test_soft_dice_and_segmentation_loss():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[0, :2, :2] = True  # a small object
    target[1, :, :4] = True  # a large one

    def logits_of(pred: torch.Tensor) -> torch.Tensor:  # confident logits for a mask
        return torch.stack([torch.where(pred, -20.0, 20.0), torch.where(pred, 20.0, -20.0)], 1)

    sure = logits_of(target)
    assert soft_dice_loss(sure, target).item() == pytest.approx(0.0, abs=1e-3)
    assert soft_dice_loss(logits_of(~target), target).item() == pytest.approx(1.0, abs=0.05)
    # Missing the small object costs as much Dice as missing the large one; CE sees pixels.
    miss_small, miss_large = target.clone(), target.clone()
    miss_small[0], miss_large[1] = False, False
    miss_small, miss_large = logits_of(miss_small), logits_of(miss_large)
    assert soft_dice_loss(miss_small, target).item() == pytest.approx(
        soft_dice_loss(miss_large, target).item(),
        abs=0.1,  # smoothing: 0.40 vs 0.48
    )
    ce = WeightedCrossEntropy()
    assert ce(miss_small, target) < ce(miss_large, target) / 4
    logits = torch.randn(2, 2, 8, 8)
    assert SegmentationLoss(dice_weight=0.0)(logits, target).item() == pytest.approx(
        ce(logits, target).item()
    )
    combined = SegmentationLoss(dice_weight=0.5)(logits, target).item()
    expected = ce(logits, target).item() + 0.5 * soft_dice_loss(logits, target).item()
    assert combined == pytest.approx(expected, rel=1e-5)
    # Targets of another size are resized for both terms.
    assert torch.isfinite(SegmentationLoss(dice_weight=1.0)(logits, target[:, ::2, ::2]))


@pytest.mark.parametrize(
    "text,kind,free",
    [
        ("the red roof", "attribute", True),
        ("the car on the left", "relation", False),
        ("upper building", None, False),
        ("road", "position", False),
        ("Bottom lane", None, False),
        ("bright tree", None, True),
    ],
)
def test_orientation_free(text, kind, free):
    assert orientation_free({"text": text, "meta": {"kind": kind} if kind else {}}) is free


def _sample(text: str) -> dict:
    image = np.zeros((16, 24, 3), dtype=np.uint8)
    image[:4, :4] = 255
    mask = np.zeros((16, 24), dtype=bool)
    mask[:4, :4] = True
    return {"image": image, "mask": mask, "text": text, "id": "a", "meta": {}}


def test_transform_resizes_normalises_and_augments_only_safe_samples():
    torch.manual_seed(0)
    plain = SampleTransform(32, (0.5,) * 3, (0.5,) * 3)(_sample("x"))
    assert plain["image"].shape == (3, 32, 32) and plain["mask"].shape == (32, 32)
    assert plain["mask"].dtype == torch.long and plain["image"].max().item() == pytest.approx(1.0)
    # 4x4 px at 16x24 -> rows 0-7, columns 0-5 (nearest) of 32x32.
    assert plain["mask"][:8, :6].all() and plain["mask"].sum() == 8 * 6
    aug = SampleTransform(32, (0.5,) * 3, (0.5,) * 3, augment=True)
    moved = [not torch.equal(aug(_sample("roof"))["mask"], plain["mask"]) for _ in range(20)]
    assert any(moved)  # an orientation-free sample does get flipped/rotated
    for _ in range(20):
        out = aug(_sample("the roof on the left"))
        assert torch.equal(out["mask"], plain["mask"])
        assert torch.equal(out["image"], plain["image"])


@pytest.mark.parametrize(
    "text,free",
    [
        ("road", True),
        ("white building", False),
        ("Dark water", False),
        ("grey roof", False),
        ("building along the road", True),
        ("lighthouse", True),
    ],
)
def test_colour_free(text, free):
    assert colour_free({"text": text}) is free


def test_photometric_jitter_changes_colours_only_and_spares_colour_expressions():
    rng = np.random.default_rng(0)
    sample = _sample("roof")
    sample["image"] = rng.integers(40, 200, (16, 24, 3), dtype=np.uint8)
    plain = SampleTransform(16, (0.0,) * 3, (1.0,) * 3)(sample)
    jitter = SampleTransform(16, (0.0,) * 3, (1.0,) * 3, photometric=0.4)
    torch.manual_seed(0)
    outs = [jitter(sample) for _ in range(10)]
    assert all(torch.equal(o["mask"], plain["mask"]) for o in outs)  # labels never move
    changed = [(o["image"] - plain["image"]).abs().mean().item() for o in outs]
    assert min(changed) > 0 and max(changed) > 0.02
    assert all(0.0 <= o["image"].min() and o["image"].max() <= 1.0 for o in outs)
    # Brightness scales the mean; over draws it goes both up and down.
    means = [o["image"].mean().item() - plain["image"].mean().item() for o in outs]
    assert min(means) < 0 < max(means)
    named = dict(sample, text="white roof")
    assert all(torch.equal(jitter(named)["image"], plain["image"]) for _ in range(5))
    with pytest.raises(RRSISError, match="photometric"):
        SampleTransform(16, (0.0,) * 3, (1.0,) * 3, photometric=1.5)


def test_balance_weights_equalise_categories_by_strength():
    cats = ["a"] * 6 + ["b"] * 2 + [None]
    plain = balance_weights(cats, 0.0)
    assert plain == [1.0] * 9
    full = balance_weights(cats, 1.0)
    assert sum(full) == pytest.approx(9.0)  # an epoch keeps its size

    def share(weights, cat):
        return sum(w for w, c in zip(weights, cats) if c == cat) / sum(weights)

    # balance 1: every category (None included) equally often; 0.5: between the two.
    assert [share(full, c) for c in ("a", "b", None)] == pytest.approx([1 / 3] * 3)
    half = balance_weights(cats, 0.5)
    assert share(plain, "a") > share(half, "a") > share(full, "a")
    for bad in (-0.1, 1.5):
        with pytest.raises(RRSISError, match="balance"):
            balance_weights(cats, bad)


class _MetaOnly(torch.utils.data.Dataset):
    """Items are their index; categories come from ``meta_of`` as in RefSegRS."""

    def __init__(self, categories: list[str | None]) -> None:
        self.categories = categories

    def __len__(self) -> int:
        return len(self.categories)

    def __getitem__(self, index: int) -> int:
        return index

    def meta_of(self, index: int) -> dict:
        category = self.categories[index]
        return {} if category is None else {"category": category}


def test_datamodule_balance_draws_rare_categories_more_within_each_dataset():
    dubai = _MetaOnly(["building"] * 90 + ["water"] * 10)
    synth = _MetaOnly(["car"] * 45 + ["bus"] * 5)
    assert sample_categories(dubai)[-1] == "water" and sample_categories([1, 2]) == [None, None]

    def draws(balance: float) -> tuple[float, float, float]:
        dm = RefSegDataModule(
            [dubai, synth], dubai, lambda t: (None, None), 8, (0,) * 3, (1,) * 3, balance=balance
        )
        dm.setup("fit")
        sampler = dm.train_dataloader().sampler
        picked = []
        for epoch in range(40):
            sampler.set_epoch(epoch)
            picked += [i for i, _ in sampler]
        water = sum(90 <= i < 100 for i in picked) / len(picked)
        bus = sum(i >= 145 for i in picked) / len(picked)
        from_synth = sum(i >= 100 for i in picked) / len(picked)
        return water, bus, from_synth

    water, bus, from_synth = draws(1.0)
    # Within each dataset the two categories come up equally often ...
    assert water == pytest.approx(1 / 3, abs=0.03) and bus == pytest.approx(1 / 6, abs=0.03)
    # ... and each dataset keeps its share of the draws (100 of 150 samples).
    assert from_synth == pytest.approx(1 / 3, abs=0.03)
    plain = RefSegDataModule([dubai], dubai, lambda t: (None, None), 8, (0,) * 3, (1,) * 3)
    plain.setup("fit")
    sampler = plain.train_dataloader().sampler
    assert isinstance(sampler, EpochSampler) and sampler.weights is None
    assert sorted(i for i, _ in sampler) == list(range(100))  # without balance: a permutation
    with pytest.raises(RRSISError, match="balance"):
        RefSegDataModule([dubai], dubai, lambda t: (None, None), 8, (0,) * 3, (1,) * 3, balance=2)


def test_datamodule_pins_batches_only_for_a_cuda_trainer():
    import types

    data = _MetaOnly(["building"] * 20)
    dm = RefSegDataModule([data], data, lambda t: (None, None), 4, (0,) * 3, (1,) * 3)
    dm.setup("fit")
    assert not dm.train_dataloader().pin_memory  # no trainer
    for device, pinned in (("cpu", False), ("cuda", True)):
        strategy = types.SimpleNamespace(root_device=torch.device(device))
        dm.trainer = types.SimpleNamespace(strategy=strategy)
        assert dm.train_dataloader().pin_memory is pinned
        assert dm.val_dataloader().pin_memory is pinned


def test_epoch_sampler_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(50, seed=1), EpochSampler(50, seed=1)
    torch.manual_seed(123)  # the global RNG plays no part
    first = list(a)
    torch.manual_seed(7)
    assert list(b) == first and sorted(i for i, _ in first) == list(range(50))
    assert len({s for _, s in first}) == 50  # each sample its own augmentation seed
    b.set_epoch(1)
    assert list(b) != first and list(EpochSampler(50, seed=2)) != first
    # The trainer's epoch wins over set_epoch (Lightning sets it late on resume).
    c = EpochSampler(50, seed=1, epoch_of=lambda: 1)
    assert list(c) == list(b)
    # A skip (set on resume) drops the epoch's first samples, once.
    c.skip = 20
    assert list(c) == list(b)[20:] and list(c) == list(b)
    with pytest.raises(RRSISError, match="weights"):
        EpochSampler(3, seed=0, weights=[1.0, 2.0])


def test_transformed_dataset_seeds_the_augmentation():
    t = SampleTransform(8, (0.5,) * 3, (0.5,) * 3, augment=True, photometric=0.5)
    sample = _sample("a building")
    sample["image"] = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    data = TransformedDataset([sample], t)
    views = [data[(0, seed)]["image"] for seed in range(12)]
    assert all(torch.equal(data[(0, 5)]["image"], views[5]) for _ in range(3))
    assert len({v.sum().item() for v in views}) > 3  # different seeds, different views


def test_collate_tokenises():
    def tokenize(texts):
        ids = torch.tensor([[len(t), 1, 0] for t in texts])
        return ids, (ids > 0).long()

    t = SampleTransform(8, (0.5,) * 3, (0.5,) * 3)
    batch = Collate(tokenize)([t(_sample("ab")), t(_sample("abc"))])
    assert batch["image"].shape == (2, 3, 8, 8) and batch["mask"].shape == (2, 8, 8)
    assert batch["word_ids"][:, 0].tolist() == [2, 3] and batch["text"] == ["ab", "abc"]


def test_presets_and_config_round_trip():
    paper = get_preset("paper", "lgce_swin_base")
    assert (paper.lr, paper.weight_decay, paper.epochs, paper.batch_size, paper.input_size) == (
        5e-5,
        1e-2,
        40,
        8,
        480,
    )
    assert paper.class_weights == (0.9, 1.1) and paper.poly_power == 0.9 and not paper.augment
    default = get_preset("default")
    assert default.model_name == "lgce_effnet_minilm" and default.freeze_text
    assert default.lr > paper.lr and default.input_size < 480
    # The paper recipe is the paper's loss and model; our additions live in the CPU preset.
    assert paper.dice_weight == 0.0 and paper.model_kwargs == {}
    assert default.dice_weight > 0 and default.model_kwargs["coord_features"]
    assert default.model_kwargs["lgce_init_scale"] > 0
    assert "lgce_init_scale" not in get_preset("default", "lavt_effnet_minilm").model_kwargs
    assert get_preset("default", "rrn_effnet_minilm").model_kwargs == {}
    # swin_base models keep the paper recipe even under the default preset.
    assert get_preset("default", "lavt_swin_base").lr == 5e-5
    assert TrainConfig.from_dict(default.to_dict()) == default
    # finetune: the default recipe, only a lower lr and fewer epochs (Swin-B: the paper's lr).
    tune = get_preset("finetune")
    assert (tune.lr, tune.epochs) == (2e-4, 6) and tune.lr < default.lr
    assert dataclasses.replace(tune, lr=default.lr, epochs=default.epochs) == default
    swin = get_preset("finetune", "lavt_swin_base")
    assert (swin.lr, swin.epochs, swin.input_size) == (5e-5, 6, 480)
    with pytest.raises(RRSISError):
        TrainConfig.from_dict({"lr": 1.0, "bogus": 2})
    with pytest.raises(RRSISError):
        get_preset("fast")


def test_parse_max_time():
    assert parse_max_time("01:15:00") == "00:01:15:00"
    assert parse_max_time(None) is None
    with pytest.raises(RRSISError):
        parse_max_time("75m")


def test_frozen_encoders_stay_in_eval_and_out_of_the_optimiser():
    from rrsis.engine.module import RRSISLightningModule

    net = _Net()
    net.vision.bn = nn.BatchNorm2d(4)
    config = TrainConfig(freeze_text=True, freeze_vision=True)
    module = RRSISLightningModule(net, config)
    module.train()
    module.on_train_epoch_start()
    assert not net.vision.training and not net.text.training and net.head.training
    assert not any(p.requires_grad for p in net.vision.parameters())
    groups = param_groups(net, 1e-3, 0.01)
    assert {g["name"] for g in groups} == {"new_decay", "new_no_decay"}


def test_retargeted_poly_is_continuous_and_ends_at_zero():

    base = poly_lambda(100, 0.9)
    short = retarget_poly(base, start=30, end=60, power=0.9)
    assert [short(s) for s in range(31)] == [base(s) for s in range(31)]
    values = [short(s) for s in range(30, 70)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert short(30) == pytest.approx(base(30))
    assert short(45) == pytest.approx(base(30) * 0.5**0.9)
    assert short(60) == 0.0 and short(69) == 0.0


def _stub_trainer(scheduler, callbacks: list, current_epoch: int):
    """The parts of a Trainer that FitScheduleToTime reads: 10 planned epochs of 10 steps."""
    import types

    return types.SimpleNamespace(
        callbacks=callbacks,
        current_epoch=current_epoch,
        fit_loop=types.SimpleNamespace(max_epochs=10),
        strategy=types.SimpleNamespace(broadcast=lambda value, src=0: value),
        num_training_batches=10,
        accumulate_grad_batches=1,
        lr_scheduler_configs=[types.SimpleNamespace(scheduler=scheduler)],
    )


def test_fit_to_time_counts_training_time_before_a_resume():
    """A resumed run has less budget left: Lightning's Timer carries the earlier part's time."""

    from pytorch_lightning.callbacks import Timer

    net = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(param_groups(net, 0.1, 0.0), total_steps=100)
    for _ in range(40):
        optimizer.step()
        scheduler.step()

    def stub(before: float):
        timer = Timer()
        timer._offset = before
        return _stub_trainer(scheduler, callbacks=[timer], current_epoch=4)

    now = [0.0]
    fitter = FitScheduleToTime(100.0, margin=0.0, clock=lambda: now[0])
    fresh = stub(before=0.0)
    fitter.on_train_start(fresh, None)
    now[0] = 10.0  # the first epoch after the start took 10 s; 90 s are left: all 10 epochs fit
    fitter.on_train_epoch_end(fresh, None)
    assert fresh.fit_loop.max_epochs == 10 and fitter.events == []

    resumed = stub(before=60.0)  # 60 s were spent before the resume: 30 s = 3 epochs are left
    now[0] = 0.0
    fitter.on_train_start(resumed, None)
    now[0] = 10.0
    fitter.on_train_epoch_end(resumed, None)
    assert resumed.fit_loop.max_epochs == 8
    assert fitter.events[-1]["schedule_end_step"] == 80
    lr_now = scheduler.get_last_lr()[0]
    for _ in range(40):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == 0.0 and lr_now > 0


def test_fit_to_time_gives_epochs_back_when_later_epochs_are_faster():
    """A run shortened after a slow first epoch (other work on the machine) gets epochs back when
    the next ones are fast, up to the planned count, with the lr still decaying to 0 at the end;
    never once its current schedule has ended."""

    net = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(param_groups(net, 0.1, 0.0), total_steps=100)
    trainer = _stub_trainer(scheduler, callbacks=[], current_epoch=0)
    now = [0.0]
    fitter = FitScheduleToTime(100.0, margin=0.0, clock=lambda: now[0])
    fitter.on_train_start(trainer, None)

    def epoch(seconds: float) -> None:
        for _ in range(10):
            optimizer.step()
            scheduler.step()
        now[0] += seconds
        fitter.on_train_epoch_end(trainer, None)
        trainer.current_epoch += 1

    epoch(30.0)  # 30 s per epoch, 70 s left: 1 + 2 epochs fit
    assert trainer.fit_loop.max_epochs == 3
    epoch(5.0)  # mean 17.5 s, 65 s left: 2 + 3 epochs fit again
    assert trainer.fit_loop.max_epochs == 5
    assert [e["epochs"] for e in fitter.events] == ["10 -> 3", "3 -> 5"]
    assert fitter.events[-1]["schedule_end_step"] == 50
    lrs = []
    for seconds in (17.5, 17.5, 1.0):  # on pace; then a fast last epoch, after which lr is 0
        lrs.append(scheduler.get_last_lr()[0])
        epoch(seconds)
    assert trainer.current_epoch == trainer.fit_loop.max_epochs == 5 and len(fitter.events) == 2
    assert scheduler.get_last_lr()[0] == 0.0
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] > 0
    # Never more than planned: a fresh fitter on a 3-epoch plan with time for 20 stays at 3.
    trainer.current_epoch, trainer.fit_loop.max_epochs, now[0] = 0, 3, 0.0
    fitter = FitScheduleToTime(100.0, margin=0.0, clock=lambda: now[0])
    fitter.on_train_start(trainer, None)
    epoch(5.0)
    assert trainer.fit_loop.max_epochs == 3 and fitter.events == []


def test_median_image_side_samples_evenly_and_tolerates_imageless_samples():

    sized = [{"image": np.zeros((s, s + 10, 3), np.uint8)} for s in (40, 50, 60, 500, 70)]
    assert median_image_side(sized) == 70  # longer sides 50 60 70 510 80
    assert median_image_side(sized, n=2) == (50 + 80) // 2  # first and last
    assert median_image_side([]) is None and median_image_side([1, 2]) is None
