"""Safe outputs: checks before work, exclusive publishing, umask modes, stale temporaries."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rrsis.data.files import (
    TEMP_MARK,
    atomic_write,
    check_output,
    clean_stale_temps,
    is_temp,
    outputs_of_run,
    prepare_output,
    publish,
    temp_path,
    umask_mode,
)
from rrsis.errors import OutputExistsError, RRSISError


def test_temp_names_sit_next_to_the_target_and_keep_its_suffix(tmp_path: Path) -> None:
    tmp = temp_path(tmp_path / "mask.png")
    assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".mask.png.")
    assert is_temp(tmp) and not is_temp(tmp_path / "mask.png")
    assert temp_path(tmp_path / "mask.png") != tmp


def test_publish_refuses_a_target_that_appeared_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    tmp = temp_path(target)
    tmp.write_text("mine")
    target.write_text("the other run's")  # another run published first
    with pytest.raises(OutputExistsError, match="exists"):
        publish(tmp, target, overwrite=False)
    assert target.read_text() == "the other run's"
    assert not tmp.exists()
    tmp.write_text("mine")
    publish(tmp, target, overwrite=True)
    assert target.read_text() == "mine" and not tmp.exists()


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        atomic_write(tmp_path / "x.txt", fail, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_umask_mode_not_the_temporary_files(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"), overwrite=False)
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640 == umask_mode()
    finally:
        os.umask(old)
    atomic_write(tmp_path / "b.txt", lambda tmp: tmp.write_text("x"), overwrite=False)
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == umask_mode()


def test_stale_temporaries_of_dead_runs_are_cleaned_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    stale = tmp_path / f".mask.png.{dead.stdout.strip()}-abcd1234.rrsis-tmp.png"
    stale.write_bytes(b"")
    live = temp_path(tmp_path / "other.png")
    live.write_bytes(b"")
    unrelated = tmp_path / ".hidden"
    unrelated.write_bytes(b"")
    assert clean_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and unrelated.exists()


def test_check_output_names_the_problem_in_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(RRSISError, match="afile is not a directory"):
        check_output(afile / "m.png")
    with pytest.raises(RRSISError, match="not a directory"):
        check_output(afile, directory=True)
    with pytest.raises(OutputExistsError, match="exists"):
        check_output(afile)
    assert check_output(afile, overwrite=True) == afile
    with pytest.raises(RRSISError, match="is a directory"):
        check_output(tmp_path)
    with pytest.raises(RRSISError, match="MiB free"):
        check_output(tmp_path / "big.tif", min_free_bytes=2**62)
    # A parent that does not exist yet is fine when it can be made; nothing is left behind.
    assert check_output(tmp_path / "new" / "deeper" / "m.png") == tmp_path / "new/deeper/m.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_check_output_refuses_a_pseudo_file_system() -> None:
    with pytest.raises(RRSISError, match="cannot write in /proc"):
        check_output(Path("/proc/m.png"))


def test_outputs_of_run_removes_what_it_published_when_it_fails(tmp_path: Path) -> None:
    before = tmp_path / "kept.txt"
    atomic_write(before, lambda tmp: tmp.write_text("earlier"), overwrite=False)
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(RRSISError, match="second step"):
        with outputs_of_run() as written:
            atomic_write(first, lambda tmp: tmp.write_text("a"), overwrite=False)
            with outputs_of_run():  # nested runs: each removes its own
                atomic_write(second, lambda tmp: tmp.write_text("b"), overwrite=False)
            assert written == [first, second]
            raise RRSISError("second step failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]
    with outputs_of_run() as written:  # success: everything stays
        atomic_write(first, lambda tmp: tmp.write_text("a"), overwrite=False)
    assert written == [first] and first.read_text() == "a"


def test_prepare_output_cleans_stale_temporaries_before_checking(tmp_path: Path) -> None:
    out = tmp_path / "tree"
    (out / "sub").mkdir(parents=True)
    child = subprocess.Popen(["true"])
    child.wait()
    stale = out / f".m.png.{child.pid}-0123abcd{TEMP_MARK}.png"
    nested = out / "sub" / stale.name
    for path in (stale, nested):
        path.write_bytes(b"")
    # An output directory is cleaned through its whole tree (overwrite: it is not empty).
    assert prepare_output(out, overwrite=True, directory=True) == out
    assert not stale.exists() and not nested.exists()
    (out / "sub").rmdir()
    stale.write_bytes(b"")
    # A folder holding only a killed run's litter counts as empty.
    assert prepare_output(out, directory=True) == out
    # An output file: its folder is cleaned.
    stale.write_bytes(b"")
    assert prepare_output(out / "m.png") == out / "m.png"
    assert not stale.exists()
