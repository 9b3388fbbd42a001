"""Slice-wise volume inference and single-image inference (as released: cubic resize in, sum of heads, argmax,
nearest resize out), with optional flip test-time augmentation and per-class probabilities.

``predict_volume`` (grey [D, H, W] volumes) and ``predict_image`` (one [C, H, W] image, e.g. normalised RGB) both
resize their input per channel to the network's size and hand the stack of network inputs to one shared core, so
both data kinds go through the same batching, autocast, mode handling, test-time augmentation and label resizing.

Scores (:func:`class_scores`): without test-time augmentation, the summed heads' logits, whose argmax is the
prediction (exactly as before TTA existed); with ``tta='flip'``, the softmax probabilities of the summed heads
averaged over the input and its mirror images (vertical, horizontal, both), each mirrored back. Probabilities, when
asked for, are the softmax of the logits (no TTA) or that average (TTA).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import zoom

from networks.shared.modes import eval_mode, model_device  # shared with the families' analysis code

__all__ = ["predict_volume", "predict_image", "resolve_device", "model_device", "eval_mode", "resize_slice",
           "network_input", "sum_of_heads", "class_scores", "tta_flips", "forward_inputs", "TTA_MODES",
           "FLIP_DIMS", "IMAGE_ZOOM_ORDER", "LABEL_ZOOM_ORDER", "PROBABILITY_ZOOM_ORDER"]

IMAGE_ZOOM_ORDER = 3  # cubic spline for the image, as released
LABEL_ZOOM_ORDER = 0  # nearest neighbour for the predicted labels
PROBABILITY_ZOOM_ORDER = 1  # linear for per-class probability maps
TTA_MODES = ("none", "flip")
# --tta flip: the network input as is, mirrored vertically, horizontally and both (dims of a [B, C, H, W] batch).
FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (2, 3))


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA if available, else CPU; otherwise the named device ('cpu', 'cuda', 'cuda:1', ...)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {name!r}: {error}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here (use 'cpu' or 'auto')")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def resize_slice(slice2d: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """``scipy.ndimage.zoom`` of a 2-D array to ``shape`` (no-op when already that size, as released)."""
    if slice2d.shape == tuple(shape):
        return slice2d
    factors = (shape[0] / slice2d.shape[0], shape[1] / slice2d.shape[1])
    return zoom(slice2d, factors, order=order)


def network_input(image: np.ndarray, img_size: int) -> np.ndarray:
    """float32 [C, img_size, img_size]: a grey [H, W] (C = 1) or a [C, H, W] image resized channel by channel
    (cubic), the network input of one slice or image."""
    channels = image[None] if image.ndim == 2 else image
    shape = (img_size, img_size)
    return np.stack([resize_slice(channel, shape, IMAGE_ZOOM_ORDER) for channel in channels]).astype(np.float32)


def sum_of_heads(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Sum of the heads' logits in float32 (a lone tensor counts as one head)."""
    heads = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
    total = heads[0].float()
    for logits in heads[1:]:
        total = total + logits.float()
    return total


def _check_image(image: np.ndarray, ndims: tuple[int, ...], layout: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in ndims or image.size == 0:
        raise ValueError(f"image must be a non-empty {layout} array, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN/inf or non-numeric values")
    return image


def _positive_int(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _input_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """Where the inputs go: the model's device; an explicit other device is an error (the model is not moved)."""
    own = model_device(model)
    device = own if device is None else torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())  # 'cuda' means the current CUDA device
    if device != own:
        raise ValueError(f"device {device} differs from the model's device {own}; move the model first")
    return device


def forward_inputs(model: nn.Module, images: torch.Tensor, context: Mapping[str, Any] | None = None):
    """The model's outputs for a batch of network inputs: ``model.forward_batch({"image": images, **context})``
    for a registered model (so that a model with a support set gets it), else ``model(images)``."""
    if hasattr(model, "forward_batch"):
        return model.forward_batch({"image": images, **(context or {})})
    if context:
        raise ValueError(f"{type(model).__name__} has no forward_batch to receive context {sorted(context)}")
    return model(images)


def tta_flips(tta: str | None) -> tuple[tuple[int, ...], ...] | None:
    """The mirrorings of a test-time augmentation mode: None for ``None`` / ``'none'``, :data:`FLIP_DIMS` for
    ``'flip'``; ValueError otherwise."""
    if tta is None or tta == "none":
        return None
    if tta == "flip":
        return FLIP_DIMS
    raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")


def class_scores(model: nn.Module, images: torch.Tensor, context: Mapping[str, Any] | None = None,
                 flips: tuple[tuple[int, ...], ...] | None = None) -> torch.Tensor:
    """float32 [B, K, h, w] scores of a batch of network inputs, whose argmax over K is the prediction.

    ``flips=None``: the summed heads' logits. Otherwise, for each entry of ``flips`` (dims to mirror, () = none),
    the softmax of the summed heads of the mirrored input, mirrored back; the mean over the entries (probabilities).
    """
    if flips is None:
        return sum_of_heads(forward_inputs(model, images, context))
    total = None
    for dims in flips:
        logits = sum_of_heads(forward_inputs(model, images.flip(dims) if dims else images, context))
        probabilities = torch.softmax(logits, dim=1)
        probabilities = probabilities.flip(dims) if dims else probabilities
        total = probabilities if total is None else total + probabilities
    return total / len(flips)


def _predict_inputs(model: nn.Module, inputs: np.ndarray, out_shape: tuple[int, int], batch_size: int,
                    device: torch.device, amp_dtype: torch.dtype | None,
                    context: Mapping[str, Any] | None = None, tta: str | None = None,
                    return_probabilities: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The shared core: network inputs [N, C, s, s] through ``model`` in batches of ``batch_size`` (eval mode, no
    autograd, optional autocast; ``context`` passed with every batch, see :func:`forward_inputs`), the argmax of
    :func:`class_scores` on the device (``tta``: see :func:`tta_flips`), each label map resized back (nearest) to
    ``out_shape``. Returns np.int64 [N, *out_shape]; with ``return_probabilities`` also the per-class probabilities
    np.float32 [K, N, *out_shape], each map resized back linearly. The model's modes are restored."""
    flips = tta_flips(tta)
    prediction = np.empty((len(inputs), *out_shape), dtype=np.int64)
    probabilities: np.ndarray | None = None
    with eval_mode(model), torch.inference_mode(), \
            torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch_size])).to(device)
            scores = class_scores(model, batch, context, flips)
            labels = scores.argmax(dim=1).cpu().numpy()
            for offset, label_map in enumerate(labels):
                prediction[start + offset] = resize_slice(label_map, out_shape, LABEL_ZOOM_ORDER)
            if not return_probabilities:
                continue
            batch_probabilities = (scores if flips is not None else torch.softmax(scores, dim=1)).cpu().numpy()
            if probabilities is None:
                probabilities = np.empty((batch_probabilities.shape[1], len(inputs), *out_shape), dtype=np.float32)
            for offset, maps in enumerate(batch_probabilities):
                for index, class_map in enumerate(maps):
                    probabilities[index, start + offset] = resize_slice(class_map, out_shape, PROBABILITY_ZOOM_ORDER)
    if return_probabilities:
        return prediction, probabilities
    return prediction


def predict_volume(model: nn.Module, image: np.ndarray, img_size: int, batch_size: int = 16,
                   device: torch.device | str | None = None, amp_dtype: torch.dtype | None = None,
                   context: Mapping[str, Any] | None = None, tta: str | None = None,
                   return_probabilities: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Label prediction for a volume [D, H, W] (or one slice [H, W]) with a multi-head 2-D network.

    Each slice is resized to ``img_size`` x ``img_size`` (cubic), slices go through ``model`` in batches of
    ``batch_size`` (eval mode, no autograd, optional autocast to ``amp_dtype``), the heads' logits are summed,
    the argmax is taken on the device, and each label slice is resized back (nearest) to H x W.
    Every slice is processed independently, so the result does not depend on ``batch_size`` (for a model that
    is batch-independent in eval mode). The model's train/eval modes are restored afterwards.

    Args:
        model: returns a tuple of logits [B, C, img_size, img_size] (or one tensor) for input [B, 1, h, w].
        device: where the input batches go; None = the device of the model's first parameter. The model is
            not moved: a device other than the model's is an error.
        amp_dtype: torch.bfloat16 / torch.float16 for autocast on the device, None for full precision.
        context: extra entries of every batch dict the model receives (e.g. a support set), on its device.
        tta: None / 'none', or 'flip': average the softmax probabilities over the slice and its mirror images
            (see :func:`class_scores`); the label is their argmax.
        return_probabilities: also return the per-class probabilities.

    Returns:
        np.int64 labels with the shape of ``image``; with ``return_probabilities``, ``(labels, probabilities)``
        with probabilities np.float32 [K, *image.shape] (softmax of the summed heads, or the TTA average), each
        slice's map resized back to H x W linearly.
    """
    image = _check_image(image, (2, 3), "2-D [H, W] or 3-D [D, H, W]")
    img_size, batch_size = _positive_int("img_size", img_size), _positive_int("batch_size", batch_size)
    device = _input_device(model, device)
    slices = image[None] if image.ndim == 2 else image
    inputs = np.stack([network_input(one, img_size) for one in slices])
    result = _predict_inputs(model, inputs, slices.shape[1:], batch_size, device, amp_dtype, context, tta,
                             return_probabilities)
    if not return_probabilities:
        return result.reshape(image.shape)
    labels, probabilities = result
    return labels.reshape(image.shape), probabilities.reshape(len(probabilities), *image.shape)


def predict_image(model: nn.Module, image: np.ndarray, img_size: int, device: torch.device | str | None = None,
                  amp_dtype: torch.dtype | None = None, context: Mapping[str, Any] | None = None,
                  tta: str | None = None,
                  return_probabilities: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Label map [H, W] (np.int64) of one image [C, H, W] (RGB data sets: float32 [3, H, W], normalised as their
    evaluation items are), through the same core as :func:`predict_volume`: each channel resized to
    ``img_size`` x ``img_size`` (cubic), sum of the heads, argmax, nearest resize back to H x W. ``model`` takes
    [B, C, img_size, img_size]; ``device``, ``amp_dtype``, ``context`` and ``tta`` as in :func:`predict_volume`.
    With ``return_probabilities``: ``(labels, probabilities np.float32 [K, H, W])``."""
    image = _check_image(image, (3,), "3-D [C, H, W]")
    img_size = _positive_int("img_size", img_size)
    device = _input_device(model, device)
    inputs = network_input(image, img_size)[None]
    result = _predict_inputs(model, inputs, image.shape[1:], 1, device, amp_dtype, context, tta, return_probabilities)
    if not return_probabilities:
        return result[0]
    labels, probabilities = result
    return labels[0], probabilities[:, 0]
