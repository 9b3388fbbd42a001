"""Checkpoint layouts that older code wrote, made by hand from a current checkpoint (written out independently of
utils.config's converter), for the tests that load and resume such files."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

RECIPE_ARGS_BEFORE_RECIPES = ("base_lr", "batch_size", "max_epochs")  # the recipe fields the engine had then


def flat_args_layout(ckpt: dict) -> dict:
    """The ``sim-mpnet/2`` layout of a current training checkpoint: every option in one flat dict ``args`` (run,
    recipe, model, training and context options), and beside it ``recipe``, the recipe the run trained with (early
    stopping off without a validation list)."""
    options = ckpt["options"]
    args = {**options["run"], **options["recipe"], **options["model_options"], **options["train_options"],
            **options["context_options"]}
    trained_with = dict(options["recipe"])
    if not options["run"]["val_list"]:
        trained_with["early_stop_patience"] = 0
    rest = {key: value for key, value in ckpt.items()
            if key not in ("options", "run_id", "content_sha256")}  # the last two came after this format
    return {**rest, "format": "sim-mpnet/2", "args": args, "recipe": trained_with}


def before_recipes_layout(ckpt: dict) -> dict:
    """What a checkpoint written before recipes holds: the flat layout without a recipe, without the early-stop
    counter, and without the recipe options the engine did not have yet."""
    old = flat_args_layout(ckpt)
    del old["recipe"], old["validations_since_best"]
    old["args"] = {name: value for name, value in old["args"].items()
                   if name not in ("optimizer", "weight_decay", "lr_schedule", "early_stop_patience")}
    return old


def extract_commit(repo: Path, commit: str, dest: Path) -> Path:
    """The tree of ``commit`` of this repository's history written to ``dest`` (``git archive``), to run that
    commit's own scripts; the test is skipped where the clone lacks the commit (a shallow clone)."""
    if shutil.which("git") is None or subprocess.run(
            ["git", "-C", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True).returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone's history (shallow clone?)")
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest
