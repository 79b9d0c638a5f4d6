"""``rrsis predict-batch --devices N``: images shared among processes, each segmented once.

Lightning's ``ddp`` strategy re-launches the running command for the other ranks, so the
distributed runs happen in a subprocess running a small generated entry script, with the
package on an absolute ``PYTHONPATH``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrsis.cli import main
from rrsis.engine.predict_batch import Processes, ShardSampler, run_batch_distributed, shard
from rrsis.errors import RRSISError
from rrsis.infer.batch import BatchConfig, prepare_batch, run_batch
from rrsis.infer.predictor import Segmenter
from rrsis.models.io import save_model
from rrsis.models.registry import get_tiny_model

SRC = Path(__file__).resolve().parents[2] / "src"
ENTRY = "import sys\nfrom rrsis.cli import main\nsys.exit(main())\n"


def _summary(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _comparable(rows: list[dict], out: Path) -> list[dict]:
    """Rows without the per-image time, mask paths relative to the output folder."""
    return [
        {k: str(v).replace(str(out), "OUT") for k, v in row.items() if k != "seconds"}
        for row in rows
    ]


def _distributed(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    entry = cwd / "rrsis_entry.py"
    entry.write_text(ENTRY)
    pythonpath = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=pythonpath, PL_DISABLE_FORK="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(entry), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """Five small PNG tiles, one unreadable file, and a tiny random model."""
    root = tmp_path_factory.mktemp("batch")
    images = root / "images"
    images.mkdir()
    for i in range(5):
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 256, (64, 96 + 8 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"tile{i}.png")
    (images / "tile5.jpg").write_bytes(b"not a jpeg")
    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save_model(get_tiny_model("lgce_effnet_minilm"), weights)
    return images, weights


def test_two_processes_write_what_one_process_writes(inputs, tmp_path, capsys):
    images, weights = inputs
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["-e", "road", "-e", "red car", "--model", str(weights), "--no-progress"]
    common += ["--merged-vector"]
    assert main(["predict-batch", str(images), "-o", str(one), *common]) == 1  # tile5 unreadable
    printed = capsys.readouterr().out
    args = ["predict-batch", str(images), "-o", str(two), *common, "--devices", "2"]
    proc = _distributed([*args, "--accelerator", "cpu"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "All distributed processes registered. Starting with 2 processes" in proc.stderr
    # The first process reports for the run, once.
    assert proc.stdout.replace(str(two), str(one)) == printed
    assert "5 images segmented, 0 skipped (outputs exist), 1 unreadable" in printed
    assert proc.stderr.count("skipped") == 1 and "tile5.jpg" in proc.stderr  # one warning
    rows_one, rows_two = _summary(one), _summary(two)
    assert _comparable(rows_two, two) == _comparable(rows_one, one)
    assert [r["status"] for r in rows_two] == ["ok"] * 10 + ["error"] * 2
    assert all(float(r["seconds"]) > 0 for r in rows_two[:10])
    outputs = sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in two.iterdir()) == outputs  # no part files left
    for name in outputs:
        if name.endswith(".png"):
            a, b = Image.open(one / name), Image.open(two / name)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
    assert (two / "polygons.gpkg").stat().st_size > 0


def test_lightning_in_one_process_is_the_loop_and_an_interrupted_run_keeps_its_rows(
    inputs, tmp_path
):
    images, weights = inputs
    segmenter = Segmenter.from_pretrained(str(weights))
    config = BatchConfig(progress=False)
    loop, lightning = tmp_path / "loop", tmp_path / "lightning"
    with pytest.warns(UserWarning, match="tile5.jpg"):
        run_batch(prepare_batch([images], ["road"], loop, config), segmenter)
    batch = prepare_batch([images], ["road"], lightning, config)
    with pytest.warns(UserWarning, match="tile5.jpg"):
        rows = run_batch_distributed(batch, lambda device: segmenter, Processes(1, 1, "cpu"))
    assert _comparable(rows, lightning) == _comparable(_summary(loop), loop)
    assert _comparable(_summary(lightning), lightning) == _comparable(_summary(loop), loop)
    for name in (p.name for p in loop.glob("*.png")):
        assert (lightning / name).read_bytes() == (loop / name).read_bytes()

    calls = []
    original = segmenter.predict

    def fails_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk gone")
        return original(*args, **kwargs)

    segmenter.predict = fails_on_the_third
    interrupted = tmp_path / "interrupted"
    batch = prepare_batch([images], ["road"], interrupted, config)
    with pytest.raises(RuntimeError, match="disk gone"):
        run_batch_distributed(batch, lambda device: segmenter, Processes(1, 1, "cpu"))
    assert [r["image"] for r in _summary(interrupted)] == [str(images / "tile0.png")] + [
        str(images / "tile1.png")
    ]


def test_shards_cover_every_image_once_without_padding():
    for count in (0, 1, 2, 5, 7):
        for world in (1, 2, 3, 8):
            shares = [list(ShardSampler(count, rank, world)) for rank in range(world)]
            assert sorted(i for share in shares for i in share) == list(range(count))
            assert [len(s) for s in shares] == [len(shard(count, r, world)) for r in range(world)]
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert list(shard(2, 3, 4)) == []  # more processes than images: nothing, not a repeat


def test_processes_checks_its_values():
    assert Processes("2").devices == 2 and Processes("0,1").devices == "0,1"
    assert Processes("auto").devices == "auto"
    for bad in ({"devices": "two"}, {"devices": 0}, {"num_nodes": 0}, {"accelerator": "tpu"}):
        with pytest.raises(RRSISError):
            Processes(**bad)


def test_device_and_devices_together_are_refused_before_any_work(inputs, tmp_path, error_line):
    images, _ = inputs
    out = tmp_path / "out"
    args = ["predict-batch", str(images), "-e", "road", "-o", str(out), "--devices", "2"]
    assert main([*args, "--device", "cuda"]) == 2
    assert "--accelerator gpu" in error_line()
    assert not out.exists()
    with pytest.raises(SystemExit):
        main([*args, "--num-nodes", "0"])


@pytest.mark.slow
def test_more_processes_than_images(inputs, tmp_path):
    images, weights = inputs
    out = tmp_path / "out"
    args = ["predict-batch", str(images / "tile0.png"), "-e", "road", "-o", str(out)]
    args += ["--model", str(weights), "--devices", "2", "--accelerator", "cpu"]
    proc = _distributed(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["status"] for r in _summary(out)] == ["ok"]
    assert sorted(p.name for p in out.iterdir()) == ["summary.csv", "tile0.png"]
