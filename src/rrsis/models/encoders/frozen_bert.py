"""A frozen BERT for inference without importing ``transformers``, and its tokenizer.

Importing ``transformers``' BERT costs ~2.2 s of start-up (it pulls in ``torch._dynamo``,
``torch.distributed.tensor``, sympy and scipy), longer than the shipped model's whole
prediction. A frozen text encoder needs none of it: it only runs the forward of a
``BertModel`` in eval mode. :class:`FrozenBert` is that forward, with the modules and
parameter names of ``transformers.BertModel`` (so state dicts and checkpoints are
interchangeable) and the same operations in the same order, so its outputs are bit-identical
(checked by ``tests/models/test_frozen_bert.py`` against ``transformers``). Training a text
encoder, dropout, or other architectures still go through ``transformers``.

:class:`WordPieceTokenizer` runs the ``tokenizer.json`` of a model directory with the
``tokenizers`` library, padded and truncated as ``BertTokenizerFast(..., padding="max_length",
truncation=True)`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor, nn

from rrsis.errors import ModelError


@dataclass(frozen=True)
class BertSizes:
    """The ``config.json`` fields a BERT forward depends on."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"

    @classmethod
    def from_dir(cls, path: Path, **overrides: int) -> BertSizes:
        """Read ``path/config.json`` (``overrides`` win, e.g. ``num_hidden_layers``)."""
        config = json.loads((path / "config.json").read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in {**config, **overrides}.items() if k in known})


def supports(sizes: BertSizes) -> bool:
    """Whether :class:`FrozenBert` computes what ``transformers.BertModel`` does for ``sizes``."""
    return sizes.hidden_act == "gelu" and sizes.position_embedding_type == "absolute"


class _Linear(nn.Linear):
    def reset_parameters(self) -> None:
        # No random initialisation: load_frozen_bert replaces every tensor with the file's.
        pass


class _Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass  # as for _Linear


def _linear(n_in: int, n_out: int) -> nn.Linear:
    return _Linear(n_in, n_out)


class _Embeddings(nn.Module):
    def __init__(self, sizes: BertSizes) -> None:
        super().__init__()
        hidden = sizes.hidden_size
        self.word_embeddings = _Embedding(sizes.vocab_size, hidden, sizes.pad_token_id)
        self.position_embeddings = _Embedding(sizes.max_position_embeddings, hidden)
        self.token_type_embeddings = _Embedding(sizes.type_vocab_size, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=sizes.layer_norm_eps)

    def forward(self, word_ids: Tensor) -> Tensor:
        length = word_ids.shape[1]
        positions = torch.arange(length, device=word_ids.device)[None]
        token_types = torch.zeros_like(word_ids)
        embeddings = self.word_embeddings(word_ids) + self.token_type_embeddings(token_types)
        embeddings = embeddings + self.position_embeddings(positions)
        return self.LayerNorm(embeddings)


class _Dense(nn.Module):
    """``dense`` then ``LayerNorm(dense(x) + residual)``: BertSelfOutput / BertOutput."""

    def __init__(self, n_in: int, sizes: BertSizes) -> None:
        super().__init__()
        self.dense = _linear(n_in, sizes.hidden_size)
        self.LayerNorm = nn.LayerNorm(sizes.hidden_size, eps=sizes.layer_norm_eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _SelfAttention(nn.Module):
    def __init__(self, sizes: BertSizes) -> None:
        super().__init__()
        hidden = sizes.hidden_size
        self.heads = sizes.num_attention_heads
        self.head_size = hidden // self.heads
        self.query, self.key, self.value = (_linear(hidden, hidden) for _ in range(3))

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        shape = (*x.shape[:-1], -1, self.head_size)
        query = self.query(x).view(*shape).transpose(1, 2)
        key = self.key(x).view(*shape).transpose(1, 2)
        value = self.value(x).view(*shape).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=0.0, scale=self.head_size**-0.5
        )
        return out.transpose(1, 2).contiguous().reshape(*x.shape[:-1], -1).contiguous()


class _Attention(nn.Module):
    def __init__(self, sizes: BertSizes) -> None:
        super().__init__()
        self.self = _SelfAttention(sizes)
        self.output = _Dense(sizes.hidden_size, sizes)


class _Intermediate(nn.Module):
    def __init__(self, sizes: BertSizes) -> None:
        super().__init__()
        self.dense = _linear(sizes.hidden_size, sizes.intermediate_size)


class _Layer(nn.Module):
    def __init__(self, sizes: BertSizes) -> None:
        super().__init__()
        self.attention = _Attention(sizes)
        self.intermediate = _Intermediate(sizes)
        self.output = _Dense(sizes.intermediate_size, sizes)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        attended = self.attention.output(self.attention.self(x, mask), x)
        return self.output(F.gelu(self.intermediate.dense(attended)), attended)


class _Encoder(nn.Module):
    def __init__(self, sizes: BertSizes) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(sizes) for _ in range(sizes.num_hidden_layers))


class _Pooler(nn.Module):
    # Kept for state-dict compatibility with transformers.BertModel; word features do not use it.
    def __init__(self, sizes: BertSizes) -> None:
        super().__init__()
        self.dense = _linear(sizes.hidden_size, sizes.hidden_size)


class FrozenBert(nn.Module):
    """``transformers.BertModel``'s eval-mode forward (no dropout, no cache, no pooling).

    Args:
        sizes: the model's dimensions.
    """

    def __init__(self, sizes: BertSizes) -> None:
        super().__init__()
        if not supports(sizes):
            raise ModelError(f"FrozenBert does not implement {sizes}")
        self.config = sizes
        self.embeddings = _Embeddings(sizes)
        self.encoder = _Encoder(sizes)
        self.pooler = _Pooler(sizes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> SimpleNamespace:
        """``input_ids``, ``attention_mask``: ``(B, N)`` -> ``last_hidden_state (B, N, C)``."""
        x = self.embeddings(input_ids)
        mask = None
        if not bool(attention_mask.all()):
            # transformers' SDPA mask: boolean (B, 1, N, N), True where a token is attended;
            # none at all (like transformers) when no token is padding.
            batch, length = attention_mask.shape
            mask = attention_mask.bool()[:, None, None, :].expand(batch, 1, length, length)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return SimpleNamespace(last_hidden_state=x)


def load_frozen_bert(path: Path, num_layers: int | None = None) -> FrozenBert:
    """The BERT of a model directory (``config.json`` + ``model.safetensors``), in eval mode
    with gradients off; ``num_layers`` keeps the first layers only (as ``transformers`` does).

    The modules are built without random initialisation (the file's tensors replace every
    one; building on the meta device instead would import ``torch._dynamo``, ~0.9 s).
    """
    overrides = {} if num_layers is None else {"num_hidden_layers": num_layers}
    sizes = BertSizes.from_dir(path, **overrides)
    model = FrozenBert(sizes)
    wanted = set(model.state_dict())
    with safe_open(str(path / "model.safetensors"), framework="pt", device="cpu") as handle:
        # Some files prefix every name with "bert." (BertForPreTraining checkpoints).
        prefix = "bert." if not wanted & set(handle.keys()) else ""
        state = {k: handle.get_tensor(prefix + k) for k in wanted if prefix + k in handle.keys()}
    missing = sorted(wanted - set(state))
    if missing:
        raise ModelError(f"{path}: BERT weights miss {len(missing)} tensors (e.g. {missing[0]})")
    model.load_state_dict(state, strict=True, assign=True)
    return model.requires_grad_(False).eval()


class WordPieceTokenizer:
    """``tokenizer.json`` through the ``tokenizers`` library, padded and cut to ``max_length``.

    Gives the ids and attention mask of ``BertTokenizerFast.from_pretrained(path)(texts,
    padding="max_length", truncation=True, max_length=max_length)``.
    """

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer  # kept lazy: only the frozen MiniLM path needs it

        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.pad_id = self.tokenizer.token_to_id("[PAD]")
        if self.pad_id is None:
            raise ModelError(f"{path}: tokenizer.json has no [PAD] token")

    def __call__(self, texts: list[str], max_length: int) -> tuple[Tensor, Tensor]:
        """``word_ids (B, max_length)`` and ``word_mask (B, max_length)``, long."""
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.enable_padding(length=max_length, pad_id=self.pad_id, pad_token="[PAD]")
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return ids, mask
