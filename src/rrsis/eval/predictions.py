"""Writing an evaluation's predicted masks as PNG files (``rrsis evaluate --save-predictions``).

Layout of the directory::

    <id>.png            the network alone, one 0/255 PNG per sample, at the scoring resolution
    composed/<id>.png   with the composition rules (only when the evaluation ran them)
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from rrsis.data.files import atomic_write
from rrsis.errors import OutputExistsError

#: Sub-directory receiving the masks of the composed scores.
COMPOSED_DIR = "composed"

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


def prediction_path(directory: Path, sample_id: str) -> Path:
    """``directory/<id>.png``; characters outside ``A-Za-z0-9._-`` (separators too) become ``_``."""
    return directory / f"{_UNSAFE_FILENAME.sub('_', sample_id)}.png"


class PredictionWriter:
    """Saves the masks of one evaluation run.

    Args:
        directory: where the masks go; created if missing.
        overwrite: accept a non-empty ``directory`` (its files are replaced as masks come).
        composed: also write the composed masks under ``composed/``.

    Raises:
        OutputExistsError: ``directory`` is a file, or a non-empty directory without ``overwrite``.
    """

    def __init__(self, directory: str | Path, overwrite: bool = False, composed: bool = False):
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise OutputExistsError(f"{self.directory}: exists and is not a directory")
        if self.directory.is_dir() and any(self.directory.iterdir()) and not overwrite:
            raise OutputExistsError(
                f"{self.directory}: prediction directory is not empty "
                "(pass overwrite=True / --overwrite)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.composed_dir = self.directory / COMPOSED_DIR if composed else None
        if self.composed_dir is not None:
            self.composed_dir.mkdir(exist_ok=True)

    def write(self, sample_id: str, network: np.ndarray, composed: np.ndarray | None = None):
        """Save bool ``(H, W)`` masks of one sample (``composed`` only with ``composed=True``)."""
        save_mask(network, prediction_path(self.directory, sample_id))
        if self.composed_dir is not None and composed is not None:
            save_mask(composed, prediction_path(self.composed_dir, sample_id))


def save_mask(mask: np.ndarray, path: Path) -> None:
    """A bool ``(H, W)`` mask as a 0/255 single-channel PNG."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), overwrite=True)
