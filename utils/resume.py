"""Training checkpoints: what a run saves every epoch (the loop state, the option groups it trained with) and how a
run continues from one exactly.

A checkpoint holds everything needed for a resumed run to end in exactly the state of an uninterrupted one (weights,
memory banks, optimizer, scaler, RNG states, the loop counters of :class:`TrainState`), and the run's options as
given (``utils.config``: run, model, training and context options, recipe), which a resumed run is checked against:
another optimiser is an error, any other difference that breaks exact continuation a warning. The recipe compared
is the one each run trains with (``utils.optimisation.effective_recipe``: early stopping off without validation).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from networks.recipe import TrainingRecipe
from utils.checkpoint import (
    CheckpointError, capture_rng_state, check_model_config, json_safe, load_checkpoint, load_model_state,
    model_checkpoint, restore_rng_state, saved_model_config,
)
from utils.config import TrainConfig, saved_options
from utils.optimisation import effective_recipe
from utils.runlog import logger

# Run options whose change between the original and a resumed run breaks exact continuation (logged as a warning).
# (The model family's training options are compared too, and the recipe: see check_resumed_recipe.)
RESUME_SENSITIVE_OPTIONS = ("seed", "root_path", "list_dir", "amp")


@dataclass
class TrainState:
    """Loop counters saved in every checkpoint."""

    next_epoch: int = 0
    global_step: int = 0
    best_val_dice: float = -math.inf
    best_test_dice: float = -math.inf
    validations_since_best: int = 0  # the early-stop counter: validations since best_val_dice last rose
    run_id: str | None = None  # the run the checkpoint belongs to (utils.runfolder; None: written before run ids)


# TrainState fields that checkpoints written before them lack, with the value such a run had.
STATE_ADDED_LATER = {"validations_since_best": 0, "run_id": None}


def recorded_options(config: TrainConfig) -> dict:
    """The option groups a checkpoint and config.json record (``options``): the run's as given, in JSON values, so
    that ``utils.config.saved_options`` gives the run's TrainConfig back."""
    return json_safe(asdict(config))


def make_checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    state: TrainState, config: TrainConfig) -> dict:
    """Everything needed to continue exactly (see utils.checkpoint), and the run's options."""
    return {**model_checkpoint(model), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            **asdict(state), "rng": capture_rng_state(), "options": recorded_options(config)}


def warn_resumed_change(name: str, value, saved) -> None:
    logger.warning("resuming with --%s %s (checkpoint was trained with %s): the run will not match an "
                   "uninterrupted one", name, value, saved)


def check_resumed_recipe(path: str, saved: TrainingRecipe | None, recipe: TrainingRecipe) -> None:
    """Another optimiser is an error (its state would load, and silently keep the other's update rule: Adam takes
    AdamW's decoupled_weight_decay flag); any other difference is a warning, as for RESUME_SENSITIVE_OPTIONS
    (max_epochs only where the schedule depends on it). A file that records no recipe is not a training checkpoint:
    the state loading says so."""
    if saved is None:
        return
    if saved.optimizer != recipe.optimizer:
        raise CheckpointError(path, f"it was trained with --optimizer {saved.optimizer}, this run builds "
                                    f"{recipe.optimizer}: resume with --optimizer {saved.optimizer}")
    length_dependent = recipe.length_dependent or saved.length_dependent
    saved_values = asdict(saved)
    for name, value in asdict(recipe).items():
        if name == "max_epochs" and not length_dependent:
            continue
        if saved_values[name] != value:
            warn_resumed_change(name, value, saved_values[name])


def check_resumed_options(trained: TrainConfig, config: TrainConfig) -> None:
    """A warning for every run option of RESUME_SENSITIVE_OPTIONS and every family training option that differs
    from the checkpoint's (options it does not record are not compared)."""
    for name in RESUME_SENSITIVE_OPTIONS:
        saved, current = getattr(trained.run, name), getattr(config.run, name)
        if saved is not None and saved != json_safe(current):
            warn_resumed_change(name, current, saved)
    for name, current in config.train_options.items():
        if name in trained.train_options and trained.train_options[name] != json_safe(current):
            warn_resumed_change(name, current, trained.train_options[name])


def restore_training(path: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, config: TrainConfig, recipe: TrainingRecipe) -> TrainState:
    """Load ``path`` into model/optimizer/scaler, restore the RNGs and return the loop state. The optimizer keeps the
    learning rate and weight decay this run built it with (``load_state_dict`` would bring back the checkpoint's)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    if ckpt["arch"] != model.arch:
        raise CheckpointError(path, f"checkpoint holds a {ckpt['arch']!r} model, this run trains {model.arch!r}")
    check_model_config(path, saved_model_config(ckpt, path), asdict(model.config))
    trained = saved_options(ckpt)
    check_resumed_recipe(path, None if trained.recipe is None else effective_recipe(trained)[0], recipe)
    load_model_state(model, ckpt, path)
    built = [{key: group[key] for key in ("lr", "weight_decay") if key in group} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        for group, values in zip(optimizer.param_groups, built):
            group.update(values)
        if ckpt["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])
        state = TrainState(**{key: ckpt.get(key, STATE_ADDED_LATER[key]) if key in STATE_ADDED_LATER else ckpt[key]
                              for key in TrainState.__dataclass_fields__})
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(path, f"not a training checkpoint that can be resumed: {type(exc).__name__}: "
                                    f"{exc}") from exc
    restore_rng_state(ckpt["rng"])
    check_resumed_options(trained, config)
    return state
