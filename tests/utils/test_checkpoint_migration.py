"""Checkpoints written by the code before the model registry (format sim-mpnet/1) still load, evaluate to the same
metrics and resume. The old checkpoint is made in the test by that code itself: the pinned commit is extracted
from this repository's history with `git archive` and its own scripts train and test on a tiny phantom."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datasets.phantoms.synapse import write_synapse_phantom
from networks.sim_mpnet.legacy import FIRST_FORMAT, SECOND_FORMAT
from utils.checkpoint import CHECKPOINT_FORMAT, build_model_from_checkpoint, load_checkpoint, save_checkpoint
from tests.old_layouts import extract_commit
from utils.config import FLAT_OPTIONS_FORMAT, NESTED_OPTIONS_FORMAT, saved_options

REPO = Path(__file__).resolve().parents[2]
FIRST_FORMAT_COMMIT = "069325c"  # the last commit that wrote sim-mpnet/1 checkpoints
TINY = ["--scale", "pico", "--img_size", "64", "--img_size_s2", "64", "--pool_size", "4", "--feature_dim", "16",
        "--warmup_iters", "2", "--device", "cpu", "--num_workers", "0", "--batch_size", "4"]


def run(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> dict:
    """(old checkpoint, old test summary, phantom) from the pinned commit's own train/test scripts."""
    root = tmp_path_factory.mktemp("first_format")
    old = extract_commit(REPO, FIRST_FORMAT_COMMIT, root / "code")
    phantom = write_synapse_phantom(root / "Synapse", root / "lists", num_train=2, num_test=1, size=64, depth=4)
    data = ["--volume_path", phantom["volume_path"], "--list_dir", phantom["list_dir"]]
    run(old, "train_synapse.py", "--root_path", phantom["root_path"], *data, *TINY, "--pretrained", "none",
        "--max_epochs", "2", "--wld_start_epoch", "1", "--output_dir", str(root / "run"))
    run(old, "test_synapse.py", *data, "--checkpoint", str(root / "run" / "last.pth"), "--device", "cpu",
        "--output_dir", str(root / "old_test"))
    return dict(checkpoint=root / "run" / "last.pth", data=data, phantom=phantom, root=root,
                summary=json.loads((root / "old_test" / "summary.json").read_text()))


def test_first_format_checkpoint_evaluates_to_the_same_metrics(old_run, tmp_path):
    raw = torch.load(old_run["checkpoint"], weights_only=True)
    assert raw["format"] == FIRST_FORMAT and "arch" not in raw and "memory_k" in raw
    run(REPO, "test_synapse.py", *old_run["data"], "--checkpoint", str(old_run["checkpoint"]), "--device", "cpu",
        "--output_dir", str(tmp_path / "test"))
    new = json.loads((tmp_path / "test" / "summary.json").read_text())
    old = old_run["summary"]
    assert new["mean_dice"] == old["mean_dice"] and new["mean_hd95"] == old["mean_hd95"]
    assert new["per_class"] == old["per_class"]


def test_first_format_checkpoint_is_upgraded_on_load(old_run):
    raw = torch.load(old_run["checkpoint"], weights_only=True)
    upgraded = load_checkpoint(old_run["checkpoint"])
    assert upgraded["arch"] == "sim_mpnet" and "memory_k" not in upgraded
    assert upgraded["format"] == CHECKPOINT_FORMAT and "args" not in upgraded
    options = saved_options(upgraded)  # the first format's flat args, in their groups
    assert options.run.dataset.lower() == "synapse" and options.model_options["scale"] == "pico"
    assert options.train_options == {"wld_start_epoch": raw["args"]["wld_start_epoch"]}
    assert options.recipe.base_lr == raw["args"]["base_lr"] and options.recipe.optimizer == "adamw"
    assert upgraded["model_extra"] == {"wld_previous_loss": raw["wld_previous_loss"]}
    model, _ = build_model_from_checkpoint(old_run["checkpoint"])
    assert model.memory_k == raw["memory_k"] and model.extra_state() == upgraded["model_extra"]


def test_checkpoint_older_than_the_sampling_seeds_loads(old_run, tmp_path):
    """Files written before the per-layer warm-up seeds existed lack those buffers."""
    raw = torch.load(old_run["checkpoint"], weights_only=True)
    raw["model"] = {name: value for name, value in raw["model"].items() if not name.endswith(".sampling_seed")}
    path = tmp_path / "older.pth"
    torch.save(raw, path)
    model, _ = build_model_from_checkpoint(path)
    reference, _ = build_model_from_checkpoint(old_run["checkpoint"])
    for name, value in reference.state_dict().items():
        if not name.endswith(".sampling_seed"):
            assert torch.equal(model.state_dict()[name], value), name


def test_first_format_checkpoint_resumes(old_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(old_run["checkpoint"], run_dir / "last.pth")
    run(REPO, "train_synapse.py", "--root_path", old_run["phantom"]["root_path"], *old_run["data"], *TINY,
        "--pretrained", "none", "--max_epochs", "3", "--wld_start_epoch", "1", "--output_dir", str(run_dir),
        "--resume", "auto")
    resumed = load_checkpoint(run_dir / "last.pth")
    assert resumed["next_epoch"] == 3 and resumed["arch"] == "sim_mpnet"
    assert resumed["model_extra"]["wld_previous_loss"] is not None


def test_the_family_converter_writes_the_format_the_engine_converts_on():
    """sim-mpnet/1 -> (Sim-MPNet's converter) sim-mpnet/2, flat options -> (the engine's) the current format."""
    assert SECOND_FORMAT == FLAT_OPTIONS_FORMAT and NESTED_OPTIONS_FORMAT == CHECKPOINT_FORMAT


def test_a_file_without_arch_in_the_current_format_is_refused(tmp_path):
    path = tmp_path / "no_arch.pth"
    save_checkpoint(path, {"model": {}, "model_config": {}})
    with pytest.raises(Exception, match="names no model architecture"):
        load_checkpoint(path)
