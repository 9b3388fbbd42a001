"""The prediction run (:func:`predict`): the checkpoint's model and data set, each input read, predicted and written
(see :mod:`utils.predict` for what goes in and comes out)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from datasets import get_dataset, list_datasets
from datasets.episodes.providers import ContextProvider, ContextSource
from datasets.errors import DataError
from datasets.io.atomic import atomic_write_bytes, atomic_write_text
from datasets.io.images import png_bytes
from datasets.io.nifti import NIFTI_AFFINE, label_dtype, label_nifti_bytes
from datasets.io.pairs import IMAGES_DIR, MASKS_DIR, PairFolder
from datasets.registry import DatasetSpec, RawInput, is_orientation
from utils.batch_context import context_options, model_context, training_pool
from utils.checkpoint import CheckpointError, build_model_from_checkpoint
from utils.config import TrainConfig, saved_options
from utils.evaluator import check_input_channels, class_labels, item_context, most_foreground_slices, predict_case
from utils.inference import PROBABILITY_ZOOM_ORDER, resize_slice, resolve_device
from utils.model_input import InputConversion, convert_entries, image_keys, model_input_conversion
from utils.runlog import CreatedPaths, amp_dtype, removed_on_failure, seed_everything
from utils.visual import display_rgb, image_grid, overlay, save_png, side_by_side

from .geometry import SliceLayout, voxel_volume_mm3
from .inputs import IMAGE_FORMATS, VOLUME_FORMATS, InputItem, find_inputs
from .readers import prepared_volume, read_picture, read_raw_volume
from .writers import (
    CONTEXT_CSV, LABEL_SUFFIX, OVERLAY_DIR, PROBABILITIES_SUFFIX, VOLUMES_CSV, context_csv_text, existing_labels,
    probabilities_bytes, volume_rows, volumes_csv_text,
)

__all__ = ["PredictConfig", "PredictSummary", "Predictor", "predict", "STORED_ORIENTATION"]

STORED_ORIENTATION = "stored"  # --orientation stored: keep the input's voxel order


@dataclass
class PredictConfig:
    """A prediction run (the options of ``predict.py``)."""

    checkpoint: str
    input: str
    output: str
    dataset: str | None = None  # None: the checkpoint's training set
    device: str = "auto"
    amp: str = "none"
    batch_size: int = 16
    tta: str = "none"
    save_probabilities: bool = False
    save_overlays: int = 0
    overwrite: bool = False
    orientation: str | None = None  # None: the data set's training orientation; 'stored' or axis codes otherwise
    seed: int = 2222
    support: str | None = None  # a folder of labelled pairs (images/, masks/): the pool of a support-set model
    context_options: dict = field(default_factory=dict)  # the batch context's options (None: the checkpoint's)


@dataclass
class PredictSummary:
    """What a run did: output label maps written, inputs skipped (outputs present), failures (path, problem)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Predictor:
    """The model, its data set's spec and the run's options: predicts and writes one input at a time."""

    config: PredictConfig
    model: torch.nn.Module
    spec: DatasetSpec
    class_names: list[str]
    device: torch.device
    orientation: str | None
    output: Path
    conversion: InputConversion | None = None  # the data set's images -> the model's input (utils.model_input)
    queries: Any = None  # a support-set model's context of single images (ContextProvider.for_queries), or None
    context_keys: tuple[str, ...] = ("image",)  # entries the conversion applies to
    context_rows: dict[str, list[str]] = field(default_factory=dict)  # input -> its context's pool images

    @property
    def kind(self) -> str:
        return self.spec.kind

    def paths(self, item: InputItem) -> dict[str, Path]:
        """The output files of an input that this run writes (the label map last)."""
        paths = {}
        if self.config.save_probabilities:
            paths["probabilities"] = self.output / f"{item.name}{PROBABILITIES_SUFFIX}"
        if self.config.save_overlays:
            paths["overlay"] = self.output / OVERLAY_DIR / f"{item.name}.png"
        paths["labels"] = self.output / f"{item.name}{LABEL_SUFFIX[self.kind]}"
        return paths

    def infer(self, image: np.ndarray, context: dict | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels, probabilities or None) of a volume [D, H, W] or image [C, H, W] in the data set's normalisation
        (converted to the model's input here) with its context entries (e.g. supports; None: none)."""
        entries = convert_entries({"image": image, **(context or {})}, self.conversion, self.context_keys)
        image = entries.pop("image")
        result = predict_case(self.model, image, kind=self.kind, img_size=self.model.img_size,
                              batch_size=self.config.batch_size, device=self.device, amp=amp_dtype(self.config.amp),
                              context=item_context(entries, self.model, self.kind) if entries else None,
                              tta=self.config.tta, return_probabilities=self.config.save_probabilities)
        return result if self.config.save_probabilities else (result, None)

    def check_format(self, item: InputItem) -> None:
        allowed = VOLUME_FORMATS if self.kind == "volume" else IMAGE_FORMATS
        if item.format in allowed:
            return
        what = {"nifti": "a NIfTI volume", "dicom": "a DICOM series folder", "image": "a 2-D image file",
                "prepared": "a prepared file", "dicom_file": "a DICOM file"}[item.format]
        expected = ("volumes (NIfTI, DICOM series or file, prepared .npy.h5 / .npz)" if self.kind == "volume"
                    else "2-D colour images (PNG / JPEG / BMP, DICOM files, prepared .npz)")
        raise DataError(item.path, f"{what}, but the {self.spec.name} model segments {expected}")

    def raw_input(self, item: InputItem) -> RawInput:
        """The data set's preprocessing of raw inputs; DataError when it declares none."""
        if self.spec.raw is None:
            raise DataError(item.path, f"data set {self.spec.name} declares no preprocessing of raw inputs "
                                       f"(DatasetSpec.raw); give its prepared format (.npz / .npy.h5)")
        return self.spec.raw

    def run_one(self, item: InputItem, created: CreatedPaths) -> tuple[list[list[str]], str]:
        """Predict one input and write its outputs; returns (volumes.csv rows, a short report)."""
        if self.kind == "volume":
            return self.volume(item, created)
        return self.image(item, created)

    # -- volumes
    def volume(self, item: InputItem, created: CreatedPaths) -> tuple[list[list[str]], str]:
        if item.format == "prepared":
            volume = prepared_volume(item.path, self.spec)
            layout, affine, header, voxel_mm3 = None, None, None, None
        else:
            raw_input = self.raw_input(item)
            raw = read_raw_volume(item)
            layout = SliceLayout.of(raw.affine, self.orientation, raw_input.slice_axes, item.path)
            volume = layout.forward(np.asarray(raw_input.normalize(raw.data), dtype=np.float32))
            affine, header, voxel_mm3 = raw.affine, raw.header, voxel_volume_mm3(raw.affine, raw.mm_per_unit)
        start = time.perf_counter()
        labels, probabilities = self.infer(volume)
        seconds = time.perf_counter() - start
        paths = self.paths(item)
        if layout is None:  # prepared: written as the test scripts' --is_savenii writes predictions
            output, affine = labels.T, NIFTI_AFFINE
            output_probabilities = None if probabilities is None else np.moveaxis(probabilities.T, -1, 0)
        else:
            output = layout.backward(labels)
            output_probabilities = None if probabilities is None else layout.backward(probabilities)
        if output_probabilities is not None:
            atomic_write_bytes(created.track(paths["probabilities"]),
                               probabilities_bytes(output_probabilities, self.class_names))
        if "overlay" in paths:
            count = self.config.save_overlays
            rows = [[display_rgb(volume[index]), overlay(volume[index], labels[index], self.model.num_classes)]
                    for index in most_foreground_slices(labels, count)]
            created.mkdir(paths["overlay"].parent)
            save_png(created.track(paths["overlay"]), image_grid(rows))
        atomic_write_bytes(created.track(paths["labels"]),
                           label_nifti_bytes(output, affine, header, self.model.num_classes))
        report = f"{item.name}: {tuple(output.shape)} -> {paths['labels'].name} (network {seconds:.1f} s)"
        return volume_rows(item.name, labels, self.class_names, voxel_mm3, "volume"), report

    # -- images
    def image(self, item: InputItem, created: CreatedPaths) -> tuple[list[list[str]], str]:
        raw_input = self.raw_input(item)
        channels = self.spec.in_chans  # read as the data set holds images; the model's input is converted from it
        picture = read_picture(item, self.spec, channels)
        height, width = picture.shape[:2]
        size = self.model.img_size
        resized = item.format != "prepared" and raw_input.resize is not None and (height, width) != (size, size)
        network_image = raw_input.resize(picture, (size, size)) if resized else picture
        context, context_names = self.query_context(item, picture)
        start = time.perf_counter()
        # (a writable copy: PIL's arrays are read-only, which torch.as_tensor warns about)
        labels, probabilities = self.infer(np.asarray(raw_input.normalize(np.array(network_image)), dtype=np.float32),
                                           context)
        seconds = time.perf_counter() - start
        if resized:
            labels = np.asarray(raw_input.resize_label(labels.astype(np.uint8), (height, width)))
            if probabilities is not None:
                probabilities = np.stack([resize_slice(p, (height, width), PROBABILITY_ZOOM_ORDER)
                                          for p in probabilities])
        paths = self.paths(item)
        if probabilities is not None:
            atomic_write_bytes(created.track(paths["probabilities"]),
                               probabilities_bytes(probabilities, self.class_names))
        if "overlay" in paths:
            created.mkdir(paths["overlay"].parent)
            num_classes = self.model.num_classes
            panel = side_by_side(display_rgb(picture), overlay(picture, labels, num_classes))
            if context_names:  # the supports (network size, with their masks) in a second row
                pairs = self.queries.context_pairs(context)
                panel = image_grid([[panel], [side_by_side(*(overlay(image, label, num_classes)
                                                             for image, label in pairs))]])
            save_png(created.track(paths["overlay"]), panel)
        atomic_write_bytes(created.track(paths["labels"]),
                           png_bytes(labels.astype(label_dtype(self.model.num_classes))))
        report = f"{item.name}: {height}x{width} -> {paths['labels'].name} (network {seconds:.2f} s)"
        if context_names:
            self.context_rows[item.name] = context_names
        return volume_rows(item.name, labels, self.class_names, None, "image"), report

    def query_context(self, item: InputItem, picture: np.ndarray) -> tuple[dict, list[str]]:
        """(context entries, names of the pool images in it) of one input image; none without a context."""
        if self.queries is None:
            return {}, []
        return self.queries.context(picture, str(item.path))

    def skipped_rows(self, item: InputItem) -> list[list[str]]:
        """volumes.csv rows of an input whose outputs exist, from its label map."""
        labels, voxel_mm3 = existing_labels(self.paths(item)["labels"], self.kind)
        if item.format == "prepared":
            voxel_mm3 = None
        return volume_rows(item.name, labels, self.class_names, voxel_mm3, self.kind)


def query_context(config: PredictConfig, provider: ContextProvider, trained: TrainConfig, spec: DatasetSpec,
                  model: torch.nn.Module, device: torch.device):
    """The model's context of single input images (a support-set model: k supports per image from a pool): the
    pool is ``--support`` (a folder of labelled pairs) or else the checkpoint's training split; the options are the
    checkpoint's, overridden by those given. One error line for a bad pool, before anything is written."""
    if provider.for_queries is None:
        raise CheckpointError(config.checkpoint, f"{model.arch} needs a {provider.name} context, which cannot be "
                                                 f"built for single images")
    options = context_options(provider, trained.context_options, config.context_options)
    hint = f"give --support DIR ({IMAGES_DIR}/<stem>.png|jpg|bmp + {MASKS_DIR}/<stem>.png)"
    if config.support:
        pool = ContextSource(spec, PairFolder(config.support, model.num_classes), None)
    else:
        try:
            pool = training_pool(provider, options, trained.run, config.checkpoint, model.num_classes, config.seed,
                                 hint=hint)
        except DataError as exc:
            raise DataError(exc.path, f"{exc.problem} (the checkpoint's training pool is not here; {hint})") from exc
    return provider.for_queries(pool, options, img_size=model.img_size,
                                seed=config.seed if trained.run.seed is None else int(trained.run.seed),
                                device=str(device))


def checkpoint_dataset(config: PredictConfig, trained: TrainConfig, notes: list[str]) -> DatasetSpec:
    """The data set whose preprocessing applies: ``--dataset`` (overriding the checkpoint's) or the checkpoint's."""
    trained_on = trained.run.dataset
    name = config.dataset or trained_on
    if name is None:
        raise CheckpointError(config.checkpoint, f"the checkpoint names no data set (options.run.dataset): "
                                                 f"give --dataset ({', '.join(list_datasets())})")
    spec = get_dataset(name)
    if trained_on is not None and config.dataset is not None and get_dataset(trained_on).name != spec.name:
        notes.append(f"--dataset {spec.name}: preprocessing of {spec.name}, although the checkpoint was trained on "
                     f"{trained_on}")
    return spec


def predict(config: PredictConfig) -> PredictSummary:
    """Segment every input of ``config.input`` into ``config.output`` (see the module docstring).

    Raises (one-line errors) for a bad checkpoint, data set, option or input path; a bad input file is recorded in
    the returned summary's ``failed`` (and printed), the other inputs are still processed.
    """
    summary = PredictSummary()
    if config.orientation not in (None, STORED_ORIENTATION) and not is_orientation(config.orientation):
        raise ValueError(f"--orientation must be '{STORED_ORIENTATION}' or 3 axis codes such as LPS or RAS, got "
                         f"{config.orientation!r}")
    seed_everything(config.seed, True)
    device = resolve_device(config.device)
    output = Path(config.output)
    if not Path(config.input).exists():  # before the (slow) checkpoint load
        raise DataError(config.input, "input does not exist")
    model, ckpt = build_model_from_checkpoint(config.checkpoint, map_location="cpu")
    trained = saved_options(ckpt)  # the training run's options: predict.py reads the checkpoint's only here
    spec = checkpoint_dataset(config, trained, summary.notes)
    check_input_channels(config.checkpoint, model, spec.name)
    items, notes = find_inputs(config.input, spec.kind, exclude=[output] + ([config.support] if config.support
                                                                           else []))
    summary.notes += notes
    conversion = model_input_conversion(spec, model)
    if conversion is not None:
        summary.notes.append(f"{model.arch} input: {conversion.describe()}")
    provider = model_context(model.arch)
    queries = None
    if provider is not None:  # before the output folder exists: a bad pool writes nothing
        queries = query_context(config, provider, trained, spec, model, device)
        summary.notes.append(f"{provider.name}: {queries.info}")
    elif config.support:
        raise ValueError(f"--support {config.support}: {model.arch} takes no support set")
    model.to(device)
    orientation = spec.raw.orientation if spec.raw is not None else None
    if config.orientation is not None:
        orientation = None if config.orientation == STORED_ORIENTATION else config.orientation
    predictor = Predictor(config, model, spec, class_labels(spec.class_names, model.num_classes), device,
                          orientation, output, conversion, queries, image_keys(provider))
    output.mkdir(parents=True, exist_ok=True)
    for note in summary.notes:
        print(f"note: {note}")
    print(f"predicting {len(items)} input(s) with {config.checkpoint} ({model.arch}, {spec.name}, img_size "
          f"{model.img_size}, device {device}, tta {config.tta}, orientation {orientation or 'as stored'}) -> {output}")

    rows: list[list[str]] = []
    used: dict[str, Path] = {}
    for item in tqdm(items, desc="predict", unit="input", disable=None):
        try:
            if item.name in used:
                raise DataError(item.path, f"output name '{item.name}' already used by {used[item.name]}")
            used[item.name] = item.path
            predictor.check_format(item)
            if not config.overwrite and all(path.exists() for path in predictor.paths(item).values()):
                rows += predictor.skipped_rows(item)
                summary.skipped.append(str(item.path))
                continue
            with removed_on_failure() as created:
                item_rows, report = predictor.run_one(item, created)
            rows += item_rows
            summary.written.append(str(predictor.paths(item)["labels"]))
            tqdm.write(report)
        except DataError as err:
            summary.failed.append((str(err.path), err.problem))
            sys.stdout.flush()
            tqdm.write(f"error: {err.path}: {' '.join(err.problem.split())}", file=sys.stderr)
    if rows or not (output / VOLUMES_CSV).exists():
        atomic_write_text(output / VOLUMES_CSV, volumes_csv_text(rows, spec.kind))
    if predictor.context_rows:
        atomic_write_text(output / CONTEXT_CSV, context_csv_text(output / CONTEXT_CSV, predictor.context_rows))
    print(f"{len(summary.written)} written, {len(summary.skipped)} skipped (outputs exist; --overwrite redoes them), "
          f"{len(summary.failed)} failed -> {output}")
    if summary.failed:
        sys.stdout.flush()
        print(f"{len(summary.failed)} input(s) failed:", file=sys.stderr)
        for path, problem in summary.failed:
            print(f"  {path}: {' '.join(problem.split())}", file=sys.stderr)
    return summary
