"""datasets/: loading and validation, augmentation, and the raw-data preparation scripts."""
from __future__ import annotations

import os

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from datasets import build_dataset, get_dataset
from datasets.augment import RandomGenerator, apply_params, sample_params
from datasets.errors import DataError
from datasets.prepare.acdc import main as prepare_acdc_main
from datasets.prepare.synapse import main as prepare_synapse_main

SYN_CLASSES, ACDC_CLASSES = 9, 4
H = W = 16


def make_slice(rng: np.random.Generator, num_classes: int, shape=(H, W)) -> tuple[np.ndarray, np.ndarray]:
    return rng.random(shape).astype(np.float32), rng.integers(0, num_classes, shape).astype(np.float32)


def write_lines(path, lines) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("".join(f"{line}\n" for line in lines))


@pytest.fixture
def synapse_set(tmp_path):
    """Hand-written tiny Synapse set: 3 training slices, 2 test volumes (plain numpy/h5py)."""
    rng = np.random.default_rng(0)
    train_dir, test_dir, list_dir = tmp_path / "train_npz", tmp_path / "test_vol_h5", tmp_path / "lists"
    os.makedirs(train_dir), os.makedirs(test_dir)
    names = ["case0005_slice000", "case0005_slice001", "case0006_slice000"]
    for name in names:
        image, label = make_slice(rng, SYN_CLASSES)
        np.savez(train_dir / f"{name}.npz", image=image, label=label)
    for case in ("case0001", "case0002"):
        with h5py.File(test_dir / f"{case}.npy.h5", "w") as handle:
            handle["image"] = rng.random((3, H, W)).astype(np.float32)
            handle["label"] = rng.integers(0, SYN_CLASSES, (3, H, W)).astype(np.float32)
    write_lines(list_dir / "train.txt", names)
    write_lines(list_dir / "test_vol.txt", ["case0001", "case0002"])
    return dict(train_dir=train_dir, test_dir=test_dir, list_dir=list_dir, names=names)


@pytest.fixture
def acdc_set(tmp_path):
    """Hand-written tiny ACDC set (MT-UNet naming; the public valid list names 2-D slices)."""
    rng = np.random.default_rng(1)
    root, list_dir = tmp_path / "ACDC", tmp_path / "lists_ACDC"
    for split in ("train", "valid", "test"):
        os.makedirs(root / split)
    train = ["case_001_sliceED_0.npz", "case_001_sliceES_0.npz"]
    for name in train:
        image, label = make_slice(rng, ACDC_CLASSES)
        np.savez(root / "train" / name, img=image, label=label)
    image, label = make_slice(rng, ACDC_CLASSES)
    np.savez(root / "valid" / "case_019_sliceED_0.npz", img=image, label=label)
    np.savez(root / "valid" / "case_019_volume_ED.npz", img=rng.random((4, H, W)), label=np.ones((4, H, W)))
    image, label = make_slice(rng, ACDC_CLASSES, (5, H, W))
    np.savez(root / "test" / "case_002_volume_ED.npz", img=image, label=label)
    write_lines(list_dir / "train.txt", train)
    write_lines(list_dir / "valid.txt", ["case_019_sliceED_0.npz", "case_019_volume_ED"])
    write_lines(list_dir / "test.txt", ["case_002_volume_ED.npz"])
    return dict(root=root, list_dir=list_dir)


# ----------------------------------------------------------------------------- loading
def test_grey_dataset_specs():
    syn, acdc = get_dataset("synapse"), get_dataset("acdc")
    assert syn.class_names == ("aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas",
                               "spleen", "stomach")
    assert (syn.root_path, syn.volume_path, syn.list_dir) == (
        "./data/Synapse/train_npz", "./data/Synapse/test_vol_h5", "./lists/lists_Synapse")
    assert (syn.train_split, syn.val_split, syn.test_split) == ("train", None, "test_vol")
    assert acdc.class_names == ("RV", "Myo", "LV")
    assert (acdc.root_path, acdc.volume_path, acdc.list_dir) == ("./data/ACDC", "./data/ACDC", "./lists/lists_ACDC")
    assert (acdc.train_split, acdc.val_split, acdc.test_split) == ("train", "valid", "test")
    assert (syn.num_classes, acdc.num_classes) == (SYN_CLASSES, ACDC_CLASSES)


def test_synapse_items_match_files(synapse_set):
    train = build_dataset("synapse", synapse_set["train_dir"], synapse_set["list_dir"], "train", SYN_CLASSES)
    assert len(train) == 3
    item = train[1]
    with np.load(synapse_set["train_dir"] / "case0005_slice001.npz") as archive:
        expected_image, expected_label = archive["image"], archive["label"]
    assert item["case_name"] == "case0005_slice001"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, H, W)
    assert item["label"].dtype == torch.int64
    assert np.array_equal(item["image"][0].numpy(), expected_image)
    assert np.array_equal(item["label"].numpy(), expected_label.astype(np.int64))

    test = build_dataset("Synapse", synapse_set["test_dir"], synapse_set["list_dir"], "test_vol", SYN_CLASSES)
    volume = test[1]
    assert volume["case_name"] == "case0002"
    assert volume["image"].dtype == np.float32 and volume["image"].shape == (3, H, W)
    assert volume["label"].dtype == np.int64 and volume["label"].shape == (3, H, W)
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=2)))
    assert batch["image"].shape == (2, 1, H, W) and batch["case_name"] == synapse_set["names"][:2]


def test_acdc_items_and_valid_slices_as_one_slice_volumes(acdc_set):
    train = build_dataset("acdc", acdc_set["root"], acdc_set["list_dir"], "train", ACDC_CLASSES)
    assert [train[i]["case_name"] for i in range(2)] == ["case_001_sliceED_0", "case_001_sliceES_0"]
    valid = build_dataset("acdc", acdc_set["root"], acdc_set["list_dir"], "valid", ACDC_CLASSES)
    assert valid[0]["image"].shape == (1, H, W) and valid[0]["label"].shape == (1, H, W)
    assert valid[1]["image"].shape == (4, H, W) and valid[1]["case_name"] == "case_019_volume_ED"
    assert valid[1]["image"].dtype == np.float32 and valid[1]["label"].dtype == np.int64
    test = build_dataset("acdc", acdc_set["root"], acdc_set["list_dir"], "test", ACDC_CLASSES)
    assert test[0]["image"].shape == (5, H, W) and test[0]["case_name"] == "case_002_volume_ED"


def test_build_dataset_rejects_unknown_name_and_volume_transform(synapse_set):
    with pytest.raises(ValueError, match="unknown data set"):
        build_dataset("isic", synapse_set["train_dir"], synapse_set["list_dir"], "train", 2)
    with pytest.raises(ValueError, match="training slices only"):
        build_dataset("synapse", synapse_set["test_dir"], synapse_set["list_dir"], "test_vol", SYN_CLASSES,
                      transform=RandomGenerator((8, 8)))


# ----------------------------------------------------------------------------- bad input
def assert_data_error(excinfo, path, *phrases) -> None:
    message = str(excinfo.value)
    assert message.startswith(f"{path}: "), message
    for phrase in phrases:
        assert phrase in message, message


def test_missing_data_dir(synapse_set, acdc_set, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as excinfo:
        build_dataset("synapse", missing, synapse_set["list_dir"], "train", SYN_CLASSES)
    assert_data_error(excinfo, missing, "data directory does not exist")
    os.rename(acdc_set["root"] / "valid", acdc_set["root"] / "moved")
    with pytest.raises(DataError) as excinfo:
        build_dataset("acdc", acdc_set["root"], acdc_set["list_dir"], "valid", ACDC_CLASSES)
    assert_data_error(excinfo, acdc_set["root"] / "valid", "data directory does not exist")


def test_missing_and_empty_list_file(synapse_set):
    list_dir = synapse_set["list_dir"]
    with pytest.raises(DataError) as excinfo:
        build_dataset("synapse", synapse_set["train_dir"], list_dir / "missing", "train", SYN_CLASSES)
    assert_data_error(excinfo, list_dir / "missing" / "train.txt", "list file does not exist")
    write_lines(list_dir / "train.txt", ["", "  "])
    with pytest.raises(DataError) as excinfo:
        build_dataset("synapse", synapse_set["train_dir"], list_dir, "train", SYN_CLASSES)
    assert_data_error(excinfo, list_dir / "train.txt", "list file is empty")


def test_list_naming_missing_files(synapse_set):
    list_dir = synapse_set["list_dir"]
    write_lines(list_dir / "train.txt", [*synapse_set["names"], "case0099_slice000", "case0099_slice001"])
    with pytest.raises(DataError) as excinfo:
        build_dataset("synapse", synapse_set["train_dir"], list_dir, "train", SYN_CLASSES)
    first_missing = os.path.join(synapse_set["train_dir"], "case0099_slice000.npz")
    assert_data_error(excinfo, first_missing, "does not exist", "2 of 5", str(list_dir / "train.txt"))


def corrupt_file(path, how: str) -> None:
    """Rewrite ``path`` (npz or h5) with one defect."""
    if how == "truncated":
        with open(path, "rb") as handle:
            data = handle.read()
        with open(path, "wb") as handle:
            handle.write(data[: len(data) // 2])
        return
    image_key = "img" if "ACDC" in str(path) else "image"
    if str(path).endswith(".npz"):
        with np.load(path) as archive:
            arrays = {key: archive[key] for key in archive.files}
    else:
        with h5py.File(path, "r") as handle:
            arrays = {key: handle[key][()] for key in handle}
    image, label = arrays[image_key], arrays["label"]
    if how == "missing_key":
        arrays = {"other": image, "label": label}
    elif how == "nan":
        image = image.copy()
        image.flat[3] = np.nan
        arrays[image_key] = image
    elif how == "label_range":
        label = label.copy()
        label.flat[0] = 99
        arrays["label"] = label
    elif how == "shape_mismatch":
        arrays["label"] = label[..., :-1]
    elif how == "wrong_ndim":
        arrays[image_key], arrays["label"] = image[None, None], label[None, None]
    if str(path).endswith(".npz"):
        np.savez(path, **arrays)
    else:
        os.remove(path)
        with h5py.File(path, "w") as handle:
            for key, value in arrays.items():
                handle[key] = value


DEFECTS = {
    "truncated": ("corrupt or truncated",),
    "missing_key": ("missing",),
    "nan": ("NaN/inf",),
    "label_range": ("label values", "outside [0,"),
    "shape_mismatch": ("shape mismatch",),
    "wrong_ndim": ("dimensions",),
}


@pytest.mark.parametrize("how", sorted(DEFECTS))
@pytest.mark.parametrize("which", ["synapse_train_npz", "synapse_test_h5", "acdc_test_npz"])
def test_bad_files_raise_data_error_naming_file_and_problem(how, which, synapse_set, acdc_set):
    if which == "synapse_train_npz":
        path = synapse_set["train_dir"] / "case0005_slice001.npz"
        args, index = ("synapse", synapse_set["train_dir"], synapse_set["list_dir"], "train", SYN_CLASSES), 1
    elif which == "synapse_test_h5":
        path = synapse_set["test_dir"] / "case0002.npy.h5"
        args, index = ("synapse", synapse_set["test_dir"], synapse_set["list_dir"], "test_vol", SYN_CLASSES), 1
    else:
        path = acdc_set["root"] / "test" / "case_002_volume_ED.npz"
        args, index = ("acdc", acdc_set["root"], acdc_set["list_dir"], "test", ACDC_CLASSES), 0
    dataset = build_dataset(*args)
    corrupt_file(path, how)
    with pytest.raises(DataError) as excinfo:
        dataset[index]
    assert_data_error(excinfo, path, *DEFECTS[how])


def test_wrong_key_message_lists_found_keys(synapse_set, acdc_set):
    # a Synapse file ('image') placed into ACDC (expects 'img') is reported with the keys found
    path = acdc_set["root"] / "test" / "case_002_volume_ED.npz"
    np.savez(path, image=np.zeros((2, H, W)), label=np.zeros((2, H, W)))
    dataset = build_dataset("acdc", acdc_set["root"], acdc_set["list_dir"], "test", ACDC_CLASSES)
    with pytest.raises(DataError) as excinfo:
        dataset[0]
    assert_data_error(excinfo, path, "missing key 'img'", "found keys: image, label")


def test_non_integer_labels_are_rejected(synapse_set):
    path = synapse_set["train_dir"] / "case0005_slice000.npz"
    np.savez(path, image=np.zeros((H, W), np.float32), label=np.full((H, W), 0.5, np.float32))
    dataset = build_dataset("synapse", synapse_set["train_dir"], synapse_set["list_dir"], "train", SYN_CLASSES)
    with pytest.raises(DataError) as excinfo:
        dataset[0]
    assert_data_error(excinfo, path, "non-integer")


# ----------------------------------------------------------------------------- augmentation
def reference_augment(image, label, rng, output_size):
    """Naive statement of the released RandomGenerator with an explicit generator."""
    if rng.random() > 0.5:
        k, axis = rng.integers(0, 4), rng.integers(0, 2)
        image, label = np.flip(np.rot90(image, k), axis), np.flip(np.rot90(label, k), axis)
    elif rng.random() > 0.5:
        angle = rng.integers(-20, 20)
        image = ndimage.rotate(image, angle, order=0, reshape=False)
        label = ndimage.rotate(label, angle, order=0, reshape=False)
    h, w = image.shape
    if (h, w) != tuple(output_size):
        image = ndimage.zoom(image, (output_size[0] / h, output_size[1] / w), order=3)
        label = ndimage.zoom(label, (output_size[0] / h, output_size[1] / w), order=0)
    return image, label


def marker_pair(size=(20, 24)):
    """Label with an asymmetric L-shaped marker (no rotation/flip maps it onto itself)."""
    label = np.zeros(size, np.int64)
    label[3:12, 4:7] = 1
    label[9:12, 7:15] = 2
    label[14:17, 17:19] = 3
    return label.astype(np.float32) * 0.25, label


def test_augmentation_matches_reference_and_output_size():
    image, label = marker_pair()
    image = image + np.linspace(0, 0.1, image.size).reshape(image.shape)  # non-constant intensities
    transform = RandomGenerator((32, 28))
    for seed in range(40):
        image_t, label_t = transform(image, label, np.random.default_rng(seed))
        ref_image, ref_label = reference_augment(image, label, np.random.default_rng(seed), (32, 28))
        assert image_t.shape == (1, 32, 28) and image_t.dtype == torch.float32
        assert label_t.shape == (32, 28) and label_t.dtype == torch.int64
        np.testing.assert_allclose(image_t[0].numpy(), ref_image, rtol=1e-6, atol=1e-6)
        assert np.array_equal(label_t.numpy(), ref_label)
        assert set(np.unique(label_t.numpy())) <= {0, 1, 2, 3}


def test_augmentation_moves_image_and_label_together():
    image, label = marker_pair((24, 24))  # square: rot90 keeps the shape, so nothing is resized
    transform = RandomGenerator(label.shape)
    outcomes = set()
    for seed in range(60):
        image_t, label_t = transform(image, label, np.random.default_rng(seed))
        assert np.array_equal(image_t[0].numpy(), label_t.numpy() * 0.25), f"seed {seed}"
        outcomes.add(label_t.numpy().tobytes())
    assert len(outcomes) >= 8  # rot90/flip variants and rotations really happen


def test_augmentation_probabilities_and_angle_range():
    draws = [sample_params(np.random.default_rng(seed)) for seed in range(4000)]
    modes = [p.mode for p in draws]
    assert abs(modes.count("rot_flip") / len(draws) - 0.5) < 0.04
    assert abs(modes.count("rotate") / len(draws) - 0.25) < 0.03
    angles = {p.angle for p in draws if p.mode == "rotate"}
    assert angles == set(range(-20, 20))  # integers in [-20, 20): 20 itself never
    assert {p.rot90_k for p in draws if p.mode == "rot_flip"} == {0, 1, 2, 3}
    assert {p.flip_axis for p in draws if p.mode == "rot_flip"} == {0, 1}


def test_rotation_param_rotates_by_that_angle():
    image, label = marker_pair((41, 41))
    params = next(p for p in (sample_params(np.random.default_rng(s)) for s in range(100)) if p.mode == "rotate")
    rotated_image, rotated_label = apply_params(image, label, params)
    assert rotated_image.shape == image.shape  # reshape=False
    # centre of mass of the marker turns by -angle about the slice centre (row/column axes)
    center = (np.array(label.shape) - 1) / 2
    before = np.array(ndimage.center_of_mass(label > 0)) - center
    after = np.array(ndimage.center_of_mass(rotated_label > 0)) - center
    turned = np.degrees(np.arctan2(after[0], after[1]) - np.arctan2(before[0], before[1]))
    assert abs(((turned + params.angle + 180) % 360) - 180) < 3.0


def test_dataset_augmentation_is_deterministic_by_seed_epoch_index(synapse_set):
    def make(seed):
        return build_dataset("synapse", synapse_set["train_dir"], synapse_set["list_dir"], "train", SYN_CLASSES,
                             transform=RandomGenerator((12, 12)), seed=seed)

    def stack(ds):
        return torch.stack([ds[i]["image"] for i in range(len(ds))])

    first, second = make(7), make(7)
    assert torch.equal(stack(first), stack(second))
    assert torch.equal(stack(first), stack(first))  # re-reading an item gives the same draw
    raw = build_dataset("synapse", synapse_set["train_dir"], synapse_set["list_dir"], "train", SYN_CLASSES)
    rng = np.random.default_rng([7, 0, 2])
    expected, _ = RandomGenerator((12, 12))(raw[2]["image"][0].numpy(), raw[2]["label"].numpy(), rng)
    assert torch.equal(first[2]["image"], expected)
    epochs = []
    for epoch in range(4):
        first.set_epoch(epoch)
        epochs.append(stack(first))
    assert any(not torch.equal(epochs[0], other) for other in epochs[1:])
    assert any(not torch.equal(stack(make(s)), epochs[0]) for s in (8, 9, 10))


# ----------------------------------------------------------------------------- preparation
BTCV_NAMES = ["spleen", "kidney_right", "kidney_left", "gallbladder", "esophagus", "liver", "stomach", "aorta",
              "inferior_vena_cava", "portal_splenic_vein", "pancreas", "adrenal_right", "adrenal_left"]
HU_VALUES = np.array([-1000.0, -125.0, 75.0, 275.0, 3000.0, -25.0])
HU_EXPECTED = np.array([0.0, 0.0, 0.5, 1.0, 1.0, 0.25])  # (clip(hu, -125, 275) + 125) / 400


def save_nifti(path, array) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def fake_synapse_raw(root, cases=(1, 5, 6), shape=(6, 7, 3)):
    """RawData/Training/{img,label} with tiny volumes; returns {case: (image, label)}."""
    rng = np.random.default_rng(2)
    volumes = {}
    for case in cases:
        image = rng.choice(HU_VALUES, size=shape).astype(np.int16)
        label = rng.integers(0, 14, size=shape).astype(np.uint8)
        save_nifti(root / "Training" / "img" / f"img{case:04d}.nii.gz", image)
        save_nifti(root / "Training" / "label" / f"label{case:04d}.nii.gz", label)
        volumes[case] = (image, label)
    return volumes


def expected_synapse_label(btcv_label: np.ndarray) -> np.ndarray:
    names = get_dataset("synapse").class_names
    expected = np.zeros(btcv_label.shape, np.int64)
    for value, name in enumerate(BTCV_NAMES, start=1):
        if name in names:
            expected[btcv_label == value] = names.index(name) + 1
    return expected


def test_prepare_synapse_end_to_end(tmp_path):
    raw = tmp_path / "RawData"
    volumes = fake_synapse_raw(raw)
    out, lists = tmp_path / "Synapse", tmp_path / "lists_Synapse"
    assert prepare_synapse_main(["--raw_dir", str(raw), "--out_dir", str(out), "--list_dir", str(lists)]) == 0

    depth = volumes[5][0].shape[2]
    train = build_dataset("synapse", out / "train_npz", lists, "train", SYN_CLASSES)
    assert [train[i]["case_name"] for i in range(len(train))] == [
        f"case{c:04d}_slice{s:03d}" for c in (5, 6) for s in range(depth)]
    test = build_dataset("synapse", out / "test_vol_h5", lists, "test_vol", SYN_CLASSES)
    assert len(test) == 1 and test[0]["case_name"] == "case0001"  # case 1 is a TransUNet test case

    lookup = dict(zip(HU_VALUES, HU_EXPECTED))
    for case, index in ((5, 0), (6, 2)):
        image, label = volumes[case]
        item = train[(case - 5) * depth + index]
        expected_image = np.vectorize(lookup.get)(image[:, :, index].astype(float))
        np.testing.assert_allclose(item["image"][0].numpy(), expected_image, atol=1e-6)
        assert np.array_equal(item["label"].numpy(), expected_synapse_label(label[:, :, index]))
    image, label = volumes[1]
    volume = test[0]
    assert volume["image"].shape == (depth, 6, 7)  # [D,H,W] from nibabel's (x, y, z)
    np.testing.assert_allclose(volume["image"], np.vectorize(lookup.get)(np.moveaxis(image, 2, 0).astype(float)),
                               atol=1e-6)
    assert np.array_equal(volume["label"], expected_synapse_label(np.moveaxis(label, 2, 0)))


def test_prepare_synapse_bad_layouts(tmp_path, capsys):
    empty = tmp_path / "empty"
    os.makedirs(empty)
    args = ["--out_dir", str(tmp_path / "out"), "--list_dir", str(tmp_path / "lists")]
    assert prepare_synapse_main(["--raw_dir", str(empty), *args]) == 1
    err = capsys.readouterr().err
    assert str(empty) in err and "Training/img" in err

    raw = tmp_path / "RawData"
    fake_synapse_raw(raw, cases=(1, 5))
    os.remove(raw / "Training" / "label" / "label0005.nii.gz")
    assert prepare_synapse_main(["--raw_dir", str(raw), *args]) == 1
    err = capsys.readouterr().err
    assert "label0005.nii.gz" in err and "label file missing" in err

    fake_synapse_raw(raw, cases=(1, 5))
    with open(raw / "Training" / "img" / "img0005.nii.gz", "r+b") as handle:
        handle.truncate(60)
    assert prepare_synapse_main(["--raw_dir", str(raw), *args]) == 1
    err = capsys.readouterr().err
    assert "img0005.nii.gz" in err and "cannot read NIfTI" in err
    assert not os.path.exists(tmp_path / "lists" / "train.txt")  # nothing listed after a failure


def fake_acdc_raw(database, patients=range(1, 7), shape=(8, 9, 3), with_info=True):
    """database/training/patientNNN with ED (frame 01) and ES (frame 04) volumes and ground truth."""
    rng = np.random.default_rng(3)
    volumes = {}
    for patient in patients:
        folder = database / "training" / f"patient{patient:03d}"
        for phase, frame in (("ED", 1), ("ES", 4)):
            image = rng.uniform(20, 900, size=shape).astype(np.float32)
            label = rng.integers(0, 4, size=shape).astype(np.uint8)
            save_nifti(folder / f"patient{patient:03d}_frame{frame:02d}.nii.gz", image)
            save_nifti(folder / f"patient{patient:03d}_frame{frame:02d}_gt.nii.gz", label)
            volumes[(patient, phase)] = (image, label)
        if with_info:
            with open(folder / "Info.cfg", "w") as handle:
                handle.write("ED: 1\nES: 4\nGroup: NOR\nHeight: 180.0\nNbFrame: 30\nWeight: 80.0\n")
    return volumes


def test_prepare_acdc_end_to_end(tmp_path):
    database = tmp_path / "database"
    volumes = fake_acdc_raw(database)
    out, lists = tmp_path / "ACDC", tmp_path / "lists_ACDC"
    argv = ["--raw_dir", str(database), "--out_dir", str(out), "--list_dir", str(lists), "--seed", "5"]
    assert prepare_acdc_main(argv) == 0
    lines = {s: open(lists / f"{s}.txt").read().splitlines() for s in ("train", "valid", "test")}
    patients = {s: sorted({int(line[5:8]) for line in lines[s]}) for s in lines}
    # 6 patients, 70/10/20: 1 valid, 1 test, 4 train, disjoint
    assert (len(patients["train"]), len(patients["valid"]), len(patients["test"])) == (4, 1, 1)
    assert sorted(sum(patients.values(), [])) == list(range(1, 7))
    assert all(line.endswith(".npz") for split in lines.values() for line in split)

    depth = 3
    patient = patients["test"][0]
    test = build_dataset("acdc", out, lists, "test", ACDC_CLASSES)
    assert [item["case_name"] for item in test] == [f"case_{patient:03d}_volume_{ph}" for ph in ("ED", "ES")]
    for item, phase in zip(test, ("ED", "ES")):
        image, label = volumes[(patient, phase)]
        expected = (image - image.min()) / (image.max() - image.min())  # per-volume min-max
        np.testing.assert_allclose(item["image"], np.moveaxis(expected, 2, 0), atol=1e-6)
        assert np.array_equal(item["label"], np.moveaxis(label, 2, 0))
    valid = build_dataset("acdc", out, lists, "valid", ACDC_CLASSES)
    assert len(valid) == 2 and valid[0]["image"].shape == (depth, 8, 9)
    train = build_dataset("acdc", out, lists, "train", ACDC_CLASSES)
    assert len(train) == 4 * 2 * depth
    first = patients["train"][0]
    item = train[lines["train"].index(f"case_{first:03d}_sliceES_2.npz")]
    image, label = volumes[(first, "ES")]
    expected = (image - image.min()) / (image.max() - image.min())
    np.testing.assert_allclose(item["image"][0].numpy(), expected[:, :, 2], atol=1e-6)
    assert np.array_equal(item["label"].numpy(), label[:, :, 2])

    # the split is reproducible by seed, and the seed matters
    def test_list(seed: int) -> str:
        target = tmp_path / f"seed{seed}"
        assert prepare_acdc_main(["--raw_dir", str(database), "--out_dir", str(target),
                                  "--list_dir", str(target / "lists"), "--seed", str(seed)]) == 0
        return open(target / "lists" / "test.txt").read()

    assert test_list(5).splitlines() == lines["test"]
    assert len({test_list(seed) for seed in range(6, 12)}) > 1


def test_prepare_acdc_without_info_cfg_and_bad_layouts(tmp_path, capsys):
    database = tmp_path / "database"
    fake_acdc_raw(database, patients=range(1, 4), with_info=False)
    out, lists = tmp_path / "ACDC", tmp_path / "lists"
    assert prepare_acdc_main(["--raw_dir", str(tmp_path), "--out_dir", str(out), "--list_dir", str(lists)]) == 0
    assert all(len(open(lists / f"{s}.txt").read().splitlines()) > 0 for s in ("train", "valid", "test"))

    assert prepare_acdc_main(["--raw_dir", str(out), "--out_dir", str(out), "--list_dir", str(lists)]) == 1
    err = capsys.readouterr().err
    assert str(out) in err and "training/patientNNN" in err

    label = database / "training" / "patient002" / "patient002_frame04_gt.nii.gz"
    save_nifti(label, np.full((8, 9, 3), 7, np.uint8))
    assert prepare_acdc_main(["--raw_dir", str(database), "--out_dir", str(out), "--list_dir", str(lists)]) == 1
    err = capsys.readouterr().err
    assert str(label) in err and "label values" in err
