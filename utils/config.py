"""Typed run configurations: what a training run (:class:`TrainConfig`) or an evaluation (:class:`EvalConfig`) needs.

The library takes these, not an argparse Namespace; ``utils.cli`` builds them from the parsed arguments. Model
options (``model_options``: fields of the family's config dataclass, None = the preset's / the checkpoint's value)
and the family's training options (``train_options``) are plain dicts, so the engine never names them. The training
recipe's fields (``networks.recipe.TrainingRecipe``: optimiser, lr, schedule, batch, epochs, early stop) are plain
fields of :class:`TrainConfig`, as the options of the scripts, which fill them from the model's recipe (the
defaults here are the release's).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from networks.recipe import RELEASE_RECIPE, TrainingRecipe


@dataclass
class TrainConfig:
    """A training run (the options of ``train.py`` / ``train_<dataset>.py``)."""

    dataset: str
    model: str
    root_path: str
    volume_path: str
    list_dir: str
    num_classes: int
    class_names: list[str]
    output_dir: str
    model_options: dict[str, Any] = field(default_factory=dict)
    train_options: dict[str, Any] = field(default_factory=dict)
    context_options: dict[str, Any] = field(default_factory=dict)  # the model's batch context (support sets)
    pretrained: str | bool | None = None
    in_chans: int | None = None  # the model's input channels; None = the data set's (1 on a colour set: grey)
    num_workers: int = 0
    val_list: str | None = None
    val_every: int = 1
    optimizer: str = RELEASE_RECIPE.optimizer
    base_lr: float = RELEASE_RECIPE.base_lr
    weight_decay: float = RELEASE_RECIPE.weight_decay
    lr_schedule: str = RELEASE_RECIPE.lr_schedule
    max_epochs: int = RELEASE_RECIPE.max_epochs
    early_stop_patience: int = RELEASE_RECIPE.early_stop_patience
    max_steps: int | None = None
    device: str = "auto"
    amp: str = "none"
    seed: int = 2222
    deterministic: int = 1
    batch_size: int = RELEASE_RECIPE.batch_size
    compile: bool = False
    grad_checkpointing: bool = False
    sync_bn: int = 1
    check_replicas: int = 0
    resume: str | None = None
    select_best_on_test: bool = False
    notes: list[str] = field(default_factory=list)

    def flat(self) -> dict[str, Any]:
        """Every option in one dict (run, model, training and context options): config.json's ``args``."""
        values = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)
                  if item.name not in ("model_options", "train_options", "context_options")}
        return {**values, **self.model_options, **self.train_options, **self.context_options}

    def recipe(self) -> TrainingRecipe:
        """The training recipe of this run (its recipe fields; ValueError for an impossible value)."""
        return TrainingRecipe(**{item.name: getattr(self, item.name) for item in dataclasses.fields(TrainingRecipe)})


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
