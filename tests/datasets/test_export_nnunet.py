"""python -m datasets.export.nnunet: a prepared set in nnU-Net v2 raw format with the same splits. An own set comes
back identical through python -m datasets.prepare.own (splits, images, labels); a registered set's training slices
are regrouped into their volumes."""
from __future__ import annotations

import glob
import json
import os

import h5py
import nibabel as nib
import numpy as np

from datasets.export.nnunet import main, slice_case
from datasets.own.descriptor import load_descriptor
from datasets.phantoms.own import write_nnunet_phantom
from datasets.phantoms.synapse import write_synapse_phantom
from datasets.prepare.own import main as prepare


def h5_arrays(path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path) as handle:
        return handle["image"][()], handle["label"][()]


def test_an_own_set_comes_back_identical(tmp_path):
    src = write_nnunet_phantom(str(tmp_path / "raw"), num_train=4, num_test=1)
    assert prepare(["--src", src, "--out", str(tmp_path / "own"), "--no_progress"]) == 0
    out = tmp_path / "nnUNet_raw" / "Dataset905_Back"
    assert main(["--dataset", str(tmp_path / "own"), "--out", str(out)]) == 0
    first = load_descriptor(tmp_path / "own")
    folds = json.load(open(out / "splits_final.json"))
    assert folds == [{"train": list(first.splits["train"]), "val": list(first.splits["val"])}]
    assert sorted(os.listdir(out / "labelsTs")) == [f"{case}.nii.gz" for case in first.splits["test"]]
    assert prepare(["--src", str(out), "--out", str(tmp_path / "again"), "--no_progress"]) == 0
    second = load_descriptor(tmp_path / "again")
    assert second.splits == first.splits and second.intensity[0].scheme == "none"  # noNorm: used as exported
    for case in first.splits["test"] + first.splits["val"]:
        before, after = (h5_arrays(f"{desc.volume_path}/{case}.npy.h5") for desc in (first, second))
        for a, b in zip(before, after):
            np.testing.assert_array_equal(a, b)


def test_a_registered_set_keeps_its_splits_and_volumes(tmp_path, capsys):
    paths = write_synapse_phantom(str(tmp_path / "Synapse"), str(tmp_path / "lists"), num_train=2, num_test=1, size=16,
                                  depth=3)
    out = tmp_path / "Dataset906_Synapse"
    assert main(["--dataset", "synapse", "--out", str(out), "--root_path", paths["root_path"], "--volume_path",
                 paths["volume_path"], "--list_dir", paths["list_dir"]]) == 0
    assert "nnUNetv2_train 906 2d all" in capsys.readouterr().out  # no val split: no splits_final.json
    assert not (out / "splits_final.json").exists()
    meta = json.load(open(out / "dataset.json"))
    assert meta["numTraining"] == 2 and meta["labels"]["aorta"] == 1 and meta["channel_names"] == {"0": "noNorm"}
    case = sorted(os.listdir(out / "labelsTr"))[0][: -len(".nii.gz")]
    slices = [np.load(p) for p in sorted(glob.glob(f"{paths['root_path']}/{case}_slice*.npz"))]
    label = np.asanyarray(nib.load(out / "labelsTr" / f"{case}.nii.gz").dataobj)
    # Synapse's slices [z, x, y] of LPS voxels, written back as (x, y, z)
    np.testing.assert_array_equal(label, np.stack([s["label"] for s in slices]).transpose(1, 2, 0))
    assert nib.aff2axcodes(nib.load(out / "labelsTr" / f"{case}.nii.gz").affine) == ("L", "P", "S")
    (test_case,) = [name[: -len(".nii.gz")] for name in os.listdir(out / "labelsTs")]
    image = np.asanyarray(nib.load(out / "imagesTs" / f"{test_case}_0000.nii.gz").dataobj)
    np.testing.assert_allclose(image, h5_arrays(f"{paths['volume_path']}/{test_case}.npy.h5")[0].transpose(1, 2, 0))


def test_slice_names_and_bad_output_names(tmp_path, capsys):
    assert slice_case("case0005_slice012") == ("case0005", 12)
    assert slice_case("case_001_sliceED_3") == ("case_001_ED", 3)
    assert main(["--dataset", "synapse", "--out", str(tmp_path / "Synapse")]) == 1
    assert "Dataset<3-digit ID>_<Name>" in capsys.readouterr().err
    assert not (tmp_path / "Synapse").exists()
