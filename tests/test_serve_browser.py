"""``rrsis serve`` end to end in a real headless Chromium, with the shipped model.

The server runs as ``python -m rrsis.cli serve --port <free>`` in a subprocess; Playwright
drives the system's Chromium (Debian's ``chromium`` package; no browser is downloaded). Skips
with the reason where there is no such browser (``.ci/run`` installs it where it can).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "serve_screenshot.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("serve_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


e2e = _load_script()
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
if e2e.chromium() is None:
    pytest.skip(
        "no system Chromium at /usr/bin/chromium (Debian: apt-get install chromium); "
        "the browser test never downloads one",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def server():
    with e2e.running_server() as (url, process):
        yield url, process


@pytest.fixture(scope="module")
def page():
    with e2e.browser_page() as browser_page:
        yield browser_page


def test_sample_upload_shows_the_mask_overlay(server, page, tmp_path: Path) -> None:
    url, process = server
    sample = e2e.SAMPLES / "dubai_tile6_part001_y0_x0.jpg"
    counts = e2e.segment_on_page(page, url, sample, ["building", "road"])
    shares = page.evaluate("() => window.rrsis.layers.map((l) => l.result.foreground)")
    assert len(counts) == 2
    for (drawn, total), share in zip(counts, shares):
        assert total == 512 * 512
        assert drawn > 0 and drawn == round(share * total)  # what is drawn is the mask
    legend = page.text_content("#legend")
    assert "building" in legend and "% foreground" in legend and "ms" in legend
    page.uncheck("#legend li:first-child input[type=checkbox]")
    assert page.evaluate("() => window.rrsis.layers[0].mask.getElement().isConnected") is False
    page.screenshot(path=str(tmp_path / "serve.png"))
    assert (tmp_path / "serve.png").stat().st_size > 10_000
    assert process.poll() is None


def test_geotiff_is_shown_on_the_map(server, page, tmp_path: Path) -> None:
    from pyproj import Transformer

    url, _ = server
    path = tmp_path / "dubai_utm.tif"
    centre_x, centre_y = e2e.write_geotiff_sample(path)
    counts = e2e.segment_on_page(page, url, path, ["building"])
    assert counts[0][0] > 0
    assert "EPSG:32640" in page.text_content("#image-info")
    assert page.evaluate("() => window.rrsis.map.options.crs === L.CRS.EPSG3857")
    box = page.locator("img.rrsis-base").bounding_box()
    assert box["width"] > 200 and box["height"] > 200  # the image is the map's base layer
    # The cursor over the image's centre reads the centre's coordinates in both systems.
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    text = page.text_content("#coords")
    assert "EPSG:32640" in text and "lon" in text
    numbers = json.loads(page.get_attribute("#coords", "data-values"))
    assert abs(numbers["x"] - centre_x) < 2 and abs(numbers["y"] - centre_y) < 2  # 4 px
    lon, lat = Transformer.from_crs("EPSG:32640", "EPSG:4326", always_xy=True).transform(
        numbers["x"], numbers["y"]
    )
    assert numbers["lon"] == pytest.approx(lon, abs=1e-5)
    assert numbers["lat"] == pytest.approx(lat, abs=1e-5)
    assert numbers["col"] == pytest.approx(128, abs=4) and numbers["row"] == pytest.approx(
        128, abs=4
    )
    links = page.locator("#legend a").all_text_contents()
    assert links == ["mask PNG", "GeoTIFF", "GeoJSON"]
