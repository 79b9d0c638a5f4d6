"""Faults at the boundaries of ``rrsis train`` and ``rrsis benchmark``: damaged run files, empty
splits and bad output folders are one-line errors (exit 2) before any work."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from rrsis.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train import TinyNet, make_run, make_tree  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


@pytest.fixture(scope="module")
def finished_run(tree: Path, tmp_path_factory) -> Path:
    """A run directory stopped after one step (hparams.json, last.ckpt, logs)."""
    from rrsis.engine.train import train

    out = tmp_path_factory.mktemp("runs") / "run"
    options = dict(batch_size=4, workers=0, input_size=32, epochs=2, max_steps=1, progress=False)
    train(make_run([tree], out, **options), model=TinyNet())
    return out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def resume(out: Path) -> int:
    return main(["train", "--out", str(out), "--resume", "--no-progress"])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "not valid JSON"),  # truncated by a kill or a full disk
        (b"\xff\xfe{", "cannot be read"),
        (b"[]", "holds a JSON list"),
        (b"{}", "no 'train' recipe"),
        (b'{"train": {"epochs": "many"}}', "damaged recipe"),
    ],
)
def test_resume_with_a_damaged_hparams_json_is_one_line(
    finished_run: Path, tmp_path: Path, capsys, content: bytes | None, problem: str
):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    hparams = out / "hparams.json"
    text = hparams.read_bytes()
    hparams.write_bytes(text[: len(text) // 2] if content is None else content)
    assert resume(out) == 2
    line = one_line_error(capsys)
    assert str(hparams) in line and problem in line, line


def test_resume_from_a_truncated_checkpoint_is_one_line(finished_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    assert resume(out) == 2
    line = one_line_error(capsys)
    assert str(last) in line and "not a readable checkpoint" in line, line


def test_run_files_are_written_through_temporaries(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """hparams.json is never written in place: an interrupted write keeps the file whole."""
    import rrsis.models.io
    from rrsis.data import files
    from rrsis.engine.train import train

    published = []
    real = files.publish

    def spy(tmp: Path, target: Path, overwrite: bool) -> None:
        assert files.is_temp(tmp) or files.is_temp(tmp.parent), tmp
        published.append(target.name)
        real(tmp, target, overwrite)

    monkeypatch.setattr(files, "publish", spy)
    monkeypatch.setattr(rrsis.models.io, "publish", spy)

    out = tmp_path / "run"
    options = dict(batch_size=4, workers=0, input_size=32, epochs=1, max_steps=1, progress=False)
    train(make_run([tree], out, **options), model=TinyNet())
    assert {"hparams.json", "metrics.csv", "last.ckpt", "model.safetensors"} <= set(published)
    assert json.loads((out / "hparams.json").read_text())["global_step"] == 1


def test_train_refuses_an_empty_split_naming_its_file(tree: Path, tmp_path: Path, capsys):
    for split in ("train", "val"):
        data = tmp_path / f"no-{split}"
        shutil.copytree(tree, data)
        (data / f"output_phrase_{split}.txt").write_text("")
        argv = ["train", "--model", "lgce_effnet_minilm", "--tiny", "--data", str(data)]
        argv += ["--out", str(tmp_path / f"run-{split}"), "--no-progress", "--workers", "0"]
        assert main(argv) == 2
        line = one_line_error(capsys)
        assert str(data / f"output_phrase_{split}.txt") in line and "no samples" in line, line
        assert not (tmp_path / f"run-{split}" / "checkpoints").exists()


@pytest.mark.parametrize("split", ["test", "train"])
def test_benchmark_refuses_an_empty_split_before_training(
    tree: Path, tmp_path: Path, capsys, split: str
):
    data = tmp_path / "data"
    shutil.copytree(tree, data)
    (data / f"output_phrase_{split}.txt").write_text("")
    out = tmp_path / "bench"
    argv = ["benchmark", "--models", "lgce_effnet_minilm", "--tiny", "--data", str(data)]
    argv += ["--out", str(out), "--no-progress", "--epochs", "1", "--max-steps", "1"]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert str(data / f"output_phrase_{split}.txt") in line and "no samples" in line, line
    assert not (out / "runs").exists() and not (out / "table.md").exists()


@pytest.mark.parametrize("command", ["train", "benchmark"])
@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_bad_out_is_one_line_before_any_work(
    tree: Path, tmp_path: Path, capsys, monkeypatch, command: str, where: str
):
    import rrsis.engine.datamodule as datamodule

    def no_data(*args, **kwargs):
        raise AssertionError("data read before the output was checked")

    monkeypatch.setattr(datamodule, "open_split", no_data)
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = {"file": afile, "under-file": afile / "run", "proc": Path("/proc/rrsis-run")}[where]
    if command == "train":
        argv = ["train", "--model", "lgce_effnet_minilm", "--tiny", "--data", str(tree)]
    else:
        argv = ["benchmark", "--models", "lgce_effnet_minilm", "--tiny", "--data", str(tree)]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 2
    line = one_line_error(capsys)
    assert str(out) in line, line
    assert afile.read_text() == "x"
