"""Arrays in, arrays out: a checkpoint's model with its data set's preprocessing, the path every predict.py input
takes between reading and writing (:mod:`.run` reads the files and writes the outputs around it) and the one the
Python API (``api.py``) calls on arrays, so that both segment an input identically by construction.

A raw volume (voxels (x, y, z) + affine) is reoriented to the training orientation, normalised, sliced [D, H, W],
predicted and put back in its own voxel order; a picture (uint8 [H, W, C]) is resized to the network with the
preparation's resize, normalised, predicted (with its supports, for a support-set model) and its labels resized back.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from datasets import get_dataset, list_datasets
from datasets.episodes.providers import ContextProvider, ContextSource
from datasets.errors import DataError
from datasets.io.pairs import IMAGES_DIR, MASKS_DIR, PairFolder
from datasets.registry import DatasetSpec, RawInput, is_orientation
from utils.batch_context import context_options, model_context, training_pool
from utils.checkpoint import CheckpointError, build_model_from_checkpoint
from utils.config import TrainConfig, saved_options
from utils.evaluator import check_input_channels, class_labels, item_context, predict_case
from utils.inference import PROBABILITY_ZOOM_ORDER, TTA_MODES, resize_slice, resolve_device
from utils.model_input import InputConversion, convert_entries, image_keys, model_input_conversion
from utils.runlog import amp_dtype

from .geometry import SliceLayout
from .inputs import InputItem
from .readers import prepared_volume, read_picture, read_raw_volume

__all__ = ["STORED_ORIENTATION", "Segmenter", "VolumeSegmentation", "PictureSegmentation", "load_segmenter",
           "segment_input"]

STORED_ORIENTATION = "stored"  # orientation 'stored': keep the input's voxel order


@dataclass
class VolumeSegmentation:
    """A volume's result: ``labels`` (and ``probabilities`` [K, ...]) in the input's voxel order; ``volume`` and
    ``network_labels`` in the training layout [D, H, W] (overlays); ``seconds`` of network time."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    volume: np.ndarray
    network_labels: np.ndarray
    seconds: float


@dataclass
class PictureSegmentation:
    """A picture's result at its own size H x W: ``labels`` [H, W], ``probabilities`` [K, H, W]; ``context`` and
    ``support_names``: a support-set model's supports (empty otherwise); ``seconds`` of network time."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    context: dict
    support_names: list[str]
    seconds: float


@dataclass
class Segmenter:
    """A loaded model, its data set's spec and the inference options (see the module docstring)."""

    model: torch.nn.Module
    spec: DatasetSpec
    class_names: list[str]
    device: torch.device
    orientation: str | None  # training orientation of raw volumes (axis codes), None: the stored voxel order
    conversion: InputConversion | None = None  # the data set's images -> the model's input (utils.model_input)
    queries: Any = None  # a support-set model's context of single images (ContextProvider.for_queries), or None
    context_keys: tuple[str, ...] = ("image",)  # entries the conversion applies to
    batch_size: int = 16
    amp: str = "none"
    tta: str = "none"
    checkpoint: str = ""
    notes: list[str] = field(default_factory=list)
    keep: Any = None  # what must live as long as this segmenter (a temporary support folder)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def infer(self, image: np.ndarray, context: dict | None = None,
              probabilities: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, probabilities or None) of a volume [D, H, W] or image [C, H, W] in the data set's normalisation
        (converted to the model's input here) with its context entries (e.g. supports; None: none)."""
        entries = convert_entries({"image": image, **(context or {})}, self.conversion, self.context_keys)
        image = entries.pop("image")
        result = predict_case(self.model, image, kind=self.kind, img_size=self.model.img_size,
                              batch_size=self.batch_size, device=self.device, amp=amp_dtype(self.amp),
                              context=item_context(entries, self.model, self.kind) if entries else None,
                              tta=self.tta, return_probabilities=probabilities)
        return result if probabilities else (result, None)

    def raw_input(self, path: str | os.PathLike) -> RawInput:
        """The data set's preprocessing of raw inputs; DataError (naming ``path``) when it declares none."""
        if self.spec.raw is None:
            raise DataError(path, f"data set {self.spec.name} declares no preprocessing of raw inputs "
                                  f"(DatasetSpec.raw); give its prepared format (.npz / .npy.h5)")
        return self.spec.raw

    def volume(self, data: np.ndarray, affine: np.ndarray, *, probabilities: bool = False,
               path: str | os.PathLike = "image") -> VolumeSegmentation:
        """A raw volume (x, y, z) with its voxel -> world affine, segmented in the training orientation and layout,
        the result in the input's voxel order."""
        raw_input = self.raw_input(path)
        if raw_input.scan is not None:  # the preparation's own path (resampling) and the way back to this grid
            volume, back = raw_input.scan(data, affine)
            result = self.prepared_volume(volume, probabilities=probabilities)
            result.labels = back(result.network_labels)
            if result.probabilities is not None:
                result.probabilities = back(result.probabilities)
            return result
        layout = SliceLayout.of(affine, self.orientation, raw_input.slice_axes, path)
        volume = layout.forward(np.asarray(raw_input.normalize(data), dtype=np.float32))
        result = self.prepared_volume(volume, probabilities=probabilities)
        result.labels = layout.backward(result.network_labels)
        if result.probabilities is not None:
            result.probabilities = layout.backward(result.probabilities)
        return result

    def prepared_volume(self, volume: np.ndarray, *, probabilities: bool = False) -> VolumeSegmentation:
        """A volume [D, H, W] as the test scripts read it (already normalised, in the training layout)."""
        start = time.perf_counter()
        labels, scores = self.infer(volume, probabilities=probabilities)
        return VolumeSegmentation(labels, scores, volume, labels, time.perf_counter() - start)

    def picture(self, picture: np.ndarray, *, probabilities: bool = False, prepared: bool = False,
                path: str | os.PathLike = "image", query_path: str | None = None) -> PictureSegmentation:
        """A picture uint8 [H, W, C] (``prepared``: a prepared file's image, not resized), its labels at H x W.
        ``query_path``: the file it was read from, never its own support (None for an array)."""
        raw_input = self.raw_input(path)
        height, width = picture.shape[:2]
        size = self.model.img_size
        resized = not prepared and raw_input.resize is not None and (height, width) != (size, size)
        network_image = raw_input.resize(picture, (size, size)) if resized else picture
        context, names = self.queries.context(picture, query_path) if self.queries is not None else ({}, [])
        start = time.perf_counter()
        # (a writable copy: PIL's arrays are read-only, which torch.as_tensor warns about)
        labels, scores = self.infer(np.asarray(raw_input.normalize(np.array(network_image)), dtype=np.float32),
                                    context, probabilities)
        seconds = time.perf_counter() - start
        if resized:
            labels = np.asarray(raw_input.resize_label(labels.astype(np.uint8), (height, width)))
            if scores is not None:
                scores = np.stack([resize_slice(p, (height, width), PROBABILITY_ZOOM_ORDER) for p in scores])
        return PictureSegmentation(labels, scores, context, names, seconds)


def segment_input(segmenter: Segmenter, item: InputItem, *, probabilities: bool = False):
    """One input read as predict.py reads it and segmented: ``(result, source)``, the source being the RawVolume
    of a raw volume (geometry, header), the picture uint8 [H, W, C] of an image, None for a prepared volume (whose
    labels stay in the prepared layout [D, H, W])."""
    spec = segmenter.spec
    if segmenter.kind == "volume" and item.format == "prepared":
        return segmenter.prepared_volume(prepared_volume(item.path, spec), probabilities=probabilities), None
    segmenter.raw_input(item.path)  # before reading: a set without raw preprocessing is refused first
    if segmenter.kind == "volume":
        raw = read_raw_volume(item)
        return segmenter.volume(raw.data, raw.affine, probabilities=probabilities, path=item.path), raw
    picture = read_picture(item, spec, spec.in_chans)  # as the data set holds images (converted for the model)
    return segmenter.picture(picture, probabilities=probabilities, prepared=item.format == "prepared",
                             path=item.path, query_path=str(item.path)), picture


def query_context(checkpoint: str, provider: ContextProvider, trained: TrainConfig, spec: DatasetSpec,
                  model: torch.nn.Module, device: torch.device, support: str | None, given_options: dict, seed: int):
    """The model's context of single input images (a support-set model: k supports per image from a pool): the
    pool is ``support`` (a folder of labelled pairs) or else the checkpoint's training split; the options are the
    checkpoint's, overridden by those given. One error line for a bad pool, before anything is written."""
    if provider.for_queries is None:
        raise CheckpointError(checkpoint, f"{model.arch} needs a {provider.name} context, which cannot be built "
                                          f"for single images")
    options = context_options(provider, trained.context_options, given_options)
    hint = f"give --support DIR ({IMAGES_DIR}/<stem>.png|jpg|bmp + {MASKS_DIR}/<stem>.png)"
    if support:
        pool = ContextSource(spec, PairFolder(support, model.num_classes), None)
    else:
        try:
            pool = training_pool(provider, options, trained.run, checkpoint, model.num_classes, seed, hint=hint)
        except DataError as exc:
            raise DataError(exc.path, f"{exc.problem} (the checkpoint's training pool is not here; {hint})") from exc
    return provider.for_queries(pool, options, img_size=model.img_size,
                                seed=seed if trained.run.seed is None else int(trained.run.seed), device=str(device))


def checkpoint_dataset(checkpoint: str, dataset: str | None, trained: TrainConfig, notes: list[str]) -> DatasetSpec:
    """The data set whose preprocessing applies: ``dataset`` (overriding the checkpoint's) or the checkpoint's."""
    trained_on = trained.run.dataset
    name = dataset or trained_on
    if name is None:
        raise CheckpointError(checkpoint, f"the checkpoint names no data set (options.run.dataset): give --dataset "
                                          f"({', '.join(list_datasets())})")
    spec = get_dataset(name)
    if trained_on is not None and dataset is not None and get_dataset(trained_on).name != spec.name:
        notes.append(f"--dataset {spec.name}: preprocessing of {spec.name}, although the checkpoint was trained on "
                     f"{trained_on}")
    return spec


def load_segmenter(checkpoint: str | os.PathLike, *, dataset: str | None = None, device: str = "auto",
                   amp: str = "none", batch_size: int = 16, tta: str = "none", orientation: str | None = None,
                   support: str | os.PathLike | None = None, context_options: dict | None = None,
                   seed: int = 2222) -> Segmenter:
    """The checkpoint's model on ``device`` with the preprocessing of its data set (or ``dataset``'s), predict.py's
    options (``orientation``: None = the data set's, 'stored' or axis codes; ``support``: a support-set model's
    pool folder, default the checkpoint's training split). One-line errors (CheckpointError, DataError,
    ValueError) for a bad checkpoint, option or pool; notes on what was assumed in ``.notes``."""
    checkpoint = os.fspath(checkpoint)
    if orientation not in (None, STORED_ORIENTATION) and not is_orientation(orientation):
        raise ValueError(f"--orientation must be '{STORED_ORIENTATION}' or 3 axis codes such as LPS or RAS, got "
                         f"{orientation!r}")
    if tta not in TTA_MODES:
        raise ValueError(f"--tta must be one of {', '.join(TTA_MODES)}, got {tta!r}")
    device = resolve_device(device)
    notes: list[str] = []
    model, ckpt = build_model_from_checkpoint(checkpoint, map_location="cpu")
    trained = saved_options(ckpt)  # the training run's options: prediction reads the checkpoint's only here
    spec = checkpoint_dataset(checkpoint, dataset, trained, notes)
    check_input_channels(checkpoint, model, spec.name)
    conversion = model_input_conversion(spec, model)
    if conversion is not None:
        notes.append(f"{model.arch} input: {conversion.describe()}")
    provider = model_context(model.arch)
    queries = None
    if provider is not None:  # before any output exists: a bad pool writes nothing
        queries = query_context(checkpoint, provider, trained, spec, model, device,
                                None if support is None else os.fspath(support), context_options or {}, seed)
        notes.append(f"{provider.name}: {queries.info}")
    elif support:
        raise ValueError(f"--support {support}: {model.arch} takes no support set")
    model.to(device).eval()
    trained_orientation = spec.raw.orientation if spec.raw is not None else None
    if orientation is not None:
        trained_orientation = None if orientation == STORED_ORIENTATION else orientation
    return Segmenter(model, spec, class_labels(spec.class_names, model.num_classes), device, trained_orientation,
                     conversion, queries, image_keys(provider), batch_size, amp, tta, checkpoint, notes)
