"""The Python API: segment images and scans from a notebook or script exactly as ``predict.py`` does, and score them
as ``test.py`` does (docs/api.md).

    import api
    seg = api.Segmenter.from_checkpoint("runs/synapse_small_224/last.pth")   # the model is loaded once
    labels = seg.segment("scans/case01.nii.gz")          # an array in the file's voxel order (x, y, z)
    image = nib.load("scans/case02.nii.gz"); seg.segment(image)              # -> a nibabel image, same affine
    rows = api.evaluate(labels, truth, spacing=(0.8, 0.8, 2.5))               # test.py's per-class rows

Every input takes predict.py's path (:class:`utils.predict.Segmenter`: the data set's normalisation, the training
orientation and slicing of volumes, the preparation's resize of images, test-time augmentation, a support-set
model's supports), so ``segment`` equals predict.py's output file voxel for voxel. Inputs: a path (NIfTI, DICOM
series folder or file, prepared .npz / .npy.h5, PNG / JPEG / BMP), a nibabel image, a numpy array (a volume (x, y, z)
with ``affine=`` or ``spacing=``; a picture uint8 [H, W, 3] or [H, W]) or a PIL image. Labels come back in the
input's own geometry: a nibabel image for a nibabel input, an array otherwise (a prepared volume file: its stored
[D, H, W]).

A bad input (image, argument, support pair) raises :class:`DataError` naming the file or the argument; a checkpoint
that cannot be used raises ``CheckpointError`` (``utils.checkpoint``). Both are one line.
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from datasets.errors import DataError
from datasets.io.images import png_bytes
from datasets.io.nifti import label_nifti_image, mm_per_unit
from datasets.io.pairs import IMAGES_DIR, MASK_SUFFIX, MASKS_DIR
from datasets.io.volumes import checked_volume
from utils.batch_context import model_context
from utils.checkpoint import CheckpointError
from utils.evaluator import CSV_COLUMNS, class_labels
from utils.metrics import METRIC_NAMES, PROTOCOLS, case_metrics
from utils.predict.inputs import find_inputs
from utils.predict.readers import DEEP_GREY_MODES, check_rgb
from utils.predict.segmenter import Segmenter as Core
from utils.predict.segmenter import segment_input, load_segmenter

__all__ = ["Segmenter", "segment", "evaluate", "DataError", "CheckpointError"]

ImageInput = Any  # str | os.PathLike | nib.Nifti1Image | np.ndarray | PIL.Image.Image


class Segmenter:
    """A checkpoint's model, loaded once, with predict.py's preprocessing: ``segment`` as many inputs as you like."""

    def __init__(self, core: Core, support_folder: tempfile.TemporaryDirectory | None = None) -> None:
        self.core = core
        self._support_folder = support_folder  # a support list written as a pair folder, kept while in use

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike, *, device: str | None = None, tta: str | None = None,
                        support: str | os.PathLike | Sequence[tuple[Any, Any]] | None = None,
                        dataset: str | None = None, orientation: str | None = None, batch_size: int = 16,
                        amp: str = "none", **context_options: Any) -> Segmenter:
        """Load ``checkpoint`` (predict.py's options: ``device`` None = CUDA when present; ``tta`` None / 'none' or
        'flip'; ``dataset``: whose preprocessing, default the checkpoint's; ``orientation`` of volumes).
        Support-set models (MatchSeg, UniverSeg): ``support`` is a folder (images/ + masks/) or a list of
        (image, mask) pairs (uint8 [H, W, 3] or PIL; mask: class indices or 0/255), default the checkpoint's
        training split; ``context_options`` override the checkpoint's (e.g. ``support_size=4``)."""
        folder = None
        if support is not None and not isinstance(support, (str, os.PathLike)):
            folder = tempfile.TemporaryDirectory(prefix="support_")
            support = write_support_pairs(support, Path(folder.name) / "pool")
            context_options.setdefault("support_cache", str(Path(folder.name) / "cache"))
        core = load_segmenter(checkpoint, dataset=dataset, device=device or "auto", amp=amp, batch_size=batch_size,
                              tta=tta or "none", orientation=orientation, support=support,
                              context_options=context_options)
        provider = model_context(core.model.arch)
        known = set() if provider is None else {item.name for item in dataclasses.fields(provider.options)}
        unknown = sorted(set(context_options) - known)
        if unknown:  # a misspelt option would otherwise be ignored
            raise DataError(unknown[0], f"not an option of {core.model.arch} (its options: "
                                        f"{', '.join(sorted(known)) or 'none'})")
        return cls(core, folder)

    @property
    def class_names(self) -> list[str]:
        """Foreground class names (label 1, 2, ...)."""
        return list(self.core.class_names)

    @property
    def model(self):
        return self.core.model

    def segment(self, image: ImageInput, *, spacing: Sequence[float] | None = None, affine: Any = None,
                probabilities: bool = False):
        """Labels of ``image`` in its own geometry (see the module docstring); with ``probabilities=True``
        ``(labels, probabilities float32 [K, ...])`` on the labels' axes (background first)."""
        if isinstance(image, (str, os.PathLike)):
            labels, scores = self._path(image, probabilities)
        elif isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            labels, scores = self._nibabel(image, probabilities)
        elif isinstance(image, Image.Image):
            labels, scores = self._picture(pil_picture(image, "image", self.core.spec.in_chans), probabilities)
        elif isinstance(image, np.ndarray):
            if self.core.kind == "volume":
                data = checked_volume("image", image, "array")
                result = self.core.volume(data, array_affine(affine, spacing), probabilities=probabilities)
                labels, scores = result.labels, result.probabilities
            else:
                labels, scores = self._picture(array_picture(image, self.core.spec.in_chans), probabilities)
        else:
            raise DataError("image", f"expected a path, a nibabel image, a numpy array or a PIL image, got "
                                     f"{type(image).__name__}")
        return (labels, scores) if probabilities else labels

    def _path(self, path: str | os.PathLike, probabilities: bool):
        items, _ = find_inputs(path, self.core.kind)
        if len(items) != 1 or Path(path).is_dir() and items[0].format != "dicom":
            raise DataError(path, f"holds {len(items)} inputs; give one file or DICOM series (a folder: loop over "
                                  f"its files)")
        result, _ = segment_input(self.core, items[0], probabilities=probabilities)
        return result.labels, result.probabilities

    def _nibabel(self, image: nib.Nifti1Image, probabilities: bool):
        if self.core.kind != "volume":
            raise DataError("image", f"a NIfTI volume, but the {self.core.spec.name} model segments 2-D images")
        name = image.get_filename() or "image"
        data = checked_volume(name, np.asanyarray(image.dataobj), "NIfTI image")
        result = self.core.volume(data, np.asarray(image.affine, dtype=np.float64), probabilities=probabilities,
                                  path=name)
        labels = label_nifti_image(result.labels, image.affine, image.header, self.core.num_classes)
        return labels, result.probabilities

    def _picture(self, picture: np.ndarray, probabilities: bool):
        if self.core.kind != "image":
            raise DataError("image", f"a 2-D picture, but the {self.core.spec.name} model segments volumes: give "
                                     f"a 3-D array with affine= or spacing=, a nibabel image or a path")
        result = self.core.picture(picture, probabilities=probabilities)
        return result.labels, result.probabilities


def segment(image: ImageInput, checkpoint: str | os.PathLike | Segmenter, *, device: str | None = None,
            tta: str | None = None, support: Any = None, spacing: Sequence[float] | None = None,
            affine: Any = None, probabilities: bool = False):
    """One input segmented with ``checkpoint`` (a path, loaded for this call, or a :class:`Segmenter`, reused):
    ``Segmenter.from_checkpoint(checkpoint, ...).segment(image, ...)``; in a loop, make the Segmenter once."""
    if not isinstance(checkpoint, Segmenter):
        checkpoint = Segmenter.from_checkpoint(checkpoint, device=device, tta=tta, support=support)
    return checkpoint.segment(image, spacing=spacing, affine=affine, probabilities=probabilities)


def evaluate(prediction: Any, label: Any, spacing: Sequence[float] | float | None = None,
             protocol: str = "transunet", *, num_classes: int | None = None,
             class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """test.py's metrics.csv rows of one case: ``[{"class": name, "dice": .., "hd95": .., "jaccard": .., "asd": ..}]``
    per foreground class (``utils.metrics.case_metrics``, the same function). Label maps as arrays or nibabel
    images (their voxel size is the spacing unless ``spacing`` is given; HD95 / ASD are in its units, voxels
    without one); ``num_classes`` defaults to the largest label + 1, ``class_names`` to class_1, class_2, ..."""
    if protocol not in PROTOCOLS:
        raise DataError("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    arrays = []
    for name, value in (("prediction", prediction), ("label", label)):
        if isinstance(value, (nib.Nifti1Image, nib.Nifti2Image)):
            if spacing is None:
                spacing = tuple(float(z) * mm_per_unit(value.header) for z in value.header.get_zooms()[:3])
            value = np.asanyarray(value.dataobj)
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.integer) and not (np.round(value) == value).all():
            raise DataError(name, f"label map holds non-integer values ({value.dtype})")
        arrays.append(value.astype(np.int64))
    if arrays[0].shape != arrays[1].shape:
        raise DataError("label", f"shape {arrays[1].shape} differs from the prediction's {arrays[0].shape}")
    num_classes = num_classes or max(2, int(max(arrays[0].max(initial=0), arrays[1].max(initial=0))) + 1)
    try:
        metrics = case_metrics(arrays[0], arrays[1], num_classes, protocol=protocol, spacing=spacing)
    except ValueError as exc:
        raise DataError("prediction", str(exc)) from exc
    names = class_labels(class_names or [], num_classes)
    return [{CSV_COLUMNS[1]: name, **dict(zip(METRIC_NAMES, map(float, row)))} for name, row in zip(names, metrics)]


# ----------------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------------
def array_affine(affine: Any, spacing: Sequence[float] | None) -> np.ndarray:
    """The voxel -> world affine of an array volume: ``affine`` (4 x 4, nibabel's: RAS world), else
    ``diag(spacing)``: the array's axes taken as R, A, S, as nibabel takes a diagonal affine."""
    if affine is not None:
        affine = np.asarray(affine, dtype=np.float64)
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise DataError("affine", f"expected a finite 4 x 4 voxel -> world matrix, got shape {affine.shape}")
        return affine
    if spacing is None:
        raise DataError("affine", "an array volume needs its geometry: give affine= (4 x 4, as nibabel's) or "
                                  "spacing= (mm per voxel along x, y, z)")
    values = np.asarray(spacing, dtype=np.float64).ravel()
    if values.shape != (3,) or not (values > 0).all():
        raise DataError("spacing", f"expected 3 positive voxel sizes (x, y, z) in mm, got {list(values)}")
    return np.diag([*values, 1.0])


def array_picture(array: np.ndarray, channels: int, name: str = "image") -> np.ndarray:
    """uint8 [H, W, channels] of an array picture; a grey [H, W] one repeated in the channels (as predict.py
    repeats grey files)."""
    if array.ndim == 2:
        array = np.repeat(array[..., None], channels, axis=-1)
    return check_rgb(name, array, channels)


def pil_picture(image: Image.Image, name: str, channels: int) -> np.ndarray:
    """uint8 [H, W, channels] of a PIL image, converted as predict.py converts image files."""
    if image.mode in DEEP_GREY_MODES:
        raise DataError(name, f"16-bit or float grey image (mode {image.mode}): the model takes 8-bit images; "
                              f"convert it to 8 bits with the window you want")
    return check_rgb(name, np.asarray(image.convert("RGB"), dtype=np.uint8), channels)


def write_support_pairs(pairs: Sequence[tuple[Any, Any]], folder: Path) -> str:
    """A list of (image, mask) pairs as a support folder (images/NNN.png, masks/NNN.png), so that it is checked and
    read as predict.py's ``--support`` folder is."""
    if not isinstance(pairs, Sequence) or not pairs:
        raise DataError("support", "expected a folder or a non-empty list of (image, mask) pairs")
    (folder / IMAGES_DIR).mkdir(parents=True)
    (folder / MASKS_DIR).mkdir()
    for index, pair in enumerate(pairs):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise DataError(f"support[{index}]", "expected an (image, mask) pair")
        image, mask = pair
        where = f"support[{index}]"
        picture = pil_picture(image, where, 3) if isinstance(image, Image.Image) else array_picture(
            np.asarray(image), 3, where)
        mask = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask)
        if mask.shape != picture.shape[:2] or not np.issubdtype(mask.dtype, np.integer) or mask.min() < 0 \
                or mask.max() > 255:
            raise DataError(where, f"mask {mask.shape} {mask.dtype}: expected integer class indices (or 0/255) of "
                                   f"the image's size {picture.shape[:2]}")
        (folder / IMAGES_DIR / f"{index:04d}.png").write_bytes(png_bytes(picture))
        (folder / MASKS_DIR / f"{index:04d}{MASK_SUFFIX}").write_bytes(png_bytes(mask.astype(np.uint8)))
    return str(folder)
