"""The network's input from the data set's items: channel count and intensity convention.

A data set's items carry its images as its reader normalised them (``DatasetSpec.normalization``: the RGB sets
ImageNet mean/std, the grey volume sets [0, 1] units). A model may ask for something else: fewer channels
(``in_chans`` 1 on a colour set: a grey model, e.g. UniverSeg's released weights) or other intensities
(``SegmentationModel.input_normalization``: ``"unit"`` = [0, 1] per channel). :class:`InputConversion` maps one to
the other exactly (the normalisation is affine per channel, luma is linear), and :func:`with_model_input` applies it
to every image entry of a dataset's items (the query image and the context's images, e.g. supports), so that the
trainer, the evaluator and predict.py hand the network the same input. Names no model and no data set.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from datasets import DatasetSpec
from datasets.episodes.providers import ContextProvider

# ITU-R BT.601 luma, as PIL's convert("L") and the support-selection backends' grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
UNIT = "unit"


@dataclass(frozen=True)
class InputConversion:
    """``[..., C_data, H, W]`` in the data set's normalisation -> ``[..., C_model, H, W]`` in the model's.

    unit = x * data_std + data_mean (per channel); grey = sum_c luma_c * unit_c when ``to_grey``;
    output = (unit - model_mean) / model_std. Works on numpy arrays and torch tensors (dtype kept).
    """

    data_mean: tuple[float, ...]
    data_std: tuple[float, ...]
    to_grey: bool
    model_mean: tuple[float, ...]
    model_std: tuple[float, ...]

    def describe(self) -> str:
        """One line for logs: what the model's input is."""
        grey = "colour converted to grey (luma), " if self.to_grey else ""
        unit = all(m == 0.0 for m in self.model_mean) and all(s == 1.0 for s in self.model_std)
        return grey + ("intensities in [0, 1]" if unit else f"normalised with mean {self.model_mean}, std "
                                                             f"{self.model_std}")

    def __call__(self, images: Any) -> Any:
        if isinstance(images, torch.Tensor):
            def column(values):
                return torch.tensor(values, dtype=images.dtype, device=images.device).view(-1, 1, 1)

            def channel_sum(array):
                return array.sum(-3, keepdim=True)
        else:
            images = np.asarray(images)

            def column(values):
                return np.asarray(values, dtype=images.dtype).reshape(-1, 1, 1)

            def channel_sum(array):
                return array.sum(-3, keepdims=True)
        channels = len(self.data_mean)
        if images.ndim < 3 or images.shape[-3] != channels:
            raise ValueError(f"expected images [..., {channels}, H, W], got shape {tuple(images.shape)}")
        unit = images * column(self.data_std) + column(self.data_mean)
        if self.to_grey:
            unit = channel_sum(unit * column(LUMA_WEIGHTS))
        return (unit - column(self.model_mean)) / column(self.model_std)


def _luma(values: Sequence[float]) -> tuple[float]:
    return (float(sum(w * v for w, v in zip(LUMA_WEIGHTS, values))),)


def input_conversion(spec: DatasetSpec, in_chans: int, input_normalization: str | None) -> InputConversion | None:
    """The conversion from ``spec``'s items to a network of ``in_chans`` channels that takes
    ``input_normalization`` (None: the data set's; for a grey model of a colour set, the luma of the data set's
    mean and std), or None when the items already are its input. ValueError for a channel count that cannot be
    made (only the data set's or 1)."""
    channels = spec.in_chans
    if in_chans not in (channels, 1):
        raise ValueError(f"the model takes {in_chans}-channel images but {spec.name} images have {channels} "
                         f"channel(s)")
    if input_normalization not in (None, UNIT):
        raise ValueError(f"unknown input normalisation {input_normalization!r} (known: None, {UNIT!r})")
    data_mean, data_std = spec.normalization or ((0.0,) * channels, (1.0,) * channels)
    to_grey = in_chans == 1 and channels == 3
    if input_normalization == UNIT:
        model_mean, model_std = (0.0,) * in_chans, (1.0,) * in_chans
    elif to_grey:
        model_mean, model_std = _luma(data_mean), _luma(data_std)
    else:
        model_mean, model_std = tuple(data_mean), tuple(data_std)
    if not to_grey and (model_mean, model_std) == (tuple(data_mean), tuple(data_std)):
        return None
    return InputConversion(tuple(data_mean), tuple(data_std), to_grey, model_mean, model_std)


def model_input_conversion(spec: DatasetSpec, model: torch.nn.Module) -> InputConversion | None:
    """:func:`input_conversion` for ``model`` (its ``in_chans`` and ``input_normalization``)."""
    return input_conversion(spec, model.in_chans, getattr(model, "input_normalization", None))


def image_keys(provider: ContextProvider | None) -> tuple[str, ...]:
    """The item entries that hold images in the data set's convention: the query and the context's images."""
    return ("image", *(provider.image_keys if provider is not None else ()))


def convert_entries(entries: dict, conversion: InputConversion | None, keys: Sequence[str]) -> dict:
    """``entries`` with ``keys`` (where present) converted; unchanged without a conversion."""
    if conversion is None:
        return entries
    return {key: conversion(value) if key in keys and value is not None else value for key, value in entries.items()}


class ConvertedInputs(torch.utils.data.Dataset):
    """A dataset whose items' image entries are converted to the model's input; anything else (``set_epoch``,
    ``context_info``, ``context_pairs``, ...) is the wrapped dataset's."""

    def __init__(self, dataset, conversion: InputConversion, keys: Sequence[str]) -> None:
        self.dataset, self.conversion, self.keys = dataset, conversion, tuple(keys)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return convert_entries(self.dataset[index], self.conversion, self.keys)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "conversion", "keys"):  # not yet set (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def with_model_input(dataset, spec: DatasetSpec, model: torch.nn.Module, provider: ContextProvider | None):
    """``dataset`` with its items converted to ``model``'s input (see the module docstring), or unchanged."""
    conversion = model_input_conversion(spec, model)
    return dataset if conversion is None else ConvertedInputs(dataset, conversion, image_keys(provider))
