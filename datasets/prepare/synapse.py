"""Build the TransUNet-format Synapse set from the raw BTCV download (``RawData``).

Input: ``<raw_dir>/Training/img/img0001.nii.gz`` and ``<raw_dir>/Training/label/label0001.nii.gz``
(``raw_dir`` may also point at the ``Training`` folder itself).
Steps, as in TransUNet's description and the Sim-MPNet release's preprocessing script:
clip CT to [-125, 275] HU and scale to [0, 1]; transpose nibabel's (x, y, z) to [z, x, y];
map the 13 BTCV labels to the 8 TransUNet organs (others -> background); write every axial
slice of the training cases to ``<out_dir>/train_npz/caseNNNN_sliceSSS.npz`` and each test
case to ``<out_dir>/test_vol_h5/caseNNNN.npy.h5``; list files ``train.txt`` and
``test_vol.txt`` in ``list_dir``. Split: TransUNet's 12 test cases, the other cases train.

    python -m datasets.prepare.synapse --raw_dir RawData --out_dir data/Synapse --list_dir lists/lists_Synapse
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from functools import partial

import numpy as np

from ..errors import DataError
from ..io.lists import write_list
from ..io.nifti import load_nifti_pair
from .cli import preparation_parser, run_preparation
from ..synapse import (  # HU window and scaling, slice axes: shared with prediction on raw scans (the spec)
    HU_MAX, HU_MIN, SLICE_AXES, SYNAPSE_TEST_CASES, TEST_DIR_NAME, TEST_SPLIT, TRAIN_DIR_NAME, TRAIN_SPLIT,
    clip_and_scale_hu, synapse_case_name, write_synapse_test_case, write_synapse_train_case,
)

__all__ = ["HU_MIN", "HU_MAX", "clip_and_scale_hu", "map_btcv_labels", "find_raw_cases", "load_raw_case",
           "prepare_synapse", "main"]

NUM_BTCV_LABELS = 13
# BTCV label -> TransUNet label (1 aorta, 2 gallbladder, 3 kidney_left, 4 kidney_right,
# 5 liver, 6 pancreas, 7 spleen, 8 stomach). Esophagus (5), IVC (9), portal/splenic vein
# (10) and the adrenal glands (12, 13) become background.
BTCV_TO_TRANSUNET = {1: 7, 2: 4, 3: 3, 4: 2, 6: 5, 7: 8, 8: 1, 11: 6}
BTCV_NAMES = ("spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
              "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland", "left adrenal gland")
IMAGE_PATTERN = re.compile(r"^img(\d+)\.nii(\.gz)?$")


def map_btcv_labels(label: np.ndarray) -> np.ndarray:
    """Map integer BTCV labels 0..13 to the 9 TransUNet classes (uint8)."""
    lookup = np.zeros(NUM_BTCV_LABELS + 1, dtype=np.uint8)
    for btcv, transunet in BTCV_TO_TRANSUNET.items():
        lookup[btcv] = transunet
    return lookup[np.asarray(label, dtype=np.int64)]


def label_mapping_text() -> str:
    """The relabelling, said once per preparation (BTCV's 13 organs -> TransUNet's 8 classes)."""
    kept = ", ".join(f"{btcv} {BTCV_NAMES[btcv - 1]} -> {transunet}"
                     for btcv, transunet in sorted(BTCV_TO_TRANSUNET.items(), key=lambda item: item[1]))
    dropped = ", ".join(f"{btcv} {BTCV_NAMES[btcv - 1]}" for btcv in range(1, NUM_BTCV_LABELS + 1)
                        if btcv not in BTCV_TO_TRANSUNET)
    return f"labels: BTCV -> TransUNet's 8 organs: {kept}; background: {dropped}"


def find_raw_cases(raw_dir: str) -> dict[int, tuple[str, str]]:
    """Map case number -> (image path, label path) in a RawData/Training layout."""
    base = raw_dir
    if not os.path.isdir(os.path.join(base, "img")):
        base = os.path.join(raw_dir, "Training")
    image_dir, label_dir = os.path.join(base, "img"), os.path.join(base, "label")
    if not os.path.isdir(image_dir) or not os.path.isdir(label_dir):
        raise DataError(raw_dir, "expected Training/img/imgNNNN.nii.gz and Training/label/labelNNNN.nii.gz "
                                 "(or img/ and label/ directly inside)")
    cases = {}
    for name in sorted(os.listdir(image_dir)):
        match = IMAGE_PATTERN.match(name)
        if not match:
            continue
        label_path = os.path.join(label_dir, "label" + name[len("img"):])
        if not os.path.isfile(label_path):
            raise DataError(label_path, f"label file missing for image {os.path.join(image_dir, name)}")
        cases[int(match.group(1))] = (os.path.join(image_dir, name), label_path)
    if not cases:
        raise DataError(image_dir, "no imgNNNN.nii[.gz] files found")
    return cases


def load_raw_case(image_path: str, label_path: str) -> tuple[np.ndarray, np.ndarray]:
    """One preprocessed case: image float32 [D,H,W] in [0,1], label uint8 [D,H,W]."""
    image, label = load_nifti_pair(image_path, label_path, NUM_BTCV_LABELS + 1)
    image = np.transpose(clip_and_scale_hu(image), SLICE_AXES)
    label = np.transpose(map_btcv_labels(label), SLICE_AXES)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def prepare_synapse(
    raw_dir: str, out_dir: str, list_dir: str, test_cases: Sequence[int] = SYNAPSE_TEST_CASES
) -> dict:
    """Convert the raw cases; returns the written case names per split. Prints the label mapping it applies and a
    warning when test cases of ``test_cases`` are absent from the download."""
    cases = find_raw_cases(raw_dir)
    print(label_mapping_text())
    absent = [number for number in test_cases if number not in cases]
    if absent:
        print(f"warning: {len(absent)} of the {len(test_cases)} test cases are not in {raw_dir} "
              f"({', '.join(synapse_case_name(number) for number in absent)}): the test list holds "
              f"{len(test_cases) - len(absent)} volumes, and its numbers are not comparable with the published tables "
              f"(TransUNet's 12 test cases)", file=sys.stderr)
    train_dir, test_dir = os.path.join(out_dir, TRAIN_DIR_NAME), os.path.join(out_dir, TEST_DIR_NAME)
    train_entries, test_entries = [], []
    for number, (image_path, label_path) in sorted(cases.items()):
        image, label = load_raw_case(image_path, label_path)
        name = synapse_case_name(number)
        if number in test_cases:
            test_entries.append(write_synapse_test_case(test_dir, name, image, label))
        else:
            train_entries += write_synapse_train_case(train_dir, name, image, label)
        print(f"{name}: {image.shape} -> {'test' if number in test_cases else 'train'}")
    if not train_entries or not test_entries:
        raise DataError(raw_dir, f"split needs training and test cases; found {len(train_entries)} training "
                                 f"slices and {len(test_entries)} test volumes (test cases: {list(test_cases)})")
    write_list(os.path.join(list_dir, f"{TRAIN_SPLIT}.txt"), train_entries)
    write_list(os.path.join(list_dir, f"{TEST_SPLIT}.txt"), test_entries)
    return dict(train_slices=train_entries, test_cases=test_entries)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = preparation_parser(__file__, "Convert Synapse/BTCV RawData to the TransUNet npz/h5 format.")
    parser.add_argument("--raw_dir", required=True, help="RawData folder (holding Training/img, Training/label)")
    parser.add_argument("--out_dir", default="./data/Synapse", help="writes OUT/train_npz and OUT/test_vol_h5")
    parser.add_argument("--list_dir", default="./lists/lists_Synapse")
    parser.add_argument("--test_cases", type=int, nargs="+", default=list(SYNAPSE_TEST_CASES))
    args = parser.parse_args(argv)
    return run_preparation(partial(prepare_synapse, args.raw_dir, args.out_dir, args.list_dir, args.test_cases),
                           args.out_dir, args.list_dir, "synapse")


if __name__ == "__main__":
    sys.exit(main())
