"""Project error and warning types.

Every problem a user can cause (bad paths, malformed datasets, wrong weights, bad
expressions) raises a subclass of :class:`RRSISError` carrying a one-line message that
names the file (and line, where there is one). The CLI prints that line and exits
non-zero without a traceback unless ``--debug`` is given. Input that is used after a repair
(a mask resized to its image) is reported with a :class:`DataWarning`.
"""

from __future__ import annotations

from pathlib import Path


class RRSISError(Exception):
    """Base class of all errors the user can act on."""


class DatasetError(RRSISError):
    """A dataset is missing, malformed or inconsistent.

    Args:
        message: what is wrong.
        path: the file or directory at fault, if any.
        line: 1-based line number inside ``path``, if any.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else Path(path)
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        super().__init__(f"{where}{message}")


class ImageReadError(DatasetError):
    """An image or mask file cannot be read or has an unsupported layout."""


class OutputExistsError(RRSISError):
    """An output path exists and overwriting was not requested."""


class ModelError(RRSISError):
    """Unknown model name, bad keyword argument, wrong input shape, or bad weights."""


class ExpressionError(RRSISError):
    """A referring expression is empty or cannot be used."""


class DataWarning(UserWarning):
    """Input data was repaired to be usable (e.g. a mask resized to its image).

    A category of its own so that commands which silence library warnings still show these:
    they change what is scored or trained on.
    """
