"""Finding predict.py's inputs: the files and DICOM series folders under ``--input``, each with its format and the
stem of its output files (the frames of a multi-frame DICOM file are one input each for image sets)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets.errors import DataError
from datasets.io.dicom import DICOM_SUFFIXES, has_dicom_prefix, probe_frames
from datasets.io.dicom_series import dicom_series_ids
from datasets.io.nifti import NIFTI_SUFFIXES

__all__ = ["NIFTI_SUFFIXES", "PREPARED_SUFFIXES", "IMAGE_SUFFIXES", "VOLUME_FORMATS", "IMAGE_FORMATS", "InputItem",
           "file_format", "input_format", "file_items", "find_inputs", "check_output_apart", "check_no_input_replaced"]

PREPARED_SUFFIXES = (".npy.h5", ".h5", ".npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
FORMAT_SUFFIXES = {"nifti": NIFTI_SUFFIXES, "prepared": PREPARED_SUFFIXES, "image": IMAGE_SUFFIXES,
                   "dicom_file": DICOM_SUFFIXES}
# 'dicom': a series folder (volume sets); 'dicom_file': one .dcm file, a volume or (image sets) one image per frame
VOLUME_FORMATS, IMAGE_FORMATS = ("nifti", "dicom", "dicom_file", "prepared"), ("image", "dicom_file", "prepared")
FRAME_NAME = "{stem}_frame{number:0{digits}d}"  # the output stem of frame `number` (1-based) of a multi-frame file


@dataclass(frozen=True)
class InputItem:
    """One input: a file or a DICOM series folder, its format and the stem of its output files; for image sets,
    one frame of a multi-frame DICOM file (``frame`` 0-based, of ``frames``)."""

    path: Path
    format: str  # 'nifti', 'dicom' (series folder), 'dicom_file', 'prepared', 'image'
    name: str
    frame: int | None = None
    frames: int = 1


def file_format(path: Path) -> tuple[str, str] | None:
    """(format, output stem) of a file by its suffix (any case), None for other files."""
    lower = path.name.lower()
    for kind, suffixes in FORMAT_SUFFIXES.items():
        for suffix in suffixes:
            if lower.endswith(suffix) and len(lower) > len(suffix):
                return kind, path.name[: -len(suffix)]
    return None


def input_format(path: Path) -> tuple[str, str] | None:
    """(format, output stem) of a file: by suffix, else a DICOM file by its 'DICM' prefix (exports often name
    files by number or UID, without a suffix: the whole name is the stem)."""
    return file_format(path) or (("dicom_file", path.name) if has_dicom_prefix(path) else None)


def file_items(path: Path, kind: str) -> list[InputItem]:
    """The inputs of one file: itself, or for image sets each frame of a multi-frame DICOM file
    (``<stem>_frame001`` ...). A DICOM file whose header shows a problem stays one input, so that the problem is
    reported once, when it is read."""
    found = input_format(path)
    if found is None:
        return []
    item = InputItem(path, *found)
    if item.format != "dicom_file" or kind != "image":
        return [item]
    try:
        frames = probe_frames(path)
    except DataError:
        return [item]
    if frames == 1:
        return [item]
    digits = max(3, len(str(frames)))
    return [InputItem(path, "dicom_file", FRAME_NAME.format(stem=item.name, number=index + 1, digits=digits), index,
                      frames) for index in range(frames)]


def find_inputs(path: str | os.PathLike, kind: str = "volume",
                exclude: Sequence[str | os.PathLike] = ()) -> tuple[list[InputItem], list[str]]:
    """The inputs under ``path`` for a data set of ``kind`` ('volume' / 'image'), and notes on what was ignored.

    A file is one input (its format by suffix; DICOM also by its 'DICM' prefix), except a multi-frame DICOM file
    for image sets: one input per frame (:func:`file_items`). For volume sets, a folder holding DICOM files is one
    DICOM series. Any other folder holds inputs: its files of a known format (for image sets, DICOM files are
    images) and, for volume sets, each sub-folder as a DICOM series (a sub-folder without one is a failed input,
    reported when read); hidden entries, files of other types and sub-folders of image sets (noted) and the
    ``exclude`` paths (the output folder) are skipped. DataError for a missing path, an unsupported single file or a
    folder without inputs.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "input does not exist")
    if path.is_file():
        items = file_items(path, kind)
        if not items:
            raise DataError(path, f"unsupported file type (expected NIfTI {'/'.join(NIFTI_SUFFIXES)}, prepared "
                                  f"{'/'.join(PREPARED_SUFFIXES)}, image {'/'.join(IMAGE_SUFFIXES)} or DICOM "
                                  f"{'/'.join(DICOM_SUFFIXES)}; a DICOM series is given as its folder)")
        return items, []
    if kind == "volume" and dicom_series_ids(path):
        return [InputItem(path, "dicom", path.resolve().name)], []
    excluded = {Path(p).resolve() for p in exclude}
    items, ignored = [], []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or entry.resolve() in excluded:
            continue
        if entry.is_dir():
            if kind == "volume":
                items.append(InputItem(entry, "dicom", entry.name))
            else:
                ignored.append(entry.name + "/")
            continue
        found = file_items(entry, kind)
        if not found:
            ignored.append(entry.name)
        items += found
    listed = f"{', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''}"
    if not items:
        expected = ("NIfTI, DICOM series / file or prepared (.npz / .npy.h5)" if kind == "volume"
                    else "PNG / JPEG / BMP / DICOM or prepared (.npz)")
        raise DataError(path, f"no {expected} input found" + (f" (only: {listed})" if ignored else " (empty folder)"))
    notes = [f"{path}: ignored {len(ignored)} entries of other types: {listed}"] if ignored else []
    return items, notes


def check_output_apart(input_path: str | os.PathLike, output: str | os.PathLike) -> None:
    """DataError unless the output folder lies outside the input: neither the input itself nor inside it (its
    predictions would be read as inputs by the next run, or replace them)."""
    source, target = Path(input_path).resolve(), Path(output).resolve()
    if target == source or source in target.parents:
        where = "is the input" if target == source else "is inside the input"
        raise DataError(output, f"the output folder {where} {input_path}: predictions would replace or mix with the "
                                f"inputs; choose an --output outside it")


def check_no_input_replaced(items: Sequence[InputItem], outputs: Sequence[Path]) -> None:
    """DataError naming the first of ``outputs`` (the files a run would write) that is one of the inputs."""
    inputs = {item.path.resolve(): item.path for item in items}
    for path in outputs:
        if path.resolve() in inputs:
            raise DataError(path, f"this output would replace the input {inputs[path.resolve()]}: choose another "
                                  f"--output")
