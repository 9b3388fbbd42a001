"""A segmentation_models_pytorch network as a :class:`~networks.base.SegmentationModel`.

smp is imported when a model is built (not when ``networks`` is imported), and always with
``encoder_weights=None``: nothing is ever downloaded. Pretrained encoders come from a local file
(:func:`load_encoder_weights`).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..base import SegmentationModel
from ..shared.logs import model_logger
from .config import SMPEncoderConfig

logger = model_logger(__name__)  # a child of the runs' logger: the weights line shows in log.txt

# Number of channels of the RGB checkpoints that an encoder file usually holds (ImageNet).
RGB_CHANNELS = 3
# Wrappers and key prefixes of files that hold an encoder among other weights: {"state_dict": ...} (Lightning,
# many releases), {"model": ...} (this project's checkpoints); a whole smp model, or an SMPModel.
_WRAPPER_KEYS = ("state_dict", "model")
_PREFIXES = ("encoder.", "net.encoder.", "module.encoder.", "module.net.encoder.", "module.")


def _smp():
    try:
        import segmentation_models_pytorch
    except ImportError as error:  # pragma: no cover - the package is pinned in requirements.txt
        raise ImportError("the smp baselines need segmentation-models-pytorch (pip install -r requirements.txt)") \
            from error
    return segmentation_models_pytorch


class SMPModel(SegmentationModel):
    """forward(x [B, in_chans, H, W]) -> logits [B, num_classes, H, W] (one head) of an smp architecture.

    ``architecture`` is the smp class name (``Unet``, ``UnetPlusPlus``, ``FPN``); ``self.net`` the smp network.
    H and W must be multiples of ``2 ** encoder_depth`` (the data pipeline feeds ``img_size`` x ``img_size``).
    ``pretrained``: None or False: random initialisation; a path: a local encoder weights file (see
    :func:`load_encoder_weights`).
    """

    def __init__(self, config: SMPEncoderConfig, architecture: str, *, pretrained: bool | str | Path | None = None):
        super().__init__()
        self.config = config
        self.architecture = architecture
        smp = _smp()
        network_class = getattr(smp, architecture)
        try:
            self.net = network_class(encoder_name=config.encoder_name, encoder_depth=config.encoder_depth,
                                     encoder_weights=None, in_channels=config.in_chans, classes=config.num_classes,
                                     activation=None, **config.decoder_kwargs())
        except KeyError as error:  # smp's message for an unknown encoder lists the known ones
            raise ValueError(f"{architecture}: unknown encoder_name {config.encoder_name!r} "
                             f"({error.args[0] if error.args else error})") from error
        if pretrained is True:
            raise ValueError(f"{architecture}: pretrained=True would download weights; give the path of a local "
                             f"{config.encoder_name} encoder weights file instead")
        if pretrained not in (None, False):
            load_encoder_weights(self.net.encoder, pretrained, config.encoder_name, config.in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        divisor = self.config.size_divisor
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input [B, {self.in_chans}, H, W], got {tuple(x.shape)}")
        if x.shape[-2] % divisor or x.shape[-1] % divisor:
            raise ValueError(f"input height and width must be multiples of {divisor} (2 ** encoder_depth), "
                             f"got {tuple(x.shape[-2:])}")
        return self.net(x)


def load_encoder_weights(encoder: nn.Module, path: str | Path, encoder_name: str, in_chans: int) -> None:
    """Load a local weights file into an smp encoder (strict: every encoder tensor, nothing else).

    Accepted: a state_dict (``torch.save`` or ``.safetensors``), possibly wrapped as ``{"state_dict": ...}`` or
    ``{"model": ...}`` and with the encoder under ``encoder.`` / ``net.encoder.`` (a whole smp model or a checkpoint
    of this family). Classifier tensors that the encoder drops (torchvision ResNet's ``fc.*``) are ignored by smp's
    encoder. A file of RGB weights fits a grey (or other) input: the first convolution is adapted as smp does for
    ImageNet weights (summed over RGB for one channel; cycled and rescaled otherwise). Raises ValueError naming
    the file when it is missing, unreadable or of another architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: encoder weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch/pickle/safetensors raise many types for a damaged or foreign file
        raise ValueError(f"{path}: cannot read weights ({type(error).__name__}: {error})") from error
    for key in _WRAPPER_KEYS:
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: not a state_dict (a mapping of names to tensors)")
    expected = encoder.state_dict()
    state = _strip_prefix(dict(state), set(expected))
    state = _adapt_first_conv(state, expected, in_chans)
    try:
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        if len(detail) > 400:
            detail = detail[:400] + " ..."
        raise ValueError(f"{path}: not a {encoder_name} encoder checkpoint ({detail})") from error
    logger.info("loaded %s encoder weights from %s", encoder_name, path)


def _strip_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """``state`` itself when it names encoder tensors, else its part under the first prefix that does."""
    if expected & set(state):
        return state
    for prefix in _PREFIXES:
        part = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if expected & set(part):
            return part
    return state


def _adapt_first_conv(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                      in_chans: int) -> dict[str, torch.Tensor]:
    """RGB weights of the one convolution that reads the image, refitted to ``in_chans`` input channels."""
    if in_chans == RGB_CHANNELS:
        return state
    candidates = [key for key, value in state.items()
                  if key in expected and value.ndim == 4 and expected[key].ndim == 4
                  and value.shape[1] == RGB_CHANNELS and expected[key].shape[1] == in_chans
                  and value.shape[0] == expected[key].shape[0] and value.shape[2:] == expected[key].shape[2:]]
    if len(candidates) != 1:
        return state  # nothing (or nothing unambiguous) to adapt: the strict load reports any mismatch
    key = candidates[0]
    weight = state[key]
    if in_chans == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        index = torch.arange(in_chans) % RGB_CHANNELS
        adapted = weight[:, index] * (RGB_CHANNELS / in_chans)
    return {**state, key: adapted.contiguous()}
