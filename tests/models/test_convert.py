"""Official LAVT checkpoints: converted models give the official code's logits.

The fixture (``tests/data/lavt_official/make.py``) is a tiny random checkpoint built and run by
the official LAVT code, so these tests compare our Swin, PWAM, gates, decoder and BERT wiring
with LAVT's own, not with a re-reading of it.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rrsis.cli import main
from rrsis.errors import ModelError
from rrsis.models.convert import convert_lavt_checkpoint, read_lavt_checkpoint
from rrsis.models.io import load_model

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "lavt_official"
CHECKPOINT = FIXTURE / "lavt_tiny.pth"
EXPRESSIONS = ["the long building along the road", "water"]  # as in make.py
TEXT_HEADS = 2  # the fixture's BERT; width 8 / 64 would give 1


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "reference.safetensors"))


def _logits(model, reference) -> torch.Tensor:
    with torch.no_grad():
        return model(reference["image"], reference["word_ids"], reference["word_mask"])


def test_converted_checkpoint_gives_the_official_logits(reference) -> None:
    model = convert_lavt_checkpoint(CHECKPOINT, text_heads=TEXT_HEADS)
    kwargs = model.config["kwargs"]
    assert kwargs["embed_dim"] == 8 and kwargs["depths"] == [2, 2, 2, 2]
    assert kwargs["num_heads"] == [1, 2, 4, 8] and kwargs["window_size"] == 4
    assert kwargs["decoder_channels"] == 32 and kwargs["text_hidden"] == 8
    expected = reference["logits"]
    torch.testing.assert_close(_logits(model, reference), expected, atol=1e-5, rtol=1e-5)
    # The comparison is sensitive: the wrong number of BERT heads moves the logits.
    wrong = convert_lavt_checkpoint(CHECKPOINT, text_heads=1)
    assert (_logits(wrong, reference) - expected).abs().max() > 1e-3


def test_the_saved_options_load_but_code_does_not(tmp_path) -> None:
    """LAVT saves its argparse options: allowed (the fixture has them), code still refused."""
    with pytest.raises(pickle.UnpicklingError):  # a plain weights-only load refuses the options
        torch.load(CHECKPOINT, weights_only=True)
    lavt, bert = read_lavt_checkpoint(CHECKPOINT)
    assert lavt and bert
    path = tmp_path / "evil_args.pth"
    torch.save({"model": lavt, "bert_model": bert, "args": _Payload()}, path)
    with pytest.raises(ModelError, match="refused"):
        read_lavt_checkpoint(path)
    multi_head = tmp_path / "mha.pth"
    torch.save(
        {"model": lavt, "bert_model": bert, "args": argparse.Namespace(mha="2-2-2-2")}, multi_head
    )
    with pytest.raises(ModelError, match="--mha 2-2-2-2"):
        read_lavt_checkpoint(multi_head)


def test_tokenizer_gives_the_fixtures_token_ids(reference) -> None:
    model = convert_lavt_checkpoint(CHECKPOINT, text_heads=TEXT_HEADS)
    ids, mask = model.tokenize(EXPRESSIONS)
    assert torch.equal(ids, reference["word_ids"]) and torch.equal(mask, reference["word_mask"])


def test_lavt_one_layout_and_ddp_prefixes(tmp_path, reference) -> None:
    """BERT inside the model (``lavt_one``), ``module.`` prefixes and no pooler load too."""
    lavt, bert = read_lavt_checkpoint(CHECKPOINT)
    state = {f"module.{k}": v for k, v in lavt.items()}
    state.update(
        {f"module.text_encoder.{k}": v for k, v in bert.items() if not k.startswith("pooler.")}
    )
    path = tmp_path / "lavt_one.pth"
    torch.save({"model": state, "optimizer": {}, "epoch": 3}, path)
    model = convert_lavt_checkpoint(path, text_heads=TEXT_HEADS)
    torch.testing.assert_close(_logits(model, reference), reference["logits"], atol=1e-5, rtol=1e-5)


def test_cli_writes_a_file_every_command_reads(tmp_path, reference, capsys) -> None:
    out = tmp_path / "lavt.safetensors"
    argv = ["models", "convert-lavt", str(CHECKPOINT), "-o", str(out), "--text-heads", "2"]
    assert main(argv) == 0
    assert "lavt_swin_base" in capsys.readouterr().out
    model = load_model(out)
    assert model.input_size == 480
    torch.testing.assert_close(_logits(model, reference), reference["logits"], atol=1e-5, rtol=1e-5)
    before = out.read_bytes()
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*argv, "--overwrite"]) == 0


class _Payload:
    def __reduce__(self):
        return (print, ("pickle executed",))


def _broken(tmp_path: Path, edit) -> Path:
    lavt, bert = read_lavt_checkpoint(CHECKPOINT)
    checkpoint = {"model": dict(lavt), "bert_model": dict(bert)}
    edit(checkpoint)
    path = tmp_path / "broken.pth"
    torch.save(checkpoint, path)
    return path


def _drop(key: str):
    return lambda c: c["model"].pop(key)


def _add(key: str, value: torch.Tensor):
    return lambda c: c["model"].__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("model"), "no 'model' state dict"),
        (lambda c: c.pop("bert_model"), "no BERT weights"),
        (_drop("classifier.conv1_1.weight"), "1 weights missing .*decoder.classifier.weight"),
        (_add("classifier.extra.weight", torch.zeros(1)), "1 not understood .*classifier.extra"),
        (_add("backbone.absolute_pos_embed", torch.zeros(1, 8, 4, 4)), "absolute position"),
        (
            lambda c: c["bert_model"].__setitem__(
                "embeddings.word_embeddings.weight", torch.zeros(100, 8)
            ),
            "vocabulary of 100 tokens",
        ),
    ],
)
def test_bad_checkpoints_are_named(tmp_path, edit, message) -> None:
    with pytest.raises(ModelError, match=message):
        convert_lavt_checkpoint(_broken(tmp_path, edit), text_heads=TEXT_HEADS)


def test_pickle_with_code_is_refused_and_the_cli_says_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"model": _Payload()}, handle)
    with pytest.raises(ModelError, match="refused"):
        read_lavt_checkpoint(path)
    out = tmp_path / "out.safetensors"
    assert main(["models", "convert-lavt", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0] and "pickle executed" not in err[0]
    assert not out.exists()


def test_swin_files_saved_before_the_lavt_defaults_keep_their_behaviour(tmp_path) -> None:
    """A config without ``align_corners`` / ``truncation`` rebuilds with False / "end"."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from rrsis.models.io import save_model
    from rrsis.models.registry import get_tiny_model

    model = get_tiny_model("lgce_swin_base")
    assert model.align_corners is True
    path = save_model(model, tmp_path / "new.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        state = {k: handle.get_tensor(k) for k in handle.keys()}
    assert load_model(path).align_corners is True
    config = json.loads(metadata["rrsis_config"])
    del config["kwargs"]["align_corners"], config["kwargs"]["truncation"]
    old = tmp_path / "old.safetensors"
    save_file(state, str(old), metadata={**metadata, "rrsis_config": json.dumps(config)})
    loaded = load_model(old)
    assert loaded.align_corners is False and loaded.decoder.align_corners is False
    assert loaded.text.truncation == "end"


def test_paper_models_cut_long_expressions_as_lavt_does() -> None:
    """LAVT keeps the first 20 ids after adding [CLS]/[SEP], so a long text loses its [SEP]."""
    from rrsis.models.registry import get_tiny_model

    long = " ".join(["the white vehicle parked beside the large grey building"] * 3)
    lavt = get_tiny_model("lavt_swin_base")
    end = get_tiny_model("lavt_swin_base", truncation="end")
    ids, mask = lavt.tokenize([long, "water"])
    end_ids, end_mask = end.tokenize([long, "water"])
    assert mask[0].all() and end_mask[0].all()
    assert torch.equal(ids[0, :19], end_ids[0, :19])
    assert end_ids[0, -1] == 102 and ids[0, -1] != 102  # [SEP] kept / cut
    assert torch.equal(ids[1], end_ids[1]) and ids[1, :3].tolist() == [101, 2300, 102]
    # The shipped CPU models keep [SEP] (they were trained that way).
    assert get_tiny_model("lgce_effnet_minilm").text.truncation == "end"
