"""The prediction run (:func:`predict`): the checkpoint's model and data set, each input read, predicted and written
(see :mod:`utils.predict` for what goes in and comes out)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from datasets.errors import DataError
from datasets.io.atomic import atomic_write_bytes, atomic_write_text
from datasets.io.images import png_bytes
from datasets.io.nifti import NIFTI_AFFINE, label_dtype, label_nifti_bytes
from utils.evaluator import most_foreground_slices
from utils.runlog import CreatedPaths, removed_on_failure, seed_everything
from utils.visual import display_rgb, image_grid, overlay, save_png, side_by_side

from .geometry import voxel_volume_mm3
from .inputs import IMAGE_FORMATS, VOLUME_FORMATS, InputItem, check_no_input_replaced, check_output_apart, find_inputs
from .segmenter import STORED_ORIENTATION, Segmenter, load_segmenter, segment_input
from .writers import (
    CONTEXT_CSV, LABEL_SUFFIX, OVERLAY_DIR, PROBABILITIES_SUFFIX, VOLUMES_CSV, context_csv_text, existing_labels,
    probabilities_bytes, volume_rows, volumes_csv_text,
)

__all__ = ["PredictConfig", "PredictSummary", "Predictor", "predict", "STORED_ORIENTATION"]


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
    """The run's options and its :class:`.segmenter.Segmenter`: reads, segments and writes one input at a time."""

    config: PredictConfig
    segmenter: Segmenter
    output: Path
    context_rows: dict[str, list[str]] = field(default_factory=dict)  # input -> its context's pool images

    @property
    def kind(self) -> str:
        return self.segmenter.kind

    @property
    def num_classes(self) -> int:
        return self.segmenter.num_classes

    def paths(self, item: InputItem) -> dict[str, Path]:
        """The output files of an input that this run writes (the label map last)."""
        paths = {}
        if self.config.save_probabilities:
            paths["probabilities"] = self.output / f"{item.name}{PROBABILITIES_SUFFIX}"
        if self.config.save_overlays:
            paths["overlay"] = self.output / OVERLAY_DIR / f"{item.name}.png"
        paths["labels"] = self.output / f"{item.name}{LABEL_SUFFIX[self.kind]}"
        return paths

    def check_format(self, item: InputItem) -> None:
        allowed = VOLUME_FORMATS if self.kind == "volume" else IMAGE_FORMATS
        if item.format in allowed:
            return
        what = {"nifti": "a NIfTI volume", "dicom": "a DICOM series folder", "image": "a 2-D image file",
                "prepared": "a prepared file", "dicom_file": "a DICOM file"}[item.format]
        expected = ("volumes (NIfTI, DICOM series or file, prepared .npy.h5 / .npz)" if self.kind == "volume"
                    else "2-D colour images (PNG / JPEG / BMP, DICOM files, prepared .npz)")
        raise DataError(item.path, f"{what}, but the {self.segmenter.spec.name} model segments {expected}")

    def run_one(self, item: InputItem, created: CreatedPaths) -> tuple[list[list[str]], str]:
        """Predict one input and write its outputs; returns (volumes.csv rows, a short report)."""
        if self.kind == "volume":
            return self.volume(item, created)
        return self.image(item, created)

    # -- volumes
    def volume(self, item: InputItem, created: CreatedPaths) -> tuple[list[list[str]], str]:
        result, raw = segment_input(self.segmenter, item, probabilities=self.config.save_probabilities)
        if raw is None:  # prepared: written as the test scripts' --is_savenii writes predictions (axes reversed)
            output, affine, header, voxel_mm3 = result.labels.T, NIFTI_AFFINE, None, None
            output_probabilities = None if result.probabilities is None else np.moveaxis(result.probabilities.T,
                                                                                          -1, 0)
        else:
            output, output_probabilities = result.labels, result.probabilities
            affine, header, voxel_mm3 = raw.affine, raw.header, voxel_volume_mm3(raw.affine, raw.mm_per_unit)
        paths = self.paths(item)
        if output_probabilities is not None:
            atomic_write_bytes(created.track(paths["probabilities"]),
                               probabilities_bytes(output_probabilities, self.segmenter.class_names))
        if "overlay" in paths:
            volume, labels = result.volume, result.network_labels
            rows = [[display_rgb(volume[index]), overlay(volume[index], labels[index], self.num_classes)]
                    for index in most_foreground_slices(labels, self.config.save_overlays)]
            created.mkdir(paths["overlay"].parent)
            save_png(created.track(paths["overlay"]), image_grid(rows))
        atomic_write_bytes(created.track(paths["labels"]), label_nifti_bytes(output, affine, header, self.num_classes))
        report = f"{item.name}: {tuple(output.shape)} -> {paths['labels'].name} (network {result.seconds:.1f} s)"
        # counted on the written map, in its voxels (a resampling set's network grid has other voxels), as a skipped
        # input's rows are counted from its map
        return volume_rows(item.name, output, self.segmenter.class_names, voxel_mm3, "volume"), report

    # -- images
    def image(self, item: InputItem, created: CreatedPaths) -> tuple[list[list[str]], str]:
        result, picture = segment_input(self.segmenter, item, probabilities=self.config.save_probabilities)
        labels, num_classes = result.labels, self.num_classes
        paths = self.paths(item)
        if result.probabilities is not None:
            atomic_write_bytes(created.track(paths["probabilities"]),
                               probabilities_bytes(result.probabilities, self.segmenter.class_names))
        if "overlay" in paths:
            created.mkdir(paths["overlay"].parent)
            panel = side_by_side(display_rgb(picture), overlay(picture, labels, num_classes))
            if result.support_names:  # the supports (network size, with their masks) in a second row
                pairs = self.segmenter.queries.context_pairs(result.context)
                panel = image_grid([[panel], [side_by_side(*(overlay(image, label, num_classes)
                                                             for image, label in pairs))]])
            save_png(created.track(paths["overlay"]), panel)
        atomic_write_bytes(created.track(paths["labels"]), png_bytes(labels.astype(label_dtype(num_classes))))
        height, width = picture.shape[:2]
        report = f"{item.name}: {height}x{width} -> {paths['labels'].name} (network {result.seconds:.2f} s)"
        if result.support_names:
            self.context_rows[item.name] = result.support_names
        return volume_rows(item.name, labels, self.segmenter.class_names, None, "image"), report

    def skipped_rows(self, item: InputItem) -> list[list[str]]:
        """volumes.csv rows of an input whose outputs exist, from its label map."""
        labels, voxel_mm3 = existing_labels(self.paths(item)["labels"], self.kind)
        if item.format == "prepared":
            voxel_mm3 = None
        return volume_rows(item.name, labels, self.segmenter.class_names, voxel_mm3, self.kind)


def predict(config: PredictConfig) -> PredictSummary:
    """Segment every input of ``config.input`` into ``config.output`` (see the module docstring).

    Raises (one-line errors) for a bad checkpoint, data set, option or input path; a bad input file is recorded in
    the returned summary's ``failed`` (and printed), the other inputs are still processed.
    """
    summary = PredictSummary()
    seed_everything(config.seed, True)
    output = Path(config.output)
    if not Path(config.input).exists():  # before the (slow) checkpoint load
        raise DataError(config.input, "input does not exist")
    check_output_apart(config.input, output)  # the inputs are never written to
    segmenter = load_segmenter(config.checkpoint, dataset=config.dataset, device=config.device, amp=config.amp,
                               batch_size=config.batch_size, tta=config.tta, orientation=config.orientation,
                               support=config.support, context_options=config.context_options, seed=config.seed)
    summary.notes += segmenter.notes
    spec, model = segmenter.spec, segmenter.model
    items, notes = find_inputs(config.input, spec.kind, exclude=[output] + ([config.support] if config.support
                                                                           else []))
    summary.notes += notes
    predictor = Predictor(config, segmenter, output)
    check_no_input_replaced(items, [path for item in items for path in predictor.paths(item).values()] +
                            [output / VOLUMES_CSV, output / CONTEXT_CSV])
    output.mkdir(parents=True, exist_ok=True)
    for note in summary.notes:
        print(f"note: {note}")
    print(f"predicting {len(items)} input(s) with {config.checkpoint} ({model.arch}, {spec.name}, img_size "
          f"{model.img_size}, device {segmenter.device}, tta {config.tta}, orientation "
          f"{segmenter.orientation or 'as stored'}) -> {output}")

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
        atomic_write_text(output / VOLUMES_CSV, volumes_csv_text(rows, spec.kind, merge_with=output / VOLUMES_CSV))
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
