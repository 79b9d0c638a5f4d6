"""``Segmenter``: segment an image from one or several referring expressions.

Pre-processing choice: every image (or window) is **resized** to the model's square
``input_size`` and the probabilities are resized back to the image's own size. That is what the
models were trained on (RefSegRS/LAVT resize 512 px tiles to 480x480), so the apparent object size
matches training. Images larger than a training crop are not resized as a whole: they are read in
windows of about the training crop (:mod:`rrsis.infer.tiling`).

Models that fuse language into the image encoder (LAVT, LGCE) cannot encode an image once for
several expressions; ``seg(image, [...])`` therefore runs ONE batched forward with the image
repeated once per expression.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rrsis.errors import ExpressionError, ModelError
from rrsis.infer.compose import parse_expression, parse_rules, scene_position
from rrsis.infer.images import ImageLike, to_rgb_uint8, warn_about_size
from rrsis.infer.network import clean_expressions, unknown_by_expression
from rrsis.infer.reading import Prediction, read_pairs, read_tiles
from rrsis.infer.settings import build_network, check_tiling, window_settings
from rrsis.infer.tiling import blend_windows
from rrsis.models.io import default_threshold, resolve_model


class Segmenter:
    """Referring segmentation of images with an :class:`~rrsis.models.base.RRSISModel`.

    This is the one inference path: :meth:`predict` / ``__call__`` (``rrsis predict``,
    ``rrsis predict-batch``, ``rrsis demo``), :func:`~rrsis.infer.scene.predict_scene`
    (``rrsis predict-scene``, through :meth:`predict_tiles` / :meth:`compose_tiles`) and
    evaluation (:meth:`predict_pairs`) all run the network and the rules through it.

    Args:
        model: a model following the RRSISModel contract (``forward``, ``tokenize``, ``mean``,
            ``std``, ``input_size``, ``size_divisor``).
        device: torch device string.
        input_size: square side images are resized to; ``None`` uses ``model.input_size``.
        threshold: foreground probability above which a pixel is in the mask; ``None`` uses
            the model's ``recommended_threshold`` (stored with the weights when it was chosen
            on validation data, as for the shipped model), else 0.5.
        dtype: ``torch.float32`` or ``torch.bfloat16`` (autocast; faster on recent CPUs/GPUs).
        compose: geometry rules that read position, relation and attribute phrases on the
            network's objects (:mod:`rrsis.infer.compose`): ``"all"`` (default), ``"none"``
            (the network alone) or a comma list / collection of ``position``, ``relation``,
            ``attribute``. The network then segments the class ("building") instead of the
            whole expression; a relation costs one more pass (its other class), and so does
            a rule that cannot decide (the whole expression).
        fuse: fold the model's batch norms into its convolutions for inference (same logits
            to float rounding, ~1.25x faster for the shipped model). It rewrites ``model`` in
            place, so it is off for a model you pass in; :meth:`from_pretrained` turns it on.
            ``save_model`` then refuses ``self.model``; load the weights again to train.
        tiling: how images larger than a training crop are read. ``"auto"`` (default): an
            image whose longer side exceeds 1.5 ``window`` is read in ``window`` px windows,
            blended (:mod:`rrsis.infer.tiling`), at the scale the model was trained at; smaller
            images are resized whole to ``input_size``. ``"always"`` / ``"never"`` force one or
            the other. The rules then run on the whole image's blended probabilities. On the
            validation tile's image parts windows score mean IoU 59.2 against 54.7 for the
            whole resize, at ~10x the time.
        window: window side in px; ``None``: the side of the images the model was trained
            on, as stored with its weights by ``rrsis train`` (``model.train_image_size``, e.g.
            800 for RRSIS-D), else 512 (the shipped model and RefSegRS).
        window_overlap: px shared by neighbouring windows.
        backend: ``"torch"`` (default) or ``"onnxruntime"``: the model's per-tile graph in
            ONNX Runtime on the CPU, float32, from ``onnx`` or exported on first use and
            cached (:mod:`rrsis.infer.onnx_backend`, docs/onnx.md).
        onnx: with ``backend="onnxruntime"``, a graph written by ``rrsis export onnx``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        input_size: int | None = None,
        threshold: float | None = None,
        dtype: torch.dtype = torch.float32,
        compose: str | Sequence[str] | bool | None = "all",
        fuse: bool = False,
        tiling: str = "auto",
        window: int | None = None,
        window_overlap: int = 64,
        backend: str = "torch",
        onnx: str | Path | None = None,
    ) -> None:
        self.tiling = check_tiling(tiling)
        self.window, self.window_overlap = window_settings(model, window, window_overlap)
        try:
            self.compose = parse_rules(compose)
        except ValueError as error:
            raise ModelError(str(error)) from None
        if threshold is None:
            threshold = default_threshold(model)
        if not 0.0 <= threshold <= 1.0:
            raise ModelError(f"threshold must be in [0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.network = build_network(backend, model, device, input_size, dtype, fuse, onnx)
        self.backend = backend
        # The network's settings, read where a Segmenter is at hand.
        self.model, self.device, self.dtype = self.network.model, self.network.device, dtype
        self.input_size, self.fused = self.network.input_size, self.network.fused

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path | None = None,
        weights: str | Path | None = None,
        **kwargs: Any,
    ) -> Segmenter:
        """Build a Segmenter from shipped weights, a weights file, or a registry name.

        Args:
            name_or_path: ``None`` or ``"default"`` for the shipped model; a ``.safetensors``
                path saved by :func:`rrsis.models.io.save_model`; or a registry name (see
                ``list_models()``). One rule for every command: :func:`rrsis.models.io.resolve_model`.
            weights: with a registry name, a ``.safetensors`` state dict for it. Without it the
                model keeps random weights (useful for speed tests only; a warning says so).
            **kwargs: passed to :class:`Segmenter` (device, threshold, backend, ...).

        Raises:
            ModelError: missing default weights, unknown name, pickle checkpoint, or weights that
                do not fit the architecture.
        """
        kwargs.setdefault("fuse", True)  # the model is ours to rewrite
        model, untrained = resolve_model(name_or_path, weights=weights)
        if untrained:
            warnings.warn(
                f"model {str(name_or_path)!r} has random weights (no weights= given)",
                UserWarning,
                stacklevel=2,
            )
        return cls(model, **kwargs)

    # ------------------------------------------------------------------ expressions
    def check_expressions(self, expressions: Sequence[str]) -> list[str]:
        """Expressions with their whitespace collapsed; warns about non-Latin characters.

        Raises:
            ExpressionError: an empty expression.
        """
        return clean_expressions(expressions, stacklevel=3)

    def tokenize(
        self, expressions: Sequence[str], checked: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise expressions; warn about those that fill every token slot.

        Args:
            expressions: ``E`` expressions.
            checked: they already went through :meth:`check_expressions`.

        Returns:
            ``word_ids (E, N)`` and ``word_mask (E, N)`` long tensors on the device.
        """
        if not checked:
            expressions = self.check_expressions(expressions)
        return self.network.tokenize(expressions)

    def _compositions(self, expressions: Sequence[str], rules: Collection[str]) -> list:
        return [parse_expression(e, rules) if rules else None for e in expressions]

    # ------------------------------------------------------------------ network
    def predict_tiles(
        self, tiles: np.ndarray, word_ids: torch.Tensor, word_mask: torch.Tensor
    ) -> np.ndarray:
        """Foreground probabilities of equally sized tiles for tokenised expressions.

        Args:
            tiles: ``uint8 (B, H, W, 3)``.
            word_ids, word_mask: ``(E, N)`` from :meth:`tokenize`.

        Returns:
            ``float32 (E, B, H, W)`` probabilities (softmax of the 2-class logits, class 1).
            The ``B * E`` pairs go through the model in forwards of at most
            ``network.max_rows``.
        """
        return self.network.predict_tiles(tiles, word_ids, word_mask)

    def predict_windows(
        self,
        images: np.ndarray,
        word_ids: torch.Tensor,
        word_mask: torch.Tensor,
        batch: int = 4,
    ) -> np.ndarray:
        """:meth:`predict_tiles` for large images: ``window`` px windows, blended.

        Each image is cut into windows ``window_overlap`` px apart from their neighbours
        (the last ones flush with the border); each window is resized to the model input on
        its own, and the windows' probabilities are blended with linear ramps over the overlap
        (:func:`rrsis.infer.tiling.blend_windows`, as in :func:`~rrsis.infer.scene.predict_scene`).

        Args:
            images: ``uint8 (B, H, W, 3)``.
            word_ids, word_mask: ``(E, N)`` from :meth:`tokenize`.
            batch: windows per :meth:`predict_tiles` call.

        Returns:
            ``float32 (E, B, H, W)`` probabilities.
        """
        return blend_windows(
            images,
            self.window,
            self.window_overlap,
            lambda tiles: self.predict_tiles(tiles, word_ids, word_mask),
            batch,
        )

    # ------------------------------------------------------------------ rules
    def compose_tiles(
        self,
        tiles: np.ndarray,
        expressions: Sequence[str],
        rules: Collection[str] | None = None,
        checked: bool = False,
        valid: np.ndarray | None = None,
        network: Callable[[np.ndarray, torch.Tensor, torch.Tensor], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Like :meth:`predict_tiles`, but reading expressions with the composition rules.

        The probabilities of :meth:`compose_tiles_decided`, without what decided them.

        Returns:
            ``float32 (E, B, H, W)`` probabilities.
        """
        return self.compose_tiles_decided(tiles, expressions, rules, checked, valid, network)[0]

    def compose_tiles_decided(
        self,
        tiles: np.ndarray,
        expressions: Sequence[str],
        rules: Collection[str] | None = None,
        checked: bool = False,
        valid: np.ndarray | None = None,
        network: Callable[[np.ndarray, torch.Tensor, torch.Tensor], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Probabilities of tiles read with the composition rules, and what decided each.

        Every text the network must read (each rule's class and relation object, or the whole
        expression) goes through batched forwards for all tiles; the rules then run on each
        tile's own predicted objects (:mod:`rrsis.infer.reading`). A tile where a rule cannot
        decide costs one more pass, for that tile and expression only.

        Args:
            tiles: ``uint8 (B, H, W, 3)``.
            expressions: ``E`` expressions.
            rules: the rules to apply; ``None`` uses the Segmenter's (``compose=``).
            checked: ``expressions`` already went through :meth:`check_expressions`.
            valid: optional ``bool (B, H, W)``: pixels outside it (a scene's nodata) get
                probability 0 before the rules look for objects.
            network: ``(tiles, word_ids, word_mask) -> (E, B, H, W)`` probabilities of the
                network; ``None`` is :meth:`predict_tiles`.

        Returns:
            ``float32 (E, B, H, W)`` probabilities, and ``decided_by[e][b]``: ``"network"`` or
            the rule that produced the mask of expression ``e`` on tile ``b``.
        """
        rules = self.compose if rules is None else frozenset(rules)
        if not checked:
            expressions = self.check_expressions(expressions)
        return read_tiles(
            tiles,
            expressions,
            self._compositions(expressions, rules),
            self.threshold,
            self.network.tokenize,
            self.predict_tiles if network is None else network,
            valid,
        )

    def predict_pairs(
        self,
        images: np.ndarray,
        expressions: Sequence[str],
        rules: Collection[str] | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """Probabilities of pairs: image ``b`` read with expression ``b`` (evaluation's batches).

        The same forward and composition as :meth:`__call__` without windows: each image is
        resized whole to ``input_size``; the rules run on each pair's own predicted objects.

        Args:
            images: ``uint8 (B, H, W, 3)``, one image per expression.
            expressions: ``B`` expressions.
            rules: the rules to apply; ``None`` uses the Segmenter's (``compose=``), an empty
                collection the network alone.

        Returns:
            ``float32 (B, H, W)`` probabilities, and per pair what produced its mask:
            ``"network"`` or the rule (``"position"``, ``"relation"``, ``"attribute"``).
        """
        if len(images) != len(expressions):
            raise ExpressionError(f"{len(images)} images but {len(expressions)} expressions")
        rules = self.compose if rules is None else frozenset(rules)
        expressions = self.check_expressions(expressions)
        compositions = self._compositions(expressions, rules)
        return read_pairs(
            images, expressions, compositions, self.threshold, self.network.predict_pairs
        )

    # ------------------------------------------------------------------ images
    def predict(
        self,
        image: ImageLike,
        expressions: str | Sequence[str],
        tiling: str | None = None,
    ) -> list[Prediction]:
        """Segment ``image`` for each expression, saying what decided each mask.

        Args:
            image: ``uint8 (H, W, 3)`` array (other band counts/dtypes as in
                :func:`~rrsis.infer.images.to_rgb_uint8`), a PIL image, or an image file path.
            expressions: a string or a list of strings (batched forwards, ``max_rows`` pairs
                each).
            tiling: ``"auto"``, ``"always"`` or ``"never"`` for this call (see the class);
                ``None`` uses the Segmenter's.

        Returns:
            One :class:`Prediction` per expression, at the image's own size.
        """
        expressions = [expressions] if isinstance(expressions, str) else list(expressions)
        if not expressions:
            raise ExpressionError("no referring expression given")
        array = to_rgb_uint8(image)
        tiling = check_tiling(self.tiling if tiling is None else tiling)
        windows = self.uses_windows(array.shape[:2], tiling)
        warn_about_size(array.shape[:2], windows, len(expressions), self.input_size)
        expressions = self.check_expressions(expressions)
        unknown = unknown_by_expression(self.network.model, expressions, stacklevel=2)
        probs, decided_by = self._read_image(array, expressions, windows)
        return [
            Prediction(expression, prob > self.threshold, prob, decided, unknown[expression])
            for expression, prob, decided in zip(expressions, probs, decided_by)
        ]

    def __call__(
        self,
        image: ImageLike,
        expression: str | Sequence[str],
        return_probs: bool = False,
        tiling: str | None = None,
    ) -> np.ndarray | list[np.ndarray]:
        """Segment ``image`` for one or several expressions: :meth:`predict`'s masks.

        Args:
            image, tiling: as for :meth:`predict`.
            expression: a string, or a list of strings.
            return_probs: return ``float32`` foreground probabilities instead of ``bool`` masks.

        Returns:
            For a string: ``(H, W)`` mask (or probabilities) at the image's own size. For a list:
            a list with one such array per expression.
        """
        predictions = self.predict(image, expression, tiling)
        outputs = [p.probability if return_probs else p.mask for p in predictions]
        return outputs[0] if isinstance(expression, str) else outputs

    seg = __call__

    def uses_windows(self, shape: tuple[int, int], tiling: str | None = None) -> bool:
        """Whether an image of ``shape`` ``(H, W)`` is segmented in windows (see ``tiling``)."""
        tiling = self.tiling if tiling is None else tiling
        if tiling == "auto":
            return max(shape) > 1.5 * self.window
        return tiling == "always"

    def _read_image(
        self, array: np.ndarray, expressions: list[str], windows: bool
    ) -> tuple[list[np.ndarray], list[str]]:
        """Probabilities of checked ``expressions`` on one image, and what decided each."""
        if not windows:
            probs, decided = self.compose_tiles_decided(array[None], expressions, checked=True)
            return list(probs[:, 0]), [d[0] for d in decided]
        whole: list[str] = []
        if "position" not in self.compose:
            # Without the position rule the network reads "in the upper left" itself, which
            # means the window's upper left inside a window: those expressions see the image.
            whole = [e for e in expressions if scene_position(e)[1] is not None]
        rest = [e for e in expressions if e not in whole]
        out: dict[str, tuple[np.ndarray, str]] = {}
        for group, network in ((whole, None), (rest, self.predict_windows)):
            if group:
                probs, decided = self.compose_tiles_decided(
                    array[None], group, checked=True, network=network
                )
                out.update((e, (p, d[0])) for e, p, d in zip(group, probs[:, 0], decided))
        return [out[e][0] for e in expressions], [out[e][1] for e in expressions]
