"""What a benchmark is: models, data, one recipe for all, seeds; and the named budgets.

:class:`BenchmarkConfig` is what :func:`rrsis.engine.benchmark.run_benchmark` takes; the
command line (``rrsis benchmark``) builds one from its options. A **budget**
(:data:`BUDGETS`) fixes the recipe's length and size so that a comparison is made at a stated
cost:

* ``cpu``: the EfficientNet-Lite0 + MiniLM families with the ``default`` recipe at 128 px, the
  ImageNet image encoder frozen (every family shares it; fusion, text projection and decoder
  learn), 3 epochs, samples preloaded; sized so that 4 families x 2 seeds finish within about
  an hour on 2 CPU cores shared with other work (docs/results/benchmark/README.md). Reduced:
  the models have not converged.
* ``gpu``: the Swin-B + BERT-base families with the ``paper`` recipe (480 px, AdamW 5e-5, poly
  schedule) in bf16, 2 epochs: 4 families x 2 seeds sized for about 10 minutes on one H200
  (the estimate is in docs/results/benchmark/README.md). Reduced as well.
* ``converged``: the recipe's own length (``paper``: 40 epochs, the RRSIS paper's;
  ``default``: 30), in bf16 on a GPU. The table's ``val gain`` column says whether each run's
  validation curve was still rising over its last third of epochs.

Every option left unset keeps the budget's value; an explicit ``epochs``, ``input_size`` or
``batch_size`` replaces it for every model alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrsis.engine.presets import TrainConfig, resolve_recipe
from rrsis.errors import RRSISError

CPU_MODELS = ("lavt_effnet_minilm", "lgce_effnet_minilm", "rrn_effnet_minilm", "cmsa_effnet_minilm")
GPU_MODELS = ("lavt_swin_base", "lgce_swin_base", "rrn_swin_base", "cmsa_swin_base")


@dataclass(frozen=True)
class Budget:
    """A named training budget: the recipe every model of a benchmark shares.

    Attributes:
        name: ``--budget`` value.
        preset: the recipe (:func:`rrsis.engine.presets.get_preset`).
        models: models run when ``--models`` is not given.
        overrides: :class:`~rrsis.engine.presets.TrainConfig` fields set on top of the preset
            (``None`` values keep the preset's).
        summary: one line for the table's header.
    """

    name: str
    preset: str
    models: tuple[str, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""


BUDGETS: dict[str, Budget] = {
    budget.name: budget
    for budget in (
        Budget(
            "cpu",
            "default",
            CPU_MODELS,
            {"epochs": 3, "input_size": 128, "freeze_vision": True, "preload": True},
            "reduced CPU budget: default recipe, 128 px, frozen image encoder, 3 epochs (not converged)",
        ),
        Budget(
            "gpu",
            "paper",
            GPU_MODELS,
            {"epochs": 2, "precision": "bf16-mixed", "preload": True, "workers": 8},
            "reduced GPU budget: paper recipe, 480 px, bf16, 2 epochs (not converged)",
        ),
        Budget(
            "converged",
            "paper",
            GPU_MODELS,
            {"precision": "bf16-mixed", "preload": True, "workers": 8},
            "the recipe's own length (paper: 40 epochs), bf16",
        ),
    )
}


@dataclass
class BenchmarkConfig:
    """One benchmark: every model trained with one recipe per seed, scored once on ``split``.

    Attributes:
        data: dataset root; ``train`` trains, ``val`` selects checkpoints, ``split`` scores.
        out: output directory (layout in :mod:`rrsis.engine.benchmark`).
        models: labels; a label without a checkpoint must be a registry name. Empty = the
            budget's models.
        budget: one of :data:`BUDGETS`, or ``None`` = ``preset`` as it is.
        preset: recipe used without a budget (``paper`` or ``default``).
        seeds: training seeds; every model is trained once per seed.
        reference: model every other one is compared with (paired intervals); ``None`` = the
            first of ``models``.
        epochs, batch_size, input_size: replace the budget's value for every model.
        model_kwargs: keyword arguments given to every trained model's factory (e.g. local
            ``pretrained`` / ``text_pretrained`` weights of the Swin-B families).
        checkpoints: ``{label: weights}`` of models loaded instead of trained (one run each).
        eval_batch_size: batch size of evaluation.
        protocol: ``native`` or ``lavt`` (:mod:`rrsis.eval.evaluate`).
        split: split to score.
        data_format: ``auto``, ``refsegrs`` or ``rrsisd``.
        device: evaluation device (``None``: CUDA when available).
        resamples: bootstrap resamples of the intervals.
        tiny: train tiny random-config models (tests and smoke runs).
        max_steps: stop each run after this many optimiser steps (-1: the epochs decide).
        progress: show progress bars.
        command: the command line recorded in ``command.txt``.
    """

    data: str | Path
    out: str | Path
    models: tuple[str, ...] = ()
    budget: str | None = None
    preset: str = "paper"
    seeds: tuple[int, ...] = (0,)
    reference: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    input_size: int | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    checkpoints: Mapping[str, str | Path] = field(default_factory=dict)
    eval_batch_size: int = 8
    protocol: str = "native"
    split: str = "test"
    data_format: str = "auto"
    device: str | None = None
    resamples: int = 2000
    tiny: bool = False
    max_steps: int = -1
    progress: bool = True
    command: str | None = None

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        if self.budget is not None and self.budget not in BUDGETS:
            raise RRSISError(f"unknown budget {self.budget!r}; choose one of {', '.join(BUDGETS)}")
        if self.budget is not None:
            self.preset = BUDGETS[self.budget].preset
        self.models = tuple(self.models) or (
            BUDGETS[self.budget].models if self.budget is not None else ()
        )
        if not self.models:
            raise RRSISError("a benchmark needs --models (or a --budget that names its models)")
        check_names(self.models, "--models")
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds:
            raise RRSISError("--seeds must name at least one seed")
        check_names([str(s) for s in self.seeds], "--seeds")
        self.checkpoints = {k: Path(v) for k, v in self.checkpoints.items()}
        unknown = sorted(set(self.checkpoints) - set(self.models))
        if unknown:
            raise RRSISError(f"--checkpoints names models not in --models: {', '.join(unknown)}")
        if self.reference is None:
            self.reference = self.models[0]
        elif self.reference not in self.models:
            raise RRSISError(f"--reference {self.reference!r} is not one of --models")
        if self.resamples < 100:
            raise RRSISError(f"--resamples must be at least 100, got {self.resamples}")

    @property
    def trained(self) -> tuple[str, ...]:
        """The models that are trained (those without a checkpoint)."""
        return tuple(name for name in self.models if name not in self.checkpoints)

    def recipe(self, model: str, seed: int) -> TrainConfig:
        """The recipe of ``model`` trained with ``seed``: the budget's, the same for all."""
        overrides = dict(BUDGETS[self.budget].overrides) if self.budget is not None else {}
        for name in ("epochs", "batch_size", "input_size"):
            if getattr(self, name) is not None:
                overrides[name] = getattr(self, name)
        config = resolve_recipe(self.preset, model, seed=seed, **overrides)
        if self.model_kwargs:
            config.model_kwargs = {**config.model_kwargs, **self.model_kwargs}
        return config

    def describe(self) -> str:
        """One line: the recipe every model shares."""
        if self.budget is not None:
            text = f"budget `{self.budget}` ({BUDGETS[self.budget].summary})"
        else:
            text = f"preset `{self.preset}`"
        changed = [f"{k} {getattr(self, k)}" for k in ("epochs", "batch_size", "input_size")]
        changed = [c for c in changed if not c.endswith(" None")]
        return text + (f", {', '.join(changed)}" if changed else "")


def check_names(names: list[str] | tuple[str, ...], option: str) -> None:
    """Refuse empty and repeated entries of a comma-separated option."""
    if any(not name for name in names):
        raise RRSISError(f"{option} must be a comma-separated list, got an empty entry")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise RRSISError(f"{option} names {', '.join(repeated)} twice")


def parse_list(spec: str | None, option: str) -> list[str]:
    """``"a, b"`` -> ``["a", "b"]``; ``None`` or ``""`` -> ``[]``; refuses empty entries."""
    if spec is None or not spec.strip():
        return []
    names = [name.strip() for name in spec.split(",")]
    check_names(names, option)
    return names


def parse_seeds(spec: str) -> list[int]:
    """``"0,1"`` -> ``[0, 1]``; ``"0-2"`` -> ``[0, 1, 2]``."""
    seeds: list[int] = []
    for item in parse_list(spec, "--seeds"):
        low, sep, high = item.partition("-")
        try:
            seeds += list(range(int(low), int(high) + 1)) if sep else [int(item)]
        except ValueError:
            raise RRSISError(f"--seeds must be integers like 0,1 or 0-2, got {item!r}") from None
    check_names([str(s) for s in seeds], "--seeds")
    return seeds


def parse_pairs(spec: str | None, option: str) -> dict[str, str]:
    """``"a=x,b=y"`` -> ``{"a": "x", "b": "y"}``; ``None`` or ``""`` -> ``{}``."""
    result: dict[str, str] = {}
    for item in parse_list(spec, option):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise RRSISError(f"{option} entries must look like NAME=VALUE, got {item!r}")
        if name.strip() in result:
            raise RRSISError(f"{option} names {name.strip()!r} twice")
        result[name.strip()] = value.strip()
    return result
