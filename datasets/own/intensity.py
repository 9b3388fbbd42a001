"""Intensities of own data sets, one scheme per input channel (the statistics live in the descriptor, so that
prediction normalises a new scan exactly as training did):

* ``ct``: nnU-Net's CT scheme: the foreground (label > 0) voxels of the training cases are sampled; clip to their
  0.5 / 99.5 percentiles, then z-score with their mean and standard deviation;
* ``window``: ``--ct_window LOW HIGH``: clip to [LOW, HIGH] and scale to [0, 1] (the Synapse protocol's scheme);
* ``zscore``: any other modality: per case, (x - mean) / std of that case's voxels;
* ``none``: a channel named ``noNorm`` (nnU-Net's name for intensities used as they are, e.g. a set exported by
  ``python -m datasets.export.nnunet``);
* ``rgb``: 2-D pictures, stored uint8 and ImageNet-normalised by the reader, as the colour sets.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..synapse import clip_and_scale_hu
from .descriptor import ChannelIntensity

__all__ = ["CT_PERCENTILES", "FOREGROUND_SAMPLES", "is_ct", "channel_scheme", "foreground_sample",
           "ct_intensity", "normalize_channel"]

CT_PERCENTILES = (0.5, 99.5)
FOREGROUND_SAMPLES = 10000  # foreground voxels sampled per training case for the CT statistics (as nnU-Net)
MIN_STD = 1e-8


NO_NORMALISATION = "nonorm"  # nnU-Net v2's channel name for no normalisation (compared in lower case)


def is_ct(channel_name: str) -> bool:
    """True for a channel named CT (nnU-Net's channel_names / MSD's modality; any case)."""
    return channel_name.strip().lower() == "ct"


def channel_scheme(channel_name: str, ct_window: Sequence[float] | None) -> ChannelIntensity:
    """The scheme of a channel before statistics: ``window`` for CT with a window given, ``ct`` (statistics to
    come) for CT, ``none`` for noNorm, ``zscore`` otherwise."""
    if is_ct(channel_name):
        if ct_window is not None:
            return ChannelIntensity(channel_name, "window", clip=(float(ct_window[0]), float(ct_window[1])))
        return ChannelIntensity(channel_name, "ct")
    if channel_name.strip().lower() == NO_NORMALISATION:
        return ChannelIntensity(channel_name, "none")
    return ChannelIntensity(channel_name, "zscore")


def foreground_sample(data: np.ndarray, label: np.ndarray, seed: Sequence[int]) -> np.ndarray:
    """Up to :data:`FOREGROUND_SAMPLES` intensities of the voxels with label > 0, drawn without replacement with
    ``np.random.default_rng(seed)`` (float64)."""
    values = np.asarray(data)[np.asarray(label) > 0].astype(np.float64)
    if values.size > FOREGROUND_SAMPLES:
        values = np.random.default_rng(list(seed)).choice(values, FOREGROUND_SAMPLES, replace=False)
    return values


def ct_intensity(channel_name: str, samples: Sequence[np.ndarray]) -> ChannelIntensity:
    """The ``ct`` scheme's statistics from the training cases' foreground samples (no foreground at all: the
    whole range, mean 0, std 1, i.e. no change)."""
    values = np.concatenate([np.asarray(s, dtype=np.float64) for s in samples]) if samples else np.zeros(0)
    if values.size == 0:
        return ChannelIntensity(channel_name, "ct", clip=(-np.inf, np.inf), mean=0.0, std=1.0)
    low, high = np.percentile(values, CT_PERCENTILES)
    return ChannelIntensity(channel_name, "ct", clip=(float(low), float(high)), mean=float(values.mean()),
                            std=float(max(values.std(), MIN_STD)))


def normalize_channel(data: np.ndarray, intensity: ChannelIntensity) -> np.ndarray:
    """One channel's raw intensities -> the model's (float32), by its scheme."""
    data = np.asarray(data, dtype=np.float64)
    if intensity.scheme == "ct":
        low, high = intensity.clip
        return ((np.clip(data, low, high) - intensity.mean) / intensity.std).astype(np.float32)
    if intensity.scheme == "window":
        return clip_and_scale_hu(data, *intensity.clip)
    if intensity.scheme == "none":
        return data.astype(np.float32)
    if intensity.scheme == "zscore":
        return ((data - data.mean()) / max(float(data.std()), MIN_STD)).astype(np.float32)
    raise ValueError(f"channel {intensity.name!r}: scheme {intensity.scheme!r} has no volume normalisation")
