"""Write a registered or own prepared data set in nnU-Net v2 raw format, with the same splits, so that nnU-Net runs
as the baseline on identical data:

    python -m datasets.export.nnunet --dataset synapse --out nnUNet_raw/Dataset501_Synapse
    python -m datasets.export.nnunet --dataset data/liver --out nnUNet_raw/Dataset502_Liver

What is written is what the models here train and test on (the prepared arrays, not the download): volume sets as
NIfTI (the prepared [D, H, W] transposed back to voxels (x, y, z) with an affine of the set's raw orientation where its
spec knows it; voxel sizes from an own set's descriptor, 1 mm for the registered sets, whose prepared files carry no
spacing), their intensities already normalised, so the channel is
named ``noNorm`` (nnU-Net leaves it as is; ``--channel_name`` chooses another scheme); image sets as RGB PNGs
(nnU-Net's natural-image convention). Splits: the train and val cases in imagesTr/labelsTr with
``splits_final.json`` = [{"train": train, "val": val}] (fold 0; without a val split no splits_final.json: train
nnU-Net's fold ``all``), the test cases in imagesTs/labelsTs. Training slices are regrouped into their volumes
(``<case>_slice<NNN>``; ACDC's ``<case>_slice<phase>_<N>`` -> ``<case>_<phase>``).
"""
from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence

import nibabel as nib
import numpy as np

from .. import get_dataset
from ..errors import DataError
from ..io.images import save_image_file
from ..io.staged import staged_folder
from ..prepare.cli import preparation_parser
from ..registry import DatasetSpec

__all__ = ["OUT_PATTERN", "SLICE_PATTERN", "slice_case", "volume_affine", "export_nnunet", "main"]

OUT_PATTERN = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_-]+$")
SLICE_PATTERN = re.compile(r"^(?P<case>.+)_slice(?P<tag>[A-Za-z]*)_?(?P<index>\d+)$")
NO_NORMALISATION = "noNorm"  # nnU-Net v2's channel name for intensities used as they are


def slice_case(entry: str) -> tuple[str, int]:
    """(volume case, slice index) of a training slice's name: ``case0005_slice012`` -> (``case0005``, 12),
    ``case_001_sliceED_3`` -> (``case_001_ED``, 3)."""
    match = SLICE_PATTERN.match(entry)
    if not match:
        raise ValueError(f"not a slice name (<case>_slice<NNN>): {entry!r}")
    case = match["case"] + (f"_{match['tag']}" if match["tag"] else "")
    return case, int(match["index"])


def _spacings(spec: DatasetSpec) -> dict[str, tuple[float, ...]]:
    """{case: (D, H, W) mm} of an own volume set (its descriptor), else empty (1 mm)."""
    if spec.folder is None or spec.kind != "volume":
        return {}
    from ..own.descriptor import load_descriptor

    return {name: tuple(case.prepared_spacing) for name, case in load_descriptor(spec.folder).cases.items()
            if case.prepared_spacing is not None}


def _cases(spec: DatasetSpec, split: str, paths: dict[str, str]):
    """(case name, image, label) of every case of a split, one at a time: volumes [D, H, W] (training slices
    stacked) or images [H, W, 3]. ``paths``: root_path, volume_path, list_dir."""
    base = paths["root_path"] if split == spec.train_split else paths["volume_path"]
    reader = spec.build(base, paths["list_dir"], split, spec.num_classes)
    names = [reader.case_name(entry) for entry in reader.entries]
    if spec.kind == "image" or reader.is_volume:
        for index, name in enumerate(names):
            image, label = reader.load(index)
            yield name, image, label
        return
    groups: dict[str, list[tuple[int, int]]] = {}
    for index, name in enumerate(names):
        try:
            case, slice_index = slice_case(name)
        except ValueError as exc:
            raise DataError(reader.paths[index], str(exc)) from None
        groups.setdefault(case, []).append((slice_index, index))
    for case, members in groups.items():
        loaded = [reader.load(index) for _, index in sorted(members)]
        yield case, np.stack([image for image, _ in loaded]), np.stack([label for _, label in loaded])


def volume_affine(spec: DatasetSpec, spacing: Sequence[float] | None) -> tuple[tuple[int, ...], np.ndarray]:
    """(transpose from the prepared [D, H, W] to voxels (x, y, z), their affine): the set's raw orientation and
    slice axes where its spec knows them (its RawInput), so that the files show the anatomy the right way round;
    voxel sizes from ``spacing`` (D, H, W) mm, else 1 mm."""
    raw = spec.raw
    slice_axes = tuple(raw.slice_axes) if raw is not None and raw.slice_axes is not None else (2, 1, 0)
    to_voxels = tuple(int(axis) for axis in np.argsort(slice_axes))
    sizes = np.ones(3)
    if spacing:
        for prepared_axis, voxel_axis in enumerate(slice_axes):
            sizes[voxel_axis] = spacing[prepared_axis]
    ornt = nib.orientations.axcodes2ornt(tuple(raw.orientation if raw is not None and raw.orientation else "RAS"))
    affine = np.eye(4)
    affine[:3, :3] = 0
    for voxel_axis, (world_axis, direction) in enumerate(ornt):
        affine[int(world_axis), voxel_axis] = direction * sizes[voxel_axis]
    return to_voxels, affine


def _write_case(folder: str, subset: str, name: str, image: np.ndarray, label: np.ndarray, spec: DatasetSpec,
                spacing: Sequence[float] | None) -> None:
    images, labels = os.path.join(folder, f"images{subset}"), os.path.join(folder, f"labels{subset}")
    os.makedirs(images, exist_ok=True)
    os.makedirs(labels, exist_ok=True)
    label = np.asarray(label, dtype=np.uint8 if label.max() < 256 else np.int16)
    if spec.kind == "image":
        save_image_file(os.path.join(images, f"{name}_0000.png"), np.asarray(image, dtype=np.uint8))
        save_image_file(os.path.join(labels, f"{name}.png"), label)
        return
    to_voxels, affine = volume_affine(spec, spacing)
    for path, array in ((os.path.join(images, f"{name}_0000.nii.gz"), image.astype(np.float32)),
                        (os.path.join(labels, f"{name}.nii.gz"), label)):
        volume = nib.Nifti1Image(np.ascontiguousarray(np.transpose(array, to_voxels)), affine)
        volume.header.set_xyzt_units("mm")
        nib.save(volume, path)


def export_nnunet(dataset: str, out: str, channel_name: str = NO_NORMALISATION, root_path: str | None = None,
                  volume_path: str | None = None, list_dir: str | None = None) -> dict[str, list[str]]:
    """Write ``dataset`` (a registered name or a prepared folder) to ``out`` (``.../Dataset<ID>_<Name>``); returns
    the case names per split. The prepared files are read from the spec's paths unless given."""
    if not OUT_PATTERN.match(os.path.basename(os.path.normpath(out))):
        raise DataError(out, "nnU-Net raw folders are named Dataset<3-digit ID>_<Name>, e.g. "
                             "nnUNet_raw/Dataset501_Synapse")
    try:
        spec = get_dataset(dataset)
    except ValueError as exc:
        raise DataError(dataset, str(exc)) from None
    spacings = _spacings(spec)
    paths = {"root_path": root_path or spec.root_path, "volume_path": volume_path or spec.volume_path,
             "list_dir": list_dir or spec.list_dir}
    splits = {"train": spec.train_split, "val": spec.val_split, "test": spec.test_split}
    written: dict[str, list[str]] = {}
    with staged_folder(out) as tmp:
        for role, split in splits.items():
            if split is None:
                continue
            written[role] = []
            for name, image, label in _cases(spec, split, paths):
                _write_case(tmp, "Ts" if role == "test" else "Tr", name, image, label, spec, spacings.get(name))
                written[role].append(name)
            print(f"{role}: {len(written[role])} case(s) written", file=sys.stderr)
        channels = {"0": "R", "1": "G", "2": "B"} if spec.kind == "image" else {"0": channel_name}
        meta = {"name": os.path.basename(os.path.normpath(out)).split("_", 1)[1], "channel_names": channels,
                "labels": {"background": 0, **{name: index + 1 for index, name in enumerate(spec.class_names)}},
                "numTraining": len(written["train"]) + len(written.get("val", [])),
                "file_ending": ".png" if spec.kind == "image" else ".nii.gz",
                "description": f"exported from {spec.title} by python -m datasets.export.nnunet"}
        with open(os.path.join(tmp, "dataset.json"), "w", encoding="utf-8") as handle:
            json.dump(meta, handle, indent=1)
        if written.get("val"):
            with open(os.path.join(tmp, "splits_final.json"), "w", encoding="utf-8") as handle:
                json.dump([{"train": written["train"], "val": written["val"]}], handle, indent=1)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = preparation_parser(__file__, "Write a prepared data set in nnU-Net v2 raw format with the same splits.")
    parser.prog = "python -m datasets.export.nnunet"
    parser.add_argument("--dataset", required=True, help="a registered data set's name, or a prepared folder")
    parser.add_argument("--out", required=True, help="the nnU-Net raw folder to write: .../Dataset<ID>_<Name>")
    parser.add_argument("--channel_name", default=NO_NORMALISATION,
                        help="volume sets: the channel's name in dataset.json, i.e. nnU-Net's normalisation "
                             "(noNorm: the prepared intensities as they are)")
    for option, what in (("root_path", "training items"), ("volume_path", "evaluation items"),
                         ("list_dir", "split lists")):
        parser.add_argument(f"--{option}", default=None, help=f"registered sets: the folder of the {what} "
                                                              f"(default: the set's)")
    args = parser.parse_args(argv)
    try:
        written = export_nnunet(args.dataset, args.out, args.channel_name, args.root_path, args.volume_path,
                                args.list_dir)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    identifier = int(os.path.basename(os.path.normpath(args.out))[len("Dataset"):][:3])
    fold = "0" if written.get("val") else "all"
    print("wrote " + ", ".join(f"{len(v)} {k}" for k, v in written.items()) + f" cases to {args.out}\nnext:\n"
          f"  nnUNetv2_plan_and_preprocess -d {identifier} --verify_dataset_integrity\n"
          f"  nnUNetv2_train {identifier} 2d {fold}   (splits_final.json: copy it into nnUNet_preprocessed/"
          f"{os.path.basename(os.path.normpath(args.out))}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
