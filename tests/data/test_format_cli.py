"""``rrsis data stats | show | export`` end to end through ``rrsis.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rrsis.cli import main
from rrsis.data.refsegrs import RefSegRS
from rrsis.data.rrsisd import RRSISD


def _expected_buckets(boxes) -> tuple[str, str]:
    """Size and component bucket of a fixture sample, from its (disjoint, non-touching) boxes."""
    frac = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in boxes) / (48 * 64)
    size = "small" if frac < 0.01 else "medium" if frac <= 0.10 else "large"
    comps = "1" if len(boxes) == 1 else "2-5" if len(boxes) <= 5 else ">5"
    return size, comps


def test_stats_json_on_independent_fixture(refsegrs_root: Path, refsegrs_make, capsys) -> None:
    assert main(["data", "stats", str(refsegrs_root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert list(stats["splits"]) == ["train", "val", "test"]
    for split in ("train", "val", "test"):
        samples = [s for s in refsegrs_make.SAMPLES if s[1] == split]
        row = stats["splits"][split]
        assert row["n"] == len(samples) == 3
        sizes = [_expected_buckets(s[3])[0] for s in samples]
        comps = [_expected_buckets(s[3])[1] for s in samples]
        assert row["size"] == {b: sizes.count(b) for b in ("small", "medium", "large")}
        assert row["components"] == {b: comps.count(b) for b in ("1", "2-5", ">5")}
        assert sum(row["kind"].values()) == 3
    assert stats["total"]["n"] == 9
    assert stats["total"]["components"] == {"1": 6, "2-5": 2, ">5": 1}
    assert stats["total"]["size"] == {"small": 3, "medium": 3, "large": 3}


def test_stats_kinds_come_from_meta_when_present(refsegrs_copy: Path, capsys) -> None:
    lines = [{"id": i, "kind": "position"} for i in ("0", "1", "2")]
    (refsegrs_copy / "meta_train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["data", "stats", str(refsegrs_copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["train"]["kind"] == {"position": 3}


def test_stats_table_and_rrsisd(refsegrs_root: Path, rrsisd_root: Path, capsys) -> None:
    assert main(["data", "stats", str(refsegrs_root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["split", "n"]
    assert [line.split()[:2] for line in table[1:]] == [
        ["train", "3"],
        ["val", "3"],
        ["test", "3"],
        ["total", "9"],
    ]
    assert main(["data", "stats", str(rrsisd_root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert {s: r["n"] for s, r in stats["splits"].items()} == {"train": 3, "val": 1, "test": 1}


def test_stats_on_missing_root_is_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["data", "stats", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "nope") in err and "Traceback" not in err


def test_show_finds_id_in_any_split(refsegrs_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "show.png"
    assert main(["data", "show", str(refsegrs_root), "7", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
    assert "(test): impervious surface" in capsys.readouterr().out
    # Refuses to overwrite, and --split restricts the search.
    assert main(["data", "show", str(refsegrs_root), "7", "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "show",
                str(refsegrs_root),
                "7",
                "-o",
                str(tmp_path / "b.png"),
                "--split",
                "train",
            ]
        )
        == 2
    )
    assert "id '7' not found in split(s) train" in capsys.readouterr().err


def test_export_rrsisd_round_trip(rrsisd_root: Path, tmp_path: Path, tree_digest, capsys) -> None:
    before = tree_digest(rrsisd_root)
    out = tmp_path / "exported"
    assert main(["data", "export", str(rrsisd_root), str(out), "--format", "rrsisd"]) == 0
    assert "train 3, val 1, test 1" in capsys.readouterr().out
    assert tree_digest(rrsisd_root) == before
    for split in ("train", "val", "test"):
        source, copy = RRSISD(rrsisd_root, split), RefSegRS(out, split)
        assert copy.ids == source.ids and copy.expressions == source.expressions
        for index in range(len(source)):
            a, b = source[index], copy[index]
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["mask"], b["mask"])
            assert (a["text"], a["id"], a["meta"]) == (b["text"], b["id"], b["meta"])
    # A second export into the now non-empty directory is refused without --overwrite.
    assert main(["data", "export", str(rrsisd_root), str(out), "--format", "rrsisd"]) == 2
    assert "not empty" in capsys.readouterr().err
    argv = ["data", "export", str(rrsisd_root), str(out), "--format", "rrsisd", "--overwrite"]
    assert main([*argv, "--no-progress"]) == 0
    assert "export" not in capsys.readouterr().err  # no progress bar


@pytest.mark.parametrize("fmt", ["refsegrs", "rrsisd"])
def test_export_wrong_format_is_a_dataset_error(
    refsegrs_root: Path, rrsisd_root: Path, tmp_path: Path, fmt: str, capsys
) -> None:
    wrong = rrsisd_root if fmt == "refsegrs" else refsegrs_root
    assert main(["data", "export", str(wrong), str(tmp_path / "o"), "--format", fmt]) == 2
    assert "rrsis: error:" in capsys.readouterr().err
