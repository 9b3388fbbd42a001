"""Per-model training recipes (networks.recipe): the registered recipes, their command-line options, the cosine
schedule against its formula, early stopping on validation DSC, and exact resume of a run killed with SIGKILL
(cosine schedule, early-stop counter non-zero at the kill), old checkpoints included."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.phantoms.busi import write_busi_phantom
from networks import list_models, model_entry
from networks.recipe import RELEASE_RECIPE, TrainingRecipe
from networks.registry import register_model
from tests.old_layouts import before_recipes_layout
from utils.checkpoint import CheckpointError, load_checkpoint
from utils.cli import build_train_parser
from utils.config import saved_options
from utils.optimisation import effective_recipe, make_optimizer
from utils.trainer import Trainer, train

REPO = Path(__file__).resolve().parents[2]
# The release (README, "Train and test") and the MatchSeg specification (section 6), written out independently.
RELEASE = dict(optimizer="adamw", base_lr=1e-4, weight_decay=1e-4, lr_schedule="constant", batch_size=20,
               max_epochs=300, early_stop_patience=0)
SPECIFICATION = dict(optimizer="adam", base_lr=1e-4, weight_decay=0.0, lr_schedule="cosine", batch_size=8,
                     max_epochs=200, early_stop_patience=30)
FAMILY_RECIPES = {"sim_mpnet": RELEASE, "sim_mpnet_pico": RELEASE, "unet": RELEASE, "unetplusplus": RELEASE,
                  "fpn": RELEASE, "matchseg": SPECIFICATION, "matchseg_wide": SPECIFICATION,
                  "universeg": SPECIFICATION}


# ----------------------------------------------------------------------------------------------------------------
# The recipe and the registry
# ----------------------------------------------------------------------------------------------------------------
def test_every_registered_model_declares_its_familys_recipe():
    assert set(list_models()) <= set(FAMILY_RECIPES), "add the new model's recipe to FAMILY_RECIPES"
    for name in list_models():
        assert asdict(model_entry(name).recipe) == FAMILY_RECIPES[name], name
    assert asdict(RELEASE_RECIPE) == RELEASE


def test_a_family_without_a_recipe_gets_the_release_one_and_a_wrong_recipe_is_refused():
    from networks.registry import unregister_model
    from networks.smp import SMPUnetConfig

    register_model(lambda config, pretrained=None: None, config=SMPUnetConfig, name="no_recipe_net")
    try:
        assert model_entry("no_recipe_net").recipe == RELEASE_RECIPE
    finally:
        unregister_model("no_recipe_net")
    with pytest.raises(TypeError, match="recipe= must be a networks.recipe.TrainingRecipe"):
        register_model(lambda config, pretrained=None: None, config=SMPUnetConfig, recipe=dict(RELEASE),
                       name="bad_recipe_net")
    assert "bad_recipe_net" not in list_models()


def test_cosine_rates_are_the_hand_computed_values_and_torchs_cosine_annealing_per_epoch():
    recipe = TrainingRecipe(base_lr=1e-3, lr_schedule="cosine", max_epochs=4)
    # (1 + cos(pi e / 4)) / 2 for e = 0..3: 1, (1 + 0.70710678) / 2, 1/2, (1 - 0.70710678) / 2
    by_hand = [1e-3, 0.853553390e-3, 0.5e-3, 0.146446609e-3]
    rates = [recipe.learning_rate(epoch) for epoch in range(4)]
    assert rates == pytest.approx(by_hand, rel=1e-8)
    parameter = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([parameter], lr=1e-3)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    reference = []
    for _ in range(4):
        reference.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        annealing.step()
    assert rates == pytest.approx(reference, rel=1e-12)
    assert [TrainingRecipe(base_lr=3e-4).learning_rate(epoch) for epoch in (0, 7, 299)] == [3e-4] * 3


@pytest.mark.parametrize("field, value, message", [
    ("base_lr", 0.0, "--base_lr must be a positive number"), ("weight_decay", -1e-4, "--weight_decay must be"),
    ("optimizer", "sgd", "--optimizer must be one of adamw, adam"), ("lr_schedule", "step", "--lr_schedule must"),
    ("batch_size", 0, "--batch_size must be at least 1"), ("early_stop_patience", -1, "--early_stop_patience")])
def test_impossible_recipe_values_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainingRecipe(**{field: value})


def test_adam_is_torchs_plain_adam_with_l2_weight_decay():
    """make_optimizer(kind="adam") updates like the single-tensor torch Adam (not AdamW's decoupled decay)."""
    torch.manual_seed(0)
    weights = [torch.randn(4, 3), torch.randn(5)]
    ours = [w.clone().requires_grad_() for w in weights]
    plain = [w.clone().requires_grad_() for w in weights]
    optimizer = make_optimizer(ours, lr=1e-2, weight_decay=0.1, kind="adam")
    reference = torch.optim.Adam(plain, lr=1e-2, weight_decay=0.1, foreach=False, fused=False)
    assert not isinstance(optimizer, torch.optim.AdamW)
    for _ in range(3):
        for a, b in zip(ours, plain):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        optimizer.step(), reference.step()
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["sim_mpnet", "unet", "matchseg", "universeg"])
def test_the_options_default_to_the_models_recipe_and_the_command_line_wins(model):
    config = build_train_parser("busi").parse_config(["--model", model])
    assert asdict(config.recipe) == FAMILY_RECIPES[model]
    other = ["--optimizer", "adamw" if FAMILY_RECIPES[model]["optimizer"] == "adam" else "adam", "--base_lr", "3e-3",
             "--weight_decay", "0.05", "--lr_schedule", "cosine", "--batch-size", "3", "--max_epochs", "7",
             "--early_stop_patience", "4"]
    config = build_train_parser("busi").parse_config(["--model", model, *other])
    assert asdict(config.recipe) == dict(optimizer=other[1], base_lr=3e-3, weight_decay=0.05, lr_schedule="cosine",
                                         batch_size=3, max_epochs=7, early_stop_patience=4)


def test_help_shows_the_chosen_models_recipe(capsys):
    headings = ("--optimizer {adamw,adam}", "--base_lr BASE_LR", "--weight_decay WEIGHT_DECAY",
                "--lr_schedule {constant,cosine}", "--batch-size BATCH_SIZE", "--max_epochs MAX_EPOCHS",
                "--early_stop_patience EARLY_STOP_PATIENCE")
    for argv, shown in ((["--model", "matchseg"], ("adam", "0.0001", "0.0", "cosine", "8", "200", "30")),
                        ([], ("adamw", "0.0001", "0.0001", "constant", "20", "300", "0"))):
        with pytest.raises(SystemExit):
            build_train_parser("busi").parse_args([*argv, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for heading, value in zip(headings, shown):
            entry = text[text.rindex(heading) + len(heading):]  # the help entry (the usage line comes first)
            entry = entry[:entry.index(" --")] if " --" in entry else entry
            assert entry.endswith(f"(default: {value})"), (heading, entry)


def test_an_impossible_value_on_the_command_line_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as info:
        build_train_parser().parse_args(["--dataset", "busi", "--model", "matchseg", "--weight_decay", "-1"])
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"{Path(sys.argv[0]).name}: error: --weight_decay must be a non-negative number, got -1.0"]


# ----------------------------------------------------------------------------------------------------------------
# The engine: early stopping, the recipe's records, old checkpoints (a tiny U-Net, one step per epoch)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def busi(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("recipe_busi")
    return write_busi_phantom(root / "BUSI", root / "lists" / "lists_BUSI", num_train=2, num_val=1, num_test=1,
                              size=32, seed=0)


def unet_config(busi: dict, output_dir: Path, *extra: str):
    return build_train_parser("busi").parse_config(
        ["--model", "unet", "--root_path", busi["root_path"], "--volume_path", busi["volume_path"], "--list_dir",
         busi["list_dir"], "--img_size", "32", "--encoder_name", "resnet18", "--pretrained", "none", "--device", "cpu",
         "--batch_size", "2", "--num_workers", "0", "--base_lr", "1e-3", "--output_dir", str(output_dir), *extra])


def test_early_stopping_ends_the_run_after_patience_validations_without_a_higher_dsc(busi, tmp_path, monkeypatch):
    """Scripted validation DSC per epoch, patience 2: 0.5 0.6 | 0.6 (1) | 0.7 | 0.65 (1) 0.7 (2: equal is no
    improvement) -> stops after epoch 5 of 8, best_val.pth = epoch 3's checkpoint."""
    scripted = [0.5, 0.6, 0.6, 0.7, 0.65, 0.7, 0.9, 0.9]

    def evaluate_on(self, dataset, tag, epoch):
        return {"mean_dice": scripted[epoch], "mean_hd95": 1.0}

    monkeypatch.setattr(Trainer, "evaluate_on", evaluate_on)
    run_dir = tmp_path / "run"
    result = train(unet_config(busi, run_dir, "--max_epochs", "8", "--early_stop_patience", "2"))
    assert result["stopped_early"] and result["epochs"] == 6 and result["global_step"] == 6
    last, best = load_checkpoint(run_dir / "last.pth"), load_checkpoint(run_dir / "best_val.pth")
    assert (last["next_epoch"], last["validations_since_best"], last["best_val_dice"]) == (6, 2, 0.7)
    assert (best["next_epoch"], best["validations_since_best"], best["best_val_dice"]) == (4, 0, 0.7)
    assert [row["epoch"] for row in csv.DictReader(open(run_dir / "epochs.csv"))] == [str(e) for e in range(6)]
    log = (run_dir / "log.txt").read_text()
    assert ("stopping early after epoch 5 of 8: validation mean DSC has not risen above its best, 0.7000 "
            "(best_val.pth), for 2 validations (--early_stop_patience 2)") in log

    resumed = train(unet_config(busi, run_dir, "--max_epochs", "8", "--early_stop_patience", "2", "--resume", "auto"))
    assert resumed["epochs"] == 6 and resumed["global_step"] == 6 and resumed["stopped_early"]
    assert "nothing to do: the run stopped early after epoch 5" in (run_dir / "log.txt").read_text()


def test_without_a_validation_list_early_stopping_is_off_with_a_note(busi, tmp_path):
    run_dir = tmp_path / "run"
    result = train(unet_config(busi, run_dir, "--max_epochs", "2", "--val_list", "none", "--lr_schedule", "cosine",
                               "--early_stop_patience", "1"))
    assert result["epochs"] == 2 and not result["stopped_early"]
    assert ("early stopping off: --early_stop_patience 1 is measured on validation mean DSC and this run has no "
            "validation list (--val_list none)") in (run_dir / "log.txt").read_text()
    recorded = json.loads((run_dir / "config.json").read_text())
    effective = {**RELEASE, "base_lr": 1e-3, "batch_size": 2, "max_epochs": 2, "lr_schedule": "cosine"}
    assert recorded["options"]["recipe"] == {**effective, "early_stop_patience": 1}  # the options as given
    assert asdict(effective_recipe(saved_options(recorded))[0]) == effective  # what the run trained with
    assert saved_options(load_checkpoint(run_dir / "last.pth")) == saved_options(recorded)
    # the per-step lr column follows the cosine over 2 epochs: 1e-3, then 1e-3 * (1 + cos(pi / 2)) / 2
    rates = [float(row["lr"]) for row in csv.DictReader(open(run_dir / "train_steps.csv"))]
    assert rates == pytest.approx([1e-3, 0.5e-3], rel=1e-6)


def strip_to_the_old_format(path: Path) -> None:
    """What a checkpoint written before recipes holds: no recipe, no early-stop counter, no recipe args."""
    torch.save(before_recipes_layout(torch.load(path, weights_only=True)), path)


def test_a_checkpoint_from_before_recipes_resumes_exactly_and_another_optimizer_is_refused(busi, tmp_path):
    train(unet_config(busi, tmp_path / "whole", "--max_epochs", "3"))
    train(unet_config(busi, tmp_path / "split", "--max_epochs", "2"))
    strip_to_the_old_format(tmp_path / "split" / "last.pth")
    with pytest.raises(CheckpointError, match="it was trained with --optimizer adamw, this run builds adam: resume "
                                              "with --optimizer adamw"):
        Trainer(unet_config(busi, tmp_path / "split", "--max_epochs", "3", "--resume", "auto", "--optimizer", "adam"))
    train(unet_config(busi, tmp_path / "split", "--max_epochs", "3", "--resume", "auto"))
    whole, split = load_checkpoint(tmp_path / "whole" / "last.pth"), load_checkpoint(tmp_path / "split" / "last.pth")
    assert split["next_epoch"] == whole["next_epoch"] == 3
    assert split["validations_since_best"] == whole["validations_since_best"]
    for name, value in whole["model"].items():
        assert torch.equal(split["model"][name], value), name
    for index, state in whole["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, split["optimizer"]["state"][index][key]), (index, key)


def test_a_resumed_run_uses_its_own_weight_decay_and_learning_rate_and_says_so(busi, tmp_path, caplog):
    """optimizer.load_state_dict alone would bring back the checkpoint's values under the new options."""
    train(unet_config(busi, tmp_path, "--max_epochs", "1"))
    trainer = Trainer(unet_config(busi, tmp_path, "--max_epochs", "2", "--resume", "auto", "--weight_decay", "0.5",
                                  "--base_lr", "2e-3"))
    group = trainer.optimizer.param_groups[0]
    assert (group["weight_decay"], group["lr"]) == (0.5, 2e-3)
    assert "resuming with --weight_decay 0.5 (checkpoint was trained with 0.0001)" in caplog.text
    assert "resuming with --base_lr 0.002 (checkpoint was trained with 0.001)" in caplog.text


# ----------------------------------------------------------------------------------------------------------------
# kill -9 and --resume auto: MatchSeg's recipe (Adam, cosine) with early stopping, in real subprocesses
# ----------------------------------------------------------------------------------------------------------------
# Tiny MatchSeg, 2 steps per epoch. The validation images have empty ground truth, so (transunet protocol) their DSC
# is 1 once anything is predicted and 0 otherwise: after the first validation at DSC 1 nothing can improve on it and
# the run must stop PATIENCE validations later. A checkpoint with best DSC 1 and a non-zero counter is therefore in
# the run's last stretch: a resumed run that lost the counter would stop later.
EPOCHS, PATIENCE, LR = 10, 3, 1e-2


def empty_validation_labels(data: dict) -> None:
    for entry in data["entries"]["val"]:
        path = Path(data["root_path"]) / f"{entry}.npz"
        with np.load(path) as archive:
            arrays = {key: archive[key] for key in archive.files}
        arrays["label"] = np.zeros_like(arrays["label"])
        np.savez(path, **arrays)


def matchseg_run(data: dict, output_dir: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "train.py"), "--dataset", "busi", "--model", "matchseg",
               "--root_path", data["root_path"], "--volume_path", data["volume_path"], "--list_dir", data["list_dir"],
               "--img_size", "32", "--widths", "4", "4", "4", "--pretrained", "none", "--support_size", "1",
               "--support_cache", str(output_dir.parent / f"{output_dir.name}_cache"), "--batch_size", "2",
               "--num_workers", "0", "--device", "cpu", "--max_epochs", str(EPOCHS), "--early_stop_patience",
               str(PATIENCE), "--base_lr", str(LR), "--output_dir", str(output_dir), *extra]
    return subprocess.Popen(command, cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    return text


def stop_and_wait(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until it is stopped, so that the checkpoint on disk cannot change under us."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
        assert time.monotonic() < deadline, "the run did not stop on SIGSTOP"
        time.sleep(0.005)


def kill_in_the_last_stretch(process: subprocess.Popen, last: Path) -> dict:
    """Watch ``last``; at every new checkpoint pause the run and look: the first one at best DSC 1 with a non-zero
    early-stop counter gets a SIGKILL (with the run paused, what is on disk is the state at the kill)."""
    seen = None
    deadline = time.monotonic() + 600
    while process.poll() is None:
        assert time.monotonic() < deadline
        stamp = (last.stat().st_ino, last.stat().st_mtime_ns) if last.exists() else None
        if stamp is None or stamp == seen:
            time.sleep(0.01)
            continue
        seen = stamp
        stop_and_wait(process.pid)
        ckpt = load_checkpoint(last)
        if ckpt["best_val_dice"] == 1.0 and 0 < ckpt["validations_since_best"] < PATIENCE:
            process.kill()  # SIGKILL
            process.wait()
            return ckpt
        os.kill(process.pid, signal.SIGCONT)
    pytest.fail("the run ended without a checkpoint at validation DSC 1 with a non-zero early-stop counter")


def test_killed_run_resumes_to_the_uninterrupted_state_with_cosine_schedule_and_early_stop_counter(tmp_path):
    data = write_busi_phantom(tmp_path / "BUSI", tmp_path / "lists" / "lists_BUSI", num_train=4, num_val=2,
                              num_test=1, size=32, seed=0)
    empty_validation_labels(data)
    whole_dir, interrupted = tmp_path / "whole", tmp_path / "interrupted"
    whole = matchseg_run(data, whole_dir)  # both at once: one thread each
    at_kill = kill_in_the_last_stretch(matchseg_run(data, interrupted), interrupted / "last.pth")
    whole_log = finished(whole)
    resumed_log = finished(matchseg_run(data, interrupted, "--resume", "auto"))
    assert f"resumed from {interrupted / 'last.pth'} at epoch {at_kill['next_epoch']}" in resumed_log

    # the uninterrupted run stopped PATIENCE validations after its first at DSC 1, well before EPOCHS
    dice = [float(row["val_dice"]) for row in csv.DictReader(open(whole_dir / "epochs.csv"))]
    first_perfect = dice.index(1.0)
    assert len(dice) == first_perfect + PATIENCE + 1 < EPOCHS, dice
    assert f"stopping early after epoch {first_perfect + PATIENCE} of {EPOCHS}" in whole_log
    assert f"stopping early after epoch {first_perfect + PATIENCE} of {EPOCHS}" in resumed_log

    reference, resumed = load_checkpoint(whole_dir / "last.pth"), load_checkpoint(interrupted / "last.pth")
    assert resumed["options"]["recipe"] == reference["options"]["recipe"] == {
        **SPECIFICATION, "base_lr": LR, "batch_size": 2, "max_epochs": EPOCHS, "early_stop_patience": PATIENCE}
    for key in ("next_epoch", "global_step", "best_val_dice", "validations_since_best"):
        assert resumed[key] == reference[key], key
    for name in ("last.pth", "best_val.pth"):
        expected, actual = load_checkpoint(whole_dir / name), load_checkpoint(interrupted / name)
        assert expected["next_epoch"] == actual["next_epoch"], name
        for key, value in expected["model"].items():
            assert torch.equal(actual["model"][key], value), (name, key)
    for index, state in reference["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, resumed["optimizer"]["state"][index][key]), (index, key)
    assert reference["optimizer"]["param_groups"] == resumed["optimizer"]["param_groups"]

    # every step's lr, in both runs, is the cosine of its epoch (0-based) over max_epochs
    for run_dir in (whole_dir, interrupted):
        steps = {int(row["step"]): row for row in csv.DictReader(open(run_dir / "train_steps.csv"))}
        assert sorted(steps) == list(range(1, reference["global_step"] + 1))
        for row in steps.values():
            expected = LR * (1 + math.cos(math.pi * int(row["epoch"]) / EPOCHS)) / 2
            assert float(row["lr"]) == pytest.approx(expected, rel=1e-5), row
