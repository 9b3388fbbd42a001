"""The registry of batch-context providers: what a model needs in every batch besides the image, supplied by the
data side.

A few-shot model such as MatchSeg segments a query *given* a support set of labelled training images. The model
family names the context it needs when it registers (``register_model(..., context="support_set")``); a provider
registered here under that name builds it. The engine joins the two without naming either: it wraps the training
and evaluation datasets with ``provider.attach(...)``, whose items then carry the extra entries that the model's
``forward_batch`` reads, and exposes the provider's ``options`` (a dataclass; fields with ``help`` metadata) as
options of the train and test scripts.

    provider = get_context("support_set")
    dataset = provider.attach(ContextSource(spec, query_set, list_dir), ContextSource(spec, pool_set, list_dir),
                              provider.options(support_size=8), training=False, img_size=128, seed=0, device="cpu")
    dataset.context_info     # {"support_selection": "hog(...)", ...}: for run logs and results
    dataset[i]               # the query item plus the context entries
    dataset.context_pairs(extras)  # (image [C,H,W], label [H,W]) pairs to show beside the case in overlays

This module imports neither ``utils`` nor ``networks``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base import ListedSegmentationDataset
from ..registry import DatasetSpec


@dataclass(frozen=True)
class ContextSource:
    """One listed split with the spec and list folder it came from (group ids, e.g. HAM10000 lesions, are read
    from the list folder through ``spec.groups``)."""

    spec: DatasetSpec
    dataset: ListedSegmentationDataset
    list_dir: str | None  # None: a folder of images that is no listed split (no group ids)

    def groups(self) -> list[Any] | None:
        """Group id of every entry (images of one group never support each other), or None without groups."""
        if self.spec.groups is None or self.list_dir is None:
            return None
        by_entry = self.spec.groups(self.list_dir)
        return [by_entry.get(self.dataset.case_name(entry)) for entry in self.dataset.entries]


@dataclass(frozen=True)
class ContextProvider:
    """``options``: the provider's options dataclass. ``attach(queries, pool, options, *, training, img_size, seed,
    device) -> Dataset``: the query items with their context; ``pool`` is the training split the context is drawn
    from (never evaluation images). The returned dataset has ``context_info`` (a JSON-ready dict), ``set_epoch``
    and ``context_pairs(extras)``. ``pool_fields``: which option fields, when set, name the test-time pool's
    ``dataset``, ``root_path`` and ``list_dir`` (otherwise the checkpoint's training data). ``image_keys``: the
    context entries that hold images in the data set's normalisation (converted with the query for a model that
    takes other input, see utils.model_input). ``for_queries(pool, options, *, img_size, seed, device)``: the
    context of single unlisted query images (predict.py): an object with ``info``,
    ``context(image uint8 [H, W, 3], path) -> (entries, names of the context's images)`` and
    ``context_pairs(entries)``."""

    name: str
    options: type
    attach: Callable[..., Any]
    description: str = ""
    pool_fields: Mapping[str, str] = field(default_factory=dict)
    image_keys: tuple[str, ...] = ()
    for_queries: Callable[..., Any] | None = None


_PROVIDERS: dict[str, ContextProvider] = {}


def register_context(provider: ContextProvider) -> ContextProvider:
    """Add ``provider`` under its name (a model family names it when it registers: ``context="support_set"``)."""
    _PROVIDERS[provider.name] = provider
    return provider


def get_context(name: str) -> ContextProvider:
    """The provider of ``name``; ValueError naming the known ones otherwise."""
    if name not in _PROVIDERS:
        raise ValueError(f"unknown batch context {name!r}; known: {', '.join(sorted(_PROVIDERS))}")
    return _PROVIDERS[name]


def list_contexts() -> list[str]:
    """Registered provider names, sorted (the scripts add each one's options)."""
    return sorted(_PROVIDERS)
