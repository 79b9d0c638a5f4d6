"""``rrsis serve``'s JSON API through Starlette's test client, with a tiny per-pixel model.

The model's foreground logit is ``k * (red - green)`` with ``k`` set by the expression's first
letter, so masks differ between expressions and thresholds and a request that read another
request's expression or threshold would be caught.
"""

from __future__ import annotations

import base64
import io
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

pytest.importorskip("starlette")
pytest.importorskip("multipart")
from starlette.testclient import TestClient  # noqa: E402

from rrsis.cli import main as cli_main  # noqa: E402
from rrsis.infer.predictor import Segmenter  # noqa: E402
from rrsis.serve.app import build_app  # noqa: E402
from rrsis.serve.config import Limits, ServeConfig  # noqa: E402

SAMPLE = "dubai_tile6_part001_y0_x0.jpg"


class RedGreenModel(nn.Module):
    """Foreground logit ``k * (red - green)``; ``k`` from the expression's first character."""

    input_size = 64
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)
    size_divisor = 32

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        ids = torch.zeros(len(texts), 16, dtype=torch.long)
        for row, text in enumerate(texts):
            codes = [min(ord(c), 255) for c in text][:16]
            ids[row, : len(codes)] = torch.tensor(codes)
        return ids, (ids > 0).long()

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        scale = (word_ids[:, 0].float() - 96.0).view(-1, 1, 1) / 4.0
        foreground = scale * (image[:, 0] - image[:, 1])
        return torch.stack([torch.zeros_like(foreground), foreground], dim=1)


class SlowRedGreenModel(RedGreenModel):
    """:class:`RedGreenModel` that yields the CPU in each forward, so requests interleave."""

    def forward(self, image: Tensor, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        time.sleep(0.01)
        return super().forward(image, word_ids, word_mask)


def _segmenter() -> Segmenter:
    return Segmenter(RedGreenModel(), compose="none", threshold=0.5)


def _scene(size: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    image[: size // 2, : size // 2, 0] = 250  # a red block: foreground for most expressions
    image[: size // 2, : size // 2, 1] = 10
    return image


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _mask(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded)))) > 127


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder temporary files go to during the test (must end empty)."""
    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture
def segmenter() -> Segmenter:
    return _segmenter()


@pytest.fixture
def client(segmenter: Segmenter, temp_root: Path) -> TestClient:
    limits = Limits(max_bytes=200_000, max_pixels=300 * 300)
    app = build_app(ServeConfig(model="red-green", limits=limits), segmenter=segmenter)
    with TestClient(app) as test_client:
        yield test_client


def test_health_reports_model_and_limits(client: TestClient) -> None:
    answer = client.get("/api/health").json()
    assert answer["status"] == "ok" and answer["model"] == "red-green"
    assert answer["limits"]["max_pixels"] == 300 * 300 and answer["threshold"] == 0.5


def test_predict_equals_the_segmenter(client: TestClient, segmenter: Segmenter) -> None:
    image = _scene()
    files = {"image": ("scene.png", _png(image), "image/png")}
    data = {"expression": ["red  things ", "zebra", "apple"]}
    answer = client.post("/api/predict", files=files, data=data)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["image"] == {"name": "scene.png", "width": 96, "height": 96, "georeferenced": False}
    assert [r["expression"] for r in body["results"]] == ["red things", "zebra", "apple"]
    for result in body["results"]:
        expected = segmenter.predict(image, result["expression"])[0].mask
        mask = _mask(result["mask_png"])
        np.testing.assert_array_equal(mask, expected)
        assert result["foreground"] == pytest.approx(expected.mean(), abs=1e-6)
        assert result["seconds"] > 0 and result["file_stem"].startswith("scene_")
        polygons = result["polygons"]
        assert polygons["type"] == "FeatureCollection"
        area = sum(f["properties"]["area"] for f in polygons["features"])
        assert area == pytest.approx(expected.sum())  # pixel polygons cover the mask exactly
        assert "mask_geotiff" not in result


def test_threshold_field_changes_the_mask(client: TestClient) -> None:
    files = {"image": ("scene.png", _png(_scene()), "image/png")}
    low = client.post("/api/predict", files=files, data={"expression": "r", "threshold": "0.05"})
    high = client.post("/api/predict", files=files, data={"expression": "r", "threshold": "0.95"})
    share = [a.json()["results"][0]["foreground"] for a in (low, high)]
    assert share[0] > share[1]
    assert client.get("/api/health").json()["threshold"] == 0.5  # the server's own is kept


def test_bundled_sample_by_name(client: TestClient) -> None:
    listing = client.get("/api/samples").json()["samples"]
    assert SAMPLE in [s["name"] for s in listing] and listing[0]["expressions"]
    answer = client.post("/api/predict", data={"sample": SAMPLE, "expression": "road"})
    assert answer.status_code == 200
    assert answer.json()["image"]["width"] == 512
    view = client.post("/api/image", data={"sample": SAMPLE}).json()
    preview = np.asarray(Image.open(io.BytesIO(base64.b64decode(view["preview_png"]))))
    assert preview.shape == (512, 512, 3) and "map" not in view


def _geotiff(path: Path, size: int = 64) -> tuple:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    transform = from_origin(330000.0, 2770000.0, 0.5, 0.5)  # UTM 40N, Dubai
    image = _scene(size)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=size,
        width=size,
        count=3,
        dtype="uint8",
        crs="EPSG:32640",
        transform=transform,
    ) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    return image, transform


def test_geotiff_answers_on_the_input_grid(client: TestClient, tmp_path: Path) -> None:
    import rasterio
    from pyproj import Transformer

    path = tmp_path / "scene.tif"
    image, transform = _geotiff(path)
    files = {"image": ("scene.tif", path.read_bytes(), "image/tiff")}
    body = client.post("/api/predict", files=files, data={"expression": "red"}).json()
    assert body["image"]["crs"] == "EPSG:32640" and body["image"]["georeferenced"]
    result = body["results"][0]
    out = tmp_path / "mask.tif"
    out.write_bytes(base64.b64decode(result["mask_geotiff"]))
    with rasterio.open(out) as ds:
        assert ds.crs.to_string() == "EPSG:32640" and ds.transform == transform
        np.testing.assert_array_equal(ds.read(1) > 0, _mask(result["mask_png"]))
    to_lonlat = Transformer.from_crs("EPSG:32640", "EPSG:4326", always_xy=True)
    west, north = to_lonlat.transform(330000.0, 2770000.0)
    for feature in result["polygons"]["features"]:  # lon/lat, inside the image
        for lon, lat in feature["geometry"]["coordinates"][0]:
            assert abs(lon - west) < 0.001 and abs(lat - north) < 0.001
    view = client.post("/api/image", files=files).json()
    (south, w), (n, east) = view["map"]["bounds"]
    assert south < north + 1e-9 and w <= west + 1e-6 and n >= north - 1e-6
    lattice = view["map"]["lattice"]
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32640", always_xy=True).transform(
        lattice["lon"][0], lattice["lat"][1]
    )
    assert lattice["x"][-1][0] == pytest.approx(x) and lattice["y"][-1][0] == pytest.approx(y)


def _cli_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    assert cli_main(args) == 2
    return capsys.readouterr().err.strip().removeprefix("rrsis: error: ")


@pytest.mark.parametrize("kind", ["text", "truncated"])
def test_bad_image_same_words_as_the_cli(
    kind: str, client: TestClient, tmp_path: Path, capsys, monkeypatch
) -> None:
    png = _png(_scene())
    data = b"just some text\n" if kind == "text" else png[: len(png) // 2]
    name = "notes.txt" if kind == "text" else "cut.png"
    (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    answer = client.post("/api/predict", files={"image": (name, data)}, data={"expression": "road"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.startswith(f"{name}: cannot decode image") and "Traceback" not in error
    monkeypatch.setattr("rrsis.cli.predict.build_segmenter", lambda args: _segmenter())
    assert error == _cli_error(["predict", name, "road", "-o", "out.png"], capsys)


@pytest.mark.parametrize(
    ("request_kwargs", "status", "words"),
    [
        ({"data": {"sample": SAMPLE, "expression": ""}}, 400, "empty referring expression"),
        ({"data": {"sample": SAMPLE, "expression": "x" * 10_000}}, 400, "10,000 characters"),
        ({"data": {"sample": SAMPLE}}, 400, "no referring expression given"),
        ({"data": {"expression": "road"}}, 400, "missing field 'image'"),
        ({"data": {"sample": SAMPLE, "expression": "r", "threshold": "2"}}, 400, "[0, 1]"),
        ({"data": {"sample": SAMPLE, "expression": "r", "threshold": "hi"}}, 400, "number"),
        ({"data": {"sample": "../../../etc/passwd", "expression": "r"}}, 404, "unknown sample"),
        ({"data": {"sample": "/etc/passwd", "expression": "r"}}, 404, "unknown sample"),
        ({"data": {"sample": "..%2F..%2Fapi.py", "expression": "r"}}, 404, "unknown sample"),
        ({"data": {"sample": "samples/../" + SAMPLE, "expression": "r"}}, 404, "unknown sample"),
        ({"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "multipart"),
        ({"data": {"expression": ["r"] * 17, "sample": SAMPLE}}, 400, "17 expressions"),
        ({"data": {"sample": [SAMPLE, SAMPLE], "expression": "r"}}, 400, "given 2 times"),
    ],
)
def test_bad_fields_get_one_line_4xx(
    request_kwargs: dict, status: int, words: str, client: TestClient, temp_root: Path
) -> None:
    answer = client.post("/api/predict", **request_kwargs)
    assert answer.status_code == status
    body = answer.json()
    assert words in body["error"] and body["status"] == status
    assert "\n" not in body["error"] and "Traceback" not in answer.text
    assert client.get("/api/health").status_code == 200  # the server keeps answering
    assert list(temp_root.iterdir()) == []


def test_unknown_routes_and_static_traversal_are_json_404(client: TestClient) -> None:
    for path in (
        "/nope",
        "/api/predicts",
        "/static/../api.py",
        "/static/%2e%2e/api.py",
        "/static/..%2fapi.py",
        "/static/vendor/../../app.py",
    ):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["error"].startswith("not found: ")
    assert client.get("/api/predict").status_code == 405
    assert client.get("/static/vendor/leaflet/leaflet.js").status_code == 200
    assert "rrsis" in client.get("/").text


def test_too_many_bytes_refused_before_reading(client: TestClient) -> None:
    big = b"\0" * 300_000
    answer = client.post(
        "/api/predict", files={"image": ("big.png", big)}, data={"expression": "road"}
    )
    assert answer.status_code == 413
    assert "the limit is 200,000 bytes" in answer.json()["error"]

    def chunks():  # no Content-Length: counted while it streams in
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(30):
            yield b"\0" * 10_000

    answer = client.post(
        "/api/predict",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert answer.status_code == 413 and "200,000 bytes" in answer.json()["error"]


def test_too_many_pixels_refused_from_the_header(client: TestClient, monkeypatch) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr("rrsis.serve.images.to_rgb_uint8", never)
    data = _png(np.zeros((400, 300, 3), np.uint8))  # 120,000 px > 90,000, a few kB
    answer = client.post(
        "/api/predict", files={"image": ("wide.png", data)}, data={"expression": "road"}
    )
    assert answer.status_code == 413
    assert answer.json()["error"] == (
        "wide.png: image (300x400) is 120,000 pixels; the limit is 90,000 pixels"
    )


def test_temporary_files_are_removed(client: TestClient, temp_root: Path, tmp_path) -> None:
    path = tmp_path / "scene.tif"
    _geotiff(path)
    client.post(
        "/api/predict",
        files={"image": ("scene.tif", path.read_bytes())},
        data={"expression": ["red", "green"]},
    )
    client.post("/api/predict", files={"image": ("x.png", b"nope")}, data={"expression": "r"})
    assert list(temp_root.iterdir()) == []


def test_concurrent_requests_equal_sequential_ones(temp_root) -> None:
    segmenter = Segmenter(SlowRedGreenModel(), compose="none", threshold=0.5)
    app = build_app(ServeConfig(model="red-green"), segmenter=segmenter)
    images = [_scene(seed=seed) for seed in range(3)]
    jobs = [
        (images[k % 3], expression, threshold)
        for k, (expression, threshold) in enumerate(
            [("red", "0.3"), ("zebra", "0.7"), ("apple", ""), ("mud", "0.5")] * 3
        )
    ]

    def ask(job) -> list:
        image, expression, threshold = job
        with TestClient(app) as own_client:
            answer = own_client.post(
                "/api/predict",
                files={"image": ("s.png", _png(image))},
                data={"expression": expression, "threshold": threshold},
            )
        result = answer.json()["results"][0]
        return [result["mask_png"], result["foreground"], json.dumps(result["polygons"])]

    sequential = [ask(job) for job in jobs]
    parallel: list = [None] * len(jobs)

    def worker(index: int) -> None:
        parallel[index] = ask(jobs[index])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert parallel == sequential
    assert len({tuple(s[:2]) for s in sequential}) > 4  # the jobs really differ


def test_cli_bad_model_is_one_line_before_listening(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.safetensors"
    error = _cli_error(["serve", "--model", str(missing), "--port", "0"], capsys)
    assert str(missing) in error and "\n" not in error


def test_cli_backend_reaches_the_segmenter(monkeypatch) -> None:
    """``rrsis serve --onnx FILE`` builds the server's Segmenter for ONNX Runtime with that graph."""
    seen = []
    monkeypatch.setattr("rrsis.serve.app.serve", lambda config: seen.append(config))
    assert cli_main(["serve", "--port", "0"]) == 0
    assert cli_main(["serve", "--port", "0", "--onnx", "graph.onnx"]) == 0
    assert [c.segmenter_options()["backend"] for c in seen] == ["torch", "onnxruntime"]
    assert [c.segmenter_options()["onnx"] for c in seen] == [None, "graph.onnx"]
