"""benchmarks/normalisation_check.py on a tiny run: its evaluation-mode test scores are test.py's, its fit covers
every BatchNorm layer, and its JSON report is written."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_options
from utils.cli import build_test_parser, build_train_parser
from utils.evaluator import evaluate
from utils.trainer import train

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import normalisation_check  # noqa: E402


def test_report_agrees_with_test_py(tiny_phantoms, tmp_path):
    phantom = tiny_phantoms("busi")
    data = ["--volume_path", phantom["volume_path"], "--list_dir", phantom["list_dir"]]
    run_dir = tmp_path / "run"
    options = [f"--{key}={value}" for key, value in tiny_options("unet").items()]
    train(build_train_parser("busi").parse_config(
        ["--model", "unet", "--root_path", phantom["root_path"], *data, *options, "--pretrained", "none",
         "--batch_size", "2", "--num_workers", "0", "--max_steps", "1", "--max_epochs", "1", "--device", "cpu",
         "--output_dir", str(run_dir)]))
    checkpoint = str(run_dir / "last.pth")
    record = evaluate(build_test_parser("busi").parse_config(
        [*data, "--checkpoint", checkpoint, "--device", "cpu", "--output_dir", str(tmp_path / "test")]))
    report = normalisation_check.main(["--checkpoint", checkpoint, *data, "--num_batches", "2", "--batch_size", "2",
                                       "--json", str(tmp_path / "report.json")])
    assert report["test"]["running_statistics"]["mean_dice"] == pytest.approx(record["mean_dice"], abs=1e-12)
    assert 0.0 <= report["training_agreement"]["pixels_agreeing"] <= 1.0
    written = json.loads((tmp_path / "report.json").read_text())
    assert len(written["fit"]) == len({fit["layer"] for fit in written["fit"]}) > 20  # every layer of the U-Net once
    assert written["training_batches"] == 2
