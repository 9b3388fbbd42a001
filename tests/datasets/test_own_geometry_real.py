"""Own data sets' geometry on real files: Debian's mricron-data Colin27 T1 brain (ch2.nii.gz) with its hand-drawn
AAL label map on the same grid (aal.nii.gz, 116 regions), written as an nnU-Net raw set whose cases store the same
anatomy in different voxel orientations (RAS, LPS, axes swapped), spacings (2 mm and 4 mm) and file formats (.nii.gz,
.mha, .nrrd): preparation must give the same slices and labels for every storage, and the way back the
original grids."""
from __future__ import annotations

import json
import os

import h5py
import nibabel as nib
import numpy as np
import pytest

from datasets.own.descriptor import load_descriptor
from datasets.own.geometry import to_original_grid
from datasets.prepare.own import main

TEMPLATES = "/usr/share/mricron/templates"
T1, AAL = os.path.join(TEMPLATES, "ch2.nii.gz"), os.path.join(TEMPLATES, "aal.nii.gz")
pytestmark = pytest.mark.skipif(not (os.path.isfile(T1) and os.path.isfile(AAL)),
                                reason="real brain files absent: apt-get install -y mricron-data (Debian) ships "
                                       f"{T1} and {AAL}")
# A block of the 1 mm brain sampled every 2 mm in-plane and every 4 mm across slices (axial slices through the
# cortex); the 4 mm case samples every 4 mm, starting 1 mm later so that its voxels are the 2 mm voxels' centres.
X0, Y0, Z0, NX, NY, NZ = 30, 40, 70, 60, 70, 5


def crop(volume: np.ndarray, affine: np.ndarray, step: int, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxels x0+start, x0+start+step, ... (y likewise) of the slab, and their affine."""
    x = slice(X0 + start, X0 + NX * 2 - 1, step)
    y = slice(Y0 + start, Y0 + NY * 2 - 1, step)
    z = slice(Z0, Z0 + NZ * 4, 4)
    sampled = np.ascontiguousarray(volume[x, y, z])
    return sampled, affine @ np.array([[step, 0, 0, X0 + start], [0, step, 0, Y0 + start], [0, 0, 4, Z0],
                                       [0, 0, 0, 1.0]])


def reoriented(data: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored in orientation ``codes`` (nibabel's reorientation: flips and axis swaps)."""
    image = nib.Nifti1Image(data, affine)
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                                nib.orientations.axcodes2ornt(tuple(codes)))
    out = image.as_reoriented(transform)
    return np.asanyarray(out.dataobj), out.affine


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("colin")
    t1, aal = nib.load(T1), nib.load(AAL)
    brain, labels, affine = np.asanyarray(t1.dataobj), np.asanyarray(aal.dataobj), t1.affine
    np.testing.assert_array_equal(aal.affine, affine)  # one grid: the premise of the test
    image2, affine2 = crop(brain, affine, 2, 0)
    label2, _ = crop(labels, affine, 2, 0)
    image4, affine4 = crop(brain, affine, 4, 1)
    label4, _ = crop(labels, affine, 4, 1)
    src = root / "Dataset903_Colin"
    cases = {}
    for name, image, label, base, codes in (("ras", image2, label2, affine2, "RAS"),
                                            ("lps", image2, label2, affine2, "LPS"),
                                            ("swapped", image2, label2, affine2, "ARS"),
                                            ("ras_b", image2, label2, affine2, "RAS"),
                                            ("coarse", image4, label4, affine4, "LPI")):
        stored, stored_affine = reoriented(image, base, codes)
        stored_label, _ = reoriented(label, base, codes)
        for folder, array, suffix in (("imagesTr", stored, "_0000"), ("labelsTr", stored_label, "")):
            os.makedirs(src / folder, exist_ok=True)
            nib.save(nib.Nifti1Image(array, stored_affine), src / folder / f"{name}{suffix}.nii.gz")
        cases[name] = (stored_label, stored_affine)
    labels_json = {"background": 0, **{f"region_{value}": int(value) for value in range(1, int(labels.max()) + 1)}}
    json.dump({"channel_names": {"0": "T1"}, "labels": labels_json, "numTraining": 5, "file_ending": ".nii.gz"},
              open(src / "dataset.json", "w"))
    # every case in one split: all volumes (the 2 mm storages set the median spacing, 2 mm)
    json.dump([{"train": ["ras_b"], "val": ["coarse", "lps", "ras", "swapped"]}], open(src / "splits_final.json", "w"))
    assert main(["--src", str(src), "--out", str(root / "out"), "--no_progress"]) == 0
    return load_descriptor(root / "out"), cases


def volume(desc, case: str) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(os.path.join(desc.volume_path, case + ".npy.h5")) as handle:
        return handle["image"][()], handle["label"][()]


def test_every_orientation_gives_the_same_slices(prepared):
    desc, _ = prepared
    assert desc.slice_axes == (2, 1, 0) and desc.target_spacing == (2.0, 2.0)  # axial: z has the 4 mm steps
    image, label = volume(desc, "ras")
    assert label.shape == (NZ, NY, NX) and len(np.unique(label)) > 20  # the real regions are there
    for case in ("lps", "swapped"):
        other_image, other_label = volume(desc, case)
        np.testing.assert_array_equal(other_label, label)
        np.testing.assert_allclose(other_image, image, atol=1e-5)  # per-case z-score: sums in another order


def test_slices_are_shown_as_radiologists_view_them(prepared):
    """Rows run anterior -> posterior, columns from the patient's right to left (LPS voxel order)."""
    desc, cases = prepared
    _, ras_label = volume(desc, "ras")
    stored, _ = cases["ras"]  # RAS storage: x towards R, y towards A
    np.testing.assert_array_equal(ras_label[2], stored[::-1, ::-1, 2].T)


def test_another_spacing_is_resampled_onto_the_same_grid(prepared):
    desc, _ = prepared
    _, label = volume(desc, "ras")
    _, coarse = volume(desc, "coarse")  # 4 mm in-plane, stored LPI: upsampled to 2 mm, slices in S order
    assert coarse.shape == label.shape
    assert (coarse == label).mean() > 0.75  # 4 mm labels hold a quarter of the 2 mm detail
    assert desc.cases["coarse"].prepared_spacing == (4.0, 2.0, 2.0)


def test_predictions_are_written_back_in_each_original_grid(prepared):
    desc, cases = prepared
    for case in ("ras", "lps", "swapped", "coarse"):
        _, label = volume(desc, case)
        stored_label, stored_affine = cases[case]
        geometry = desc.cases[case]
        np.testing.assert_allclose(np.asarray(geometry.affine), stored_affine)
        back = to_original_grid(label, geometry, desc)
        assert back.shape == stored_label.shape
        np.testing.assert_array_equal(back, stored_label)  # exact: 2 mm identity, 4 mm -> 2 mm -> 4 mm nearest


@pytest.mark.parametrize("ending", [".mha", ".nrrd"])
def test_an_itk_storage_gives_the_same_slices(prepared, tmp_path, ending):
    """The same case through SimpleITK's .mha / .nrrd (LPS world, direction matrix) as an nnU-Net set of its own."""
    sitk = pytest.importorskip("SimpleITK")
    desc, cases = prepared
    src = tmp_path / "Dataset904_ColinMha"
    for folder in ("imagesTr", "labelsTr"):
        os.makedirs(src / folder)
    nii = nib.load(os.path.join(desc.extra["source"], "imagesTr", "lps_0000.nii.gz"))
    for name in ("a", "b", "c"):
        for folder, path in (("imagesTr", f"{name}_0000{ending}"), ("labelsTr", f"{name}{ending}")):
            source = "imagesTr/lps_0000.nii.gz" if folder == "imagesTr" else "labelsTr/lps.nii.gz"
            array = np.asanyarray(nib.load(os.path.join(desc.extra["source"], source)).dataobj)
            image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
            lps = np.diag([-1.0, -1.0, 1.0]) @ nii.affine[:3, :3]
            spacing = np.linalg.norm(lps, axis=0)
            image.SetSpacing(spacing.tolist())
            image.SetDirection((lps / spacing).flatten().tolist())
            image.SetOrigin((np.diag([-1.0, -1.0, 1.0]) @ nii.affine[:3, 3]).tolist())
            sitk.WriteImage(image, str(src / folder / path))
    labels = json.load(open(os.path.join(desc.extra["source"], "dataset.json")))["labels"]
    json.dump({"channel_names": {"0": "T1"}, "labels": labels, "numTraining": 3, "file_ending": ending},
              open(src / "dataset.json", "w"))
    json.dump([{"train": ["a"], "val": ["b", "c"]}], open(src / "splits_final.json", "w"))
    assert main(["--src", str(src), "--out", str(tmp_path / "out"), "--no_progress"]) == 0
    image, label = volume(load_descriptor(tmp_path / "out"), "b")
    expected_image, expected_label = volume(desc, "lps")
    np.testing.assert_array_equal(label, expected_label)
    np.testing.assert_allclose(image, expected_image, atol=1e-5)
