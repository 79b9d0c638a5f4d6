"""The frozen MiniLM without transformers gives bit-identical tokens, word features and logits."""

from __future__ import annotations

import pytest
import torch

from rrsis.models.encoders.frozen_bert import load_frozen_bert
from rrsis.models.encoders.text import (
    MiniLMTextEncoder,
    _load_tokenizer,
    _transformers_minilm,
    minilm_path,
)
from rrsis.models.registry import get_model

TEXTS = [
    "building",
    "the building along the road",
    "Ünïcödé café 東京 SHIPS!! 42 m²",
    "a " * 40,  # cut to max_tokens: no padding at all
    "large   white-roofed building in the upper left, next to the parking lot",
]


def test_tokens_match_bert_tokenizer_fast() -> None:
    encoder = MiniLMTextEncoder(pretrained=True, freeze=True)
    ids, mask = encoder.tokenize(TEXTS)
    reference = _load_tokenizer(str(minilm_path()))(
        TEXTS, padding="max_length", truncation=True, max_length=20, return_tensors="pt"
    )
    assert torch.equal(ids, reference["input_ids"])
    assert torch.equal(mask, reference["attention_mask"])


@pytest.mark.parametrize("num_layers", [None, 1])
def test_word_features_are_bit_identical(num_layers) -> None:
    fast = load_frozen_bert(minilm_path(), num_layers)
    slow = _transformers_minilm(minilm_path(), True, num_layers).eval()
    assert set(fast.state_dict()) == set(slow.state_dict())
    ids, mask = MiniLMTextEncoder(pretrained=True).tokenize(TEXTS)
    with torch.inference_mode():
        for rows in (slice(0, 1), slice(3, 4), slice(0, 5)):
            got = fast(input_ids=ids[rows], attention_mask=mask[rows]).last_hidden_state
            want = slow(input_ids=ids[rows], attention_mask=mask[rows]).last_hidden_state
            assert torch.equal(got, want)


def test_model_logits_are_bit_identical_with_transformers_text() -> None:
    """A tiny LGCE model with the frozen wheel MiniLM, run the fast way and the normal way."""
    torch.manual_seed(0)
    model = get_model(
        "lgce_effnet_minilm",
        pretrained=False,
        text_pretrained=True,
        text_layers=2,
        input_size=64,
        decoder_channels=16,
        lgce_dim=16,
    ).eval()
    assert "FrozenBert" in type(model.text.model).__name__
    image = torch.randn(len(TEXTS), 3, 64, 64)
    ids, mask = model.tokenize(TEXTS)
    with torch.inference_mode():
        fast = model(image, ids, mask)
        model.text.model = _transformers_minilm(minilm_path(), True, 2).eval()
        slow = model(image, ids, mask)
    assert torch.equal(fast, slow)


def test_trainable_minilm_still_uses_transformers() -> None:
    encoder = MiniLMTextEncoder(pretrained=True, freeze=False, num_layers=1)
    assert type(encoder.model).__module__.startswith("transformers")
    assert any(p.requires_grad for p in encoder.parameters())


def test_shipped_model_logits_are_bit_identical_with_transformers_text() -> None:
    from rrsis.models.io import resolve_model

    model, _ = resolve_model("default")
    image = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    ids, mask = model.tokenize(["building", "the road next to the large building"])
    with torch.inference_mode():
        fast = model(image, ids, mask)
        model.text.model = _transformers_minilm(minilm_path(), True, None).eval()
        slow = model(image, ids, mask)
    assert torch.equal(fast, slow)
