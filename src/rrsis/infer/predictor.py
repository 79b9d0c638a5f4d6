"""``Segmenter``: segment an image from one or several referring expressions.

Pre-processing choice: every image (or scene tile) is **resized** to the model's square
``input_size`` and the probabilities are resized back to the image's own size. That is what the
models were trained on (RefSegRS/LAVT resize 512 px tiles to 480x480), so the apparent object size
matches training. Large scenes are not resized as a whole: :mod:`rrsis.infer.scene` cuts them into
tiles of about the training tile size first.

Models that fuse language into the image encoder (LAVT, LGCE) cannot encode an image once for
several expressions; ``seg(image, [...])`` therefore runs ONE batched forward with the image
repeated once per expression.
"""

from __future__ import annotations

import unicodedata
import warnings
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rrsis.errors import ExpressionError, ImageReadError, ModelError
from rrsis.infer.compose import compose_decided, parse_expression, parse_rules, scene_position
from rrsis.models.io import default_threshold, resolve_model

ImageLike = np.ndarray | Image.Image | str | Path

#: Smallest accepted image side: below it the 1/32 feature map has no pixel left.
MIN_SIDE = 32


def to_rgb_uint8(image: ImageLike, bands: Sequence[int] | None = None) -> np.ndarray:
    """Convert any accepted image input to ``uint8 (H, W, 3)``.

    Files go through :func:`rrsis.data.io.read_image` (TIFF/JPEG/PNG, 1/4 bands, 16 bit). Arrays
    follow the same rules: ``(H, W)`` or one band is replicated, 4 bands keep the first three,
    non-``uint8`` data gets the per-band 2-98 percentile stretch. ``bands`` (1-based, three for
    red, green, blue or one for grey) picks the bands of a multispectral file or array first.

    Raises:
        ImageReadError: unreadable file, unsupported shape, or a side under 32 px.
    """
    source: Path | None = None
    if isinstance(image, (str, Path)):
        from rrsis.data.io import read_image

        source = Path(image)
        array = read_image(source, bands)
    elif isinstance(image, Image.Image):
        if bands is not None:
            raise ImageReadError("bands= needs a file path or an array, not a PIL image")
        array = np.asarray(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        array = image
        if array.ndim == 2:
            array = array[..., None]
        if bands is not None and array.ndim == 3:
            from rrsis.data.io import select_bands

            array = select_bands(array, bands)
        if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
            raise ImageReadError(
                f"expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array, got {image.shape}"
            )
        array = array[..., :3]
        if array.dtype != np.uint8:
            from rrsis.data.io import stretch_to_uint8

            array = stretch_to_uint8(array)
        if array.shape[-1] == 1:
            array = np.repeat(array, 3, axis=-1)
    else:
        raise ImageReadError(f"unsupported image type {type(image).__name__}")
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageReadError(
            f"image is {width}x{height} px; both sides must be at least {MIN_SIDE} px", source
        )
    return np.ascontiguousarray(array)


def _is_non_latin(text: str) -> bool:
    for char in text:
        if char.isalpha() and not unicodedata.name(char, "").startswith("LATIN"):
            return True
    return False


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)``; the last one ends at ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def ramp_weights(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights ``(size,)``: linear from the border to 1 at ``overlap // 2`` px."""
    half = max(overlap // 2, 1)
    idx = np.arange(size, dtype=np.float32)
    dist = np.minimum(idx + 0.5, size - idx - 0.5)
    return np.clip(dist / half, 1e-3, 1.0).astype(np.float32)


TILINGS = ("auto", "always", "never")
#: Window side when a model does not say which image size it was trained on.
DEFAULT_WINDOW = 512
#: Pixels above which a windowed Segmenter call warns about memory (predict_scene streams).
LARGE_IN_MEMORY = 8192 * 8192


class Segmenter:
    """Referring segmentation of images with an :class:`~rrsis.models.base.RRSISModel`.

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
        fuse: fold the model's batch norms into its convolutions for inference
            (:func:`rrsis.models.speed.fuse_for_inference`; checked to give the same logits to
            float rounding). It rewrites ``model`` in place, so it is off for a model you pass
            in; :meth:`from_pretrained`, which owns the model it loads, turns it on. The
            shipped model runs ~1.25x faster with it (``benchmarks/``). ``self.model`` is then
            for inference only: ``save_model`` refuses it; load the weights again to train.
        tiling: how images larger than a training crop are read. ``"auto"`` (default): an
            image whose longer side exceeds 1.5 ``window`` is segmented in ``window`` px
            windows (``window_overlap`` px shared and blended, as in
            :func:`~rrsis.infer.scene.predict_scene`), so objects keep the scale the model was
            trained at; smaller images are resized whole to ``input_size``. ``"always"`` /
            ``"never"`` force one or the other. The composition rules then run on the whole
            image's blended probabilities. On the validation tile's 1126x1058 image parts
            (v4 weights, class names) windows score mean IoU 59.2 against 54.7 for the whole
            resize, at ~10x the time (``scripts/probe_tiling.py``).
        window: window side in px; ``None``: the side of the images the model was trained
            on, as stored with its weights by ``rrsis train`` (``model.train_image_size``, e.g.
            800 for RRSIS-D), else 512 (the shipped model and RefSegRS).
        window_overlap: px shared by neighbouring windows.
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
    ) -> None:
        if tiling not in TILINGS:
            raise ModelError(f"tiling must be one of {', '.join(TILINGS)}, got {tiling!r}")
        if window is None:
            window = int(getattr(model, "train_image_size", None) or DEFAULT_WINDOW)
        if not 0 <= window_overlap < window or window < MIN_SIDE:
            raise ModelError(
                f"need window >= {MIN_SIDE} and 0 <= window_overlap < window, got "
                f"{window} / {window_overlap}"
            )
        self.tiling, self.window, self.window_overlap = tiling, int(window), int(window_overlap)
        if dtype not in (torch.float32, torch.bfloat16):
            raise ModelError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        try:
            self.compose = parse_rules(compose)
        except ValueError as error:
            raise ModelError(str(error)) from None
        if threshold is None:
            threshold = default_threshold(model)
        if not 0.0 <= threshold <= 1.0:
            raise ModelError(f"threshold must be in [0, 1], got {threshold}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = dtype
        self.threshold = float(threshold)
        size = int(input_size if input_size is not None else model.input_size)
        divisor = int(getattr(model, "size_divisor", 1) or 1)
        if size % divisor:
            raise ModelError(f"input_size must be a multiple of {divisor}, got {size}")
        self.input_size = size
        mean = torch.as_tensor(model.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.as_tensor(model.std, dtype=torch.float32).view(1, 3, 1, 1)
        self._mean = mean.to(self.device)
        self._std = std.to(self.device)
        #: Most (image, expression) pairs per network forward (bounds peak memory).
        self.max_rows = 8
        self.fused: dict[str, int] = {}
        if fuse:
            self.fused = self._fuse()

    def _fuse(self) -> dict[str, int]:
        from rrsis.models.speed import fuse_for_inference

        generator = torch.Generator().manual_seed(0)
        size = self.input_size
        image = torch.rand(1, 3, size, size, generator=generator).to(self.device)
        image = ((image - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        word_ids, word_mask = self._tokenize(["the building along the road"])
        try:
            return fuse_for_inference(self.model, (image, word_ids, word_mask))
        except Exception as err:  # the model cannot run this example: run it as it is
            warnings.warn(
                f"batch norms not folded ({type(err).__name__}: {err}); running unfolded",
                UserWarning,
                stacklevel=3,
            )
            return {}

    # ------------------------------------------------------------------ construction
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
            **kwargs: passed to :class:`Segmenter` (device, threshold, ...).

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
    def _check_expressions(self, expressions: Sequence[str]) -> list[str]:
        cleaned = []
        for expression in expressions:
            if not isinstance(expression, str) or not expression.strip():
                raise ExpressionError(f"empty referring expression: {expression!r}")
            expression = " ".join(expression.split())
            if _is_non_latin(expression):
                warnings.warn(
                    f"expression {expression!r} has non-Latin characters; the English tokenizer "
                    "maps them to unknown tokens",
                    UserWarning,
                    stacklevel=3,
                )
            cleaned.append(expression)
        return cleaned

    def tokenize(self, expressions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise checked expressions; warn about those that fill every token slot.

        Returns:
            ``word_ids (E, N)`` and ``word_mask (E, N)`` long tensors on the device.
        """
        return self._tokenize(self._check_expressions(expressions))

    def _tokenize(self, expressions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        word_ids, word_mask = self.model.tokenize(list(expressions))
        n_tokens = word_mask.shape[1]
        for expression, used in zip(expressions, word_mask.sum(dim=1).tolist()):
            # A sequence that uses every slot was (almost surely) cut by the tokenizer.
            if used >= n_tokens and len(expression.split()) > 1:
                warnings.warn(
                    f"expression {expression[:40]!r} is longer than the model's {n_tokens} "
                    "tokens and was truncated",
                    UserWarning,
                    stacklevel=3,
                )
        return word_ids.to(self.device), word_mask.to(self.device)

    # ------------------------------------------------------------------ core
    @torch.inference_mode()
    def predict_tiles(
        self,
        tiles: np.ndarray,
        word_ids: torch.Tensor,
        word_mask: torch.Tensor,
    ) -> np.ndarray:
        """Foreground probabilities of equally sized tiles for tokenised expressions.

        Args:
            tiles: ``uint8 (B, H, W, 3)``.
            word_ids: ``(E, N)`` from :meth:`tokenize`.
            word_mask: ``(E, N)``.

        Returns:
            ``float32 (E, B, H, W)`` probabilities (softmax of the 2-class logits, class 1).
            The ``B * E`` pairs go through the model in forwards of at most ``max_rows``.
        """
        n_tiles, height, width = tiles.shape[:3]
        n_expr = word_ids.shape[0]
        images = self._normalise(tiles)
        # Expression-major batch: row e * B + b pairs expression e with tile b.
        if n_expr > 1:
            images = images.repeat(n_expr, 1, 1, 1)
            word_ids = word_ids.repeat_interleave(n_tiles, dim=0)
            word_mask = word_mask.repeat_interleave(n_tiles, dim=0)
        elif n_tiles > 1:
            word_ids, word_mask = word_ids.expand(n_tiles, -1), word_mask.expand(n_tiles, -1)
        out = self._forward_rows(images, word_ids, word_mask, (height, width))
        return out.reshape(n_expr, n_tiles, height, width)

    def _normalise(self, tiles: np.ndarray) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` -> the model's normalised ``(B, 3, S, S)`` input on the device."""
        # Writable copy only when needed (PIL arrays are read-only; torch warns on those).
        images = torch.from_numpy(np.require(tiles, requirements=["C", "W"])).to(self.device)
        images = images.permute(0, 3, 1, 2).float().div_(255.0)
        size = self.input_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return (images - self._mean) / self._std

    def _forward_rows(
        self,
        images: torch.Tensor,
        word_ids: torch.Tensor,
        word_mask: torch.Tensor,
        size: tuple[int, int],
    ) -> np.ndarray:
        """Probabilities ``float32 (R, H, W)`` of ``R`` (image, expression) rows at ``size``."""
        out = np.empty((images.shape[0], *size), np.float32)
        # At most `max_rows` pairs per forward: activations grow with the batch (~40 MB per
        # 320 px pair for the shipped model), and several expressions multiply it.
        for start in range(0, images.shape[0], self.max_rows):
            rows = slice(start, start + self.max_rows)
            with torch.autocast(
                device_type=self.device.type,
                dtype=torch.bfloat16,
                enabled=self.dtype == torch.bfloat16,
            ):
                logits = self.model(images[rows], word_ids[rows], word_mask[rows])
            if logits.ndim != 4 or logits.shape[1] != 2:
                raise ModelError(
                    f"model must return logits (B, 2, H, W), got {tuple(logits.shape)}"
                )
            # softmax(l)[1] == sigmoid(l1 - l0); bilinear resizing is linear, so resizing the
            # difference alone gives the same result at half the cost.
            margin = (logits[:, 1:2] - logits[:, 0:1]).float()
            if margin.shape[-2:] != size:
                margin = F.interpolate(margin, size=size, mode="bilinear", align_corners=False)
            out[rows] = torch.sigmoid(margin)[:, 0].cpu().numpy()
        return out

    @torch.inference_mode()
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
        expressions = self._check_expressions(expressions)
        compositions = [parse_expression(e, rules) if rules else None for e in expressions]
        wanted = [
            (b, text)
            for b, (expression, composition) in enumerate(zip(expressions, compositions))
            for text in (composition.texts() if composition else [expression])
        ]
        probs = self._pair_probabilities(images, wanted)
        out = np.empty((len(expressions), *images.shape[1:3]), np.float32)
        decided_by: list[str] = []
        undecided: list[tuple[int, str]] = []
        for b, (expression, composition) in enumerate(zip(expressions, compositions)):
            decided = None
            if composition is not None:
                decided = compose_decided(
                    composition, lambda t, b=b: probs[b, t], self.threshold, image=images[b]
                )
            if decided is not None:
                out[b] = decided
                decided_by.append(composition.rule)
                continue
            decided_by.append("network")
            if (b, expression) in probs:
                out[b] = probs[b, expression]
            else:
                undecided.append((b, expression))
        # Where a rule could not decide, the network reads the whole expression.
        for (b, _), prob in self._pair_probabilities(images, undecided).items():
            out[b] = prob
        return out, decided_by

    def _pair_probabilities(
        self, images: np.ndarray, wanted: list[tuple[int, str]]
    ) -> dict[tuple[int, str], np.ndarray]:
        """``{(b, text): float32 (H, W)}`` for each image index and text in ``wanted``."""
        if not wanted:
            return {}
        texts = list(dict.fromkeys(text for _, text in wanted))
        word_ids, word_mask = self._tokenize(texts)
        row_of = {text: i for i, text in enumerate(texts)}
        picks = [b for b, _ in wanted]
        rows = torch.tensor([row_of[text] for _, text in wanted], device=self.device)
        batch = self._normalise(images[picks])
        probs = self._forward_rows(batch, word_ids[rows], word_mask[rows], images.shape[1:3])
        return {key: prob for key, prob in zip(wanted, probs)}

    def __call__(
        self,
        image: ImageLike,
        expression: str | Sequence[str],
        return_probs: bool = False,
        tiling: str | None = None,
    ) -> np.ndarray | list[np.ndarray]:
        """Segment ``image`` for one or several expressions.

        Args:
            image: ``uint8 (H, W, 3)`` array (other band counts/dtypes as in
                :func:`to_rgb_uint8`), a PIL image, or an image file path.
            expression: a string, or a list of strings (batched forwards, ``max_rows`` pairs each).
            return_probs: return ``float32`` foreground probabilities instead of ``bool`` masks.
            tiling: ``"auto"``, ``"always"`` or ``"never"`` for this call (see the class);
                ``None`` uses the Segmenter's.

        Returns:
            For a string: ``(H, W)`` mask (or probabilities) at the image's own size. For a list:
            a list with one such array per expression.
        """
        single = isinstance(expression, str)
        expressions = [expression] if single else list(expression)
        if not expressions:
            raise ExpressionError("no referring expression given")
        array = to_rgb_uint8(image)
        tiling = self.tiling if tiling is None else tiling
        if tiling not in TILINGS:
            raise ModelError(f"tiling must be one of {', '.join(TILINGS)}, got {tiling!r}")
        windows = self.uses_windows(array.shape[:2], tiling)
        if not windows and max(array.shape[:2]) > 4 * self.input_size:
            # The whole image is shrunk to the model input: small objects vanish.
            warnings.warn(
                f"image is {array.shape[1]}x{array.shape[0]} px and is resized to "
                f"{self.input_size}x{self.input_size}; use predict_scene (rrsis predict-scene) "
                "to keep full resolution",
                UserWarning,
                stacklevel=2,
            )
        height, width = array.shape[:2]
        if windows and height * width > LARGE_IN_MEMORY:
            # float32 probabilities per expression, plus the weight sum and the rules' maps.
            gib = height * width * 4 * (len(expressions) + 2) / 2**30
            warnings.warn(
                f"segmenting a {width}x{height} image in memory needs about {gib:.1f} GiB; "
                "predict_scene (rrsis predict-scene) reads and writes it window by window",
                UserWarning,
                stacklevel=2,
            )
        expressions = self._check_expressions(expressions)
        probs = self._probabilities(array, expressions, windows)
        outputs = [p if return_probs else p > self.threshold for p in probs]
        return outputs[0] if single else outputs

    def uses_windows(self, shape: tuple[int, int], tiling: str | None = None) -> bool:
        """Whether an image of ``shape`` ``(H, W)`` is segmented in windows (see ``tiling``)."""
        tiling = self.tiling if tiling is None else tiling
        if tiling == "auto":
            return max(shape) > 1.5 * self.window
        return tiling == "always"

    def _probabilities(
        self, array: np.ndarray, expressions: list[str], windows: bool = False
    ) -> list[np.ndarray]:
        """Foreground probabilities of checked ``expressions``, composed where a rule applies."""
        if not windows:
            return list(self.compose_tiles(array[None], expressions, checked=True)[:, 0])
        whole: list[str] = []
        if "position" not in self.compose:
            # Without the position rule the network reads "in the upper left" itself, which
            # means the window's upper left inside a window: those expressions see the image.
            whole = [e for e in expressions if scene_position(e)[1] is not None]
        out: dict[str, np.ndarray] = {}
        if whole:
            probs = self.compose_tiles(array[None], whole, checked=True)[:, 0]
            out.update(zip(whole, probs))
        rest = [e for e in expressions if e not in out]
        if rest:
            probs = self.compose_tiles(
                array[None], rest, checked=True, network=self.predict_windows
            )[:, 0]
            out.update(zip(rest, probs))
        return [out[e] for e in expressions]

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
        (the weights of :func:`~rrsis.infer.scene.predict_scene`).

        Args:
            images: ``uint8 (B, H, W, 3)``.
            word_ids, word_mask: ``(E, N)`` from :meth:`tokenize`.
            batch: windows per :meth:`predict_tiles` call.

        Returns:
            ``float32 (E, B, H, W)`` probabilities.
        """
        n_images, height, width = images.shape[:3]
        win_h, win_w = min(self.window, height), min(self.window, width)
        stride = self.window - self.window_overlap
        ys, xs = tile_starts(height, win_h, stride), tile_starts(width, win_w, stride)
        weight = (
            ramp_weights(win_h, self.window_overlap)[:, None]
            * ramp_weights(win_w, self.window_overlap)[None, :]
        )
        total = np.zeros((height, width), np.float32)
        for y0 in ys:
            for x0 in xs:
                total[y0 : y0 + win_h, x0 : x0 + win_w] += weight
        out = np.zeros((word_ids.shape[0], n_images, height, width), np.float32)
        places = [(b, y0, x0) for b in range(n_images) for y0 in ys for x0 in xs]
        for start in range(0, len(places), batch):
            chunk = places[start : start + batch]
            tiles = np.stack([images[b, y : y + win_h, x : x + win_w] for b, y, x in chunk])
            probs = self.predict_tiles(tiles, word_ids, word_mask)
            for k, (b, y, x) in enumerate(chunk):
                out[:, b, y : y + win_h, x : x + win_w] += probs[:, k] * weight
        out /= total
        return out

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

        Every text the network must read (each rule's class and relation object, or the whole
        expression) goes through batched forwards for all tiles; the rules then run on each
        tile's own predicted objects (:func:`rrsis.infer.compose.compose_probability`). A tile
        where a rule cannot decide costs one more pass, for that tile and expression only.

        Args:
            tiles: ``uint8 (B, H, W, 3)``.
            expressions: ``E`` expressions.
            rules: the rules to apply; ``None`` uses the Segmenter's (``compose=``).
            checked: ``expressions`` were already cleaned by :meth:`tokenize`'s checks.
            valid: optional ``bool (B, H, W)``: pixels outside it (a scene's nodata) get
                probability 0 before the rules look for objects.
            network: ``(tiles, word_ids, word_mask) -> (E, B, H, W)`` probabilities of the
                network; ``None`` is :meth:`predict_tiles` (:meth:`predict_windows` for
                large images).

        Returns:
            ``float32 (E, B, H, W)`` probabilities.
        """
        network = self.predict_tiles if network is None else network

        rules = self.compose if rules is None else frozenset(rules)
        if not checked:
            expressions = self._check_expressions(expressions)
        compositions = [parse_expression(e, rules) if rules else None for e in expressions]
        # Every text the network must read, once, in batched forwards.
        needed: list[str] = []
        for expression, composition in zip(expressions, compositions):
            for text in composition.texts() if composition else [expression]:
                if text not in needed:
                    needed.append(text)
        word_ids, word_mask = self._tokenize(needed)
        batched = network(tiles, word_ids, word_mask)
        if valid is not None:
            batched *= valid[None]
        index = {text: i for i, text in enumerate(needed)}
        out = np.empty((len(expressions), *batched.shape[1:]), np.float32)
        undecided: dict[str, list[tuple[int, int]]] = {}  # whole expression -> [(e, b)]
        for e, (expression, composition) in enumerate(zip(expressions, compositions)):
            for b in range(tiles.shape[0]):
                decided = None
                if composition is not None:
                    decided = compose_decided(
                        composition,
                        lambda text, b=b: batched[index[text], b],
                        self.threshold,
                        image=tiles[b],
                    )
                if decided is not None:
                    out[e, b] = decided
                elif expression in index:
                    out[e, b] = batched[index[expression], b]
                else:
                    undecided.setdefault(expression, []).append((e, b))
        # Where a rule could not decide, the network reads the whole expression: one more
        # forward per such expression, over the tiles that need it only.
        for expression, where in undecided.items():
            ids, mask = self._tokenize([expression])
            rows = [b for _, b in where]
            probs = network(tiles[rows], ids, mask)[0]
            if valid is not None:
                probs *= valid[rows]
            for (e, b), prob in zip(where, probs):
                out[e, b] = prob
        return out

    seg = __call__
