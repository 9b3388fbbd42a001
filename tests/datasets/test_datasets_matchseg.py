"""The MatchSeg data sets (BUSI, BUS, GlaS, HAM10000): preparation from fake official layouts, readers, bad input."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from datasets import get_dataset
from datasets.phantoms.bus import write_bus_download, write_bus_phantom
from datasets.phantoms.busi import write_busi_download, write_busi_phantom
from datasets.errors import DataError
from datasets.phantoms.glas import write_glas_download, write_glas_phantom
from datasets.ham10000 import read_lesion_ids
from datasets.phantoms.ham10000 import write_ham10000_download, write_ham10000_phantom
from datasets.prepare.bus import main as prepare_bus_main
from datasets.prepare.bus import prepare_bus
from datasets.prepare.busi import main as prepare_busi_main
from datasets.prepare.busi import prepare_busi
from datasets.prepare.glas import main as prepare_glas_main
from datasets.prepare.glas import prepare_glas
from datasets.prepare.ham10000 import main as prepare_ham_main
from datasets.prepare.ham10000 import prepare_ham10000
from tests.datasets.test_datasets import assert_data_error


def read_lines(path) -> list[str]:
    with open(path) as handle:
        return handle.read().splitlines()


def load_item(root, entry) -> tuple[np.ndarray, np.ndarray]:
    with np.load(os.path.join(root, entry + ".npz")) as arrays:
        return arrays["image"], arrays["label"]


def save_png(path, array) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def check_reader(name, root, list_dir, split, size) -> None:
    spec = get_dataset(name)
    assert (spec.in_chans, spec.kind, spec.num_classes) == (3, "image", 2)
    reader = spec.build(root, list_dir, split, spec.num_classes)
    item = reader[0]
    assert item["image"].shape == (3, size, size) and item["label"].shape == (size, size)
    assert set(np.unique(item["label"])) <= {0, 1}


# ----------------------------------------------------------------------------- BUSI
@pytest.fixture(scope="module")
def busi_download(tmp_path_factory):
    src = tmp_path_factory.mktemp("busi_src")
    return src, write_busi_download(src, num_benign=10, num_malignant=10, num_normal=2, height=20, width=24)


def test_busi_preparation_unites_masks_drops_normal_and_stratifies(busi_download, tmp_path):
    src, written = busi_download
    out, lists = tmp_path / "BUSI", tmp_path / "lists"
    assert prepare_busi_main(["--src", str(src), "--out", str(out), "--list_dir", str(lists), "--size", "16"]) == 0
    splits = {split: read_lines(lists / f"{split}.txt") for split in ("train", "val", "test")}
    assert {k: len(v) for k, v in splits.items()} == {"train": 14, "val": 2, "test": 4}
    for entries in splits.values():  # stratified: 7/1/2 of each class
        assert sum(e.startswith("benign_") for e in entries) == sum(e.startswith("malignant_") for e in entries)
    everything = sorted(sum(splits.values(), []))
    assert len(set(everything)) == 20 and not any(e.startswith("normal") for e in everything)
    assert read_lines(lists / "all.txt") == everything  # the cross-domain test list: every image
    assert sorted(os.listdir(out)) == sorted(e + ".npz" for e in everything)
    # benign (3) has two masks (left and right halves): the label is their union, the whole lesion
    src_root = src / "Dataset_BUSI_with_GT" / "benign"
    left = np.asarray(Image.open(src_root / "benign (3)_mask.png")) > 0
    right = np.asarray(Image.open(src_root / "benign (3)_mask_1.png")) > 0
    union = np.asarray(Image.fromarray((left | right).astype(np.uint8)).resize((16, 16), Image.Resampling.NEAREST))
    image, label = load_item(out, "benign_3")
    assert image.shape == (16, 16, 3) and np.array_equal(image[..., 0], image[..., 2])  # grey stored as RGB
    assert left.any() and right.any() and np.array_equal(label, union)
    # deterministic: the same split again
    again = prepare_busi(str(src), str(tmp_path / "again"), str(tmp_path / "lists2"), size=16)
    assert again == splits
    check_reader("busi", out, lists, "test", 16)


def test_busi_bad_inputs(busi_download, tmp_path):
    src, _ = busi_download
    out, lists = str(tmp_path / "out"), str(tmp_path / "lists")

    def copy_class(name):
        root = tmp_path / "src" / "Dataset_BUSI_with_GT"
        for cls in ("benign", "malignant"):
            os.makedirs(root / cls, exist_ok=True)
            for f in os.listdir(src / "Dataset_BUSI_with_GT" / cls):
                (root / cls / f).write_bytes((src / "Dataset_BUSI_with_GT" / cls / f).read_bytes())
        return root / name

    folder = copy_class("benign")
    mask = folder / "benign (1)_mask.png"
    save_png(mask, np.zeros((5, 5), np.uint8))
    with pytest.raises(DataError) as excinfo:
        prepare_busi(str(tmp_path / "src"), out, lists, size=16)
    assert_data_error(excinfo, mask, "mask size (5, 5) differs from image size (20, 24)")
    save_png(mask, np.full((20, 24), 7, np.uint8))
    with pytest.raises(DataError) as excinfo:
        prepare_busi(str(tmp_path / "src"), out, lists, size=16)
    assert_data_error(excinfo, mask, "not binary", "values 7")
    save_png(mask, np.zeros((20, 24), np.uint8))
    second = folder / "benign (3)_mask_1.png"  # one of two masks of an image: named on its own
    save_png(second, np.full((20, 24), 254, np.uint8))
    with pytest.raises(DataError) as excinfo:
        prepare_busi(str(tmp_path / "src"), out, lists, size=16)
    assert_data_error(excinfo, second, "not binary", "values 254")
    os.remove(second)
    os.remove(mask)
    with pytest.raises(DataError) as excinfo:
        prepare_busi(str(tmp_path / "src"), out, lists, size=16)
    assert_data_error(excinfo, mask, "mask missing", "benign (1).png")
    for f in os.listdir(folder):
        os.remove(folder / f)
    with pytest.raises(DataError) as excinfo:
        prepare_busi(str(tmp_path / "src"), out, lists, size=16)
    assert_data_error(excinfo, folder, "no *.png images found")
    assert not os.path.exists(out)  # nothing written on failure
    assert prepare_busi_main(["--src", str(tmp_path / "nowhere"), "--out", out, "--list_dir", lists]) == 1


def test_busi_phantom_reader(tmp_path):
    written = write_busi_phantom(tmp_path / "BUSI", tmp_path / "lists", num_train=2, num_val=1, num_test=1, size=32)
    assert {k: len(v) for k, v in written["entries"].items()} == {"train": 2, "val": 1, "test": 1}
    assert read_lines(tmp_path / "lists" / "all.txt") == sorted(sum(written["entries"].values(), []))
    check_reader("busi", written["root_path"], written["list_dir"], "all", 32)
    check_reader("busi", written["root_path"], written["list_dir"], "test", 32)


# ----------------------------------------------------------------------------- BUS
def test_bus_preparation_splits_70_10_20_and_bad_inputs(tmp_path):
    src = tmp_path / "src"
    names = write_bus_download(src, num_images=10, height=20, width=24)
    out, lists = tmp_path / "BUS", tmp_path / "lists"
    assert prepare_bus_main(["--src", str(src), "--out", str(out), "--list_dir", str(lists), "--size", "16"]) == 0
    splits = {split: read_lines(lists / f"{split}.txt") for split in ("train", "val", "test")}
    assert {k: len(v) for k, v in splits.items()} == {"train": 7, "val": 1, "test": 2}
    assert sorted(sum(splits.values(), [])) == names
    assert read_lines(lists / "all.txt") == names
    assert prepare_bus(str(src / "BUS"), str(tmp_path / "again"), str(tmp_path / "l2"), size=16) == splits
    image, label = load_item(out, names[0])
    assert image.shape == (16, 16, 3) and np.array_equal(image[..., 0], image[..., 1]) and label.max() == 1
    check_reader("bus", out, lists, "train", 16)

    bad_out, bad_lists = str(tmp_path / "bad"), str(tmp_path / "bad_lists")
    mask = src / "BUS" / "GT" / f"{names[1]}.png"
    save_png(mask, np.zeros((20, 23), np.uint8))
    with pytest.raises(DataError) as excinfo:
        prepare_bus(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, mask, "mask size (20, 23) differs from image size (20, 24)")
    save_png(mask, np.array([[0, 128, 255, 3]] * 20 * 6, np.uint8).reshape(20, 24))
    with pytest.raises(DataError) as excinfo:
        prepare_bus(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, mask, "not binary", "values 3, 128")
    os.remove(mask)
    with pytest.raises(DataError) as excinfo:
        prepare_bus(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, mask, "mask missing")
    for name in os.listdir(src / "BUS" / "original"):
        os.remove(src / "BUS" / "original" / name)
    with pytest.raises(DataError) as excinfo:
        prepare_bus(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, src / "BUS" / "original", "no *.png images found")
    assert not os.path.exists(bad_out)


def test_bus_phantom_reader(tmp_path):
    written = write_bus_phantom(tmp_path / "BUS", tmp_path / "lists", num_train=2, num_val=1, num_test=1, size=32)
    assert read_lines(tmp_path / "lists" / "all.txt") == sorted(sum(written["entries"].values(), []))
    check_reader("bus", written["root_path"], written["list_dir"], "all", 32)
    check_reader("bus", written["root_path"], written["list_dir"], "val", 32)


# ----------------------------------------------------------------------------- GlaS
def test_glas_preparation_official_train_and_test_a_plus_b(tmp_path):
    src = tmp_path / "download" / "Warwick QU Dataset (Released 2016_07_08)"
    written = write_glas_download(src, num_train=10, num_test_a=3, num_test_b=2, height=20, width=24)
    assert (src / "Grade.csv").is_file()
    out, lists = tmp_path / "GlaS", tmp_path / "lists"
    assert prepare_glas_main(["--src", str(tmp_path / "download"), "--out", str(out), "--list_dir", str(lists),
                              "--size", "16"]) == 0
    listed = {name: read_lines(lists / f"{name}.txt") for name in ("train", "val", "test", "testA", "testB")}
    assert (len(listed["train"]), len(listed["val"])) == (9, 1)
    assert sorted(listed["train"] + listed["val"]) == sorted(written["train"])
    assert listed["test"] == sorted(written["testA"] + written["testB"])
    assert (listed["testA"], listed["testB"]) == (sorted(written["testA"]), sorted(written["testB"]))
    assert read_lines(lists / "all.txt") == sorted(written["train"] + written["testA"] + written["testB"])
    # the instance map (0, 1..k) is binarised
    instances = np.asarray(Image.open(src / "train_1_anno.bmp"))
    assert instances.max() >= 1
    _, label = load_item(out, "train_1")
    expected = np.asarray(Image.fromarray((instances > 0).astype(np.uint8)).resize((16, 16), Image.Resampling.NEAREST))
    assert np.array_equal(label, expected)
    check_reader("glas", out, lists, "test", 16)

    bad_out, bad_lists = str(tmp_path / "bad"), str(tmp_path / "bad_lists")
    anno = src / "testB_2_anno.bmp"
    Image.fromarray(np.zeros((19, 24), np.uint8)).save(anno, format="BMP")
    with pytest.raises(DataError) as excinfo:
        prepare_glas(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, anno, "mask size (19, 24) differs from image size (20, 24)")
    os.remove(anno)
    with pytest.raises(DataError) as excinfo:
        prepare_glas(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, anno, "annotation missing", "testB_2.bmp")
    for name in written["testB"]:
        os.remove(src / f"{name}.bmp")
    with pytest.raises(DataError) as excinfo:
        prepare_glas(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, src, "no testB_<n>.bmp images found")
    empty = tmp_path / "empty"
    os.makedirs(empty)
    with pytest.raises(DataError) as excinfo:
        prepare_glas(str(empty), bad_out, bad_lists)
    assert_data_error(excinfo, empty, "no GlaS images found")
    assert not os.path.exists(bad_out)


def test_glas_phantom_reader(tmp_path):
    written = write_glas_phantom(tmp_path / "GlaS", tmp_path / "lists", num_train=2, num_val=1, num_test=1, size=32)
    assert written["entries"]["test"] == ["testA_4"]
    check_reader("glas", written["root_path"], written["list_dir"], "train", 32)


# ----------------------------------------------------------------------------- HAM10000
def test_ham10000_preparation_groups_nv_by_lesion_and_lists_each_other_type(tmp_path):
    src = tmp_path / "download"
    rows = write_ham10000_download(src, num_nv=20, num_other=2, height=20, width=24)
    out, lists = tmp_path / "HAM10000", tmp_path / "lists"
    assert prepare_ham_main(["--src", str(src), "--out", str(out), "--list_dir", str(lists), "--size", "16"]) == 0
    lesion_of = {image_id: lesion_id for lesion_id, image_id, _ in rows}
    splits = {split: read_lines(lists / f"{split}.txt") for split in ("train", "val", "test")}
    assert {k: len(v) for k, v in splits.items()} == {"train": 16, "val": 2, "test": 2}  # 8/1/1 lesions of 2 images
    lesions = {split: {lesion_of[i] for i in entries} for split, entries in splits.items()}
    assert not (lesions["train"] & lesions["val"] or lesions["train"] & lesions["test"]
                or lesions["val"] & lesions["test"])
    assert sorted(sum(splits.values(), [])) == sorted(i for _, i, dx in rows if dx == "nv")
    for dx in ("mel", "bkl", "bcc", "akiec", "vasc", "df"):
        assert read_lines(lists / f"test_{dx}.txt") == sorted(i for _, i, d in rows if d == dx)
    assert read_lesion_ids(lists) == {image_id: (lesion_id, dx) for lesion_id, image_id, dx in rows}
    assert read_lines(lists / "all.txt") == sorted(i for _, i, _ in rows)  # every image, NV and the other types
    assert len(os.listdir(out)) == len(rows)
    assert prepare_ham10000(str(src), str(tmp_path / "again"), str(tmp_path / "l2"), size=16) == {
        **splits, **{f"test_{dx}": read_lines(lists / f"test_{dx}.txt")
                     for dx in ("mel", "bkl", "bcc", "akiec", "vasc", "df")}}
    check_reader("ham10000", out, lists, "test_mel", 16)
    check_reader("ham10000", out, lists, "train", 16)


def test_ham10000_bad_inputs(tmp_path):
    src = tmp_path / "download"
    rows = write_ham10000_download(src, num_nv=10, num_other=1, height=20, width=24)
    bad_out, bad_lists = str(tmp_path / "bad"), str(tmp_path / "bad_lists")
    mask = src / "HAM10000_segmentations_lesion_tschandl" / f"{rows[3][1]}_segmentation.png"
    save_png(mask, np.zeros((24, 20), np.uint8))
    with pytest.raises(DataError) as excinfo:
        prepare_ham10000(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, mask, "mask size (24, 20) differs from image size (20, 24)")
    save_png(mask, np.full((20, 24), 200, np.uint8))
    with pytest.raises(DataError) as excinfo:
        prepare_ham10000(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, mask, "not binary", "values 200")
    os.remove(mask)
    with pytest.raises(DataError) as excinfo:
        prepare_ham10000(str(src), bad_out, bad_lists)
    # the mask is named where it was expected: beside its image (masks may lie in any folder below --src)
    assert_data_error(excinfo, src / "HAM10000_images_part_2" / mask.name, "mask missing", f"{rows[3][1]}.jpg")
    metadata = src / "HAM10000_metadata.csv"
    metadata.write_text("lesion_id,image_id,dx\nHAM_1,ISIC_1,xyz\n")
    with pytest.raises(DataError) as excinfo:
        prepare_ham10000(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, metadata, "unknown lesion type dx='xyz'")
    metadata.write_text("lesion_id,dx\n")
    with pytest.raises(DataError) as excinfo:
        prepare_ham10000(str(src), bad_out, bad_lists)
    assert_data_error(excinfo, metadata, "missing column(s) image_id")
    empty = tmp_path / "empty"
    os.makedirs(empty)
    with pytest.raises(DataError) as excinfo:
        prepare_ham10000(str(empty), bad_out, bad_lists)
    assert_data_error(excinfo, empty / "HAM10000_metadata.csv", "metadata file not found")
    assert not os.path.exists(bad_out)


def test_ham10000_phantom_reader_and_type_lists(tmp_path):
    written = write_ham10000_phantom(tmp_path / "HAM10000", tmp_path / "lists", num_train=2, num_val=1, num_test=1,
                                     size=32)
    assert {k: len(v) for k, v in written["entries"].items()} == {
        "train": 2, "val": 1, "test": 1, **{f"test_{dx}": 1 for dx in ("mel", "bkl", "bcc", "akiec", "vasc", "df")}}
    lesion_ids = read_lesion_ids(written["list_dir"])
    assert len(lesion_ids) == 10 and len({lesion for lesion, _ in lesion_ids.values()}) == 10
    check_reader("ham10000", written["root_path"], written["list_dir"], "test_df", 32)
