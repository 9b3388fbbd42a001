"""Build the MT-UNet-format ACDC set from the raw ACDC database.

Input: ``<raw_dir>/training/patientNNN/patientNNN_frameYY.nii.gz`` with ``..._gt.nii.gz``
(``raw_dir`` is the ``database`` folder or its parent); ED/ES frames come from each
patient's ``Info.cfg`` (``ED: 1``, ``ES: 12``), else the two ground-truth frames in order.
``--include_testing`` also takes the ``testing`` patients (101-150, ground truth released).

Choices: each phase volume is transposed from nibabel's (x, y, z) to [z, x, y] and its
intensities are min-max normalised per volume to [0, 1] (as the common ACDC preprocessing
of SSL4MIS-style pipelines); in-plane size is kept (the training transform resizes).
Labels keep the ACDC values 0 background, 1 RV, 2 Myo, 3 LV. Patients are split 70/10/20
(train/valid/test) after a permutation drawn from ``np.random.default_rng(seed)``.
Output: ``<out_dir>/train/case_NNN_slice{ED,ES}_K.npz`` (2-D), ``<out_dir>/{valid,test}/
case_NNN_volume_{ED,ES}.npz`` (volumes), keys ``img``/``label``; lists in ``list_dir``.

    python -m datasets.prepare.acdc --raw_dir ACDC/database --out_dir data/ACDC --list_dir lists/lists_ACDC
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from functools import partial

import numpy as np

from ..acdc import (
    ACDC_NUM_CLASSES, ACDC_PHASES, ACDC_SPLITS, SLICE_AXES, acdc_case_name, minmax_normalize, write_acdc_case,
)
from ..errors import DataError
from ..io.lists import write_list
from ..io.nifti import load_nifti_pair
from .cli import preparation_parser, run_preparation
from .splits import split_in_blocks

SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
PATIENT_PATTERN = re.compile(r"^patient(\d+)$")
GT_PATTERN = re.compile(r"^patient\d+_frame(\d+)_gt\.nii(\.gz)?$")
INFO_PATTERN = re.compile(r"^\s*(ED|ES)\s*:\s*(\d+)\s*$")


def find_patients(raw_dir: str, subsets: Sequence[str] = ("training",)) -> dict[int, str]:
    """Map patient number -> patient folder for the given subsets of the database."""
    base = raw_dir if os.path.isdir(os.path.join(raw_dir, subsets[0])) else os.path.join(raw_dir, "database")
    patients = {}
    for subset in subsets:
        subset_dir = os.path.join(base, subset)
        if not os.path.isdir(subset_dir):
            raise DataError(raw_dir, f"expected {subset}/patientNNN/ folders (in the ACDC 'database' folder)")
        for name in sorted(os.listdir(subset_dir)):
            match = PATIENT_PATTERN.match(name)
            if match and os.path.isdir(os.path.join(subset_dir, name)):
                patients[int(match.group(1))] = os.path.join(subset_dir, name)
    if not patients:
        raise DataError(raw_dir, f"no patientNNN folders found in {', '.join(subsets)}")
    return patients


def phase_frames(patient_dir: str) -> dict[str, int]:
    """{'ED': frame, 'ES': frame} from Info.cfg, else from the two ground-truth files in order."""
    info_path = os.path.join(patient_dir, "Info.cfg")
    if os.path.isfile(info_path):
        with open(info_path, encoding="utf-8") as handle:
            frames = {m.group(1): int(m.group(2)) for m in map(INFO_PATTERN.match, handle) if m}
        if set(frames) != set(ACDC_PHASES):
            raise DataError(info_path, "expected 'ED: <frame>' and 'ES: <frame>' lines")
        return frames
    gt_frames = sorted(int(m.group(1)) for m in map(GT_PATTERN.match, os.listdir(patient_dir)) if m)
    if len(gt_frames) != len(ACDC_PHASES):
        raise DataError(patient_dir, f"no Info.cfg and {len(gt_frames)} ground-truth frames (need 2)")
    return dict(zip(ACDC_PHASES, gt_frames))


def frame_path(patient_dir: str, frame: int, suffix: str) -> str:
    """Path of ``patientNNN_frameYY{suffix}.nii.gz`` (or ``.nii``) in a patient folder."""
    stem = f"{os.path.basename(patient_dir)}_frame{frame:02d}{suffix}"
    for extension in (".nii.gz", ".nii"):
        path = os.path.join(patient_dir, stem + extension)
        if os.path.isfile(path):
            return path
    raise DataError(os.path.join(patient_dir, stem + ".nii.gz"), "frame file does not exist")


def load_phase(patient_dir: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """One phase: image float32 [D,H,W] normalised to [0,1], label uint8 [D,H,W] in 0..3."""
    image_path, label_path = frame_path(patient_dir, frame, ""), frame_path(patient_dir, frame, "_gt")
    image, label = load_nifti_pair(image_path, label_path, ACDC_NUM_CLASSES)
    image = np.transpose(minmax_normalize(image), SLICE_AXES)
    label = np.transpose(label.astype(np.uint8), SLICE_AXES)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def split_patients(
    numbers: Sequence[int], fractions: Sequence[float] = SPLIT_FRACTIONS, seed: int = 1234
) -> dict[str, list[int]]:
    """Seeded train/valid/test split of patient numbers; every split gets at least one patient."""
    return split_in_blocks(numbers, fractions, ACDC_SPLITS, seed, what="patients")


def prepare_acdc(
    raw_dir: str,
    out_dir: str,
    list_dir: str,
    seed: int = 1234,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    include_testing: bool = False,
) -> dict[str, list[str]]:
    """Convert the raw patients; returns the list entries per split."""
    subsets = ("training", "testing") if include_testing else ("training",)
    patients = find_patients(raw_dir, subsets)
    try:
        assignment = split_patients(sorted(patients), fractions, seed)
    except ValueError as exc:
        raise DataError(raw_dir, str(exc)) from exc
    entries: dict[str, list[str]] = {split: [] for split in ACDC_SPLITS}
    for split, numbers in assignment.items():
        for number in numbers:
            patient_dir = patients[number]
            for phase, frame in phase_frames(patient_dir).items():
                image, label = load_phase(patient_dir, frame)
                entries[split] += write_acdc_case(out_dir, split, acdc_case_name(number), phase, image, label)
            print(f"{acdc_case_name(number)} -> {split}")
    for split in ACDC_SPLITS:
        write_list(os.path.join(list_dir, f"{split}.txt"), entries[split])
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = preparation_parser(__file__, "Convert the raw ACDC database to the MT-UNet npz format.")
    parser.add_argument("--raw_dir", required=True, help="ACDC 'database' folder (holding training/patientNNN)")
    parser.add_argument("--out_dir", default="./data/ACDC", help="writes OUT/train, OUT/valid, OUT/test")
    parser.add_argument("--list_dir", default="./lists/lists_ACDC")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the patient split")
    parser.add_argument("--fractions", type=float, nargs=3, default=list(SPLIT_FRACTIONS),
                        metavar=("TRAIN", "VALID", "TEST"))
    parser.add_argument("--include_testing", action="store_true", help="also use the 'testing' patients")
    args = parser.parse_args(argv)
    prepare = partial(prepare_acdc, args.raw_dir, args.out_dir, args.list_dir, args.seed, args.fractions,
                      args.include_testing)
    return run_preparation(prepare, args.out_dir, args.list_dir, "acdc")


if __name__ == "__main__":
    sys.exit(main())
