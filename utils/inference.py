"""Slice-wise volume inference (as released: cubic resize in, sum of heads, argmax, nearest resize out)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn as nn
from scipy.ndimage import zoom

__all__ = ["predict_volume", "resolve_device"]

IMAGE_ZOOM_ORDER = 3  # cubic spline for the image, as released
LABEL_ZOOM_ORDER = 0  # nearest neighbour for the predicted labels


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


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own previous mode (mixed modes included)."""
    previous = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in previous:
            module.training = training


def _resize(slice2d: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """``scipy.ndimage.zoom`` of a 2-D array to ``shape`` (no-op when already that size, as released)."""
    if slice2d.shape == shape:
        return slice2d
    factors = (shape[0] / slice2d.shape[0], shape[1] / slice2d.shape[1])
    return zoom(slice2d, factors, order=order)


def _sum_of_heads(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Sum of the heads' logits in float32 (a lone tensor counts as one head)."""
    heads = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
    total = heads[0].float()
    for logits in heads[1:]:
        total = total + logits.float()
    return total


def predict_volume(model: nn.Module, image: np.ndarray, img_size: int, batch_size: int = 16,
                   device: torch.device | str | None = None, amp_dtype: torch.dtype | None = None) -> np.ndarray:
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

    Returns:
        np.int64 labels with the shape of ``image``.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"image must be a non-empty 2-D [H, W] or 3-D [D, H, W] array, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN/inf or non-numeric values")
    if int(img_size) != img_size or img_size < 1 or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"img_size and batch_size must be positive integers, got {img_size!r}, {batch_size!r}")
    img_size, batch_size = int(img_size), int(batch_size)
    model_device = _model_device(model)
    device = model_device if device is None else torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())  # 'cuda' means the current CUDA device
    if device != model_device:
        raise ValueError(f"device {device} differs from the model's device {model_device}; move the model first")

    slices = image[None] if image.ndim == 2 else image
    out_shape, net_shape = slices.shape[1:], (img_size, img_size)
    prediction = np.empty(slices.shape, dtype=np.int64)
    with _eval_mode(model), torch.inference_mode(), \
            torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for start in range(0, len(slices), batch_size):
            batch = np.stack([_resize(s, net_shape, IMAGE_ZOOM_ORDER) for s in slices[start:start + batch_size]])
            inputs = torch.from_numpy(batch.astype(np.float32, copy=False)).unsqueeze(1).to(device)
            labels = _sum_of_heads(model(inputs)).argmax(dim=1).cpu().numpy()
            for offset, label_slice in enumerate(labels):
                prediction[start + offset] = _resize(label_slice, out_shape, LABEL_ZOOM_ORDER)
    return prediction.reshape(image.shape)
