"""Synthetic Synapse / ACDC sets: on-disk format, loading, determinism, anatomy, CLI."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage

from datasets import build_dataset, get_dataset
from datasets.phantoms.acdc import acdc_case, write_acdc_phantom
from datasets.phantoms.cli import main
from datasets.phantoms.synapse import synapse_case, write_synapse_phantom

SYN_KW = dict(num_train=2, num_test=1, size=48, depth=8)
ACDC_KW = dict(num_train=2, num_valid=1, num_test=1, size=48, depth=6)
SYN_CLASSES = get_dataset("synapse").num_classes
ACDC_CLASSES = get_dataset("acdc").num_classes


def write_synapse(root, seed: int = 0) -> dict:
    return write_synapse_phantom(os.path.join(root, "Synapse"), os.path.join(root, "lists_Synapse"), seed=seed,
                                 **SYN_KW)


def write_acdc(root, seed: int = 0) -> dict:
    return write_acdc_phantom(os.path.join(root, "ACDC"), os.path.join(root, "lists_ACDC"), seed=seed, **ACDC_KW)


def read_lines(path) -> list[str]:
    with open(path) as handle:
        return handle.read().splitlines()


def all_arrays(paths: dict) -> list[np.ndarray]:
    """Every array of every file under the written data root(s), in a fixed order."""
    arrays = []
    for directory in paths:
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.endswith(".npz"):
                with np.load(path) as archive:
                    arrays += [archive[key] for key in sorted(archive.files)]
            else:
                with h5py.File(path, "r") as handle:
                    arrays += [handle[key][()] for key in sorted(handle)]
    return arrays


# ----------------------------------------------------------------------------- Synapse
def test_synapse_phantom_format(tmp_path):
    info = write_synapse(tmp_path)
    train_lines = read_lines(os.path.join(info["list_dir"], "train.txt"))
    test_lines = read_lines(os.path.join(info["list_dir"], "test_vol.txt"))
    # TransUNet naming: first training cases 0005, 0006; first test case 0001
    assert train_lines == [f"case{c:04d}_slice{s:03d}" for c in (5, 6) for s in range(SYN_KW["depth"])]
    assert test_lines == ["case0001"]
    assert os.path.isfile(os.path.join(tmp_path, "Synapse", "train_npz", "case0005_slice000.npz"))
    with h5py.File(os.path.join(tmp_path, "Synapse", "test_vol_h5", "case0001.npy.h5"), "r") as handle:
        assert set(handle) == {"image", "label"}
        assert handle["image"].shape == (SYN_KW["depth"], SYN_KW["size"], SYN_KW["size"])
    with np.load(os.path.join(info["root_path"], "case0006_slice003.npz")) as archive:
        assert set(archive.files) == {"image", "label"}
        assert archive["image"].shape == (SYN_KW["size"],) * 2


def test_synapse_phantom_loads_through_build_dataset(tmp_path):
    info = write_synapse(tmp_path)
    train = build_dataset("synapse", info["root_path"], info["list_dir"], "train", SYN_CLASSES)
    assert len(train) == 2 * SYN_KW["depth"]
    item = train[3]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 48, 48)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (48, 48)
    assert item["case_name"] == "case0005_slice003"
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0

    test = build_dataset("synapse", info["volume_path"], info["list_dir"], "test_vol", SYN_CLASSES)
    volume = test[0]
    assert volume["case_name"] == "case0001"
    assert volume["image"].dtype == np.float32 and volume["image"].shape == (8, 48, 48)
    assert volume["label"].dtype == np.int64 and volume["label"].shape == (8, 48, 48)
    assert 0 <= volume["label"].min() and volume["label"].max() < SYN_CLASSES
    assert 0.0 <= volume["image"].min() and volume["image"].max() <= 1.0


def test_synapse_phantom_is_deterministic_by_seed(tmp_path):
    def folders(root):
        return [os.path.join(root, "Synapse", d) for d in ("train_npz", "test_vol_h5")]

    write_synapse(tmp_path / "a", seed=3)
    write_synapse(tmp_path / "b", seed=3)
    write_synapse(tmp_path / "c", seed=4)
    first, same, other = (all_arrays(folders(tmp_path / d)) for d in "abc")
    assert len(first) == len(same) == len(other)
    assert all(np.array_equal(x, y) for x, y in zip(first, same))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))
    for name in ("train.txt", "test_vol.txt"):
        lists = [tmp_path / run / "lists_Synapse" / name for run in ("a", "b")]
        assert read_lines(lists[0]) == read_lines(lists[1])


def test_synapse_organs_are_visible_and_vary_between_cases():
    """At the default size every organ appears in several slices with a sizeable area."""
    size, depth = 128, 24
    volumes = [synapse_case(np.random.default_rng([0, case]), size, depth) for case in (1, 2)]
    for image, label in volumes:
        assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
        for organ in range(1, SYN_CLASSES):
            mask = label == organ
            slices = np.flatnonzero(mask.any(axis=(1, 2)))
            assert slices.size >= 4, f"class {organ} in only {slices.size} slices"
            # largest cross-section >= 60 px at 128x128, i.e. >= 15 px at 64x64 input
            assert mask.sum(axis=(1, 2)).max() >= 60, f"class {organ} too small"
    (image_a, label_a), (image_b, label_b) = volumes
    assert not np.array_equal(label_a, label_b)  # pose/size/position vary per case


def test_synapse_kidneys_share_intensity_so_side_needs_context():
    image, label = synapse_case(np.random.default_rng([0, 5]), 128, 24)
    left, right = np.median(image[label == 3]), np.median(image[label == 4])
    assert abs(left - right) < 0.05
    # patient left is image right: kidney_left lies right of kidney_right in every slice with both
    both = [k for k in range(label.shape[0]) if (label[k] == 3).any() and (label[k] == 4).any()]
    assert both
    for k in both:
        assert np.nonzero(label[k] == 3)[1].mean() > np.nonzero(label[k] == 4)[1].mean()


# ----------------------------------------------------------------------------- ACDC
def test_acdc_phantom_format_and_loading(tmp_path):
    info = write_acdc(tmp_path)
    lists = {split: read_lines(os.path.join(info["list_dir"], f"{split}.txt")) for split in ("train", "valid", "test")}
    depth, size = ACDC_KW["depth"], ACDC_KW["size"]
    assert lists["train"] == [f"case_{p:03d}_slice{ph}_{k}.npz"
                              for p in (1, 2) for ph in ("ED", "ES") for k in range(depth)]
    assert lists["valid"] == ["case_003_volume_ED.npz", "case_003_volume_ES.npz"]
    assert lists["test"] == ["case_004_volume_ED.npz", "case_004_volume_ES.npz"]
    assert info["test_cases"] == ["case_004_volume_ED", "case_004_volume_ES"]
    with np.load(os.path.join(tmp_path, "ACDC", "test", "case_004_volume_ES.npz")) as archive:
        assert set(archive.files) == {"img", "label"}

    train = build_dataset("acdc", info["root_path"], info["list_dir"], "train", ACDC_CLASSES)
    item = train[0]
    assert item["image"].shape == (1, size, size) and item["image"].dtype == torch.float32
    assert item["label"].shape == (size, size) and item["label"].dtype == torch.int64
    assert item["case_name"] == "case_001_sliceED_0"
    for split in ("valid", "test"):
        dataset = build_dataset("acdc", info["volume_path"], info["list_dir"], split, ACDC_CLASSES)
        volume = dataset[1]
        assert volume["image"].shape == (depth, size, size) and volume["image"].dtype == np.float32
        assert volume["label"].dtype == np.int64 and set(np.unique(volume["label"])) <= {0, 1, 2, 3}
        # per-volume min-max normalisation, as the preparation of real ACDC
        assert volume["image"].min() == 0.0 and volume["image"].max() == 1.0


def test_acdc_phantom_is_deterministic_by_seed(tmp_path):
    def folders(root):
        return [os.path.join(root, "ACDC", d) for d in ("train", "valid", "test")]

    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_acdc(tmp_path / name, seed=seed)
    first, same, other = (all_arrays(folders(tmp_path / d)) for d in "abc")
    assert all(np.array_equal(x, y) for x, y in zip(first, same))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))


def test_acdc_heart_anatomy():
    """Myocardium encloses the LV cavity; ES cavity is smaller; RV fades towards the apex."""
    phases = acdc_case(np.random.default_rng([0, 1]), 96, 10)
    for image, label in phases.values():
        lv = label == 3
        ring = ndimage.binary_dilation(lv, structure=np.ones((1, 3, 3), bool)) & ~lv
        assert lv.any() and set(np.unique(label[ring])) <= {2}  # LV only ever touches myocardium in-plane
        assert (label[0] == 1).sum() > (label[-1] == 1).sum()  # more RV at the base than at the apex
        assert (label[-1] == 1).sum() == 0
        blood, muscle = np.median(image[label == 3]), np.median(image[label == 2])
        assert blood > muscle + 0.2  # bright blood pool, dark myocardium (cine MRI)
    assert (phases["ES"][1] == 3).sum() < (phases["ED"][1] == 3).sum()


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_the_documented_layout(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--size", "32", "--depth", "4", "--num_train", "1", "--num_test", "1"]
    assert main(["--dataset", "synapse", *args]) == 0
    assert main(["--dataset", "acdc", *args, "--num_valid", "1"]) == 0
    for path in ("Synapse/train_npz/case0005_slice003.npz", "Synapse/test_vol_h5/case0001.npy.h5",
                 "lists/lists_Synapse/train.txt", "lists/lists_Synapse/test_vol.txt",
                 "ACDC/train/case_001_sliceES_3.npz", "ACDC/valid/case_002_volume_ED.npz",
                 "ACDC/test/case_003_volume_ES.npz", "lists/lists_ACDC/valid.txt"):
        assert os.path.isfile(tmp_path / path), path
    leftovers = [name for _, _, files in os.walk(tmp_path) for name in files if name.endswith(".tmp")]
    assert leftovers == []
    assert main(["--dataset", "synapse", *args, "--num_valid", "1"]) == 2
    assert "--num_valid applies to ACDC, BUS, BUSI, GlaS, HAM10000, ISIC2018 and SegPC2021 only" in \
        capsys.readouterr().err


def test_writer_rejects_empty_splits(tmp_path):
    with pytest.raises(ValueError, match="num_test"):
        write_synapse_phantom(tmp_path, tmp_path / "lists", num_test=0)
