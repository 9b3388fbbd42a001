"""The option groups of checkpoints and config.json (format sim-mpnet/3, utils.config.saved_options), and files of the
format before them (sim-mpnet/2: one flat ``args`` dict): those load into the same groups, evaluate to the same
metrics and resume exactly. One old checkpoint is written by that code itself (the pinned commit extracted with
`git archive`, its own scripts training and testing on a tiny phantom), one by hand from a current checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets import get_dataset
from datasets.phantoms.synapse import write_synapse_phantom
from networks import create_model
from tests.old_layouts import extract_commit, flat_args_layout
from utils.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, model_checkpoint, peek_arch, save_checkpoint
from utils.cli import build_test_parser, build_train_parser
from utils.config import FLAT_OPTIONS_FORMAT, RunOptions, TrainConfig, saved_options
from utils.evaluator import evaluate
from utils.resume import recorded_options
from utils.trainer import train

REPO = Path(__file__).resolve().parents[2]
FLAT_OPTIONS_COMMIT = "ab612ad"  # the last commit that wrote sim-mpnet/2 checkpoints (options as one flat dict)
# Release fidelity: its computation is the same in the pinned commit and here, so resuming the old code's epoch can
# end bit-identical to this code's straight run. Paper mode's DS-GIM now keeps per-site BatchNorm statistics (issue
# 33), so an old paper-mode file loads into the same function (tests/utils/test_checkpoint_migration.py) but its
# resumed training continues from shared statistics, not bit-identical to a run that always had per-site ones.
TINY_SIM = ["--scale", "pico", "--img_size", "64", "--img_size_s2", "64", "--pool_size", "4", "--feature_dim", "16",
            "--warmup_iters", "2", "--pretrained", "none", "--device", "cpu", "--num_workers", "0", "--batch_size", "4",
            "--wld_start_epoch", "1", "--fidelity", "release"]
SIZE = 32
TINY_MATCHSEG = ["--model", "matchseg", "--img_size", str(SIZE), "--widths", "8", "8", "8", "8", "--pretrained",
                 "none", "--support_size", "2", "--support_selection", "hog", "--batch_size", "2", "--num_workers",
                 "0", "--device", "cpu", "--base_lr", "1e-3"]


def run(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """A script in its own process, one thread (both sides of a comparison run alike)."""
    result = subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def assert_same_training_state(expected: dict, actual: dict) -> None:
    for key in ("next_epoch", "global_step", "best_val_dice", "validations_since_best", "model_extra"):
        assert actual[key] == expected[key], key
    for name, tensor in expected["model"].items():
        assert torch.equal(actual["model"][name], tensor), name
    assert actual["optimizer"]["param_groups"] == expected["optimizer"]["param_groups"]
    for index, state in expected["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, actual["optimizer"]["state"][index][key]), (index, key)
    assert torch.equal(actual["rng"]["torch"], expected["rng"]["torch"])


# ----------------------------------------------------------------------------------------------------------------
# The groups
# ----------------------------------------------------------------------------------------------------------------
def test_a_run_config_comes_back_from_its_record_as_it_was_given(tmp_path):
    config = build_train_parser("busi").parse_config([*TINY_MATCHSEG, "--output_dir", str(tmp_path / "run")])
    record = json.loads(json.dumps(recorded_options(config)))  # as config.json holds it
    assert set(record) == {"run", "model_options", "train_options", "context_options", "recipe"}
    assert saved_options({"options": record}) == config
    assert record["context_options"]["support_size"] == 2 and record["model_options"]["widths"] == [8, 8, 8, 8]


def test_a_flat_args_file_is_sorted_into_the_groups_on_load(tmp_path):
    """The flat dict of the format before the groups, written by hand: run, model, training and context options go to
    their groups by the family's dataclasses, the recipe beside them to ``recipe``; a file before recipes gets the
    engine's recipe of then (AdamW, constant lr, no early stop) with its batch, lr and length."""
    model = create_model("matchseg", num_classes=2, in_chans=3, img_size=SIZE, widths=(8, 8, 8, 8))
    args = {"dataset": "busi", "model": "matchseg", "root_path": "data/BUSI", "list_dir": "lists/lists_BUSI",
            "seed": 7, "amp": "none", "widths": [8, 8, 8, 8], "img_size": SIZE, "support_size": 3,
            "support_selection": "hog", "base_lr": 1e-3, "batch_size": 2, "max_epochs": 5, "n_gpu": 1}
    recipe = {"optimizer": "adam", "base_lr": 1e-3, "weight_decay": 0.0, "lr_schedule": "cosine", "batch_size": 2,
              "max_epochs": 5, "early_stop_patience": 30}
    path = tmp_path / "flat.pth"
    torch.save({**model_checkpoint(model), "format": FLAT_OPTIONS_FORMAT, "args": args, "recipe": recipe}, path)
    assert peek_arch(path) == "matchseg"
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == CHECKPOINT_FORMAT and "args" not in ckpt and "recipe" not in ckpt
    options = saved_options(ckpt)
    assert (options.run.dataset, options.run.root_path, options.run.list_dir, options.run.seed) == \
        ("busi", "data/BUSI", "lists/lists_BUSI", 7)
    assert options.run.output_dir is None  # not recorded
    assert options.model_options == {"widths": [8, 8, 8, 8], "img_size": SIZE}
    assert options.context_options == {"support_size": 3, "support_selection": "hog"} and options.train_options == {}
    assert options.recipe.optimizer == "adam" and options.recipe.early_stop_patience == 30

    torch.save({**model_checkpoint(model), "format": FLAT_OPTIONS_FORMAT, "args": args}, path)
    before_recipes = saved_options(load_checkpoint(path)).recipe
    assert (before_recipes.optimizer, before_recipes.lr_schedule, before_recipes.early_stop_patience) == \
        ("adamw", "constant", 0)
    assert (before_recipes.base_lr, before_recipes.batch_size, before_recipes.max_epochs) == (1e-3, 2, 5)


def test_a_file_of_no_training_run_has_empty_groups(tmp_path):
    model = create_model("unet", num_classes=2, in_chans=1, img_size=SIZE, encoder_name="resnet18")
    save_checkpoint(tmp_path / "bare.pth", model_checkpoint(model))
    options = saved_options(load_checkpoint(tmp_path / "bare.pth"))
    assert options == TrainConfig(run=RunOptions(**{name: None for name in RunOptions.__dataclass_fields__}),
                                  recipe=None)


def test_an_old_run_directorys_config_json_still_draws_its_k_curve(tmp_path):
    """visualize.py k-curve reads M and the W-LD start from config.json, also from the flat layout of older runs."""
    import visualize

    (tmp_path / "train_steps.csv").write_text("step,epoch,loss,lr,memory_k\n1,0,2.0,0.1,4\n2,1,1.5,0.1,3\n"
                                              "3,1,1.0,0.1,5\n")
    (tmp_path / "config.json").write_text(json.dumps({"arch": "sim_mpnet", "model_config": {"pool_size": 8},
                                                      "args": {"dataset": "synapse", "wld_start_epoch": 1}}))
    assert saved_options(json.loads((tmp_path / "config.json").read_text())).train_options == {"wld_start_epoch": 1}
    out = visualize.write_k_curve(tmp_path, tmp_path / "k.png")
    assert out.is_file()
    steps = {"step": np.array([1, 2, 3]), "epoch": np.array([0, 1, 1]), "memory_k": np.array([4, 3, 5])}
    figure = visualize.k_curve_figure(steps, 8, 1)
    assert [line.get_xdata()[0] for line in figure.axes[0].lines[2:]] == [2]  # W-LD from step 2 (epoch 1)


# ----------------------------------------------------------------------------------------------------------------
# A checkpoint written by the code before the groups (Sim-MPNet on a Synapse phantom)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> dict:
    """One epoch of the pinned commit's own train_synapse.py (checkpoint + config.json in the flat layout) and its
    test_synapse.py summary of that checkpoint."""
    root = tmp_path_factory.mktemp("flat_options")
    old = extract_commit(REPO, FLAT_OPTIONS_COMMIT, root / "code")
    phantom = write_synapse_phantom(root / "Synapse", root / "lists", num_train=2, num_test=1, size=64, depth=4)
    data = ["--volume_path", phantom["volume_path"], "--list_dir", phantom["list_dir"]]
    train_argv = ["train_synapse.py", "--root_path", phantom["root_path"], *data, *TINY_SIM]
    run(old, *train_argv, "--max_epochs", "1", "--output_dir", str(root / "run"))
    run(old, "test_synapse.py", *data, "--checkpoint", str(root / "run" / "last.pth"), "--device", "cpu",
        "--output_dir", str(root / "old_test"))
    return dict(root=root, data=data, train_argv=train_argv, checkpoint=root / "run" / "last.pth",
                config=json.loads((root / "run" / "config.json").read_text()),
                summary=json.loads((root / "old_test" / "summary.json").read_text()))


def test_the_old_checkpoint_is_the_flat_layout_and_loads_into_the_groups(old_run):
    raw = torch.load(old_run["checkpoint"], weights_only=True)
    assert raw["format"] == FLAT_OPTIONS_FORMAT and "options" not in raw and raw["args"]["dataset"] == "synapse"
    options = saved_options(load_checkpoint(old_run["checkpoint"]))
    assert options == saved_options(old_run["config"])  # the checkpoint and config.json of the old run agree
    assert options.run.dataset == "synapse" and options.run.seed == raw["args"]["seed"]
    assert options.model_options["scale"] == "pico" and options.train_options == {"wld_start_epoch": 1}
    assert options.recipe.base_lr == raw["recipe"]["base_lr"] and options.context_options == {}


def test_the_old_checkpoint_evaluates_to_the_same_metrics(old_run):
    out = old_run["root"] / "new_test"
    run(REPO, "test_synapse.py", *old_run["data"], "--checkpoint", str(old_run["checkpoint"]), "--device", "cpu",
        "--output_dir", str(out))
    new, old = json.loads((out / "summary.json").read_text()), old_run["summary"]
    assert (new["mean_dice"], new["mean_hd95"], new["per_class"]) == (old["mean_dice"], old["mean_hd95"],
                                                                       old["per_class"])


def test_the_old_checkpoint_resumes_to_the_state_of_an_uninterrupted_run(old_run):
    """The old code's first epoch resumed by this code ends where this code's two epochs straight end (W-LD runs
    in the resumed epoch, from the W-LD state of the old file)."""
    root = old_run["root"]
    resumed = root / "resumed"
    resumed.mkdir()
    shutil.copy(old_run["checkpoint"], resumed / "last.pth")
    run(REPO, *old_run["train_argv"], "--max_epochs", "2", "--output_dir", str(resumed), "--resume", "auto")
    run(REPO, *old_run["train_argv"], "--max_epochs", "2", "--output_dir", str(root / "straight"))
    straight, split = load_checkpoint(root / "straight" / "last.pth"), load_checkpoint(resumed / "last.pth")
    assert split["format"] == CHECKPOINT_FORMAT and saved_options(split).run.resume == str(resumed / "last.pth")
    assert_same_training_state(straight, split)


# ----------------------------------------------------------------------------------------------------------------
# A flat-args checkpoint written by hand (MatchSeg: context options and the Adam / cosine recipe)
# ----------------------------------------------------------------------------------------------------------------
def test_a_hand_written_flat_args_checkpoint_evaluates_and_resumes_exactly(tmp_path):
    data = get_dataset("busi").phantom.write(tmp_path / "BUSI", tmp_path / "lists" / "lists_BUSI", num_train=4,
                                             num_val=1, num_test=2, size=SIZE, seed=0)
    paths = ["--volume_path", data["volume_path"], "--list_dir", data["list_dir"]]

    def train_config(run_dir: Path, *extra: str):
        return build_train_parser("busi").parse_config(
            [*TINY_MATCHSEG, "--root_path", data["root_path"], *paths, "--support_cache", str(tmp_path / "cache"),
             "--lr_schedule", "cosine", "--output_dir", str(run_dir), *extra])

    def test_record(checkpoint: Path, name: str) -> dict:
        record = evaluate(build_test_parser("busi").parse_config(
            [*paths, "--checkpoint", str(checkpoint), "--device", "cpu", "--output_dir", str(tmp_path / name)]))
        return {key: value for key, value in record.items() if key not in ("checkpoint", "checkpoint_state")}

    train(train_config(tmp_path / "new", "--max_epochs", "1"))
    (tmp_path / "old").mkdir()
    torch.save(flat_args_layout(torch.load(tmp_path / "new" / "last.pth", weights_only=True)),
               tmp_path / "old" / "last.pth")
    assert torch.load(tmp_path / "old" / "last.pth", weights_only=True)["args"]["support_size"] == 2
    assert test_record(tmp_path / "old" / "last.pth", "old_test") == test_record(tmp_path / "new" / "last.pth",
                                                                                  "new_test")

    train(train_config(tmp_path / "old", "--max_epochs", "2", "--resume", "auto"))
    train(train_config(tmp_path / "new", "--max_epochs", "2", "--resume", "auto"))
    assert_same_training_state(load_checkpoint(tmp_path / "new" / "last.pth"),
                               load_checkpoint(tmp_path / "old" / "last.pth"))
