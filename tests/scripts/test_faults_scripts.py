"""Signals and two processes at once, through train.py in real processes (issue 30, cases 4 and 7).

A run stopped by SIGINT before its first checkpoint removes what it created (a plain rerun starts clean); one stopped
by SIGTERM after a checkpoint keeps it, and ``--resume auto`` ends in exactly the state of an uninterrupted run. Both
print one line and no traceback, and leave no temporary file and no lock. Two runs started together into one folder:
one trains, the other is refused with one line. (The in-process faults are in tests/utils/test_faults.py.)
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from datasets.phantoms.busi import write_busi_phantom
from tests.utils.test_recipe import stop_and_wait
from utils.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def is_temporary(name: str) -> bool:
    """A temporary file of the atomic writer: ``.<name>.<random>.tmp``."""
    return name.startswith(".") and name.endswith(".tmp")
EPOCHS = 3


def start(data: dict, output_dir: Path, *extra: str) -> subprocess.Popen:
    """train.py: tiny MatchSeg, 4 steps per epoch, one thread."""
    command = [sys.executable, str(REPO / "train.py"), "--dataset", "busi", "--model", "matchseg",
               "--root_path", data["root_path"], "--volume_path", data["volume_path"], "--list_dir", data["list_dir"],
               "--img_size", "32", "--widths", "4", "4", "4", "--pretrained", "none", "--support_size", "1",
               "--support_cache", str(output_dir.parent / "cache"), "--batch_size", "2", "--num_workers", "0",
               "--device", "cpu", "--max_epochs", str(EPOCHS), "--base_lr", "1e-2", "--output_dir", str(output_dir),
               *extra]
    return subprocess.Popen(command, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def stderr_of(process: subprocess.Popen, code: int) -> str:
    _, err = process.communicate(timeout=600)
    assert process.returncode == code, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    return err


def interrupt_when(process: subprocess.Popen, ready, signum: int) -> None:
    """Pause the run once ``ready()`` holds, check it still does, then send ``signum`` and let it go on."""
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before the moment came"
        time.sleep(0.01)
    stop_and_wait(process.pid)
    assert ready()
    os.kill(process.pid, signum)
    os.kill(process.pid, signal.SIGCONT)


def step_rows(folder: Path) -> dict[str, dict]:
    """train_steps.csv by step (the last row of a step: a resumed run repeats the steps after its checkpoint)."""
    return {row["step"]: row for row in csv.DictReader(open(folder / "train_steps.csv"))}


def leftovers(folder: Path) -> list[str]:
    return [path.name for path in folder.rglob("*") if is_temporary(path.name) or path.name == ".lock"]


def test_sigint_and_sigterm_end_a_run_in_one_line_and_it_resumes_to_the_uninterrupted_state(tmp_path):
    data = write_busi_phantom(tmp_path / "BUSI", tmp_path / "lists" / "lists_BUSI", num_train=8, num_val=2,
                              num_test=1, size=32, seed=0)
    whole_dir, folder = tmp_path / "whole", tmp_path / "run"
    whole = start(data, whole_dir)  # alongside: one thread each

    first = start(data, folder)  # SIGINT during the first epoch
    last = folder / "last.pth"
    interrupt_when(first, lambda: (folder / "train_steps.csv").exists() and not last.exists(), signal.SIGINT)
    line = stderr_of(first, 128 + signal.SIGINT).strip().splitlines()[-1]
    assert line.startswith("stopped by SIGINT: at step ") and line.endswith(
        ", before the first checkpoint: the files it created are removed")
    assert not folder.exists()

    second = start(data, folder)  # a plain rerun; SIGTERM after its first checkpoint
    interrupt_when(second, last.exists, signal.SIGTERM)
    line = stderr_of(second, 128 + signal.SIGTERM).strip().splitlines()[-1]
    assert line.startswith("stopped by SIGTERM: at step ")
    assert line.endswith(f"; {last} is kept (continue with --resume auto)")
    assert not leftovers(folder)
    assert "run stopped: stopped by SIGTERM" in (folder / "log.txt").read_text()
    assert load_checkpoint(last)["next_epoch"] < EPOCHS

    stderr_of(start(data, folder, "--resume", "auto"), 0)
    stderr_of(whole, 0)
    assert not leftovers(folder)
    for name in ("last.pth", "best_val.pth"):
        expected, actual = load_checkpoint(whole_dir / name), load_checkpoint(folder / name)
        assert (actual["next_epoch"], actual["global_step"]) == (expected["next_epoch"], expected["global_step"])
        for key, value in expected["model"].items():
            assert torch.equal(actual["model"][key], value), (name, key)
        for index, state in expected["optimizer"]["state"].items():
            for key, value in state.items():
                assert torch.equal(value, actual["optimizer"]["state"][index][key]), (name, index, key)
    epochs = [row["epoch"] for row in csv.DictReader(open(folder / "epochs.csv"))]
    assert epochs == [str(epoch) for epoch in range(EPOCHS)]
    assert step_rows(folder) == step_rows(whole_dir)


def test_two_runs_started_together_into_one_folder_one_trains_and_the_other_is_refused(tmp_path):
    data = write_busi_phantom(tmp_path / "BUSI", tmp_path / "lists" / "lists_BUSI", num_train=4, num_val=1,
                              num_test=1, size=32, seed=0)
    folder = tmp_path / "run"
    runs = {seed: start(data, folder, "--seed", str(seed), "--max_epochs", "1") for seed in (1, 2)}
    results = {seed: (process.communicate(timeout=600)[1], process.returncode) for seed, process in runs.items()}
    assert sorted(code for _, code in results.values()) == [0, 2], results
    winner = next(seed for seed, (_, code) in results.items() if code == 0)
    err = next(err for err, code in results.values() if code == 2)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert (errors[0].startswith(f"error: {folder / '.lock'}: the run folder is in use by pid ")
            or errors[0].startswith(f"error: {folder / 'last.pth'}: a run already exists here")), errors
    config = json.loads((folder / "config.json").read_text())
    assert config["options"]["run"]["seed"] == load_checkpoint(folder / "last.pth")["options"]["run"]["seed"] == winner
    assert [row["epoch"] for row in csv.DictReader(open(folder / "epochs.csv"))] == ["0"]
    assert not leftovers(folder)
