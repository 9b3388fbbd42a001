"""The engine's side of batch context (``datasets.episodes.providers``): which provider a model needs, its
options, and the training and evaluation datasets wrapped with it. Names no model and no provider. (Named
``batch_context`` beside the data side's providers, which define what a context is.)

Training: queries = the augmented training split, pool = the same split. Validation: queries = the validation list,
pool = the training split, un-augmented. Testing: pool = the training split of the data the checkpoint was trained
on (its saved run options ``root_path`` / ``list_dir`` / ``dataset``, unless the test run names another), options =
the training run's context options, overridden by those given to the test script.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from datasets import get_dataset
from datasets.episodes.providers import ContextProvider, ContextSource, get_context
from networks import model_entry
from utils.config import EvalConfig, RunOptions, TrainConfig

POOL_KEYS = ("dataset", "root_path", "list_dir")  # the run options that locate a run's training data


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


def training_source(run: RunOptions, dataset) -> ContextSource:
    return ContextSource(get_dataset(run.dataset), dataset, run.list_dir)


def with_training_context(dataset, config: TrainConfig, img_size: int, device: str):
    """The training dataset with its context (pool = itself), or unchanged for a model without one."""
    run = config.run
    provider = model_context(run.model)
    if provider is None:
        return dataset
    source = training_source(run, dataset)
    return provider.attach(source, source, context_options(provider, config.context_options), training=True,
                           img_size=img_size, seed=run.seed, device=device)


def with_validation_context(dataset, config: TrainConfig, img_size: int, device: str):
    """A validation dataset with its context from the un-augmented training split, or unchanged."""
    run = config.run
    provider = model_context(run.model)
    if provider is None:
        return dataset
    spec = get_dataset(run.dataset)
    pool = spec.build(run.root_path, run.list_dir, spec.train_split, run.num_classes, seed=run.seed)
    return provider.attach(training_source(run, dataset), training_source(run, pool),
                           context_options(provider, config.context_options), training=False, img_size=img_size,
                           seed=run.seed, device=device)


def with_test_context(dataset, config: EvalConfig, arch: str, trained: TrainConfig, img_size: int, device: str,
                      checkpoint: str):
    """A test dataset with its context: pool = the training split of the data the checkpoint was trained on
    (``trained`` = its saved options, ``utils.config.saved_options``), unless the test options name another; the
    training run's seed (the test's where it records none). Unchanged without context."""
    provider = model_context(arch)
    if provider is None:
        return dataset
    options = context_options(provider, trained.context_options, config.context_options)
    named = ", ".join(f"--{provider.pool_fields[key]}" for key in POOL_KEYS if key in provider.pool_fields)
    pool = training_pool(provider, options, trained.run, checkpoint, config.num_classes, config.seed,
                         hint=f"name the pool with {named}" if named else "")
    seed = config.seed if trained.run.seed is None else int(trained.run.seed)
    return provider.attach(ContextSource(get_dataset(config.dataset), dataset, config.list_dir), pool, options,
                           training=False, img_size=img_size, seed=seed, device=device)


def training_pool(provider: ContextProvider, options: Any, trained: RunOptions, checkpoint: str, num_classes: int,
                  seed: int, hint: str = "") -> ContextSource:
    """The training split a checkpoint's context is drawn from at test time: the data the options name (the
    provider's ``pool_fields``), else the checkpoint's own (``trained`` = its saved run options). ValueError
    (ending in ``hint``) when neither names it; DataError when its files are not here."""
    named_pool = {key: getattr(options, name) for key, name in provider.pool_fields.items()}
    pool_dataset, root, list_dir = (named_pool.get(key) or getattr(trained, key) for key in POOL_KEYS)
    if not (pool_dataset and root and list_dir):
        raise ValueError(f"{checkpoint}: the checkpoint does not record its training data" + (f"; {hint}" if hint
                                                                                              else ""))
    spec = get_dataset(pool_dataset)
    return ContextSource(spec, spec.build(root, list_dir, spec.train_split, num_classes, seed=seed), list_dir)
