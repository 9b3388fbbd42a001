"""Training/evaluation pipeline on a tiny phantom Synapse set: scripts end to end, W-LD's K, exact resume, CLI."""
from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from datasets.phantoms.synapse import write_synapse_phantom
from utils.cli import build_test_parser, build_train_parser
from utils.trainer import train
from utils.visual import PANEL_GAP

REPO = Path(__file__).resolve().parents[2]
SLICE_SIZE, DEPTH, TRAIN_CASES, BATCH = 64, 6, 2, 4
STEPS_PER_EPOCH = TRAIN_CASES * DEPTH // BATCH
POOL_SIZE = 8
NUM_CLASSES = 9
# Pico model at 64x64 with a memory phase of 2 forwards, so clustering and W-LD run within a few steps.
TINY = ["--scale", "pico", "--img_size", "64", "--img_size_s2", "64", "--pool_size", str(POOL_SIZE),
        "--feature_dim", "16", "--warmup_iters", "2", "--pretrained", "none", "--device", "cpu",
        "--batch_size", str(BATCH), "--num_workers", "0"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("phantom")
    return write_synapse_phantom(root / "Synapse", root / "lists", num_train=TRAIN_CASES, num_test=1,
                                 size=SLICE_SIZE, depth=DEPTH, seed=0)


def data_args(phantom: dict) -> list[str]:
    return ["--root_path", phantom["root_path"], "--volume_path", phantom["volume_path"],
            "--list_dir", phantom["list_dir"]]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def read_tensorboard_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TFRecord event files (length u64, crc u32, payload, crc u32 per record)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data, position = path.read_bytes(), 0
        while position < len(data):
            (length,) = struct.unpack("<Q", data[position:position + 8])
            event = event_pb2.Event.FromString(data[position + 12:position + 12 + length])
            position += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars[value.tag].append((event.step, value.simple_value))
    return scalars


def expected_k_sequence(losses: list[float], wld_start_epoch: int, pool_size: int) -> list[int]:
    """K after every step, restating W-LD: from the first step of wld_start_epoch on, remember the loss; at every
    later step K = int((0.5 - 0.5 * (previous - loss)) * M), reset to M // 2 outside [M/4, 3M/4]."""
    k, previous, sequence = pool_size // 2, None, []
    for step, loss in enumerate(losses):
        epoch = step // STEPS_PER_EPOCH
        if epoch >= wld_start_epoch:
            if previous is not None:
                k = int((0.5 - 0.5 * (previous - loss)) * pool_size)
                if not pool_size / 4 <= k <= 3 * pool_size / 4:
                    k = pool_size // 2
            previous = loss
        sequence.append(k)
    return sequence


def naive_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """TransUNet protocol: both present -> 2|P&G|/(|P|+|G|); predicted only -> 1; not predicted -> 0."""
    if pred.sum() and gt.sum():
        return 2.0 * np.logical_and(pred, gt).sum() / (pred.sum() + gt.sum())
    return 1.0 if pred.sum() else 0.0


def test_train_and_test_scripts_end_to_end(phantom, tmp_path):
    run_dir, epochs, wld_start = tmp_path / "run", 3, 1
    result = run_script("train_synapse.py", *data_args(phantom), *TINY, "--max_epochs", str(epochs),
                        "--wld_start_epoch", str(wld_start), "--val_list", "test_vol", "--select_best_on_test",
                        "--output_dir", str(run_dir), "--n_gpu", "1")
    assert result.returncode == 0, result.stderr
    for name in ("last.pth", "best_val.pth", "best.pth", "config.json", "log.txt"):
        assert (run_dir / name).is_file(), name
    assert not list(run_dir.rglob("*.tmp"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["options"]["model_options"]["scale"] == "pico" and config["model_config"]["img_size"] == 64
    log = (run_dir / "log.txt").read_text()
    assert "GFLOPs" in log and "--n_gpu 1 ignored" in log and "val: mean DSC" in log

    ckpt = torch.load(run_dir / "last.pth", weights_only=True)
    assert ckpt["next_epoch"] == epochs and ckpt["global_step"] == epochs * STEPS_PER_EPOCH
    scalars = read_tensorboard_scalars(run_dir / "tb")
    losses = [value for _, value in scalars["train/loss"]]
    k_values = [int(value) for _, value in scalars["wld/memory_k"]]
    assert len(losses) == epochs * STEPS_PER_EPOCH
    assert k_values == expected_k_sequence(losses, wld_start, POOL_SIZE)
    assert set(k_values) != {POOL_SIZE // 2}, "W-LD never moved K: the rule was not exercised"
    assert {int(value) for name, value in ckpt["model"].items() if name.endswith(".k")} == {k_values[-1]}
    assert ckpt["arch"] == "sim_mpnet" and ckpt["model_extra"]["wld_previous_loss"] == pytest.approx(losses[-1])
    assert len(scalars["val/mean_dice"]) == epochs and len(scalars["test/mean_dice"]) == epochs - wld_start

    test_dir = tmp_path / "test"
    result = run_script("test_synapse.py", "--volume_path", phantom["volume_path"], "--list_dir",
                        phantom["list_dir"], "--checkpoint", str(run_dir / "last.pth"), "--output_dir",
                        str(test_dir), "--device", "cpu", "--save-overlays", "2", "--is_savenii", "--batch-size", "4")
    assert result.returncode == 0, result.stderr
    assert "mean DSC" in result.stdout and "gallbladder" in result.stdout
    summary = json.loads((test_dir / "summary.json").read_text())
    assert summary["protocol"] == "transunet" and summary["checkpoint"] == str(run_dir / "last.pth")
    with open(test_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["class"] for row in rows] == [entry["class"] for entry in summary["per_class"]]
    assert len(rows) == NUM_CLASSES - 1 and {row["case"] for row in rows} == set(phantom["test_cases"])
    assert summary["mean_dice"] == pytest.approx(np.mean([float(row["dice"]) for row in rows]), abs=1e-5)

    case = phantom["test_cases"][0]
    prediction = np.asarray(nib.load(test_dir / "predictions" / f"{case}_pred.nii.gz").dataobj).T.astype(int)
    label = np.asarray(nib.load(test_dir / "predictions" / f"{case}_gt.nii.gz").dataobj).T.astype(int)
    assert label.shape == (DEPTH, SLICE_SIZE, SLICE_SIZE)
    for class_index, row in enumerate(rows, start=1):
        assert float(row["dice"]) == pytest.approx(naive_dice(prediction == class_index, label == class_index),
                                                   abs=1e-5)
    overlays = sorted((test_dir / "overlays").glob("*.png"))
    assert len(overlays) == 2
    assert Image.open(overlays[0]).size == (2 * SLICE_SIZE + PANEL_GAP, SLICE_SIZE)  # ground truth | prediction


def train_args(phantom: dict, output_dir: Path, *extra: str):
    return build_train_parser("synapse").parse_config(
        [*data_args(phantom), *TINY, "--wld_start_epoch", "1", "--output_dir", str(output_dir), *extra])


def test_resume_continues_exactly(phantom, tmp_path):
    """N epochs straight == N/2 epochs, then --resume for the rest (also with a different worker count)."""
    epochs = 4
    train(train_args(phantom, tmp_path / "straight", "--max_epochs", str(epochs)))
    train(train_args(phantom, tmp_path / "split", "--max_epochs", str(epochs // 2)))
    train(train_args(phantom, tmp_path / "split", "--max_epochs", str(epochs), "--resume", "auto",
                     "--num_workers", "1"))
    straight = torch.load(tmp_path / "straight" / "last.pth", weights_only=True)
    split = torch.load(tmp_path / "split" / "last.pth", weights_only=True)

    assert split["global_step"] == straight["global_step"] == epochs * STEPS_PER_EPOCH
    for key in ("next_epoch", "model_extra", "best_val_dice"):
        assert split[key] == straight[key], key
    assert straight["model"].keys() == split["model"].keys()
    buffers = [name for name in straight["model"] if "pool" in name or "prototypes" in name]
    assert buffers, "memory buffers expected in the state dict"
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, split["model"][name]), name
    assert straight["optimizer"]["param_groups"] == split["optimizer"]["param_groups"]
    for index, state in straight["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, split["optimizer"]["state"][index][key]), (index, key)
    assert torch.equal(straight["rng"]["torch"], split["rng"]["torch"])


def test_fresh_run_refuses_to_overwrite_a_run(phantom, tmp_path):
    (tmp_path / "last.pth").write_bytes(b"previous run")
    with pytest.raises(ValueError, match="--resume auto"):
        train(train_args(phantom, tmp_path, "--max_epochs", "1"))
    assert (tmp_path / "last.pth").read_bytes() == b"previous run"


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def test_train_script_help():
    result = run_script("train_synapse.py", "--help")
    assert result.returncode == 0 and "--wld_start_epoch" in result.stdout and "--root_path" in result.stdout


@pytest.mark.parametrize("dataset, classes, num_k, feature_dim, val_list", [
    ("synapse", 9, 9, 256, None), ("acdc", 4, 4, 128, "valid"), ("isic2018", 2, 2, 256, "val"),
    ("segpc2021", 3, 3, 256, "val")])
def test_dataset_defaults(dataset, classes, num_k, feature_dim, val_list):
    args = build_train_parser(dataset).parse_args([])
    assert (args.num_classes, args.num_k, args.feature_dim, args.val_list) == (classes, num_k, feature_dim, val_list)
    assert (args.batch_size, args.base_lr, args.max_epochs, args.img_size, args.img_size_s2) == (20, 1e-4, 300, 256,
                                                                                                 224)
    assert args.output_dir == str(Path("runs") / f"{dataset}_small_256") and args.pretrained is None
    test_args = build_test_parser(dataset).parse_args([])
    assert test_args.num_classes == classes and test_args.batch_size == 16 and test_args.scale is None


def test_release_options_are_accepted():
    args = build_train_parser("synapse").parse_args(
        ["--dataset", "Synapse", "--n_gpu", "1", "--deterministic", "1", "--max_iterations", "30000",
         "--pretrained", "none", "--resume", "auto", "--output_dir", "/nonexistent/run"])
    assert args.dataset == "synapse" and args.pretrained is False and args.resume is None
    assert any("--n_gpu" in note for note in args.notes) and any("--max_iterations" in note for note in args.notes)
    for spelling in ("--batch_size", "--batch-size"):
        assert build_test_parser("acdc").parse_args([spelling, "3"]).batch_size == 3


def test_resume_auto_finds_last_checkpoint(tmp_path):
    (tmp_path / "last.pth").write_bytes(b"")
    args = build_train_parser("acdc").parse_args(["--output_dir", str(tmp_path), "--resume", "auto"])
    assert args.resume == str(tmp_path / "last.pth")


def test_dataset_option_contradicting_script_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        build_train_parser("synapse").parse_args(["--dataset", "ACDC"])
    assert info.value.code == 2 and "contradicts" in capsys.readouterr().err
