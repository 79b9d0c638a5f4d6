"""Training hyper-parameters as one typed dataclass, with the named recipes we ship.

Four recipes exist:

* ``paper``: the released RefSegRS arguments of the RRSIS paper (LAVT/LGCE with Swin-B + BERT):
  AdamW lr 5e-5, weight decay 1e-2 (none on norms / position-bias tables), poly schedule with
  power 0.9 per iteration, 40 epochs, batch 8 per device, 480x480 input, class weights
  [0.9, 1.1], no augmentation, only BERT layers 0-9 trained, batch norms synchronised across
  GPUs. One deviation, on purpose: LAVT also decays the biases, the decoder's batch norms and
  BERT's LayerNorms, which we never decay (at lr 5e-5 and decay 1e-2 that is a 5e-7 shrink
  per step).
* ``default``: the recipe of the shipped CPU model (``lgce_effnet_minilm``): smaller input,
  frozen sentence encoder, a learning rate twelve times the paper's for the image encoder and
  the freshly initialised layers (fusion, LGCE, decoder), a Dice term, and light geometric
  augmentation that skips expressions whose meaning depends on orientation.
* ``rmsin``: the official RMSIN ``train.py`` / ``args.py`` (Lsan2401/RMSIN, RRSIS-D): as
  ``paper`` but lr 3e-5 and a Dice term: RMSIN's loss is ``0.9 * CE + 0.1 * Dice``, its Dice
  summed over the samples of a GPU (2) and both classes. With AdamW's invariance to the scale of
  the loss that is ``CE + 0.22 * Dice`` per sample; ours counts the foreground class only
  (:data:`RMSIN_DICE_WEIGHT`). Batch 8 on one device is its 4 GPUs x 2. Not reproduced: its
  training-time augmentation, which blacks out 20-60 squares of 32 px in a fixed random 20 % of
  the training expressions' images (docs/models.md).
* ``finetune``: for ``rrsis train --init`` on a few labelled images of your own area: the
  ``default`` recipe at a third of its learning rate (2e-4) for 6 epochs (Swin-B models: the
  paper's recipe, whose lr is already low, for 6 epochs).

A run is reproducible from a :class:`TrainConfig` (saved as ``hparams.json``) plus the data.
:func:`resolve_recipe` is the one place where a named recipe meets explicit overrides.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rrsis.errors import RRSISError

PRESETS = ("default", "paper", "rmsin", "finetune")
#: What ``finetune`` changes in the recipe it starts from (``default``, or ``paper`` for Swin-B
#: models): a third of the default learning rate and a few epochs, the setting measured on a few
#: labelled image parts of a new area (``rrsis train --init``).
FINETUNE_LR = 2e-4
FINETUNE_EPOCHS = 6
DEFAULT_MODEL = "lgce_effnet_minilm"
#: BERT layers the paper's recipe trains (its optimiser gets ``encoder.layer[0:10]`` only).
PAPER_TEXT_LAYERS = 10
#: RMSIN's learning rate (its ``args.py`` default).
RMSIN_LR = 3e-5
#: RMSIN's Dice weight relative to its cross-entropy, per sample: 0.1 / 0.9 x 2 samples per GPU.
RMSIN_DICE_WEIGHT = 0.1 / 0.9 * 2


@dataclass
class TrainConfig:
    """Everything that determines a training run except the data paths.

    Attributes:
        model_name: registry name passed to ``rrsis.models.registry.get_model``.
        model_kwargs: keyword overrides for ``get_model``.
        epochs: number of epochs; the poly schedule spans ``epochs * steps_per_epoch``.
        batch_size: samples per device per step (LAVT's batch size is per GPU too).
        lr: learning rate of the new (randomly initialised) layers.
        pretrained_lr_scale: multiplier of ``lr`` for parameters of the pretrained vision and
            text encoders (1.0 = one learning rate for everything, as in the paper).
        weight_decay: AdamW decay; never applied to norms, biases or position-bias tables.
        poly_power: exponent of the per-iteration poly schedule ``(1 - it / total) ** power``.
        class_weights: cross-entropy weights for (background, foreground).
        dice_weight: weight of a per-sample soft Dice term added to the cross-entropy
            (0 = the paper's loss); it makes small objects count as much as large ones.
        semantic_weight: weight of the auxiliary semantic loss (``rrsis.engine.auxiliary``),
            which needs full class maps of the training crops (``TrainRun.semantic_labels``);
            0 = off, as in the paper.
        semantic_classes: classes of those maps (unlabeled excluded).
        input_size: square side images and masks are resized to; ``None`` = model default.
        freeze_text: keep the text encoder frozen (excluded from the optimiser, kept in eval).
        text_train_layers: with a trainable text encoder, train only its first N transformer
            layers; its embeddings, later layers and pooler keep their loaded weights (they
            still run, dropout included). ``None`` = all. The paper's recipe gives BERT layers
            0-9 of 12 to the optimiser (RRSIS / LAVT ``train.py``), so ``paper`` sets 10.
        sync_batchnorm: on several GPUs, compute batch-norm statistics over all of them
            (LAVT converts its model to ``SyncBatchNorm``; ``paper`` sets it). Ignored on one
            device and on CPUs, where PyTorch's SyncBatchNorm does not run.
        freeze_vision: keep the image encoder frozen too. About 1.6x faster steps on CPU
            (backward through depthwise convolutions dominates); fusion, LGCE and decoder
            then learn on fixed ImageNet features.
        augment: random flips and 90-degree rotations for samples whose expression does not
            depend on orientation (see :func:`rrsis.engine.transforms.orientation_free`).
        photometric: strength of random brightness / contrast / saturation changes for
            samples whose expression names no colour (0 = off; see
            :class:`rrsis.engine.transforms.SampleTransform`).
        balance: category balancing of the training samples, in [0, 1]: each is drawn with
            weight ``count(its category) ** -balance`` (0 = off; 0.5 = inverse square root;
            see :mod:`rrsis.engine.sampling`).
        preload: decode and resize every training and validation sample once and keep it in
            RAM (:class:`rrsis.engine.datamodule.PreloadedDataset`): a faster loader for about
            0.5 MB per sample at 320x320; images are rounded to 8 bit after resizing.
        seed: global seed (``pl.seed_everything`` with worker seeding).
        workers: DataLoader worker processes per device.
        precision: Lightning precision string ("32-true", "bf16-mixed", ...), or "auto":
            bf16 mixed precision on GPUs that have bfloat16 (about 2.5x faster steps and less
            memory for the Swin-B models), fp32 elsewhere (CPUs). LAVT trained in fp32; ask for
            it with "32-true" (``rrsis train --precision 32-true``).
        grad_clip: gradient-norm clipping, 0 = off.
        ckpt_every_n_steps: also refresh ``last.ckpt`` every this many optimiser steps.
        channels_last: train with the model's weights and the images in channels-last memory
            layout. The same arithmetic in another order (results agree to float rounding);
            on 2 CPU cores the default recipe's steps take about 0.8x the time, because
            oneDNN's depthwise convolutions, whose backward dominates, are faster in it.
    """

    model_name: str = DEFAULT_MODEL
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 40
    batch_size: int = 8
    lr: float = 5e-5
    pretrained_lr_scale: float = 1.0
    weight_decay: float = 1e-2
    poly_power: float = 0.9
    class_weights: tuple[float, float] = (0.9, 1.1)
    dice_weight: float = 0.0
    semantic_weight: float = 0.0
    semantic_classes: int = 0
    input_size: int | None = None
    freeze_text: bool = False
    text_train_layers: int | None = None
    sync_batchnorm: bool = False
    freeze_vision: bool = False
    augment: bool = False
    photometric: float = 0.0
    balance: float = 0.0
    preload: bool = False
    seed: int = 0
    workers: int = 2
    precision: str = "auto"
    grad_clip: float = 0.0
    ckpt_every_n_steps: int = 200
    channels_last: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "workers", "ckpt_every_n_steps"):
            value = getattr(self, name)
            if value < (0 if name == "workers" else 1):
                raise RRSISError(
                    f"{name} must be {'0 or more' if name == 'workers' else 'positive'}, got {value}"
                )
        if self.lr <= 0:
            raise RRSISError(f"lr must be positive, got {self.lr}")
        if self.input_size is not None and self.input_size < 1:
            raise RRSISError(f"input_size must be positive, got {self.input_size}")
        if not 0.0 <= self.photometric < 1.0:
            raise RRSISError(f"photometric strength must be in [0, 1), got {self.photometric}")
        if not 0.0 <= self.balance <= 1.0:
            raise RRSISError(f"category balance must be in [0, 1], got {self.balance}")
        if self.semantic_weight < 0 or self.dice_weight < 0:
            raise RRSISError("semantic_weight and dice_weight must be 0 or more")
        if len(self.class_weights) != 2:
            raise RRSISError(
                f"class_weights must be (background, foreground), got {self.class_weights}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["class_weights"] = list(self.class_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`RRSISError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RRSISError(f"unknown training hyper-parameters: {', '.join(unknown)}")
        values = dict(data)
        if "class_weights" in values:
            values["class_weights"] = tuple(float(w) for w in values["class_weights"])
        return cls(**values)


def get_preset(preset: str, model_name: str | None = None) -> TrainConfig:
    """Return the hyper-parameters of a named recipe.

    Args:
        preset: ``"paper"`` (the RRSIS paper's RefSegRS recipe), ``"rmsin"`` (the official
            RMSIN recipe; its model by default), ``"default"`` (the CPU
            recipe of the shipped model; for ``*_swin_base`` models it falls back to the paper
            recipe, which is what those models were designed for) or ``"finetune"`` (the
            default recipe with a lower lr and fewer epochs, for ``--init``).
        model_name: model to train; ``None`` = the preset's own model.

    Returns:
        A fresh :class:`TrainConfig`; change it with :func:`resolve_recipe` or
        ``dataclasses.replace``.
    """
    if preset not in PRESETS:
        raise RRSISError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if preset == "finetune":
        config = get_preset("default", model_name)
        lr = config.lr if "swin_base" in config.model_name else FINETUNE_LR
        return dataclasses.replace(config, epochs=FINETUNE_EPOCHS, lr=lr)
    if preset == "rmsin":
        return TrainConfig(
            model_name=model_name or "rmsin_swin_base",
            lr=RMSIN_LR,
            dice_weight=RMSIN_DICE_WEIGHT,
            input_size=480,
            text_train_layers=PAPER_TEXT_LAYERS,
            sync_batchnorm=True,
        )
    name = model_name or (DEFAULT_MODEL if preset == "default" else "lgce_swin_base")
    if preset == "paper" or "swin_base" in name:
        return TrainConfig(
            model_name=name,
            input_size=480,
            text_train_layers=PAPER_TEXT_LAYERS,
            sync_batchnorm=True,
        )
    # CPU recipe: 2 cores take ~1.5 s per step of 8 images at 320 px (frozen MiniLM;
    # backward through the depthwise convolutions dominates), so a 85 minute budget allows
    # a few thousand steps. The new layers need a much higher lr than the paper's 5e-5 to learn
    # in that time, and so does the EfficientNet-Lite: with one lr for both the first epoch
    # reaches val mIoU 32.5 against 30.1 with the encoder at 0.1x (the model underfits even its
    # training crops, see docs/model-card.md). Doubling the lr to 6e-4 for everything gave 36.1
    # (37.1 with the auxiliary semantic loss of scripts/train_default.py); photometric
    # augmentation was neutral (36.9), so it stays off (docs/results/recipe_probes/table.md).
    # Our additions for the EfficientNet-Lite models (see docs/model-card.md): coordinate
    # features in every PWAM (position expressions), LGCE residual scales starting at 0.1
    # rather than 0 (zero-initialised scales barely moved in short runs), and a Dice term.
    model_kwargs: dict[str, object] = {}
    if name.startswith(("lavt_effnet", "lgce_effnet")):
        model_kwargs["coord_features"] = True
        if name.startswith("lgce_"):
            model_kwargs["lgce_init_scale"] = 0.1
    return TrainConfig(
        model_name=name,
        model_kwargs=model_kwargs,
        epochs=30,
        batch_size=8,
        lr=6e-4,
        pretrained_lr_scale=1.0,
        dice_weight=1.0,
        input_size=320,
        freeze_text=True,
        augment=True,
        ckpt_every_n_steps=25,
    )


def resolve_recipe(
    preset: str = "default", model_name: str | None = None, **overrides: Any
) -> TrainConfig:
    """A named recipe with explicit values on top: the one rule for "preset + options".

    ``get_preset(preset, model_name)`` gives the recipe (which depends on the model: Swin-B
    models fall back to the paper's, EfficientNet-Lite ones get their ``model_kwargs``); each
    override that is not ``None`` then replaces that field (``dataclasses.replace``), so an
    option left unset keeps the recipe's value.

    Args:
        preset: one of :data:`PRESETS`.
        model_name: registry name; ``None`` = the preset's own model.
        **overrides: :class:`TrainConfig` fields, e.g. ``epochs=2, lr=1e-4``; ``None`` = unset.

    Raises:
        RRSISError: unknown preset, unknown field, or a value out of range.
    """
    config = get_preset(preset, model_name)
    values = {key: value for key, value in overrides.items() if value is not None}
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise RRSISError(f"unknown training hyper-parameters: {', '.join(unknown)}")
    return dataclasses.replace(config, **values)
