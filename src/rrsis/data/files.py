"""Writing outputs safely: checked before any work, published whole, nothing left behind.

Every file rrsis writes goes through :func:`atomic_write` (or :func:`publish` for writers that
manage their own temporary file):

- the content is written to a temporary file next to its target, named
  ``.<name>.<pid>-<random>.rrsis-tmp<suffix>`` (:func:`temp_path`), so a crash never leaves a
  truncated output and the litter of a killed run is recognisable;
- the temporary file gets the mode the user's umask gives a new file (``mkstemp`` makes it
  0600, and the mode would survive the rename);
- it is published with a hard link, which refuses an existing name, so two runs that write one
  new file cannot silently replace each other's result; with ``overwrite`` it replaces the
  target atomically;
- :func:`clean_stale_temps` removes the temporary files of runs that are no longer alive;
- inside :func:`outputs_of_run`, the files published so far are removed again when the run
  fails, so a failed command leaves no half result behind.

:func:`check_output` says in one line what is wrong with an output location before a command
starts its work.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rrsis.errors import OutputExistsError, RRSISError

#: The marker in every temporary name rrsis writes.
TEMP_MARK = ".rrsis-tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]+\.rrsis-tmp(?P<suffix>\.[^.]*)?$")


def temp_path(target: Path) -> Path:
    """A new temporary name next to ``target``, keeping its suffix (format-sniffing writers)."""
    target = Path(target)
    token = secrets.token_hex(4)
    return target.with_name(f".{target.name}.{os.getpid()}-{token}{TEMP_MARK}{target.suffix}")


def is_temp(path: Path) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`temp_path`."""
    return _TEMP_NAME.match(Path(path).name) is not None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temps(folder: Path, recursive: bool = False) -> list[Path]:
    """Remove the temporary files that runs no longer alive left in ``folder``.

    Only names of :func:`temp_path` whose process id is not running are removed; files of a
    run still writing into the same folder are kept.

    Returns:
        the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    candidates = folder.rglob(f".*{TEMP_MARK}*") if recursive else folder.glob(f".*{TEMP_MARK}*")
    for path in candidates:
        match = _TEMP_NAME.match(path.name)
        if match is None or _alive(int(match["pid"])):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


def umask_mode() -> int:
    """The mode the user's umask gives a new file (0644 under the usual umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


#: The open :func:`outputs_of_run` records; :func:`publish` adds each target to all of them.
_RUNS: list[list[Path]] = []


@contextmanager
def outputs_of_run() -> Iterator[list[Path]]:
    """Record the files published inside; remove them again if the block raises.

    A command that writes several outputs (a mask, then its polygons) wraps its writing in
    this, so that a failure in a later step does not leave the earlier outputs behind (and a
    rerun refused with "exists"). Yields the list of paths published so far.
    """
    written: list[Path] = []
    _RUNS.append(written)
    try:
        yield written
    except BaseException:
        for path in reversed(written):
            path.unlink(missing_ok=True)
        raise
    finally:
        # By identity: two runs' lists may be equal (both empty).
        del _RUNS[next(i for i, run in enumerate(_RUNS) if run is written)]


def _published(target: Path) -> None:
    for written in _RUNS:
        written.append(target)


def publish(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the finished temporary file ``tmp`` to ``target`` in one step.

    Without ``overwrite``, a ``target`` that exists (or appeared while ``tmp`` was written)
    is an :class:`~rrsis.errors.OutputExistsError` and ``tmp`` is removed.
    """
    tmp, target = Path(tmp), Path(target)
    try:
        os.chmod(tmp, umask_mode())
        if overwrite:
            os.replace(tmp, target)
            _published(target)
            return
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise OutputExistsError(
                f"{target}: exists (written by another run meanwhile?); pass --overwrite to "
                "replace it"
            ) from None
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            # No hard links on this file system: reserve the name exclusively, then replace.
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except FileExistsError:
                raise OutputExistsError(
                    f"{target}: exists; pass --overwrite to replace it"
                ) from None
            os.replace(tmp, target)
            _published(target)
            return
        _published(target)
        tmp.unlink()
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], None], *, overwrite: bool) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then :func:`publish` it.

    An interrupted run never leaves a truncated ``path``; a failed one leaves nothing. Parent
    directories are created.

    Args:
        path: the output file.
        write: writes the whole content to the path it is given.
        overwrite: replace an existing ``path``; without it an existing ``path`` (even one that
            appeared while writing) raises :class:`~rrsis.errors.OutputExistsError`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        publish(tmp, path, overwrite)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _nearest_existing(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor or ".")


def check_output(
    path: str | Path,
    overwrite: bool = False,
    directory: bool = False,
    min_free_bytes: int = 0,
) -> Path:
    """Check an output location before any work; one-line errors name the problem.

    Args:
        path: the output file (or directory, with ``directory=True``).
        overwrite: an existing output may be replaced (a directory may be non-empty).
        directory: ``path`` is a directory the command writes into.
        min_free_bytes: refuse when the file system has less free space than this (0: no check).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OutputExistsError: the output exists and ``overwrite`` is not set.
        RRSISError: a parent is a file, the location is not writable, or space is short.
    """
    path = Path(path)
    if directory:
        if path.exists() and not path.is_dir():
            raise RRSISError(f"{path}: exists and is not a directory")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise OutputExistsError(f"{path}: directory is not empty (pass --overwrite)")
    elif path.is_dir():
        raise RRSISError(f"{path}: is a directory, not a file")
    elif path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: exists (pass --overwrite to replace it)")
    base = path if directory else path.parent
    existing = _nearest_existing(base)
    if not existing.is_dir():
        raise RRSISError(f"{path}: cannot be created: {existing} is not a directory")
    _check_writable(existing, path)
    if min_free_bytes > 0:
        free = shutil.disk_usage(existing).free
        if free < min_free_bytes:
            raise RRSISError(
                f"{path}: only {free / 2**20:.0f} MiB free on its file system, "
                f"{min_free_bytes / 2**20:.0f} MiB needed"
            )
    return path


def _check_writable(folder: Path, path: Path) -> None:
    """Create and remove a probe file in ``folder``: permissions alone miss read-only mounts
    and pseudo file systems such as /proc (where even root cannot create files)."""
    probe = temp_path(folder / "write-check")
    try:
        with open(probe, "x"):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise RRSISError(f"{path}: cannot write in {folder} ({reason})") from None
    probe.unlink(missing_ok=True)


def prepare_output(path: str | Path, overwrite: bool = False, directory: bool = False) -> Path:
    """:func:`check_output`, after removing the temporaries killed runs left where ``path`` goes.

    The stale temporaries are looked for in ``path``'s folder, or in the whole tree of an output
    ``directory``; those of live runs are kept.
    """
    path = Path(path)
    clean_stale_temps(path if directory else path.parent, recursive=directory)
    return check_output(path, overwrite=overwrite, directory=directory)
