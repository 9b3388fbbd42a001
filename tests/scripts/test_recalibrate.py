"""recalibrate.py on a run trained by the engine: a new checkpoint with the BatchNorm statistics of the run's
training batches and every weight as it was; the trained checkpoint never touched; bad input in one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_options
from utils.checkpoint import build_model_from_checkpoint, load_checkpoint
from utils.cli import build_train_parser
from utils.normalisation import batchnorm_layers
from utils.recalibration import main
from utils.trainer import train

REPO = Path(__file__).resolve().parents[2]
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def trained_run(tiny_phantoms, tmp_path_factory) -> Path:
    """A tiny U-Net trained 2 steps on the BUSI phantom; returns its run folder."""
    phantom = tiny_phantoms("busi")
    run_dir = tmp_path_factory.mktemp("recalibrate") / "run"
    options = [f"--{key}={value}" for key, value in tiny_options("unet").items()]
    train(build_train_parser("busi").parse_config(
        ["--model", "unet", "--root_path", phantom["root_path"], "--volume_path", phantom["volume_path"],
         "--list_dir", phantom["list_dir"], *options, "--pretrained", "none", "--batch_size", "2",
         "--num_workers", "0", "--max_steps", "2", "--max_epochs", "1", "--device", "cpu",
         "--output_dir", str(run_dir)]))
    return run_dir


def is_statistic(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in STATISTICS


def test_recalibrated_checkpoint_changes_only_batchnorm_statistics(trained_run, capsys):
    source = trained_run / "last.pth"
    before = source.read_bytes()
    assert main(["--checkpoint", str(source), "--num_batches", "3", "--device", "cpu"]) == 0
    assert "after recalibration on 3 batches" in capsys.readouterr().out  # epochs follow one another as in training
    assert source.read_bytes() == before
    target = trained_run / "last_recalibrated.pth"
    old, new = load_checkpoint(source)["model"], load_checkpoint(target)["model"]
    assert old.keys() == new.keys()
    for name in old:
        if not is_statistic(name):
            assert torch.equal(old[name], new[name]), name
    assert any(not torch.equal(old[name], new[name]) for name in old if name.endswith("running_mean"))
    model, ckpt = build_model_from_checkpoint(target)
    assert ckpt["batchnorm_recalibration"] == {"source": "last.pth", "batches": 3, "batch_size": 2}
    assert all(int(layer.num_batches_tracked) == 3 for _, layer in batchnorm_layers(model))


def test_existing_output_and_missing_checkpoint_are_refused_in_one_line(trained_run):
    existing = trained_run / "config.json"
    before = existing.read_bytes()
    for argv, problem in (
            (["--checkpoint", str(trained_run / "last.pth"), "--output", str(existing)], "exists"),
            (["--checkpoint", str(trained_run / "missing.pth")], "checkpoint file not found")):
        result = subprocess.run([sys.executable, "recalibrate.py", *argv, "--device", "cpu"], cwd=REPO,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], result.stderr
    assert existing.read_bytes() == before


def test_report_only_writes_nothing(trained_run, capsys):
    files = sorted(trained_run.rglob("*"))
    assert main(["--checkpoint", str(trained_run / "last.pth"), "--report_only", "--num_batches", "1",
                 "--output", str(trained_run / "never.pth")]) == 0
    assert "shift (sd)" in capsys.readouterr().out
    assert sorted(trained_run.rglob("*")) == files
