"""ONNX export and the ONNX Runtime backend, on tiny random models (rrsis[onnx] needed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from rrsis.cli import main  # noqa: E402
from rrsis.errors import ModelError  # noqa: E402
from rrsis.infer import onnx_backend  # noqa: E402
from rrsis.infer.onnx_backend import OnnxNetwork, cached_graph  # noqa: E402
from rrsis.infer.predictor import Segmenter  # noqa: E402
from rrsis.models.io import save_model  # noqa: E402
from rrsis.models.onnx_export import (  # noqa: E402
    OnnxExportConfig,
    export_onnx,
    read_metadata,
)
from rrsis.models.registry import get_tiny_model  # noqa: E402


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    model = get_tiny_model("lgce_effnet_minilm").eval()
    # Random batch-norm statistics: an identity norm would hide a mistake in folding them.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


@pytest.fixture(scope="module")
def graph(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny, path)
    return path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    # Graphs exported on first use go to this test's own temp dir.
    monkeypatch.setattr(onnx_backend, "cache_dir", lambda: tmp_path / "cache")


def _image(side=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (side, side + 16, 3), dtype=np.uint8)


def test_export_writes_graph_and_metadata(tiny, graph):
    meta = read_metadata(graph)
    assert meta["model_name"] == "lgce_effnet_minilm"
    assert meta["input_size"] == "64" and meta["text_features"] == "cached"
    assert meta["opset"] == "17" and len(meta["weights_sha256"]) == 64
    assert meta["threshold"] == "0.5" and meta["max_tokens"] == str(
        tiny.tokenize(["a"])[0].shape[1]
    )


@pytest.mark.parametrize("batch", [1, 3])
def test_graph_logits_equal_torch(tiny, graph, batch):
    network = OnnxNetwork(tiny, onnx=graph)
    tiles = np.stack([_image(64, seed)[:, :64] for seed in range(batch)])
    images = network.normalise(tiles)
    texts = ["red car", "the building along the road", "water"][:batch]
    word_ids, word_mask = network.tokenize(texts)
    with torch.inference_mode():
        expected = tiny(images, word_ids, word_mask)
    got = network.run_graph(images, word_ids, word_mask)
    assert got.shape == expected.shape == (batch, 2, 64, 64)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_each_batch_size_runs_its_own_session_up_to_the_bound(tiny, graph):
    network = OnnxNetwork(tiny, onnx=graph)
    sizes = range(1, onnx_backend.FIXED_SESSIONS + 3)
    texts = ["red car", "the building along the road", "water"]
    for batch in sizes:
        tiles = np.stack([_image(64, seed)[:, :64] for seed in range(batch)])
        images = network.normalise(tiles)
        word_ids, word_mask = network.tokenize([texts[i % 3] for i in range(batch)])
        with torch.inference_mode():
            expected = tiny(images, word_ids, word_mask)
        got = network.run_graph(images, word_ids, word_mask)
        assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), batch
    fixed = sorted(key for key in network.sessions if key is not None)
    assert fixed == list(range(1, onnx_backend.FIXED_SESSIONS + 1))
    # Larger batches share the one session whose batch axis is dynamic.
    assert None in network.sessions and len(network.sessions) == onnx_backend.FIXED_SESSIONS + 1
    inputs = network.sessions[1].get_inputs()[0].shape
    assert inputs[0] == 1 and network.sessions[None].get_inputs()[0].shape[0] == "batch"


def test_segmenter_onnxruntime_gives_torch_masks(tiny, graph):
    image = _image()
    expressions = ["red car", "building in the upper left", "the road next to the building"]
    torch_seg = Segmenter(tiny, threshold=0.5)
    onnx_seg = Segmenter(tiny, threshold=0.5, backend="onnxruntime", onnx=graph)
    assert onnx_seg.backend == "onnxruntime" and onnx_seg.fused == {}
    for expected, got in zip(
        torch_seg.predict(image, expressions), onnx_seg.predict(image, expressions)
    ):
        assert got.decided_by == expected.decided_by
        assert np.abs(got.probability - expected.probability).max() < 1e-4
        assert (got.mask == expected.mask).mean() > 0.999


def test_export_on_first_use_is_cached(tiny, tmp_path):
    first = Segmenter(tiny, backend="onnxruntime").network.path
    assert first.parent == tmp_path / "cache" and first.is_file()
    stamp = first.stat().st_mtime_ns
    assert Segmenter(tiny, backend="onnxruntime").network.path == first
    assert first.stat().st_mtime_ns == stamp  # reused, not exported again
    # Other weights: another file.
    assert cached_graph(_tiny(seed=1), 64, "cached") != first


def test_cached_graph_follows_the_model_code(tiny, monkeypatch):
    first = cached_graph(tiny, 64, "cached")
    # The same weights traced from edited model code must not reuse the old graph.
    monkeypatch.setattr(onnx_backend, "models_code_digest", lambda: "f" * 64)
    assert cached_graph(tiny, 64, "cached") != first


def test_words_encoded_once_per_expression(tiny, graph):
    segmenter = Segmenter(tiny, backend="onnxruntime", onnx=graph, compose="none")
    calls = []
    hook = tiny.text.register_forward_hook(lambda *_: calls.append(1))
    try:
        tiles = np.stack([_image(64, seed)[:, :64] for seed in range(3)])
        for _ in range(2):
            segmenter.predict_tiles(tiles, *segmenter.tokenize(["red car", "water"]))
    finally:
        hook.remove()
    assert len(calls) == 1 and len(segmenter.network.words_cache) == 2


def test_graph_of_other_weights_is_refused(graph):
    with pytest.raises(ModelError, match="other weights"):
        Segmenter(_tiny(seed=1), backend="onnxruntime", onnx=graph)


def test_backend_settings_are_checked(tiny, graph):
    with pytest.raises(ModelError, match="backend must be one of"):
        Segmenter(tiny, backend="tensorrt")
    with pytest.raises(ModelError, match="float32"):
        Segmenter(tiny, backend="onnxruntime", onnx=graph, dtype=torch.bfloat16)
    with pytest.raises(ModelError, match="needs backend 'onnxruntime'"):
        Segmenter(tiny, onnx=graph)
    with pytest.raises(ModelError, match="graph takes 64 px"):
        Segmenter(tiny, backend="onnxruntime", onnx=graph, input_size=96)


def test_model_without_forward_words_exports_text_in_graph(tmp_path):
    torch.manual_seed(0)
    model = get_tiny_model("rrn_effnet_minilm").eval()
    with pytest.raises(ModelError, match="in-graph"):
        export_onnx(model, tmp_path / "cached.onnx", OnnxExportConfig(text_features="cached"))
    path = tmp_path / "rrn.onnx"
    assert (
        export_onnx(model, path, OnnxExportConfig(text_features=None))["rrsis.text_features"]
        == "in-graph"
    )
    network = OnnxNetwork(model, onnx=path)
    images = network.normalise(np.stack([_image(64)[:, :64]] * 2))
    word_ids, word_mask = network.tokenize(["red car", "water"])
    with torch.inference_mode():
        expected = model(images, word_ids, word_mask)
    assert torch.allclose(network.run_graph(images, word_ids, word_mask), expected, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_model(tiny, path)
    return path


def test_cli_export_and_predict_backend(tiny_file, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "tiny.onnx"
    assert main(["export", "onnx", "--model", str(tiny_file), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "opset 17" in printed and "100.00% of mask pixels agree" in printed
    image = tmp_path / "in.png"
    Image.fromarray(_image()).save(image)
    masks = {}
    for backend in ("torch", "onnxruntime"):
        mask = tmp_path / f"{backend}.png"
        args = ["predict", str(image), "red car", "-o", str(mask), "--model", str(tiny_file)]
        assert main([*args, "--backend", backend, "--threshold", "0.5"]) == 0
        masks[backend] = np.asarray(Image.open(mask))
    assert (masks["torch"] == masks["onnxruntime"]).mean() > 0.999


def test_missing_onnxruntime_is_one_line(tiny_file, tmp_path, monkeypatch, error_line):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ModelError, match=r"pip install 'rrsis\[onnx\]'"):
        onnx_backend.import_onnxruntime()
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(_image()).save(image)
    args = ["predict", str(image), "car", "-o", str(tmp_path / "m.png"), "--model", str(tiny_file)]
    assert main([*args, "--backend", "onnxruntime"]) == 2
    assert "needs the onnxruntime package" in error_line()


def test_cli_evaluate_backend_scores_alike(tiny_file, refsegrs_root, tmp_path):
    import json

    scores = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.json"
        argv = ["evaluate", "--model", str(tiny_file), "--data", str(refsegrs_root), "--split",
                "test", "--out", str(out), "--no-progress", "--resamples", "0",
                "--backend", backend]  # fmt: skip
        assert main(argv) == 0
        result = json.loads(out.read_text())
        assert result["backend"] == backend and result["n"] == 3
        scores[backend] = result["overall"]["mIoU"]
    assert abs(scores["torch"] - scores["onnxruntime"]) < 0.1
