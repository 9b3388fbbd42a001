"""Typed run configurations: a training run (:class:`TrainConfig`) as its option groups, an evaluation
(:class:`EvalConfig`), and the groups a checkpoint or config.json recorded (:func:`saved_options`).

The library takes these, not an argparse Namespace; ``utils.cli`` builds them from the parsed arguments. A training
run is five groups, and checkpoints and config.json store them nested, under ``options``, as ``asdict`` writes them:

* ``run`` (:class:`RunOptions`): the engine's own options: data, output, runtime (seed, device, amp, ...);
* ``model_options``: fields of the family's config dataclass as given (None = the preset's / the data set's value);
* ``train_options``: the family's training options (its registered dataclass, e.g. Sim-MPNet's wld_start_epoch);
* ``context_options``: the options of the model's batch context (support sets);
* ``recipe`` (``networks.recipe.TrainingRecipe``): optimiser, lr, schedule, batch, epochs, early stop (the
  defaults here are the release's; the scripts fill it from the model's recipe). The groups are stored as given;
  the recipe a run trains with follows from them (``utils.optimisation.effective_recipe``: no early stopping
  without a validation list).

The family groups are plain dicts, so the engine never names them. Files written before the groups hold one flat
dict ``args`` (and the recipe beside it): :func:`saved_options` reads them too, and checkpoints of that format
(``sim-mpnet/2``) are converted on load by :func:`nest_flat_options`, registered here with the checkpoint upgrades.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from datasets.episodes.providers import get_context
from networks.recipe import LEGACY_RECIPE, RELEASE_RECIPE, TrainingRecipe
from networks.registry import model_entry, register_checkpoint_upgrade

FLAT_OPTIONS_FORMAT = "sim-mpnet/2"  # checkpoints whose options are one flat dict, ``args``
NESTED_OPTIONS_FORMAT = "sim-mpnet/3"  # the groups under ``options`` (utils.checkpoint.CHECKPOINT_FORMAT)
FAMILY_GROUPS = ("model_options", "train_options", "context_options")  # the groups whose fields a family declares


@dataclass
class RunOptions:
    """The run group of a training run (the engine's options of ``train.py`` / ``train_<dataset>.py``). In a saved
    record (:func:`saved_options`) a field the file does not record is None."""

    dataset: str
    model: str
    root_path: str
    volume_path: str
    list_dir: str
    num_classes: int
    class_names: list[str]
    output_dir: str
    pretrained: str | bool | None = None
    in_chans: int | None = None  # the model's input channels; None = the data set's (1 on a colour set: grey)
    num_workers: int = 0
    val_list: str | None = None
    val_every: int = 1
    max_steps: int | None = None
    device: str = "auto"
    amp: str = "none"
    seed: int = 2222
    deterministic: int = 1
    compile: bool = False
    grad_checkpointing: bool = False
    sync_bn: int = 1
    check_replicas: int = 0
    resume: str | None = None
    select_best_on_test: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """A training run: its option groups (see the module docstring)."""

    run: RunOptions
    model_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)
    context_options: dict[str, Any] = field(default_factory=dict)  # the model's batch context (support sets)
    recipe: TrainingRecipe = RELEASE_RECIPE


@dataclass
class EvalConfig:
    """An evaluation (the options of ``test.py`` / ``test_<dataset>.py``)."""

    dataset: str
    checkpoint: str
    volume_path: str
    list_dir: str
    test_list: str
    num_classes: int
    class_names: list[str]
    output_dir: str
    model: str | None = None  # None: the checkpoint's architecture
    model_options: dict[str, Any] = field(default_factory=dict)
    context_options: dict[str, Any] = field(default_factory=dict)  # None values: the training run's
    device: str = "auto"
    amp: str = "none"
    seed: int = 2222
    deterministic: int = 1
    batch_size: int = 16
    metrics: str = "transunet"
    distance_unit: str | None = None  # HD95 / ASD in 'pixel' or 'mm'; None: the data set's (DatasetSpec.distance_unit)
    is_savenii: bool = False
    test_save_dir: str | None = None
    save_overlays: int = 0
    tta: str = "none"  # test-time augmentation: 'none' or 'flip' (utils.inference.TTA_MODES)
    notes: list[str] = field(default_factory=list)


def config_from_namespace(config_class: type, namespace: Any, **extra: Any) -> Any:
    """``config_class`` from the attributes of a parsed-arguments namespace that name its fields (plus ``extra``)."""
    names = {item.name for item in dataclasses.fields(config_class)}
    values = {name: value for name, value in vars(namespace).items() if name in names}
    return config_class(**{**values, **extra})


# ----------------------------------------------------------------------------------------------------------------
# Recorded options
# ----------------------------------------------------------------------------------------------------------------
def saved_options(record: Mapping[str, Any]) -> TrainConfig:
    """The option groups of the training run a checkpoint or config.json records (``options``; the flat ``args``
    of files written before the groups). A run option the file does not record is None, a family group it does
    not record is empty, and ``recipe`` is None for a file of no training run (imported weights, a bare model)."""
    options = record.get("options")
    if options is None:
        options = flat_to_groups(record.get("args") or {}, record.get("arch"), record.get("recipe"))
    run = options.get("run") or {}
    recipe = options.get("recipe")
    recipe_fields = {item.name for item in dataclasses.fields(TrainingRecipe)}
    return TrainConfig(run=RunOptions(**{item.name: run.get(item.name) for item in dataclasses.fields(RunOptions)}),
                       **{group: dict(options.get(group) or {}) for group in FAMILY_GROUPS},
                       recipe=None if recipe is None else TrainingRecipe(**{name: value for name, value in
                                                                            recipe.items() if name in recipe_fields}))


def family_option_names(arch: str | None) -> dict[str, set[str]]:
    """{family group: the option names its dataclass declares} of registered model ``arch`` (empty sets for an
    unknown or missing arch): what sorts a flat ``args`` dict into groups."""
    try:
        entry = model_entry(arch) if arch else None
    except ValueError:
        entry = None
    if entry is None:
        return {group: set() for group in FAMILY_GROUPS}
    provider = None if entry.context is None else get_context(entry.context)
    classes = (entry.config_class, entry.train_options, None if provider is None else provider.options)
    return {group: set() if cls is None else {item.name for item in dataclasses.fields(cls)}
            for group, cls in zip(FAMILY_GROUPS, classes)}


def flat_to_groups(args: Mapping[str, Any], arch: str | None, recipe: Mapping[str, Any] | None) -> dict:
    """The ``options`` layout of a flat ``args`` dict: run options by :class:`RunOptions`' fields, the family's by
    its dataclasses (options no longer declared are dropped); ``recipe`` as recorded beside it, or for files from
    before recipes the only optimiser, schedule and stopping rule the engine had then (``LEGACY_RECIPE``) with the
    batch, lr and length of their ``args``; None without either (no training run)."""
    run_fields = {item.name for item in dataclasses.fields(RunOptions)}
    families = family_option_names(arch)
    groups: dict[str, dict[str, Any]] = {"run": {}, **{group: {} for group in FAMILY_GROUPS}}
    for name, value in args.items():
        group = "run" if name in run_fields else next((g for g, names in families.items() if name in names), None)
        if group is not None:
            groups[group][name] = value
    if recipe is None and args:
        recipe = {**dataclasses.asdict(LEGACY_RECIPE),
                  **{name: args[name] for name in ("base_lr", "batch_size", "max_epochs") if name in args}}
    return {**groups, "recipe": None if recipe is None else dict(recipe)}


def nest_flat_options(ckpt: dict) -> dict:
    """A checkpoint of the flat-options format in the current one: ``args`` and ``recipe`` become ``options``."""
    upgraded = {key: value for key, value in ckpt.items() if key not in ("args", "recipe")}
    if "args" in ckpt or "recipe" in ckpt:
        upgraded["options"] = flat_to_groups(ckpt.get("args") or {}, ckpt.get("arch"), ckpt.get("recipe"))
    return {**upgraded, "format": NESTED_OPTIONS_FORMAT}


register_checkpoint_upgrade(FLAT_OPTIONS_FORMAT, nest_flat_options)
