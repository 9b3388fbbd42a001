"""The engine's side of batch context (``datasets.context``): which provider a model needs, its options, and the
training and evaluation datasets wrapped with it. Names no model and no provider.

Training: queries = the augmented training split, pool = the same split. Validation: queries = the validation list,
pool = the training split, un-augmented. Testing: pool = the training split of the data the checkpoint was trained
on (its saved ``root_path`` / ``list_dir`` / ``dataset``, unless the test run names another), options = the
training run's, overridden by those given to the test script.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from datasets import get_dataset
from datasets.context import ContextProvider, ContextSource, get_context
from networks import model_entry
from utils.config import EvalConfig, TrainConfig

POOL_KEYS = ("dataset", "root_path", "list_dir")  # a run's saved options that locate its training data


def model_context(arch: str) -> ContextProvider | None:
    """The batch-context provider model ``arch`` registered with, or None."""
    name = model_entry(arch).context
    return None if name is None else get_context(name)


def context_options(provider: ContextProvider, *layers: Mapping[str, Any]) -> Any:
    """The provider's options: its defaults < each layer in turn (None values and unknown keys skipped)."""
    names = {item.name for item in dataclasses.fields(provider.options)}
    values: dict[str, Any] = {}
    for layer in layers:
        values.update({key: value for key, value in layer.items() if key in names and value is not None})
    return provider.options(**values)


def training_source(config: TrainConfig, dataset) -> ContextSource:
    return ContextSource(get_dataset(config.dataset), dataset, config.list_dir)


def with_training_context(dataset, config: TrainConfig, img_size: int, device: str):
    """The training dataset with its context (pool = itself), or unchanged for a model without one."""
    provider = model_context(config.model)
    if provider is None:
        return dataset
    source = training_source(config, dataset)
    return provider.attach(source, source, context_options(provider, config.context_options), training=True,
                           img_size=img_size, seed=config.seed, device=device)


def with_validation_context(dataset, config: TrainConfig, img_size: int, device: str):
    """A validation dataset with its context from the un-augmented training split, or unchanged."""
    provider = model_context(config.model)
    if provider is None:
        return dataset
    spec = get_dataset(config.dataset)
    pool = spec.build(config.root_path, config.list_dir, spec.train_split, config.num_classes, seed=config.seed)
    return provider.attach(training_source(config, dataset), training_source(config, pool),
                           context_options(provider, config.context_options), training=False, img_size=img_size,
                           seed=config.seed, device=device)


def with_test_context(dataset, config: EvalConfig, arch: str, trained_with: Mapping[str, Any], img_size: int,
                      device: str, checkpoint: str):
    """A test dataset with its context: pool = the training split of the data the checkpoint was trained on
    (``trained_with`` = its saved run options), unless the test options name another. Unchanged without context."""
    provider = model_context(arch)
    if provider is None:
        return dataset
    options = context_options(provider, trained_with, config.context_options)
    named = ", ".join(f"--{provider.pool_fields[key]}" for key in POOL_KEYS if key in provider.pool_fields)
    pool = training_pool(provider, options, trained_with, checkpoint, config.num_classes, config.seed,
                         hint=f"name the pool with {named}" if named else "")
    return provider.attach(ContextSource(get_dataset(config.dataset), dataset, config.list_dir), pool, options,
                           training=False, img_size=img_size, seed=int(trained_with.get("seed", config.seed)),
                           device=device)


def training_pool(provider: ContextProvider, options: Any, trained_with: Mapping[str, Any], checkpoint: str,
                  num_classes: int, seed: int, hint: str = "") -> ContextSource:
    """The training split a checkpoint's context is drawn from at test time: the data the options name (the
    provider's ``pool_fields``), else the checkpoint's own (``trained_with`` = its saved run options). ValueError
    (ending in ``hint``) when neither names it; DataError when its files are not here."""
    named_pool = {key: getattr(options, name) for key, name in provider.pool_fields.items()}
    pool_dataset, root, list_dir = (named_pool.get(key) or trained_with.get(key) for key in POOL_KEYS)
    if not (pool_dataset and root and list_dir):
        raise ValueError(f"{checkpoint}: the checkpoint does not record its training data" + (f"; {hint}" if hint
                                                                                              else ""))
    spec = get_dataset(pool_dataset)
    return ContextSource(spec, spec.build(root, list_dir, spec.train_split, num_classes, seed=seed), list_dir)
