"""Which files a batch reads, and the file-name part of an expression."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from rrsis.errors import DatasetError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def slug(expression: str, limit: int = 48) -> str:
    """File-name part for an expression: lower case, other characters as ``-``."""
    text = re.sub(r"[^0-9a-z]+", "-", expression.lower()).strip("-")
    return text[:limit].rstrip("-") or "expression"


def find_images(inputs: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """Image files named by ``inputs`` (files, or folders searched for image suffixes).

    Raises:
        DatasetError: a path that does not exist, or nothing to segment at all.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(
                sorted(
                    p
                    for p in path.glob(pattern)
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        elif path.exists():
            found.append(path)
        else:
            raise DatasetError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise DatasetError(
            "no images to segment (folders are searched for " + ", ".join(IMAGE_SUFFIXES) + ")"
        )
    return unique
