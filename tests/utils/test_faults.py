"""Fault injection in one process (issue 30): diverged weights, a damaged checkpoint, another run's checkpoint, a
missing last.pth, a run folder of a run stopped before its first checkpoint, a checkpoint set that cannot be written
whole, a full disk, leftovers of a killed writer, a lock held by a live or an ended process, warnings in log.txt,
test.py's record of what it evaluated, and predict.py never touching its inputs.

Every case asserts the outcome a user sees: the exit code, ONE ``error:`` line naming the file concerned, the good
files of the run byte-identical, no temporary file left. A tiny MatchSeg (32 px, widths 4) on a BUSI phantom trains
two runs once per module (A: 2 epochs of 2 steps, C: another run); each test works on a copy. Signals, and two
processes at once, are in tests/scripts/test_faults_scripts.py.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets.io.atomic as atomic
from datasets.phantoms.busi import write_busi_phantom
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.cli import build_test_parser, build_train_parser, run_cli
from utils.evaluator import evaluate
from utils.predict import main as predict_main
from utils.trainer import Trainer, train

def is_temporary(name: str) -> bool:
    """A temporary file of the atomic writer: ``.<name>.<random>.tmp``."""
    return name.startswith(".") and name.endswith(".tmp")


RUN_FILES = ("last.pth", "best_val.pth", "config.json", "epochs.csv", "train_steps.csv")
# what a resumed run that fails must leave as it was (config.json records the new run's options at its start, and
# train_steps.csv the steps it took: readers keep the last row of a step)
GOOD_FILES = ("last.pth", "best_val.pth", "epochs.csv")


def train_config(data: dict, output_dir: Path, *extra: str):
    return build_train_parser("busi").parse_config(
        ["--model", "matchseg", "--root_path", data["root_path"], "--volume_path", data["volume_path"],
         "--list_dir", data["list_dir"], "--img_size", "32", "--widths", "4", "4", "4", "--pretrained", "none",
         "--support_size", "1", "--support_cache", str(Path(data["root_path"]).parent / "cache"), "--device", "cpu",
         "--batch_size", "2", "--num_workers", "0", "--base_lr", "1e-2", "--output_dir", str(output_dir), *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("faults")
    data = write_busi_phantom(root / "BUSI", root / "lists" / "lists_BUSI", num_train=4, num_val=2, num_test=1,
                              size=32, seed=0)
    assert run_cli(train, train_config(data, root / "A", "--max_epochs", "2")) == 0
    assert run_cli(train, train_config(data, root / "C", "--max_epochs", "1", "--seed", "7")) == 0
    return {"data": data, "root": root}


def copy_run(runs: dict, name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(runs["root"] / name, tmp_path / name))


def contents(folder: Path, names=RUN_FILES) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names if (folder / name).exists()}


def temporaries(folder: Path) -> list[str]:
    return [str(path) for path in folder.rglob("*") if is_temporary(path.name)]


def train_status(runs: dict, folder: Path, capsys, *extra: str) -> tuple[int, str]:
    """(exit code, the one ``error:`` line, or '' when there is none) of train.py ARGS in this process."""
    capsys.readouterr()
    status = run_cli(train, train_config(runs["data"], folder, *extra))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == (1 if status else 0), err
    return status, errors[0] if errors else ""


def last_log_line(folder: Path) -> str:
    return (folder / "log.txt").read_text().rstrip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------------------------
# Divergence and damaged checkpoints (issue cases 2, 6, 8)
# ----------------------------------------------------------------------------------------------------------------
def test_diverged_weights_are_not_saved_over_good_ones_and_the_run_stops_naming_the_step(runs, tmp_path, capsys):
    """lr 1e39, one step in the epoch (--max_steps): the loss of that step is finite, the weights after it are not."""
    folder = copy_run(runs, "A", tmp_path)
    before = contents(folder, GOOD_FILES)
    status, line = train_status(runs, folder, capsys, "--max_epochs", "3", "--resume", "auto", "--base_lr", "1e39",
                                "--max_steps", "5")
    assert status == 2
    assert line.startswith(f"error: {folder / 'last.pth'}: not written: the weights diverged at step 5: ")
    assert "weight values are not finite" in line and "the files already there are kept" in line
    assert contents(folder, GOOD_FILES) == before and not temporaries(folder)
    assert "run stopped:" in last_log_line(folder) and "diverged at step 5" in last_log_line(folder)
    assert load_checkpoint(folder / "last.pth")["global_step"] == 4


def test_a_diverged_loss_is_one_line_naming_the_step_and_the_loss(runs, tmp_path, capsys):
    """Two steps: the first makes the weights infinite, the second's loss is NaN."""
    folder = copy_run(runs, "A", tmp_path)
    before = contents(folder, GOOD_FILES)
    status, line = train_status(runs, folder, capsys, "--max_epochs", "3", "--resume", "auto", "--base_lr", "1e39")
    assert status == 2
    assert line == f"error: {folder}: training diverged at step 6: loss nan (the checkpoints already written are kept)"
    assert contents(folder, GOOD_FILES) == before and not temporaries(folder)
    assert "training diverged at step 6: loss nan" in last_log_line(folder)


def test_a_checkpoint_with_non_finite_weights_is_refused_by_test_py_naming_it(runs, tmp_path, capsys):
    """As the code before the check wrote them (no hash): loading names the file, test.py exits 2."""
    checkpoint = torch.load(runs["root"] / "A" / "last.pth", weights_only=True)
    checkpoint.pop("content_sha256", None)
    name = next(key for key, value in checkpoint["model"].items() if value.is_floating_point())
    checkpoint["model"][name].view(-1)[0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="1 of [0-9,]+ weight values are not finite") as info:
        load_checkpoint(path)
    assert info.value.path == str(path)
    data = runs["data"]
    config = build_test_parser("busi").parse_config(
        ["--checkpoint", str(path), "--volume_path", data["volume_path"],
         "--list_dir", data["list_dir"], "--device", "cpu", "--output_dir", str(tmp_path / "test")])
    capsys.readouterr()
    assert run_cli(evaluate, config) == 2
    assert capsys.readouterr().err.startswith(f"error: {path}: 1 of ")
    assert not (tmp_path / "test").exists()


def test_a_flipped_bit_in_a_checkpoint_is_found_by_its_content_hash(runs, tmp_path):
    source = runs["root"] / "A" / "last.pth"
    checkpoint = load_checkpoint(source)
    weight = next(value for value in checkpoint["model"].values() if value.is_floating_point() and value.numel() > 8)
    data = bytearray(source.read_bytes())
    raw = weight.numpy().tobytes()
    offset = data.find(raw)
    assert offset >= 0 and data.find(raw, offset + 1) < 0
    data[offset + 3] ^= 0x40  # the highest exponent bit of the first float32 (little-endian): 0.05 -> 1.7e37
    damaged = tmp_path / "flipped.pth"
    damaged.write_bytes(bytes(data))
    assert torch.isfinite(torch.load(damaged, weights_only=True)["model"][next(
        key for key, value in checkpoint["model"].items() if value is weight)]).all()  # finite: only the hash sees it
    with pytest.raises(CheckpointError, match="content does not match its content_sha256") as info:
        load_checkpoint(damaged)
    assert info.value.path == str(damaged)


# ----------------------------------------------------------------------------------------------------------------
# One run per folder (issue case 3, 7)
# ----------------------------------------------------------------------------------------------------------------
def test_another_runs_checkpoint_is_refused_here_and_continues_in_a_new_folder(runs, tmp_path, capsys):
    folder, other = copy_run(runs, "A", tmp_path), runs["root"] / "C" / "last.pth"
    before = contents(folder)
    status, line = train_status(runs, folder, capsys, "--max_epochs", "3", "--resume", str(other), "--seed", "7")
    assert status == 2 and line.startswith(f"error: {other}: this checkpoint is of run ")
    assert f"but {folder} holds run " in line
    assert contents(folder) == before and not temporaries(folder)

    fork = tmp_path / "fork"
    assert train_status(runs, fork, capsys, "--max_epochs", "2", "--resume", str(other), "--seed", "7")[0] == 0
    run_id = json.loads((fork / "config.json").read_text())["run_id"]
    assert run_id == load_checkpoint(fork / "last.pth")["run_id"] != load_checkpoint(other)["run_id"]


def test_resume_auto_without_last_pth_refuses_instead_of_starting_over(runs, tmp_path, capsys):
    folder = copy_run(runs, "A", tmp_path)
    (folder / "last.pth").unlink()
    before = contents(folder)
    status, line = train_status(runs, folder, capsys, "--max_epochs", "3", "--resume", "auto")
    assert status == 2
    assert line == (f"error: {folder}: holds best_val.pth but no last.pth: a new run would overwrite them; resume "
                    f"from one with --resume {folder / 'best_val.pth'}, or choose another --output_dir")
    assert contents(folder) == before


def test_a_folder_of_a_run_stopped_before_its_first_checkpoint_gets_no_second_run_appended(runs, tmp_path, capsys):
    """What a kill -9 in the first epoch leaves: config.json and step rows, no checkpoint."""
    folder = copy_run(runs, "A", tmp_path)
    for name in ("last.pth", "best_val.pth", "epochs.csv"):
        (folder / name).unlink()
    before = contents(folder)
    status, line = train_status(runs, folder, capsys, "--max_epochs", "2")
    assert status == 2 and line.startswith(f"error: {folder / 'config.json'}: a run that stopped before its first "
                                           f"checkpoint is here")
    assert contents(folder) == before


# ----------------------------------------------------------------------------------------------------------------
# Writing (issue cases 5, 6, 7): the set as a unit, a full disk, leftovers
# ----------------------------------------------------------------------------------------------------------------
def test_a_checkpoint_set_that_cannot_be_written_whole_replaces_nothing(runs, tmp_path, capsys, monkeypatch):
    """best_val.pth cannot be replaced (as an immutable file): last.pth keeps the epoch best_val.pth holds."""
    folder = copy_run(runs, "A", tmp_path)
    before = contents(folder, GOOD_FILES)
    monkeypatch.setattr(Trainer, "evaluate_on", lambda self, dataset, tag, epoch: {"mean_dice": 2.0,
                                                                                    "mean_hd95": 1.0})
    replace = os.replace

    def refusing_replace(source, target):
        if str(target).endswith("best_val.pth"):
            raise PermissionError(errno.EPERM, "Operation not permitted", source, None, target)
        replace(source, target)

    monkeypatch.setattr(os, "replace", refusing_replace)
    status, line = train_status(runs, folder, capsys, "--max_epochs", "3", "--resume", "auto")
    assert status == 2 and line == f"error: {folder / 'best_val.pth'}: Operation not permitted"
    assert contents(folder, GOOD_FILES) == before and not temporaries(folder)


def enospc_after(limit: int):
    """``open`` whose files raise ENOSPC once ``limit`` bytes were written to one file (a full disk)."""
    real_open = open

    class Full:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, data):
            self.written += len(data)
            if self.written > limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    return lambda *args, **kwargs: Full(real_open(*args, **kwargs))


def test_a_full_disk_while_writing_a_checkpoint_names_it_and_keeps_the_last_good_one(runs, tmp_path, capsys,
                                                                                    monkeypatch):
    folder = copy_run(runs, "A", tmp_path)
    before = contents(folder, GOOD_FILES)
    monkeypatch.setattr(atomic, "open", enospc_after(8192), raising=False)  # config.json fits, a checkpoint not
    status, line = train_status(runs, folder, capsys, "--max_epochs", "3", "--resume", "auto")
    assert status == 2 and line == f"error: {folder / 'last.pth'}: No space left on device"
    assert contents(folder, GOOD_FILES) == before and not temporaries(folder)
    assert last_log_line(folder).endswith(f"run stopped: {folder / 'last.pth'}: No space left on device")


def test_reopening_a_folder_removes_leftovers_replaces_a_stale_lock_and_logs_resume_warnings(runs, tmp_path,
                                                                                           capsys):
    folder = copy_run(runs, "A", tmp_path)
    (folder / ".last.pth.0123456789ab.tmp").write_bytes(b"half a checkpoint")
    ended = subprocess.Popen(["true"])
    ended.wait()
    (folder / ".lock").write_text(json.dumps({"pid": ended.pid, "host": socket.gethostname(), "since": "earlier"}))
    status, _ = train_status(runs, folder, capsys, "--max_epochs", "3", "--resume", "auto", "--seed", "5")
    assert status == 0
    assert not temporaries(folder) and not (folder / ".lock").exists()
    log = (folder / "log.txt").read_text()
    assert f"{folder}: removed 1 temporary file(s) of an interrupted writer: .last.pth.0123456789ab.tmp" in log
    assert f"stale lock of pid {ended.pid} on {socket.gethostname()}" in log
    assert "resuming with --seed 5 (checkpoint was trained with 2222)" in log
    assert load_checkpoint(folder / "last.pth")["next_epoch"] == 3


def test_a_folder_locked_by_a_live_process_is_refused(runs, tmp_path, capsys):
    folder = copy_run(runs, "A", tmp_path)
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "since": "now"}
    (folder / ".lock").write_text(json.dumps(holder))
    before = contents(folder)
    status, line = train_status(runs, folder, capsys, "--max_epochs", "3", "--resume", "auto")
    assert status == 2
    assert line.startswith(f"error: {folder / '.lock'}: the run folder is in use by pid {os.getppid()} on "
                           f"{socket.gethostname()} since now")
    assert contents(folder) == before and (folder / ".lock").exists()


# ----------------------------------------------------------------------------------------------------------------
# What test.py evaluated (issue case 8)
# ----------------------------------------------------------------------------------------------------------------
def test_test_py_records_the_checkpoints_epoch_step_and_hash(runs, tmp_path):
    data, checkpoint = runs["data"], runs["root"] / "A" / "last.pth"
    config = build_test_parser("busi").parse_config(
        ["--checkpoint", str(checkpoint), "--volume_path", data["volume_path"],
         "--list_dir", data["list_dir"], "--device", "cpu", "--output_dir", str(tmp_path / "test")])
    assert run_cli(evaluate, config) == 0
    stored = load_checkpoint(checkpoint)
    expected = {"epochs": 2, "step": 4, "run_id": json.loads((checkpoint.parent / "config.json").read_text())["run_id"],
                "sha256": stored["content_sha256"]}
    assert json.loads((tmp_path / "test" / "summary.json").read_text())["checkpoint_state"] == expected
    described = f"epochs 2, step 4, sha256 {stored['content_sha256']}"
    assert f"{checkpoint} ({described})" in (tmp_path / "test" / "log.txt").read_text()
    assert described in (tmp_path / "test" / "report.html").read_text()


# ----------------------------------------------------------------------------------------------------------------
# predict.py never touches its inputs (issue cases 1, 6, 9)
# ----------------------------------------------------------------------------------------------------------------
def write_images(folder: Path, names: list[str], seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (24, 28, 3), dtype=np.uint8)).save(folder / name)
    return folder


def run_predict(capsys, runs: dict, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    status = predict_main(["--checkpoint", str(runs["root"] / "A" / "last.pth"), *map(str, args), "--device", "cpu"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


def tree(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_predict_refuses_an_output_that_is_or_is_inside_its_input_before_writing(runs, tmp_path, capsys):
    scans = write_images(tmp_path / "scans", ["a.png", "b.png"])
    before = tree(scans)
    status, _, err = run_predict(capsys, runs, "--input", scans, "--output", scans, "--overwrite")
    assert status == 2 and err == (f"error: {scans}: the output folder is the input {scans}: predictions would replace "
                                   f"or mix with the inputs; choose an --output outside it\n")
    status, _, err = run_predict(capsys, runs, "--input", scans, "--output", scans / "predictions")
    assert status == 2 and err.startswith(f"error: {scans / 'predictions'}: the output folder is inside the input ")
    assert tree(scans) == before


def test_predict_refuses_an_output_file_that_would_replace_its_input(runs, tmp_path, capsys):
    scans = write_images(tmp_path / "scans", ["a.png"])
    before = tree(scans)
    status, _, err = run_predict(capsys, runs, "--input", scans / "a.png", "--output", scans, "--overwrite")
    assert status == 2 and err == (f"error: {scans / 'a.png'}: this output would replace the input {scans / 'a.png'}: "
                                   f"choose another --output\n")
    assert tree(scans) == before


def test_predict_merges_volumes_csv_and_refuses_transparent_images(runs, tmp_path, capsys):
    first = write_images(tmp_path / "first", ["x.png"], seed=1)
    second = write_images(tmp_path / "second", ["y.png"], seed=2)
    rgba = np.dstack([np.full((20, 20, 3), 90, np.uint8), np.full((20, 20), 255, np.uint8)])
    Image.fromarray(rgba).save(second / "opaque.png")
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(second / "transparent.png")
    out = tmp_path / "out"
    assert run_predict(capsys, runs, "--input", first, "--output", out)[0] == 0
    status, out_text, err = run_predict(capsys, runs, "--input", second, "--output", out)
    assert status == 1  # the transparent image failed, the others were written
    assert f"error: {second / 'transparent.png'}: image with transparent pixels (mode RGBA)" in err
    assert f"note: {second / 'opaque.png'}: its alpha channel (fully opaque) is dropped" in out_text
    cases = [line.split(",")[0] for line in (out / "volumes.csv").read_text().splitlines()[1:]]
    assert cases == ["x", "opaque", "y"]  # the first run's row kept, the second run's added
    assert sorted(path.name for path in out.glob("*.png")) == ["opaque.png", "x.png", "y.png"]


def test_a_full_disk_while_predicting_names_the_file_and_leaves_nothing_half_written(runs, tmp_path, capsys,
                                                                                   monkeypatch):
    scans = write_images(tmp_path / "scans", ["a.png"])
    monkeypatch.setattr(atomic, "open", enospc_after(16), raising=False)
    status, _, err = run_predict(capsys, runs, "--input", scans, "--output", tmp_path / "out")
    assert status == 2 and err.endswith(f"error: {tmp_path / 'out' / 'a.png'}: No space left on device\n")
    assert not temporaries(tmp_path / "out") and not (tmp_path / "out" / "a.png").exists()
