"""Shared test fixtures: the generated dataset trees under tests/data/<name>/tree."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

DATA_DIR = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]


def load_file(path: Path, name: str) -> ModuleType:
    """Import the Python file at ``path`` as a module called ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_make(name: str) -> ModuleType:
    """Import ``tests/data/<name>/make.py`` (it also describes what the tree holds)."""
    return load_file(DATA_DIR / name / "make.py", f"_fixture_make_{name}")


@pytest.fixture(scope="session")
def repo_script() -> Callable[[str], ModuleType]:
    """Import a script of the repository by its relative path (``benchmarks/bench_x.py``)."""
    return lambda relative: load_file(REPO / relative, Path(relative).stem)


@pytest.fixture(scope="session")
def refsegrs_make() -> ModuleType:
    """The RefSegRS fixture script (``SAMPLES`` lists id, split, expression, boxes)."""
    return _load_make("refsegrs")


@pytest.fixture(scope="session")
def rrsisd_make() -> ModuleType:
    """The RRSIS-D fixture script (``REFS``, ``ANNOTATIONS``, ``EXPECTED_BOXES``)."""
    return _load_make("rrsisd")


@pytest.fixture(scope="session")
def refsegrs_root() -> Path:
    """Committed 3+3+3-sample RefSegRS tree (read-only: copy it before editing)."""
    return DATA_DIR / "refsegrs" / "tree"


@pytest.fixture(scope="session")
def rrsisd_root() -> Path:
    """Committed tiny RRSIS-D tree (read-only: copy it before editing)."""
    return DATA_DIR / "rrsisd" / "tree"


@pytest.fixture
def refsegrs_copy(refsegrs_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the RefSegRS fixture tree."""
    return Path(shutil.copytree(refsegrs_root, tmp_path / "refsegrs"))


@pytest.fixture
def rrsisd_copy(rrsisd_root: Path, tmp_path: Path) -> Path:
    """A writable copy of the RRSIS-D fixture tree."""
    return Path(shutil.copytree(rrsisd_root, tmp_path / "rrsisd"))


@pytest.fixture(scope="session")
def tree_digest() -> Callable[[Path], dict[str, str]]:
    """Function mapping a directory to ``{relative path: sha256}``, to prove inputs untouched."""

    def digest(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(root).rglob("*"))
            if p.is_file()
        }

    return digest


@pytest.fixture
def write_4band() -> Callable[..., object]:
    """Writes a 4-band uint16 GeoTIFF with GDAL (untagged: grey, undefined...; GDAL tags 4-band
    uint8 as RGBA), optionally with colour interpretation tags; returns its ``(4, H, W)`` data."""
    rasterio = pytest.importorskip("rasterio")
    import numpy as np
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    def write(path: Path, colorinterp=None, height: int = 64, width: int = 64):
        data = np.random.default_rng(0).integers(0, 4000, size=(4, height, width), dtype=np.uint16)
        profile = dict(driver="GTiff", width=width, height=height, count=4, dtype="uint16")
        profile.update(crs="EPSG:32640", transform=from_origin(400000.0, 2700000.0, 0.5, 0.5))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if colorinterp:
                dst.colorinterp = [ColorInterp[name] for name in colorinterp]
        return data

    return write


@pytest.fixture
def error_line(capsys) -> Callable[[], str]:
    """The one ``rrsis: error:`` line the last command printed (no traceback allowed)."""

    def read() -> str:
        err = capsys.readouterr().err
        assert "Traceback" not in err
        lines = [line for line in err.strip().splitlines() if line.startswith("rrsis: error:")]
        assert len(lines) == 1, err
        return lines[0]

    return read
