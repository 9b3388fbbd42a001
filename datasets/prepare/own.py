"""Prepare one's own labelled data set, whatever it is stored as (told apart by its files):

* nnU-Net v2 raw: ``dataset.json`` (channel_names, labels, numTraining, file_ending),
  ``imagesTr/<case>_<XXXX><ending>``,
  ``labelsTr/<case><ending>``, optional ``imagesTs/`` (+ ``labelsTs/``: the test split), optional
  ``splits_final.json`` (``--fold N``); endings .nii.gz .nii .nrrd .mha, and 2-D .png .bmp .tif;
* Medical Segmentation Decathlon: ``dataset.json`` with modality, labels, training [{image, label}] (4-D NIfTI);
* a plain 2-D folder: ``images/<stem>.<png|jpg|bmp|tif>`` + ``masks/<stem>.png`` (class indices, or 0/255).

Writes ``OUT/`` in the project's prepared formats (volumes: Synapse-format slices and volumes; 2-D: the colour sets'
npz items), ``OUT/lists/`` and ``OUT/dataset_descriptor.json`` (datasets/own/descriptor.py), then prints the commands
to train and test on it. Geometry, intensities and splits: datasets/own/ (docs/own_data.md).

    python -m datasets.prepare.own --src nnUNet_raw/Dataset001_Liver --out data/liver
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import partial

from ..argtypes import positive_int
from ..own.preparation import DEFAULT_SIZE, OwnOptions, prepare_own
from ..own.splits import DEFAULT_FRACTIONS, DEFAULT_SEED
from .cli import preparation_parser, run_preparation

__all__ = ["main", "next_commands"]


def next_commands(out: str) -> list[str]:
    """The commands to type next: train, then test the run's last checkpoint."""
    run = os.path.join("runs", os.path.basename(os.path.normpath(out)).lower())
    return [f"python train.py --dataset {out} --model sim_mpnet_pico --output_dir {run}",
            f"python test.py --checkpoint {run}/last.pth"]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = preparation_parser(__file__, "Prepare your own labelled data set (nnU-Net v2 raw, Medical Segmentation "
                                          "Decathlon, or a folder of 2-D images + masks) for every model.")
    parser.add_argument("--src", required=True, help="the raw data set's folder")
    parser.add_argument("--out", required=True, help="the prepared folder to write (must not exist, or be empty)")
    parser.add_argument("--name", default=None, help="the data set's name (default: OUT's folder name)")
    parser.add_argument("--fold", type=int, default=0, help="the fold of splits_final.json (when present)")
    parser.add_argument("--fractions", type=float, nargs=3, default=list(DEFAULT_FRACTIONS),
                        metavar=("TRAIN", "VAL", "TEST"), help="seeded split without splits_final.json")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the split")
    parser.add_argument("--ct_window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="CT: clip to [LOW, HIGH] HU and scale to [0, 1] (Synapse: -125 275) instead of "
                             "nnU-Net's foreground percentiles and z-score")
    parser.add_argument("--size", type=positive_int, default=DEFAULT_SIZE, help="2-D sets: image height and width")
    parser.add_argument("--class_names", nargs="+", default=None,
                        help="2-D folders: class names (not the background); masks must stay below their count")
    parser.add_argument("--channels", type=int, nargs="+", default=None, metavar="INDEX",
                        help="volume sets: keep these channels (dataset.json's indices, e.g. 0 for the first "
                             "modality; the models take one grey channel per slice)")
    parser.add_argument("--workers", type=positive_int, default=1, help="worker processes")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    options = OwnOptions(name=args.name, fold=args.fold, fractions=tuple(args.fractions), seed=args.seed,
                         ct_window=tuple(args.ct_window) if args.ct_window else None, size=args.size,
                         workers=args.workers, class_names=tuple(args.class_names) if args.class_names else None,
                         channels=tuple(args.channels) if args.channels is not None else None,
                         progress=not args.no_progress)
    status = run_preparation(partial(prepare_own, args.src, args.out, options), args.out, f"{args.out}/lists")
    if status == 0:
        print("next:\n" + "\n".join(f"  {command}" for command in next_commands(args.out)))
    return status


if __name__ == "__main__":
    sys.exit(main())
