"""Own data sets, bad input: every problem is one line naming the file, exit status 1, and nothing written (no
output folder, no temporary folder left beside it)."""
from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from datasets.prepare.own import main

SHAPE = (8, 8, 3)


def save(path, data, affine=None) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), path)


def tiny_nnunet(root, channels: int = 1, cases: int = 3, labels=None) -> str:
    """A valid nnU-Net v2 raw set: ``cases`` cases of ``channels`` MR channels, labels 0/1/2."""
    root = str(root)
    for folder in ("imagesTr", "labelsTr"):
        os.makedirs(f"{root}/{folder}", exist_ok=True)
    rng = np.random.default_rng(0)
    for case in range(cases):
        for channel in range(channels):
            save(f"{root}/imagesTr/c{case}_{channel:04d}.nii.gz", rng.normal(size=SHAPE).astype(np.float32))
        label = np.zeros(SHAPE, np.uint8)
        label[2:5, 2:5] = 1
        label[5:7, 5:7] = 2
        save(f"{root}/labelsTr/c{case}.nii.gz", label)
    meta = {"channel_names": {str(i): f"MR{i}" for i in range(channels)}, "numTraining": cases,
            "labels": labels or {"background": 0, "a": 1, "b": 2}, "file_ending": ".nii.gz"}
    with open(f"{root}/dataset.json", "w") as handle:
        json.dump(meta, handle)
    return root


def run_bad(src, tmp_path, capsys, *extra: str) -> str:
    """Prepare ``src``: assert exit 1, one error line, no output and no temporary folder; return the line."""
    out = tmp_path / "out" / "prepared"
    status = main(["--src", str(src), "--out", str(out), "--no_progress", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists()
    assert not (out.parent.exists() and os.listdir(out.parent)), os.listdir(out.parent)
    return err[0]


def test_a_valid_tiny_set_prepares(tmp_path, capsys):
    """The fixture itself is good: the failures below come from the one change each makes."""
    src = tiny_nnunet(tmp_path / "raw")
    assert main(["--src", src, "--out", str(tmp_path / "out"), "--no_progress"]) == 0
    assert (tmp_path / "out" / "dataset_descriptor.json").is_file()


def test_image_without_label(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    os.remove(f"{src}/labelsTr/c1.nii.gz")
    line = run_bad(src, tmp_path, capsys)
    assert f"{src}/labelsTr/c1.nii.gz: label file missing" in line


def test_label_without_image(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    os.remove(f"{src}/imagesTr/c1_0000.nii.gz")
    assert f"{src}/labelsTr/c1.nii.gz: label without image" in run_bad(src, tmp_path, capsys)


def test_missing_channel_file(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw", channels=2)
    os.remove(f"{src}/imagesTr/c2_0001.nii.gz")
    assert f"{src}/imagesTr/c2_0001.nii.gz: missing channel file" in run_bad(src, tmp_path, capsys)


def test_extra_channel_file(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    save(f"{src}/imagesTr/c0_0001.nii.gz", np.zeros(SHAPE, np.float32))
    assert f"{src}/imagesTr/c0_0001.nii.gz: channel 1 but dataset.json declares 1" in run_bad(src, tmp_path, capsys)


def test_image_label_shape_mismatch(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    save(f"{src}/labelsTr/c2.nii.gz", np.zeros((8, 7, 3), np.uint8))
    line = run_bad(src, tmp_path, capsys)
    assert f"{src}/labelsTr/c2.nii.gz: label shape (8, 7, 3) differs" in line


def test_image_label_affine_mismatch(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    shifted = np.eye(4)
    shifted[0, 3] = 0.5  # half a millimetre: beyond the stated tolerance
    save(f"{src}/labelsTr/c0.nii.gz", np.zeros(SHAPE, np.uint8), shifted)
    line = run_bad(src, tmp_path, capsys)
    assert f"{src}/labelsTr/c0.nii.gz: label affine differs" in line and "tolerance" in line


def test_affine_within_tolerance_is_accepted(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    shifted = np.eye(4)
    shifted[0, 3] = 1e-5  # float rounding in a header
    save(f"{src}/labelsTr/c0.nii.gz", np.zeros(SHAPE, np.uint8), shifted)
    assert main(["--src", src, "--out", str(tmp_path / "out"), "--no_progress"]) == 0


def test_label_values_not_declared(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, 0] = 7
    save(f"{src}/labelsTr/c1.nii.gz", label)
    assert f"{src}/labelsTr/c1.nii.gz: label values [7] not declared" in run_bad(src, tmp_path, capsys)


def test_channel_count_differing_between_cases(tmp_path, capsys):
    """MSD: one case's 4-D file holds 3 channels where modality declares 2."""
    root = tmp_path / "msd"
    training = []
    for case, channels in enumerate((2, 2, 3)):
        save(f"{root}/imagesTr/m{case}.nii.gz", np.ones((*SHAPE, channels), np.float32))
        save(f"{root}/labelsTr/m{case}.nii.gz", np.zeros(SHAPE, np.uint8))
        training.append({"image": f"./imagesTr/m{case}.nii.gz", "label": f"./labelsTr/m{case}.nii.gz"})
    with open(root / "dataset.json", "w") as handle:
        json.dump({"modality": {"0": "T1", "1": "T2"}, "labels": {"0": "background", "1": "x"},
                   "training": training}, handle)
    assert f"{root}/imagesTr/m2.nii.gz: 3 channel(s), dataset.json declares 2" in run_bad(root, tmp_path, capsys)


def test_empty_images_tr(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw", cases=0)
    assert f"{src}/imagesTr: empty" in run_bad(src, tmp_path, capsys)


def test_unknown_file_ending(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    with open(f"{src}/imagesTr/c3_0000.img", "w") as handle:
        handle.write("x")
    assert f"{src}/imagesTr/c3_0000.img: unknown file ending" in run_bad(src, tmp_path, capsys)


def test_unknown_file_ending_in_dataset_json(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    meta = json.load(open(f"{src}/dataset.json"))
    json.dump({**meta, "file_ending": ".img"}, open(f"{src}/dataset.json", "w"))
    assert f"{src}/dataset.json: unknown file_ending '.img'" in run_bad(src, tmp_path, capsys)


def test_region_based_labels_are_refused(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw", labels={"background": 0, "whole": [1, 2], "core": 2})
    assert f"{src}/dataset.json: region-based labels" in run_bad(src, tmp_path, capsys)


def test_an_ignore_label_is_refused(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw", labels={"background": 0, "a": 1, "ignore": 2})
    assert f"{src}/dataset.json: an 'ignore' label" in run_bad(src, tmp_path, capsys)


def test_4d_label(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    save(f"{src}/labelsTr/c0.nii.gz", np.zeros((*SHAPE, 2), np.uint8))
    assert f"{src}/labelsTr/c0.nii.gz: 4-D label" in run_bad(src, tmp_path, capsys)


def tiny_folder(root, values=(0, 255)) -> str:
    for index in range(4):
        os.makedirs(f"{root}/images", exist_ok=True)
        os.makedirs(f"{root}/masks", exist_ok=True)
        Image.fromarray(np.full((6, 6, 3), 100, np.uint8)).save(f"{root}/images/p{index}.png")
        mask = np.zeros((6, 6), np.uint8)
        mask[1:3, 1:3] = values[1 + index % (len(values) - 1)]
        Image.fromarray(mask).save(f"{root}/masks/p{index}.png")
    return str(root)


def test_mask_values_beyond_the_class_count(tmp_path, capsys):
    src = tiny_folder(tmp_path / "folder", values=(0, 1, 2))
    line = run_bad(src, tmp_path, capsys, "--class_names", "lesion")  # 2 classes: 0, 1
    assert f"{src}/masks/p1.png: mask values up to 2 beyond the class count 2" in line


def test_folder_image_without_mask(tmp_path, capsys):
    src = tiny_folder(tmp_path / "folder")
    os.remove(f"{src}/masks/p3.png")
    assert f"{src}/masks/p3.png: mask missing for image" in run_bad(src, tmp_path, capsys)


def test_a_folder_of_neither_format(tmp_path, capsys):
    (tmp_path / "stuff" / "scans").mkdir(parents=True)
    assert f"{tmp_path / 'stuff'}: neither format" in run_bad(tmp_path / "stuff", tmp_path, capsys)


def test_an_existing_output_is_never_overwritten(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert main(["--src", src, "--out", str(out), "--no_progress"]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert os.listdir(out) == ["notes.txt"]


@pytest.mark.parametrize("workers", [2])
def test_a_failure_in_a_worker_leaves_nothing(tmp_path, capsys, workers):
    """The label problem is found while the cases are written (in worker processes): the temporary folder goes."""
    src = tiny_nnunet(tmp_path / "raw")
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, 0] = 9
    save(f"{src}/labelsTr/c2.nii.gz", label)
    assert f"{src}/labelsTr/c2.nii.gz: label values [9]" in run_bad(src, tmp_path, capsys, "--workers", str(workers))


def test_a_fold_that_splits_final_does_not_hold(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    json.dump([{"train": ["c0", "c1"], "val": ["c2"]}], open(f"{src}/splits_final.json", "w"))
    assert f"{src}/splits_final.json: --fold 1: the file holds folds 0..0" in run_bad(src, tmp_path, capsys, "--fold",
                                                                                       "1")


def test_a_fold_naming_an_unknown_case(tmp_path, capsys):
    src = tiny_nnunet(tmp_path / "raw")
    json.dump([{"train": ["c0", "c9"], "val": ["c2"]}], open(f"{src}/splits_final.json", "w"))
    assert f"{src}/splits_final.json: fold 0 names case 'c9', not in imagesTr" in run_bad(src, tmp_path, capsys)
