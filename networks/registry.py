"""Registry of segmentation models (timm style): ``@register_model``, ``create_model``, ``list_models``.

A registered name maps to a builder ``fn(dataset=None, pretrained=None, **overrides) -> SegmentationModel`` of one
family, together with the family's frozen config dataclass. ``create_model`` stamps the name on the model
(``model.arch``), so that a checkpoint can record ``arch`` + ``asdict(model.config)`` and be rebuilt with
``create_model(arch, **config)`` whatever preset the name started from.

    from networks import create_model, list_models
    model = create_model("sim_mpnet", dataset="synapse", num_classes=9, in_chans=1)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

from .options import cli_option as cli_option  # the config fields' option metadata (re-exported)
from .recipe import RELEASE_RECIPE, TrainingRecipe


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, the family's config class, the name's preset and per-data-set settings."""

    name: str
    builder: Callable[..., nn.Module]
    config_class: type
    preset: dict[str, Any]
    dataset_settings: Callable[[str, int | None], dict[str, Any]] | None
    train_options: type | None
    description: str
    context: str | None = None  # the batch context the model needs (datasets.episodes.providers), e.g. "support_set"
    recipe: Any = None  # the family's networks.recipe.TrainingRecipe (register_model fills in the release's)


_MODELS: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, config: type | None = None,
                   preset: dict[str, Any] | None = None,
                   dataset_settings: Callable[[str, int | None], dict[str, Any]] | None = None,
                   train_options: type | None = None, context: str | None = None, recipe: Any = None,
                   name: str | None = None):
    """Decorator registering ``builder(config, pretrained) -> model`` under its function name (or ``name``).

    ``config`` is the family's frozen config dataclass: its fields are the model's options, and those with
    :func:`cli_option` metadata are the scripts' command-line options. ``preset`` overrides its defaults for this
    name; ``dataset_settings(dataset, num_classes)`` gives the family's per-data-set values; ``train_options`` is the
    dataclass of the family's training options (their fields with cli_option metadata become options of the training
    scripts; the trainer hands an instance to ``model.start_training``). ``context`` names the batch context the
    model reads besides the image (a provider of ``datasets.episodes``, e.g. ``"support_set"``): the engine wraps
    the model's training and evaluation data with it. ``recipe`` (a ``networks.recipe.TrainingRecipe``) is how the
    family trains: optimiser, schedule, batch, epochs, early stop; the defaults of the training scripts' options
    (default: the release's recipe, Sim-MPNet's). ``pretrained``: None =
    the family's default, False = random initialisation, a path = a local weights file (nothing downloads).
    """
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if config is None or not dataclasses.is_dataclass(config):
            raise TypeError(f"register_model({builder.__name__}): config= must be the family's config dataclass")
        if recipe is not None and not isinstance(recipe, TrainingRecipe):
            raise TypeError(f"register_model({builder.__name__}): recipe= must be a networks.recipe.TrainingRecipe")
        key = name or builder.__name__
        doc = (builder.__doc__ or "").strip().splitlines()
        _MODELS[key] = ModelEntry(key, builder, config, dict(preset or {}), dataset_settings, train_options,
                                  doc[0] if doc else "", context, recipe or RELEASE_RECIPE)
        return builder

    return decorate(fn) if fn is not None else decorate


def unregister_model(name: str) -> None:
    """Remove a model (tests that register a toy model clean up with this)."""
    _MODELS.pop(name, None)


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    """The entry of ``name``; ValueError naming the registered models otherwise."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _MODELS[name]


def model_config(name: str, *, dataset: str | None = None, **overrides) -> Any:
    """The config ``create_model`` would build: defaults < the name's preset < the data set's settings <
    overrides (None values ignored). Tuple fields given as lists (JSON, checkpoints) become tuples again."""
    entry = model_entry(name)
    known = {item.name for item in dataclasses.fields(entry.config_class)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"model {name!r} has no option(s) {', '.join(unknown)}; its options: "
                         f"{', '.join(sorted(known))}")
    overrides = {key: _to_tuple(value) for key, value in overrides.items() if value is not None}
    settings = {}
    if dataset is not None and entry.dataset_settings is not None:
        num_classes = overrides.get("num_classes", entry.preset.get("num_classes"))
        settings = entry.dataset_settings(dataset, num_classes)
    return entry.config_class(**{**entry.preset, **settings, **overrides})


def create_model(name: str, *, dataset: str | None = None, pretrained: Any = None, **overrides) -> nn.Module:
    """Build registered model ``name`` from :func:`model_config`; the model records ``name`` as ``model.arch``."""
    model = model_entry(name).builder(model_config(name, dataset=dataset, **overrides), pretrained=pretrained)
    model.arch = name
    return model


_CHECKPOINT_UPGRADES: dict[str, Callable[[dict], dict]] = {}


def register_checkpoint_upgrade(checkpoint_format: str, upgrade: Callable[[dict], dict]) -> None:
    """A family's converter of an older checkpoint format (``ckpt['format']``) into the current one: the engine
    loads such files through it (e.g. Sim-MPNet's files from before the registry, which named no ``arch``)."""
    _CHECKPOINT_UPGRADES[checkpoint_format] = upgrade


def checkpoint_upgrade(checkpoint_format: str) -> Callable[[dict], dict] | None:
    """The registered converter of ``checkpoint_format``, or None."""
    return _CHECKPOINT_UPGRADES.get(checkpoint_format)


@dataclass(frozen=True)
class WeightsImporter:
    """A family's reader of bare weights files of a foreign layout (e.g. a released ``state_dict`` of another
    codebase), so that the engine can build a model from such a file as from a checkpoint. ``detect(obj)`` takes
    whatever ``torch.load`` returned and says whether the file is of this layout (loosely: a damaged file of the
    layout should still be detected, so that ``convert`` names what is wrong with it). ``convert(obj)`` returns
    ``{"arch", "model_config", "model"}`` (the engine stamps its checkpoint format) or raises ValueError naming
    the problem (the engine adds the file name). ``arch``: the registered model its files become, when fixed, so
    that a parser declares that model's options even for a file whose conversion fails (the load then says why)."""

    name: str
    detect: Callable[[Any], bool]
    convert: Callable[[Any], dict]
    arch: str | None = None


_WEIGHTS_IMPORTERS: dict[str, WeightsImporter] = {}


def register_weights_importer(name: str, detect: Callable[[Any], bool], convert: Callable[[Any], dict],
                              arch: str | None = None) -> None:
    """Register a :class:`WeightsImporter` under ``name`` (a later registration of the name replaces it)."""
    _WEIGHTS_IMPORTERS[name] = WeightsImporter(name, detect, convert, arch)


def find_weights_importer(obj: Any) -> WeightsImporter | None:
    """The first registered importer whose ``detect`` recognises ``obj``, or None."""
    return next((importer for importer in _WEIGHTS_IMPORTERS.values() if importer.detect(obj)), None)


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
