"""Bad input through the scripts: one line `error: <file>: <problem>` on stderr, exit code 2, nothing half-written.

Every case runs its script in a subprocess on its own broken copy of a tiny phantom set; the runs are started
together (a few at a time) by one fixture, and one test per case checks its outcome.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from datasets.phantoms.synapse import write_synapse_phantom
from networks.sim_mpnet import SimMPNet
from utils.checkpoint import model_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = dict(img_size=64, img_size_s2=64, scale="pico", num_k=2, feature_dim=16, warmup_iters=2, pool_size=4)
TRAIN_OPTIONS = ["--scale", "pico", "--img_size", "64", "--img_size_s2", "64", "--pool_size", "4", "--num_k", "2",
                 "--feature_dim", "16", "--warmup_iters", "2", "--pretrained", "none", "--device", "cpu",
                 "--batch_size", "4", "--num_workers", "0", "--max_epochs", "1"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A valid tiny phantom set and valid checkpoints (9 and 4 classes), copied by every test before breaking it."""
    root = tmp_path_factory.mktemp("pristine")
    write_synapse_phantom(root / "Synapse", root / "lists", num_train=1, num_test=1, size=32, depth=4, seed=0)
    torch.manual_seed(0)
    for classes in (9, 4):
        model = SimMPNet(num_classes=classes, **TINY_MODEL, pretrained=False)
        save_checkpoint(root / f"model{classes}.pth", model_checkpoint(model))
    torch.save(model.state_dict(), root / "bare_state_dict.pth")
    return root


def first_file(directory: Path, pattern: str) -> Path:
    return sorted(directory.glob(pattern))[0]


def rewrite_npz(path: Path, change: Callable[[dict], None]) -> None:
    with np.load(path) as archive:
        arrays = {key: archive[key].copy() for key in archive.files}
    change(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def rewrite_h5(path: Path, change: Callable[[dict], None]) -> None:
    with h5py.File(path, "r") as handle:
        arrays = {key: handle[key][()] for key in handle}
    change(arrays)
    path.unlink()
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle.create_dataset(key, data=value)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def set_label(arrays: dict, value: int) -> None:
    arrays["label"][0, 0] = value


def put_nan(arrays: dict) -> None:
    arrays["image"][..., 0, 0] = np.nan


def mismatch_shape(arrays: dict) -> None:
    arrays["label"] = arrays["label"][:, :-1]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    # One compute thread each: concurrent runs on a small machine would otherwise fight over the cores.
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def train_data(ws: Path) -> list[str]:
    return ["--root_path", str(ws / "Synapse" / "train_npz"), "--volume_path", str(ws / "Synapse" / "test_vol_h5"),
            "--list_dir", str(ws / "lists"), *TRAIN_OPTIONS, "--output_dir", str(ws / "out")]


def eval_options(ws: Path, checkpoint: str = "model9.pth") -> list[str]:
    return ["--volume_path", str(ws / "Synapse" / "test_vol_h5"), "--list_dir", str(ws / "lists"),
            "--device", "cpu", "--output_dir", str(ws / "out"), "--checkpoint", str(ws / checkpoint),
            "--save-overlays", "1", "--is_savenii"]


# Each case breaks a copy of the pristine workspace and returns (script, options, path named, problem stated).
Case = tuple[str, list[str], Path, str]


def missing_data_dir(ws: Path) -> Case:
    shutil.rmtree(ws / "Synapse" / "train_npz")
    return "train_synapse.py", train_data(ws), ws / "Synapse" / "train_npz", "data directory does not exist"


def missing_list(ws: Path) -> Case:
    (ws / "lists" / "train.txt").unlink()
    return "train_synapse.py", train_data(ws), ws / "lists" / "train.txt", "list file does not exist"


def list_names_missing_file(ws: Path) -> Case:
    with open(ws / "lists" / "train.txt", "a") as handle:
        handle.write("case0099_slice000\n")
    return ("train_synapse.py", train_data(ws), ws / "Synapse" / "train_npz" / "case0099_slice000.npz",
            "does not exist")


def corrupt_npz_in_worker(ws: Path) -> Case:
    path = first_file(ws / "Synapse" / "train_npz", "*.npz")
    truncate(path)
    return "train_synapse.py", [*train_data(ws), "--num_workers", "1"], path, "corrupt or truncated"


def label_out_of_range(ws: Path) -> Case:
    path = first_file(ws / "Synapse" / "train_npz", "*.npz")
    rewrite_npz(path, lambda arrays: set_label(arrays, 9))
    return "train_synapse.py", train_data(ws), path, "outside [0, 9)"


def nan_in_training_image(ws: Path) -> Case:
    path = first_file(ws / "Synapse" / "train_npz", "*.npz")
    rewrite_npz(path, put_nan)
    return "train_synapse.py", train_data(ws), path, "NaN"


def resume_from_other_class_count(ws: Path) -> Case:
    return ("train_synapse.py", [*train_data(ws), "--resume", str(ws / "model4.pth")], ws / "model4.pth",
            "num_classes: checkpoint has 4, requested 9")


def volume_shape_mismatch(ws: Path) -> Case:
    path = first_file(ws / "Synapse" / "test_vol_h5", "*.h5")
    rewrite_h5(path, mismatch_shape)
    return "test_synapse.py", eval_options(ws), path, "shape mismatch"


def nan_in_volume(ws: Path) -> Case:
    path = first_file(ws / "Synapse" / "test_vol_h5", "*.h5")
    rewrite_h5(path, put_nan)
    return "test_synapse.py", eval_options(ws), path, "NaN"


def corrupt_h5(ws: Path) -> Case:
    path = first_file(ws / "Synapse" / "test_vol_h5", "*.h5")
    truncate(path)
    return "test_synapse.py", eval_options(ws), path, "corrupt or truncated"


def checkpoint_of_other_class_count(ws: Path) -> Case:
    return ("test_synapse.py", eval_options(ws, "model4.pth"), ws / "model4.pth",
            "num_classes: checkpoint has 4, requested 9")


def checkpoint_of_other_architecture(ws: Path) -> Case:
    return ("test_synapse.py", eval_options(ws, "bare_state_dict.pth"), ws / "bare_state_dict.pth",
            "not a checkpoint of this codebase")


def flag_contradicting_checkpoint(ws: Path) -> Case:
    return ("test_synapse.py", [*eval_options(ws), "--scale", "small"], ws / "model9.pth",
            "scale: checkpoint has 'pico', requested 'small'")


def corrupt_checkpoint(ws: Path) -> Case:
    truncate(ws / "model9.pth")
    return "test_synapse.py", eval_options(ws), ws / "model9.pth", "cannot read checkpoint"


def missing_checkpoint(ws: Path) -> Case:
    return "test_synapse.py", eval_options(ws, "absent.pth"), ws / "absent.pth", "checkpoint file not found"


CASES = (missing_data_dir, missing_list, list_names_missing_file, corrupt_npz_in_worker, label_out_of_range,
         nan_in_training_image, resume_from_other_class_count, volume_shape_mismatch, nan_in_volume, corrupt_h5,
         checkpoint_of_other_class_count, checkpoint_of_other_architecture, flag_contradicting_checkpoint,
         corrupt_checkpoint, missing_checkpoint)
CONCURRENT_RUNS = 3  # script start-up is mostly imports: overlapping a few runs shortens the file's wall time


@pytest.fixture(scope="module")
def outcomes(pristine, tmp_path_factory) -> dict:
    """case name -> (completed process, path that must be named, problem, workspace)."""
    prepared = {}
    for case in CASES:
        workspace = tmp_path_factory.mktemp(case.__name__)
        shutil.copytree(pristine, workspace, dirs_exist_ok=True)
        prepared[case.__name__] = (*case(workspace), workspace)
    with ThreadPoolExecutor(CONCURRENT_RUNS) as pool:
        futures = {name: pool.submit(run_script, script, *options)
                   for name, (script, options, _, _, _) in prepared.items()}
        return {name: (futures[name].result(), *prepared[name][2:]) for name in prepared}


@pytest.mark.parametrize("case", [case.__name__ for case in CASES])
def test_script_reports_bad_input(outcomes, case):
    """Exit 2, last stderr line `error: <path>: ...problem...`, no output directory, no temporary file left."""
    result, path, problem, workspace = outcomes[case]
    assert result.returncode == 2, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: {path}: "), last_line
    assert problem in last_line, last_line
    assert "Traceback" not in result.stderr
    assert not (workspace / "out").exists()
    assert not [p for p in workspace.rglob("*") if p.name.endswith(".tmp")]
