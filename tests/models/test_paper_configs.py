"""Full-size paper configurations and the `rrsis models` command."""

from __future__ import annotations

import pytest

from rrsis.cli import main
from rrsis.cli.models import count_parameters
from rrsis.models.registry import get_entry, offline_kwargs, resolve_kwargs


def test_paper_defaults_are_recorded() -> None:
    kwargs = resolve_kwargs("lavt_swin_base")
    assert kwargs["embed_dim"] == 128 and kwargs["depths"] == [2, 2, 18, 2]
    assert kwargs["num_heads"] == [4, 8, 16, 32] and kwargs["window_size"] == 12
    assert kwargs["drop_path_rate"] == 0.3 and kwargs["decoder_channels"] == 512
    assert kwargs["text_hidden"] == 768 and kwargs["max_tokens"] == 20
    lgce = resolve_kwargs("lgce_swin_base", deep_to_shallow=False)
    assert lgce["deep_to_shallow"] is False and lgce["embed_dim"] == 128


def test_offline_kwargs_switch_off_pretrained() -> None:
    assert offline_kwargs("lgce_effnet_minilm")["pretrained"] is False
    assert offline_kwargs("lgce_effnet_minilm")["text_pretrained"] is False
    swin = offline_kwargs("lavt_swin_base", {"pretrained": "/x/swin.pth"})
    assert swin["pretrained"] is None and swin["text_pretrained"] is None


@pytest.mark.slow
def test_lavt_swin_base_has_the_published_parameter_count() -> None:
    count = count_parameters("lavt_swin_base")
    assert abs(count / 228.3e6 - 1) < 0.02, count
    assert count_parameters("lgce_swin_base") > count


def test_fast_model_parameter_count() -> None:
    # EfficientNet-Lite0 without its head (~3.0 M) + MiniLM (~22.7 M) + fusion/decoder/LGCE.
    count = count_parameters("lgce_effnet_minilm")
    assert 26e6 < count < 29e6, count


def test_models_command_lists_every_model(capsys) -> None:
    assert main(["models", "--no-count"]) == 0
    out = capsys.readouterr().out
    for name in ("lavt_swin_base", "lgce_swin_base", "lgce_effnet_minilm"):
        assert name in out
        assert get_entry(name).description in out
