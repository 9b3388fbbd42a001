"""What a raw own data set is: its format told apart from the files (nnU-Net v2 raw, Medical Segmentation Decathlon,
a plain 2-D image/mask folder), its channels, labels and cases. Only names and dataset.json are read here; the
files' contents are checked when each case is prepared (:mod:`.cases`). Every problem is one
:class:`~datasets.errors.DataError` naming the file or folder.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from ..errors import DataError
from .volumes import IMAGE_ENDINGS, VOLUME_ENDINGS, file_ending

__all__ = ["RawCase", "RawSet", "read_json", "detect_raw_set", "read_nnunet", "read_msd", "read_folder", "DATASET_JSON",
           "SPLITS_FILE", "FOLDER_IMAGE_ENDINGS"]

DATASET_JSON = "dataset.json"
SPLITS_FILE = "splits_final.json"
FOLDER_IMAGE_ENDINGS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
NNUNET_ENDINGS = (*VOLUME_ENDINGS, ".png", ".bmp", ".tif")
CHANNEL_PATTERN = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class RawCase:
    """One labelled case: its name, its image files (one per channel; MSD: one 4-D file), its label file, and
    ``subset`` 'Tr' (training pool) or 'Ts' (the labelled test set)."""

    name: str
    images: tuple[str, ...]
    label: str
    subset: str = "Tr"


@dataclass(frozen=True)
class RawSet:
    """A raw data set as found: ``labels`` maps each declared label value to its name (0 = background)."""

    format: str  # "nnunet" | "msd" | "folder"
    root: str
    kind: str  # "volume" | "image"
    channel_names: tuple[str, ...]
    labels: dict[int, str]
    file_ending: str
    cases: tuple[RawCase, ...]
    splits_file: str | None = None
    name: str = ""
    notes: list[str] = field(default_factory=list)
    binary_255: bool = False  # folder masks stored 0/255


def _visible(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def read_json(path: str) -> object:
    """A JSON file's content; DataError naming the file when unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise DataError(path, f"cannot read JSON: {exc}") from exc


def _read_json(path: str) -> dict:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object")
    return data


def _labels(path: str, declared: dict, region_hint: bool) -> dict[int, str]:
    """{value: name} of dataset.json's labels; region-based labels refused."""
    if not isinstance(declared, dict) or not declared:
        raise DataError(path, "'labels' missing or empty")
    if region_hint or any(isinstance(value, (list, tuple)) for value in declared.values()):
        raise DataError(path, "region-based labels (a label given as a list of values, regions_class_order) are not "
                              "supported: give each class one label value")
    labels = {}
    for key, value in declared.items():
        number, text = (value, key) if not isinstance(value, str) else (key, value)  # nnU-Net v2 / MSD
        try:
            number = int(number)
        except (TypeError, ValueError):
            raise DataError(path, f"label {key!r}: {number!r} is not an integer label value") from None
        if number in labels:
            raise DataError(path, f"label value {number} declared twice ({labels[number]!r}, {text!r})")
        labels[number] = str(text)
    if 0 not in labels:
        raise DataError(path, "no label value 0 (background) declared in 'labels'")
    if any(name.strip().lower() == "ignore" for name in labels.values()):
        raise DataError(path, "an 'ignore' label (nnU-Net's sparse annotation) is not supported: the models here "
                              "learn from fully labelled images; relabel those pixels or drop the label")
    if min(labels) < 0:
        raise DataError(path, f"negative label value {min(labels)} declared")
    return dict(sorted(labels.items()))


def _check_ending(path: str, expected: str) -> None:
    ending = file_ending(os.path.basename(path))
    if ending is None:
        raise DataError(path, f"unknown file ending (volumes {', '.join(VOLUME_ENDINGS)}; 2-D "
                              f"{', '.join(IMAGE_ENDINGS)})")
    if expected and ending != expected:
        raise DataError(path, f"file ending {ending} differs from the data set's {expected}")


def _nnunet_cases(root: str, images_dir: str, labels_dir: str, ending: str, channels: int, subset: str,
                  raster_channels: bool) -> list[RawCase]:
    """Cases of imagesTr/labelsTr (or imagesTs/labelsTs): every channel file present, a label per case and a case
    per label. ``raster_channels``: 2-D files may hold several channels each (RGB), so fewer files are allowed."""
    by_case: dict[str, dict[int, str]] = {}
    for name in _visible(images_dir):
        path = os.path.join(images_dir, name)
        _check_ending(path, ending)
        match = CHANNEL_PATTERN.match(name[: -len(ending)])
        if not match:
            raise DataError(path, f"image name is not <case>_<XXXX>{ending} (4-digit channel index)")
        index = int(match["channel"])
        if index >= channels:
            raise DataError(path, f"channel {index} but dataset.json declares {channels} channel(s) (channel_names)")
        by_case.setdefault(match["case"], {})[index] = path
    labels = {}
    for name in _visible(labels_dir):
        path = os.path.join(labels_dir, name)
        _check_ending(path, ending)
        labels[name[: -len(ending)]] = path
    cases = []
    for case, files in sorted(by_case.items()):
        wanted = range(max(files) + 1) if raster_channels else range(channels)
        missing = [index for index in wanted if index not in files]
        if missing or 0 not in files:
            first = missing[0] if missing else 0
            raise DataError(os.path.join(images_dir, f"{case}_{first:04d}{ending}"),
                            f"missing channel file of case {case} (dataset.json declares {channels} channel(s))")
        if case not in labels:
            raise DataError(os.path.join(labels_dir, case + ending), f"label file missing for image "
                                                                     f"{files[0]}")
        cases.append(RawCase(case, tuple(files[i] for i in sorted(files)), labels[case], subset))
    for case, path in sorted(labels.items()):
        if case not in by_case:
            raise DataError(path, f"label without image: no {os.path.join(images_dir, case + '_0000' + ending)}")
    return cases


def read_nnunet(root: str) -> RawSet:
    """An nnU-Net v2 raw data set: dataset.json, imagesTr/labelsTr, optional imagesTs(+labelsTs), optional
    splits_final.json."""
    json_path = os.path.join(root, DATASET_JSON)
    meta = _read_json(json_path)
    for key in ("channel_names", "labels", "file_ending"):
        if key not in meta:
            raise DataError(json_path, f"missing '{key}' (nnU-Net v2 dataset.json: channel_names, labels, "
                                       f"numTraining, file_ending)")
    ending = str(meta["file_ending"]).lower()
    if ending not in NNUNET_ENDINGS:
        raise DataError(json_path, f"unknown file_ending {meta['file_ending']!r} (supported: "
                                   f"{', '.join(NNUNET_ENDINGS)})")
    names = meta["channel_names"]
    if not isinstance(names, dict) or not names:
        raise DataError(json_path, "'channel_names' missing or empty")
    channel_names = tuple(str(names[key]) for key in sorted(names, key=int))
    labels = _labels(json_path, meta["labels"], "regions_class_order" in meta)
    kind = "image" if ending in IMAGE_ENDINGS else "volume"
    images_dir, labels_dir = os.path.join(root, "imagesTr"), os.path.join(root, "labelsTr")
    for folder in (images_dir, labels_dir):
        if not os.path.isdir(folder):
            raise DataError(folder, "folder missing (nnU-Net raw: imagesTr/ and labelsTr/)")
    cases = _nnunet_cases(root, images_dir, labels_dir, ending, len(channel_names), "Tr", kind == "image")
    if not cases:
        raise DataError(images_dir, f"empty: no <case>_0000{ending} images")
    declared = meta.get("numTraining")
    if declared is not None and int(declared) != len(cases):
        raise DataError(json_path, f"numTraining is {declared} but imagesTr holds {len(cases)} cases")
    notes = []
    test_images, test_labels = os.path.join(root, "imagesTs"), os.path.join(root, "labelsTs")
    if os.path.isdir(test_images) and os.path.isdir(test_labels):
        cases += _nnunet_cases(root, test_images, test_labels, ending, len(channel_names), "Ts", kind == "image")
    elif os.path.isdir(test_images):
        notes.append("imagesTs has no labelsTs: not used (unlabelled)")
    splits = os.path.join(root, SPLITS_FILE)
    return RawSet("nnunet", root, kind, channel_names, labels, ending, tuple(cases),
                  splits if os.path.isfile(splits) else None, name=str(meta.get("name") or ""), notes=notes)


def _msd_path(root: str, json_path: str, value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise DataError(json_path, f"training entry without a {what} path")
    path = os.path.normpath(os.path.join(root, value))
    if not os.path.isfile(path):
        raise DataError(path, f"{what} file listed in {json_path} does not exist")
    _check_ending(path, "")
    if file_ending(path) not in VOLUME_ENDINGS:
        raise DataError(path, f"MSD sets hold NIfTI volumes, got {file_ending(path)}")
    return path


def read_msd(root: str) -> RawSet:
    """A Medical Segmentation Decathlon data set: dataset.json with modality, labels and training [{image,
    label}]; one (4-D when multi-modal) NIfTI per case."""
    json_path = os.path.join(root, DATASET_JSON)
    meta = _read_json(json_path)
    modality = meta.get("modality") or {"0": "image"}
    if not isinstance(modality, dict):
        raise DataError(json_path, "'modality' must map channel indices to names")
    channel_names = tuple(str(modality[key]) for key in sorted(modality, key=int))
    labels = _labels(json_path, meta.get("labels"), False)
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        raise DataError(json_path, "'training' is empty: no labelled cases")
    cases, listed = [], set()
    for entry in training:
        if not isinstance(entry, dict):
            raise DataError(json_path, f"training entry {entry!r} is not {{image, label}}")
        image = _msd_path(root, json_path, entry.get("image"), "image")
        label = _msd_path(root, json_path, entry.get("label"), "label")
        name = os.path.basename(image)[: -len(file_ending(image))]
        cases.append(RawCase(name, (image,), label))
        listed.add(os.path.abspath(label))
    labels_dir = os.path.join(root, "labelsTr")
    if os.path.isdir(labels_dir):
        for name in _visible(labels_dir):
            path = os.path.join(labels_dir, name)
            if os.path.abspath(path) not in listed:
                raise DataError(path, f"label without image: not listed in the 'training' entries of {json_path}")
    ending = file_ending(cases[0].images[0])
    return RawSet("msd", root, "volume", channel_names, labels, ending, tuple(sorted(cases, key=lambda c: c.name)),
                  name=str(meta.get("name") or ""))


def read_folder(root: str, class_names: tuple[str, ...] | None = None) -> RawSet:
    """A plain 2-D folder: images/<stem>.<png|jpg|bmp|tif> + masks/<stem>.png. Classes: ``class_names`` when
    given (the class count), else found from the masks when prepared (:mod:`.cases`)."""
    images_dir, masks_dir = os.path.join(root, "images"), os.path.join(root, "masks")
    images = {}
    for name in _visible(images_dir):
        path = os.path.join(images_dir, name)
        stem, ending = os.path.splitext(name)
        if ending.lower() not in FOLDER_IMAGE_ENDINGS:
            raise DataError(path, f"unknown file ending (images: {', '.join(FOLDER_IMAGE_ENDINGS)})")
        if stem in images:
            raise DataError(path, f"two images of one stem: {images[stem]}")
        images[stem] = path
    masks = {}
    for name in _visible(masks_dir):
        path = os.path.join(masks_dir, name)
        stem, ending = os.path.splitext(name)
        if ending.lower() != ".png":
            raise DataError(path, "unknown file ending (masks are .png: class indices, or 0/255)")
        masks[stem] = path
    if not images:
        raise DataError(images_dir, "empty: no images")
    for stem, path in images.items():
        if stem not in masks:
            raise DataError(os.path.join(masks_dir, stem + ".png"), f"mask missing for image {path}")
    for stem, path in masks.items():
        if stem not in images:
            raise DataError(path, f"mask without image: no images/{stem}.<png|jpg|bmp|tif>")
    cases = tuple(RawCase(stem, (images[stem],), masks[stem]) for stem in sorted(images))
    labels = {0: "background", **{i + 1: name for i, name in enumerate(class_names or ())}}
    return RawSet("folder", root, "image", ("R", "G", "B"), labels, "", cases)


def detect_raw_set(src: str, class_names: tuple[str, ...] | None = None) -> RawSet:
    """The raw set in ``src``, its format told apart by its files; DataError for a folder of neither format."""
    if not os.path.isdir(src):
        raise DataError(src, "not a folder")
    json_path = os.path.join(src, DATASET_JSON)
    if os.path.isfile(json_path):
        meta = _read_json(json_path)
        if "training" in meta:
            return read_msd(src)
        if "channel_names" in meta or "file_ending" in meta:
            return read_nnunet(src)
        raise DataError(json_path, "neither nnU-Net v2 (channel_names, labels, file_ending) nor MSD (modality, "
                                   "labels, training) dataset.json")
    if os.path.isdir(os.path.join(src, "images")) and os.path.isdir(os.path.join(src, "masks")):
        return read_folder(src, class_names)
    raise DataError(src, "neither format: expected dataset.json + imagesTr/ + labelsTr/ (nnU-Net v2 raw or MSD), "
                         "or images/ + masks/ (a 2-D folder)")
