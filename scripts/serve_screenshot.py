#!/usr/bin/env python
"""Drive ``rrsis serve`` in headless Chromium; write the README's screenshot.

    python scripts/serve_screenshot.py                 # -> docs/images/serve.png
    python scripts/serve_screenshot.py -o /tmp/s.png --sample dubai_tile6_part004_y0_x0.jpg
    python scripts/serve_screenshot.py --geotiff -o docs/images/serve_map.png   # the map view

Starts ``python -m rrsis.cli serve`` on a free port with the shipped model, opens the page in
the system's Chromium (``/usr/bin/chromium``, Debian's ``chromium`` package) through
Playwright, uploads a bundled sample, types the expressions and waits for the overlays. The
browser end-to-end test (``tests/test_serve_browser.py``) uses the functions of this file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "src" / "rrsis" / "data" / "samples"
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

#: JavaScript: ``[pixels drawn, mask pixels expected]`` per mask overlay shown on the map.
OVERLAY_PIXELS_JS = """() => window.rrsis.layers.map((layer) => {
  const img = layer.mask.getElement();
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let drawn = 0;
  for (let k = 3; k < data.length; k += 4) if (data[k] > 0) drawn++;
  return [drawn, canvas.width * canvas.height];
})"""


def chromium() -> str | None:
    """The system Chromium, or ``None`` (no browser is ever downloaded)."""
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120.0) -> dict:
    """``GET url`` (JSON) once the server answers; raises if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"rrsis serve exited with {process.returncode}: {output[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"rrsis serve did not answer {url} within {timeout:.0f} s")


@contextlib.contextmanager
def running_server(*options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``rrsis serve`` on a free port in a subprocess; yields its URL and process."""
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, "-m", "rrsis.cli", "serve", "--port", str(port), *options]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url + "api/health", process)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def browser_page(width: int = 1280, height: int = 800):
    """A Playwright page in the system's headless Chromium."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    if executable is None:
        raise RuntimeError("no Chromium at /usr/bin/chromium (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def segment_on_page(page, url: str, image: Path, expressions: list[str]) -> list[list[int]]:
    """Open ``url``, upload ``image``, segment ``expressions``; the overlays' pixel counts."""
    page.goto(url)
    page.wait_for_selector("body[data-state=ready]", timeout=20_000)
    page.set_input_files("#file", str(image))
    page.wait_for_selector("body[data-state=image]", timeout=20_000)
    page.fill("#expressions", "\n".join(expressions))
    page.click("#run")
    page.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=60_000)
    error = page.text_content("#error")
    if page.get_attribute("body", "data-state") == "error":
        raise RuntimeError(f"the page says: {error}")
    return page.evaluate(OVERLAY_PIXELS_JS)


def write_geotiff_sample(
    path: Path, sample: str = "dubai_tile6_part004_y0_x0.jpg", size: int = 256
) -> tuple[float, float]:
    """A ``size`` px crop of a bundled sample as a GeoTIFF in UTM 40N (where Dubai is), 0.5 m
    pixels from (330000, 2770000); returns the crop's centre in that CRS."""
    import numpy as np
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    with Image.open(SAMPLES / sample) as img:
        image = np.asarray(img.convert("RGB"))[:size, :size]
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=image.shape[0],
        width=image.shape[1],
        count=3,
        dtype="uint8",
        crs="EPSG:32640",
        transform=from_origin(330000.0, 2770000.0, 0.5, 0.5),
    ) as dst:
        dst.write(np.moveaxis(image, -1, 0))
    return 330000.0 + image.shape[1] / 4, 2770000.0 - image.shape[0] / 4


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs/images/serve.png")
    parser.add_argument("--sample", default="dubai_tile6_part001_y0_x0.jpg")
    parser.add_argument(
        "-e",
        "--expression",
        action="append",
        default=None,
        help="expression (repeatable; default: building, road, vegetation along the road)",
    )
    parser.add_argument(
        "--geotiff",
        action="store_true",
        help="upload the sample as a GeoTIFF in UTM 40N instead: the map view",
    )
    args = parser.parse_args()
    expressions = args.expression or ["building", "road", "vegetation along the road"]
    with tempfile.TemporaryDirectory() as folder:
        image = SAMPLES / args.sample
        if args.geotiff:
            image = Path(folder) / (Path(args.sample).stem + "_utm40n.tif")
            write_geotiff_sample(image, args.sample, 512)
        with running_server() as (url, _), browser_page() as page:
            counts = segment_on_page(page, url, image, expressions)
            page.mouse.move(900, 400)
            page.wait_for_timeout(300)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.output))
    from PIL import Image

    with Image.open(args.output) as shot:  # 256 colours: a quarter of the bytes, same look
        shot.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(args.output, optimize=True)
    print(json.dumps({"screenshot": str(args.output), "overlay_pixels": counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
