"""UniverSeg's released weights (JJGO/UniverSeg, e.g. ``universeg_v1_nf64_ss64_STA.pt``) in our networks.

Our CrossBlock U-Net holds UniverSeg's parameters tensor for tensor under other module names, so a released
``state_dict`` loads through a key mapping. The mapping is spelled out part by part (:data:`BLOCK_PARTS`), not found by
pattern substitution, and every tensor is checked by name and shape: a file of another layout fails naming the keys
that do not fit instead of loading half a network. Files are read with ``torch.load(weights_only=True)``; nothing is
downloaded.

Three uses:

* strict (``universeg``, :func:`load_universeg_weights` with ``strict=True``): every file tensor goes onto the
  model and every model tensor comes from the file; otherwise one ValueError naming the file and the keys.
* partial (``matchseg``, ``matchseg_wide``): the CrossBlocks and the head start from the file where the shapes
  agree; what stayed at initialisation (Joint Attention: gamma = 0, so with everything else loaded the network starts
  exactly as UniverSeg) and what was skipped for its shape is reported as a warning.
* importer (:func:`.universeg_import.universeg_checkpoint`, registered with
  ``networks.registry.register_weights_importer``): a bare file becomes a ``universeg`` checkpoint whose config is
  read off the tensors, so that test.py / predict.py take it as ``--checkpoint`` without training.
"""
from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .config import MatchSegConfig
from .joint_attention import JointAttention

logger = logging.getLogger(__name__)

ARCH = "universeg"  # the registered name an imported file is rebuilt as
# UniverSeg's model: grey query, support = image + one mask channel, one output logit, intensities in [0, 1]
FILE_CONVENTIONS = dict(in_chans=1, num_classes=2, joint_attention=0, input_norm="unit")
# (UniverSeg's stage, ours) and, inside a CrossBlock, (UniverSeg's module, ours)
STAGES = (("enc_blocks", "encoder"), ("dec_blocks", "decoder"))
BLOCK_PARTS = (("cross.cross_conv", "cross.conv"), ("target.vmapped.conv", "query_conv.0"),
               ("support.vmapped.conv", "support_conv.0"))
HEAD = (("out_conv.conv.weight", "head.weight"), ("out_conv.conv.bias", "head.bias"))
TENSORS = ("weight", "bias")
GREY_HINT = ("UniverSeg's weights are grey (1 input channel): build the model with in_chans=1 "
             "(the scripts: --in_chans 1)")
_BLOCK_KEY = re.compile(r"^(enc_blocks|dec_blocks)\.(\d+)\.")
_SHOWN = 4  # keys named in a message before "and N more"


class UniverSegWeightsWarning(UserWarning):
    """Part of a model was not started from a UniverSeg weights file (partial load)."""


@dataclass
class WeightsFit:
    """How a UniverSeg file's tensors fit a model: ``tensors`` (our name -> file tensor, shapes agreeing) is what
    loads; the other fields are what does not."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    wrong_shape: list[str] = field(default_factory=list)  # "file key [shape] (model: our key [shape])"
    not_in_model: list[str] = field(default_factory=list)  # file keys whose module the model does not have
    left_at_init: list[str] = field(default_factory=list)  # model keys that no file tensor maps onto


# ----- layout ----------------------------------------------------------------------------------------------------
def is_universeg_state(obj: Any) -> bool:
    """Whether ``obj`` (what torch.load returned) looks like a UniverSeg state_dict: a mapping with at least one
    ``enc_blocks.<i>.cross.cross_conv.weight`` (loose, so that a damaged file is still reported key by key)."""
    return isinstance(obj, Mapping) and any(
        isinstance(key, str) and _BLOCK_KEY.match(key) is not None and key.endswith(".cross.cross_conv.weight")
        for key in obj)


def universeg_key_map(state: Mapping[str, Any]) -> dict[str, str]:
    """File key -> our parameter name for every tensor of a UniverSeg state_dict; ValueError naming the unknown and
    missing keys when ``state`` is not exactly UniverSeg's layout (its depth read from the file's encoder blocks:
    n encoder blocks, n - 1 decoder blocks, the output convolution)."""
    if not isinstance(state, Mapping):
        raise ValueError(f"not UniverSeg's weight layout: the file holds a {type(state).__name__}, not a state_dict")
    keys = list(state)
    if not all(isinstance(key, str) for key in keys):
        raise ValueError("not UniverSeg's weight layout: the file is not a state_dict with string keys")
    encoder_depth = 1 + max((int(match.group(2)) for key in keys if (match := _BLOCK_KEY.match(key))
                             and match.group(1) == "enc_blocks"), default=-1)
    if encoder_depth == 0:
        raise ValueError(f"not UniverSeg's weight layout (no enc_blocks.<i>.* tensors; the file holds "
                         f"{_names(keys) or 'nothing'})")
    mapping: dict[str, str] = {}
    for (file_stage, our_stage), depth in zip(STAGES, (encoder_depth, encoder_depth - 1)):
        for index in range(depth):
            for file_part, our_part in BLOCK_PARTS:
                for tensor in TENSORS:
                    mapping[f"{file_stage}.{index}.{file_part}.{tensor}"] = f"{our_stage}.{index}.{our_part}.{tensor}"
    mapping.update(HEAD)
    present = set(keys)
    unknown = [key for key in keys if key not in mapping]
    missing = [key for key in mapping if key not in present]
    problems = ([f"unknown keys {_names(unknown)}"] if unknown else []) + \
               ([f"missing keys {_names(missing)}"] if missing else [])
    if problems:
        raise ValueError(f"not UniverSeg's weight layout of {encoder_depth} encoder and {encoder_depth - 1} decoder "
                         f"blocks: {'; '.join(problems)}")
    not_tensors = [key for key in keys if not isinstance(state[key], torch.Tensor)]
    if not_tensors:
        raise ValueError(f"not UniverSeg's weight layout: {_names(not_tensors)} hold no tensor")
    return mapping


def file_widths(state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """The encoder widths of a UniverSeg state_dict (the output channels of each block's cross convolution)."""
    widths, index = [], 0
    while (key := f"enc_blocks.{index}.cross.cross_conv.weight") in state:
        widths.append(int(state[key].shape[0]))
        index += 1
    return tuple(widths)


def file_config(state: Mapping[str, torch.Tensor]) -> MatchSegConfig:
    """The MatchSegConfig of UniverSeg's network at the file's widths (grey, binary, no Joint Attention, [0, 1]
    intensities; the other fields at their defaults, e.g. img_size 128, UniverSeg's training size)."""
    return MatchSegConfig(widths=file_widths(state), **FILE_CONVENTIONS)


# ----- fitting onto a model --------------------------------------------------------------------------------------
def fit_to_model(state: Mapping[str, torch.Tensor], mapping: Mapping[str, str],
                 model_state: Mapping[str, torch.Tensor]) -> WeightsFit:
    """Match the file's tensors to the model's by name (through ``mapping``) and shape."""
    fit = WeightsFit()
    for file_key, our_key in mapping.items():
        tensor = state[file_key]
        if our_key not in model_state:
            fit.not_in_model.append(file_key)
        elif tuple(tensor.shape) != tuple(model_state[our_key].shape):
            fit.wrong_shape.append(f"{file_key} {list(tensor.shape)} (model: {our_key} "
                                   f"{list(model_state[our_key].shape)})")
        else:
            fit.tensors[our_key] = tensor
    mapped = set(mapping.values())
    fit.left_at_init = [key for key in model_state if key not in mapped]
    return fit


def config_hints(config: MatchSegConfig, state: Mapping[str, torch.Tensor]) -> list[str]:
    """How ``config`` differs from the file's network, in words that say how to fix it."""
    hints = []
    if config.in_chans != 1:
        hints.append(GREY_HINT)
    if config.num_classes != 2:
        hints.append(f"UniverSeg predicts one foreground logit: num_classes=2 (the model has {config.num_classes})")
    if tuple(config.widths) != file_widths(state):
        hints.append(f"the file's widths are {file_widths(state)}, the model's {tuple(config.widths)}")
    return hints


def strict_problem(fit: WeightsFit, config: MatchSegConfig, state: Mapping[str, torch.Tensor]) -> str | None:
    """The one-line reason why ``fit`` is not a complete, exact load, or None."""
    problems = []
    if fit.wrong_shape:
        problems.append(f"{len(fit.wrong_shape)} tensor(s) of another shape: {_names(fit.wrong_shape)}")
    if fit.not_in_model:
        problems.append(f"tensors the model has no place for: {_names(fit.not_in_model)}")
    if fit.left_at_init:
        problems.append(f"model parameters the file lacks: {_names(fit.left_at_init)}")
    if not problems:
        return None
    return "UniverSeg weights that do not fit the model: " + "; ".join(problems + config_hints(config, state))


def load_universeg_weights(model: nn.Module, path: str | Path, *, strict: bool) -> WeightsFit:
    """Load the UniverSeg weights file ``path`` into ``model`` (a MatchSeg). ``strict``: all or nothing (one
    ValueError naming the file and the offending keys); otherwise what fits loads and a warning names the rest.
    A file of another layout is an error either way, and so is a partial load that starts no convolution."""
    state = read_weights_file(path)
    config = model.config
    try:
        fit = fit_to_model(state, universeg_key_map(state), model.state_dict())
        problem = strict_problem(fit, config, state) if strict else None
        if problem is None and not any(key.endswith(".weight") for key in fit.tensors):
            problem = "no convolution of the file fits the model: " + "; ".join(config_hints(config, state))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    model.load_state_dict(fit.tensors, strict=False)
    logger.info("loaded %d of %d tensors of %s (UniverSeg weights)", len(fit.tensors), len(state), path)
    notes = [] if strict else _partial_notes(model, fit, config, state)
    if config.input_norm != FILE_CONVENTIONS["input_norm"]:
        notes.append(f"UniverSeg's weights were trained on intensities in [0, 1] but the model takes "
                     f"input_norm={config.input_norm!r} (--input_norm unit keeps UniverSeg's convention)")
    for note in notes:
        message = f"{path}: {note}"
        warnings.warn(message, UniverSegWeightsWarning, stacklevel=5)
        logger.warning(message)
    return fit


def _partial_notes(model: nn.Module, fit: WeightsFit, config: MatchSegConfig,
                   state: Mapping[str, torch.Tensor]) -> list[str]:
    notes = []
    if fit.wrong_shape:
        hints = config_hints(config, state)
        notes.append(f"skipped {len(fit.wrong_shape)} file tensor(s) of another shape, left at initialisation: "
                     f"{_names(fit.wrong_shape)}" + (f" ({'; '.join(hints)})" if hints else ""))
    if fit.not_in_model:
        notes.append(f"skipped file tensors the model has no place for: {_names(fit.not_in_model)}")
    if fit.left_at_init:
        # the module of each parameter at the model's top two levels, e.g. encoder_attention.2
        modules = list(dict.fromkeys(".".join(key.split(".")[:2]) if key.count(".") > 1 else key.split(".")[0]
                                     for key in fit.left_at_init))
        attention_only = all(isinstance(model.get_submodule(name), JointAttention) for name in modules)
        exact = attention_only and not fit.wrong_shape and not fit.not_in_model
        notes.append(f"not in the file, left at initialisation: {_names(modules, limit=12)}"
                     + (" (Joint Attention, gamma = 0: the network starts exactly as UniverSeg)" if exact else ""))
    return notes


def read_weights_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; ValueError naming the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: UniverSeg weights file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or unsafe files
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"{path}: cannot read weights (corrupt or not a PyTorch file): {type(exc).__name__}: "
                         f"{first_line}") from exc


def _names(items: Iterable[str], limit: int = _SHOWN) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
