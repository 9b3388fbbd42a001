"""ISIC-2018 / SegPC-2021: readers, colour augmentation, preparation from the official layout, phantoms."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from datasets import build_dataset, build_train_transform, get_dataset, list_datasets
from datasets.augment import RandomGenerator
from datasets.augment_rgb import IMAGENET_MEAN, IMAGENET_STD, RGBAugment
from datasets.errors import DataError
from datasets.isic2018 import ISIC2018_SPLIT_FRACTIONS
from datasets.phantoms.isic2018 import write_isic2018_download, write_isic2018_phantom
from datasets.phantoms.cli import main as phantom_main
from datasets.prepare.isic2018 import main as prepare_isic_main
from datasets.prepare.segpc2021 import crop_with_padding, nucleus_box
from datasets.prepare.segpc2021 import main as prepare_segpc_main
from datasets.prepare.splits import split_names
from datasets.phantoms.segpc2021 import write_segpc2021_download, write_segpc2021_phantom
from tests.datasets.test_datasets import assert_data_error

ISIC_CLASSES, SEGPC_CLASSES = 2, 3
ISIC_IMAGES, ISIC_MASKS = "ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"  # official names
H, W = 12, 16
# torchvision's ImageNet statistics (the MaxViT pretraining), written out independently of the module
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def write_lines(path, lines) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write("".join(f"{line}\n" for line in lines))


def read_lines(path) -> list[str]:
    with open(path) as handle:
        return handle.read().splitlines()


def reference_normalize(image_hwc_uint8: np.ndarray) -> np.ndarray:
    """Naive ImageNet normalisation, pixel by pixel formula: (x / 255 - mean) / std, as [3,H,W]."""
    return ((image_hwc_uint8 / 255.0 - MEAN) / STD).transpose(2, 0, 1)


@pytest.fixture
def rgb_set(tmp_path):
    """Hand-written tiny prepared set (plain np.savez): 3 train, 1 val, 1 test items with 3 classes."""
    rng = np.random.default_rng(0)
    root, list_dir = tmp_path / "SegPC2021", tmp_path / "lists"
    os.makedirs(root)
    names = {"train": ["101_1", "101_2", "102_1"], "val": ["103_1"], "test": ["104_1"]}
    for split, entries in names.items():
        for name in entries:
            np.savez(root / f"{name}.npz", image=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
                     label=rng.integers(0, SEGPC_CLASSES, (H, W)).astype(np.uint8))
        write_lines(list_dir / f"{split}.txt", entries)
    return dict(root=root, list_dir=list_dir, names=names)


# ----------------------------------------------------------------------------- registry
def test_dataset_specs_and_transform_registry():
    assert np.allclose(IMAGENET_MEAN, MEAN) and np.allclose(IMAGENET_STD, STD)
    specs = {name: get_dataset(name) for name in list_datasets()}
    assert {name: (spec.in_chans, spec.kind) for name, spec in specs.items()} == {
        "synapse": (1, "volume"), "acdc": (1, "volume"), "isic2018": (3, "image"), "segpc2021": (3, "image"),
        "bus": (3, "image"), "busi": (3, "image"), "glas": (3, "image"), "ham10000": (3, "image")}
    isic, segpc = specs["isic2018"], specs["segpc2021"]
    assert isic.num_classes == ISIC_CLASSES and segpc.num_classes == SEGPC_CLASSES
    assert (isic.root_path, isic.volume_path, isic.list_dir) == ("./data/ISIC2018", "./data/ISIC2018",
                                                                 "./lists/lists_ISIC2018")
    assert (segpc.root_path, segpc.volume_path, segpc.list_dir) == ("./data/SegPC2021", "./data/SegPC2021",
                                                                    "./lists/lists_SegPC2021")
    for spec in (isic, segpc):
        assert (spec.train_split, spec.val_split, spec.test_split) == ("train", "val", "test")
    assert type(build_train_transform("Synapse", (8, 8))) is RandomGenerator
    assert type(build_train_transform("acdc", (8, 8))) is RandomGenerator
    assert isinstance(build_train_transform("isic2018", (8, 8)), RGBAugment)
    assert build_train_transform("segpc2021", (8, 6)).output_size == (8, 6)
    with pytest.raises(ValueError, match="unknown data set"):
        build_train_transform("isic", (8, 8))


# ----------------------------------------------------------------------------- readers
@pytest.mark.parametrize("name", ["isic2018", "segpc2021"])
def test_eval_items_are_normalised_images_matching_the_files(name, rgb_set):
    classes = SEGPC_CLASSES if name == "segpc2021" else None
    if name == "isic2018":  # same files, binary labels
        for entry in sum(rgb_set["names"].values(), []):
            path = rgb_set["root"] / f"{entry}.npz"
            with np.load(path) as archive:
                image, label = archive["image"], archive["label"]
            np.savez(path, image=image, label=(label > 0).astype(np.uint8))
        classes = ISIC_CLASSES
    for split in ("val", "test"):
        dataset = build_dataset(name, rgb_set["root"], rgb_set["list_dir"], split, classes)
        item = dataset[0]
        entry = rgb_set["names"][split][0]
        with np.load(rgb_set["root"] / f"{entry}.npz") as archive:
            expected_image, expected_label = reference_normalize(archive["image"]), archive["label"].astype(np.int64)
        assert item["case_name"] == entry
        assert isinstance(item["image"], np.ndarray) and item["image"].dtype == np.float32
        assert item["image"].shape == (3, H, W)
        assert item["label"].dtype == np.int64 and np.array_equal(item["label"], expected_label)
        np.testing.assert_allclose(item["image"], expected_image, rtol=1e-5, atol=1e-5)


def test_train_items_without_and_with_transform(rgb_set):
    plain = build_dataset("segpc2021", rgb_set["root"], rgb_set["list_dir"], "train", SEGPC_CLASSES)
    item = plain[2]
    with np.load(rgb_set["root"] / "102_1.npz") as archive:
        expected_image, expected_label = reference_normalize(archive["image"]), archive["label"]
    assert item["case_name"] == "102_1"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, H, W)
    assert item["label"].dtype == torch.int64 and np.array_equal(item["label"].numpy(), expected_label)
    np.testing.assert_allclose(item["image"].numpy(), expected_image, rtol=1e-5, atol=1e-5)

    augmented = build_dataset("segpc2021", rgb_set["root"], rgb_set["list_dir"], "train", SEGPC_CLASSES,
                              transform=build_train_transform("segpc2021", (8, 8)))
    batch = next(iter(torch.utils.data.DataLoader(augmented, batch_size=3)))
    assert batch["image"].shape == (3, 3, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (3, 8, 8) and batch["label"].dtype == torch.int64
    assert batch["case_name"] == rgb_set["names"]["train"]
    assert set(batch["label"].unique().tolist()) <= set(range(SEGPC_CLASSES))


def test_train_items_are_deterministic_by_seed_epoch_index(rgb_set):
    def dataset(seed):
        return build_dataset("segpc2021", rgb_set["root"], rgb_set["list_dir"], "train", SEGPC_CLASSES,
                             transform=RGBAugment((H, W)), seed=seed)

    first, second, other_seed = dataset(5), dataset(5), dataset(6)
    for index in range(len(first)):
        a, b = first[index], second[index]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    epoch0 = [first[i]["image"] for i in range(len(first))]
    assert not all(torch.equal(x, other_seed[i]["image"]) for i, x in enumerate(epoch0))
    first.set_epoch(1)
    epoch1 = [first[i]["image"] for i in range(len(first))]
    assert not all(torch.equal(x, y) for x, y in zip(epoch0, epoch1))
    first.set_epoch(0)  # going back reproduces epoch 0 exactly
    assert all(torch.equal(x, first[i]["image"]) for i, x in enumerate(epoch0))


def test_eval_splits_reject_a_transform(rgb_set):
    with pytest.raises(ValueError, match="training"):
        build_dataset("segpc2021", rgb_set["root"], rgb_set["list_dir"], "val", SEGPC_CLASSES,
                      transform=RGBAugment((8, 8)))


# ----------------------------------------------------------------------------- augmentation
def class_colour_image(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return palette[label].astype(np.uint8)


def blob_label(rng: np.random.Generator, shape, classes: int) -> np.ndarray:
    """Large smooth regions of ``classes`` labels (few boundary pixels)."""
    field = ndimage.zoom(rng.standard_normal((4, 4, classes)), (shape[0] / 4, shape[1] / 4, 1), order=1)
    return np.argmax(field, axis=-1)


def unnormalize(image_t: torch.Tensor) -> np.ndarray:
    return image_t.numpy().transpose(1, 2, 0) * STD + MEAN


def test_flips_and_rot90_match_a_numpy_reference():
    rng = np.random.default_rng(0)
    size = 10
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    label = rng.integers(0, 5, (size, size))
    transform = RGBAugment((size, size), rotate_p=0.0, jitter_p=0.0)
    seen = set()
    for seed in range(24):
        params = transform.sample(np.random.default_rng(seed))
        out_image, out_label = transform(image, label, np.random.default_rng(seed))
        ref_image, ref_label = image, label
        if params.hflip:
            ref_image, ref_label = ref_image[:, ::-1], ref_label[:, ::-1]
        if params.vflip:
            ref_image, ref_label = ref_image[::-1], ref_label[::-1]
        ref_image, ref_label = np.rot90(ref_image, params.rot90_k), np.rot90(ref_label, params.rot90_k)
        assert np.array_equal(out_label.numpy(), ref_label)
        np.testing.assert_allclose(out_image.numpy(), reference_normalize(ref_image), atol=1e-5)
        seen.add((params.hflip, params.vflip, params.rot90_k))
    assert len(seen) >= 8  # the draws really vary


def test_small_rotations_keep_image_and_label_aligned():
    """The label derived from the image (nearest class colour) stays derived after augmentation."""
    palette = np.array([[230, 200, 180], [120, 60, 40], [80, 40, 130]], dtype=np.float64)
    rng = np.random.default_rng(1)
    label = blob_label(rng, (48, 48), 3)
    image = class_colour_image(label, palette)
    transform = RGBAugment((48, 48), rotate_p=1.0, jitter_p=0.0)
    for seed in range(6):
        params = transform.sample(np.random.default_rng(seed))
        assert params.angle != 0.0
        out_image, out_label = transform(image, label, np.random.default_rng(seed))
        pixels, out_label = unnormalize(out_image) * 255.0, out_label.numpy()
        distance = ((pixels[:, :, None, :] - palette[None, None]) ** 2).sum(-1)
        derived, pure = np.argmin(distance, axis=-1), distance.min(-1) < 10.0**2  # not a blend of two colours
        assert pure.mean() > 0.6
        assert (derived == out_label)[pure].mean() > 0.98, (seed, params)
        outside = pixels.max(-1) < 0.5  # rotated in from outside the image: black, background
        assert outside.any() and not out_label[outside].any()
        assert not np.array_equal(out_label, label)


def test_colour_jitter_changes_the_image_only():
    rng = np.random.default_rng(2)
    image = rng.integers(30, 220, (H, W, 3), dtype=np.uint8)
    label = rng.integers(0, 3, (H, W))
    brightness_only = RGBAugment((H, W), flip_p=0.0, rot90=False, rotate_p=0.0, jitter_p=1.0,
                                 jitter_ranges=(0.5, 0.0, 0.0, 0.0))
    params = brightness_only.sample(np.random.default_rng(3))
    out_image, out_label = brightness_only(image, label, np.random.default_rng(3))
    assert np.array_equal(out_label.numpy(), label)
    expected = np.clip(image / 255.0 * params.jitter[0], 0.0, 1.0)  # brightness = pixel-wise scaling
    np.testing.assert_allclose(unnormalize(out_image), expected, atol=1e-5)

    full_jitter = RGBAugment((H, W), flip_p=0.0, rot90=False, rotate_p=0.0, jitter_p=1.0)
    for seed in range(4):
        out_image, out_label = full_jitter(image, label, np.random.default_rng(seed))
        assert np.array_equal(out_label.numpy(), label)
        assert not np.allclose(out_image.numpy(), reference_normalize(image), atol=1e-3)


def test_transform_contract_resize_and_float_input():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    label = rng.integers(0, 2, (H, W))
    transform = RGBAugment((20, 24))
    out_image, out_label = transform(image, label, np.random.default_rng(7))
    assert out_image.shape == (3, 20, 24) and out_image.dtype == torch.float32
    assert out_label.shape == (20, 24) and out_label.dtype == torch.int64
    assert set(out_label.unique().tolist()) <= {0, 1}
    same_image, same_label = transform(image, label, np.random.default_rng(7))
    assert torch.equal(out_image, same_image) and torch.equal(out_label, same_label)
    float_image, float_label = transform(image / 255.0, label, np.random.default_rng(7))
    assert torch.allclose(float_image, out_image, atol=1e-5) and torch.equal(float_label, out_label)
    with pytest.raises(ValueError, match="RGB"):
        transform(image[..., 0], label, np.random.default_rng(0))


# ----------------------------------------------------------------------------- preparation: ISIC-2018
def test_isic_split_reproduces_the_published_sizes():
    names = [f"ISIC_{i:07d}" for i in range(2594)]
    ordered = split_names(names[::-1], ISIC2018_SPLIT_FRACTIONS)
    assert [len(ordered[s]) for s in ("train", "val", "test")] == [1815, 259, 520]
    assert ordered["train"] == names[:1815] and ordered["test"] == names[-520:]  # sorted order, consecutive blocks
    seeded = split_names(names, ISIC2018_SPLIT_FRACTIONS, seed=1)
    assert [len(seeded[s]) for s in ("train", "val", "test")] == [1815, 259, 520]
    assert seeded["train"] != ordered["train"]


def prepare_isic(src, out_root, *extra) -> tuple[int, dict]:
    list_dir = out_root / "lists"
    status = prepare_isic_main(["--src", str(src), "--out", str(out_root / "ISIC2018"), "--list_dir", str(list_dir),
                                *extra])
    lists = {s: read_lines(list_dir / f"{s}.txt") for s in ("train", "val", "test")} if status == 0 else {}
    return status, lists


def test_prepare_isic_from_the_official_layout(tmp_path):
    count, side = 12, 40
    names = write_isic2018_download(tmp_path / "src", num_images=count, height=side, width=side, seed=0)
    status, lists = prepare_isic(tmp_path / "src", tmp_path / "a", "--size", str(side))
    assert status == 0
    n_val, n_test = round(count * 259 / 2594), round(count * 520 / 2594)
    assert [len(lists[s]) for s in ("train", "val", "test")] == [count - n_val - n_test, n_val, n_test]
    assert lists["train"] + lists["val"] + lists["test"] == sorted(names)  # consecutive blocks, covering
    # same size: the item is exactly the decoded jpg and the 0/255 mask as 0/1
    name = names[3]
    with np.load(tmp_path / "a" / "ISIC2018" / f"{name}.npz") as archive:
        image, label = archive["image"], archive["label"]
    jpg = np.asarray(Image.open(tmp_path / "src" / ISIC_IMAGES / f"{name}.jpg").convert("RGB"))
    png = np.asarray(Image.open(tmp_path / "src" / ISIC_MASKS / f"{name}_segmentation.png"))
    assert image.dtype == np.uint8 and np.array_equal(image, jpg)
    assert label.dtype == np.uint8 and np.array_equal(label, png // 255)

    dataset = build_dataset("isic2018", tmp_path / "a" / "ISIC2018", tmp_path / "a" / "lists", "test", ISIC_CLASSES)
    assert len(dataset) == n_test and dataset[0]["image"].shape == (3, side, side)


def test_prepare_isic_resizes_and_seeds_the_split(tmp_path):
    names = write_isic2018_download(tmp_path / "src", num_images=12, height=48, width=64, seed=1)
    runs = {key: prepare_isic(tmp_path / "src", tmp_path / key, "--size", "24", *extra)
            for key, extra in (("a", ("--seed", "5")), ("b", ("--seed", "5")), ("c", ("--seed", "6")))}
    assert all(status == 0 for status, _ in runs.values())
    lists_a, lists_b, lists_c = (runs[key][1] for key in "abc")
    assert lists_a == lists_b and lists_a != lists_c
    union = lists_a["train"] + lists_a["val"] + lists_a["test"]
    assert sorted(union) == sorted(names) and len(set(union)) == len(names)  # disjoint and covering
    with np.load(tmp_path / "a" / "ISIC2018" / f"{names[0]}.npz") as archive:
        image, label = archive["image"], archive["label"]
    png = np.asarray(Image.open(tmp_path / "src" / ISIC_MASKS / f"{names[0]}_segmentation.png"))
    assert image.shape == (24, 24, 3) and label.shape == (24, 24) and set(np.unique(label)) == {0, 1}
    assert abs(label.mean() - (png > 127).mean()) < 0.05  # nearest resize keeps the lesion fraction


# ----------------------------------------------------------------------------- preparation: SegPC-2021
def prepare_segpc(src, out_root, *extra) -> tuple[int, dict]:
    list_dir = out_root / "lists"
    status = prepare_segpc_main(["--src", str(src), "--out", str(out_root / "SegPC2021"),
                                 "--list_dir", str(list_dir), *extra])
    lists = {s: read_lines(list_dir / f"{s}.txt") for s in ("train", "val", "test")} if status == 0 else {}
    return status, lists


def test_prepare_segpc_crops_split_by_image(tmp_path):
    subsets = write_segpc2021_download(tmp_path / "src", num_train=4, num_validation=2, num_test=1, height=64,
                                       width=80, num_cells=2, seed=0)
    labelled = sorted(subsets["train"] + subsets["validation"])  # the test images have no masks
    runs = {key: prepare_segpc(tmp_path / "src", tmp_path / key, "--size", "32", *extra)
            for key, extra in (("a", ()), ("b", ("--seed", "3")), ("c", ("--seed", "3")))}
    assert all(status == 0 for status, _ in runs.values())
    for key, (_, lists) in runs.items():
        images = {s: sorted({entry.rpartition("_")[0] for entry in lists[s]}) for s in lists}
        # 50/20/30 of the 6 pooled images; all crops of an image in one split
        assert [len(images[s]) for s in ("train", "val", "test")] == [3, 1, 2]
        assert sorted(images["train"] + images["val"] + images["test"]) == labelled
        for split, entries in lists.items():
            assert sorted(entries) == sorted(f"{image}_{n}" for image in images[split] for n in (1, 2))
        if key == "a":  # no seed: consecutive blocks of the sorted names
            assert images["train"] + images["val"] + images["test"] == labelled
    assert runs["b"][1] == runs["c"][1]
    item = build_dataset("segpc2021", tmp_path / "a" / "SegPC2021", tmp_path / "a" / "lists", "val", SEGPC_CLASSES)[0]
    assert item["image"].shape == (3, 32, 32) and set(np.unique(item["label"])) == {0, 1, 2}
    # the crop is centred on the cell's nucleus
    rows, cols = np.nonzero(item["label"] == 2)
    assert abs(rows.mean() - 15.5) < 4 and abs(cols.mean() - 15.5) < 4


def digit_rows(*rows: str) -> np.ndarray:
    """uint8 map from rows of single digits: digit_rows("01", "20") == [[0, 1], [2, 0]]."""
    return np.array([[int(digit) for digit in row] for row in rows], dtype=np.uint8)


def write_bmp(path, array) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def test_segpc_instance_masks_are_merged_by_hand(tmp_path):
    """Two overlapping cells; the nucleus of cell 2 lies under the cytoplasm of cell 1; one mask is 3-channel."""
    # 6 x 6 maps, one string of digits per row; masks in tens (2 -> 20 cytoplasm, 4 -> 40 nucleus)
    cell1 = digit_rows("222000", "242200", "222200", "022200", "000000", "000000") * 10
    cell2 = digit_rows("000000", "000000", "000420", "002422", "002222", "000220") * 10
    expected = digit_rows("111000", "121100", "111210", "011211", "001111", "000110")
    subset = tmp_path / "src" / "train"
    image = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    write_bmp(subset / "x" / "7.bmp", image)
    write_bmp(subset / "y" / "7_1.bmp", cell1)
    write_bmp(subset / "y" / "7_2.bmp", np.repeat(cell2[..., None], 3, axis=-1))
    for name in ("8", "9"):  # two more images so that the split has a member in every block
        write_bmp(subset / "x" / f"{name}.bmp", image)
        write_bmp(subset / "y" / f"{name}_1.bmp", cell1)
    status, lists = prepare_segpc(tmp_path / "src", tmp_path / "out", "--mode", "image", "--size", "6")
    assert status == 0 and lists == {"train": ["7"], "val": ["8"], "test": ["9"]}
    with np.load(tmp_path / "out" / "SegPC2021" / "7.npz") as archive:
        assert np.array_equal(archive["label"], expected)
        assert np.array_equal(archive["image"], image)


def test_nucleus_box_and_padded_crop_by_hand():
    class_map = np.zeros((10, 12), dtype=np.uint8)
    class_map[3:7, 1:9] = 1
    class_map[4:6, 2:5] = 2  # nucleus rows 4..5 (h 2), cols 2..4 (w 3)
    # grown by round(2.5 * 2 / 2) = 2 rows (Python rounds half to even) and round(2.5 * 3 / 2) = 4 columns
    assert nucleus_box(class_map, 2.5) == (2, 8, -2, 9)
    assert nucleus_box(np.where(class_map == 2, 1, class_map), 0.0) == (3, 7, 1, 9)  # no nucleus: the cell
    array = np.arange(12).reshape(3, 4)
    assert np.array_equal(crop_with_padding(array, (-1, 2, 2, 5)), [[0, 0, 0], [2, 3, 0], [6, 7, 0]])


# ----------------------------------------------------------------------------- bad input: readers
def rewrite(path, **arrays) -> None:
    np.savez(path, **arrays)


def truncate(path) -> None:
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])


IMAGE = np.zeros((H, W, 3), np.uint8)
LABEL = np.zeros((H, W), np.uint8)
READER_DEFECTS = {
    "truncated": (lambda p: truncate(p), ("corrupt or truncated",)),
    "missing_key": (lambda p: rewrite(p, img=IMAGE, label=LABEL), ("missing key 'image'", "found keys: img, label")),
    "grey_image": (lambda p: rewrite(p, image=IMAGE[..., 0], label=LABEL), ("dimensions", "expected 3")),
    "four_channels": (lambda p: rewrite(p, image=np.zeros((H, W, 4), np.uint8), label=LABEL), ("4 channels",)),
    "label_ndim": (lambda p: rewrite(p, image=IMAGE, label=LABEL[None]), ("label has 3 dimensions",)),
    "shape_mismatch": (lambda p: rewrite(p, image=IMAGE, label=LABEL[:, :-1]), ("shape mismatch",)),
    "label_range": (lambda p: rewrite(p, image=IMAGE, label=np.full((H, W), 3, np.uint8)), ("outside [0, 3)",)),
    "float_image": (lambda p: rewrite(p, image=np.full((H, W, 3), np.nan, np.float32), label=LABEL), ("uint8",)),
    "float_label": (lambda p: rewrite(p, image=IMAGE, label=LABEL.astype(np.float32)), ("label dtype",)),
}


@pytest.mark.parametrize("defect", sorted(READER_DEFECTS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_bad_prepared_files_raise_data_error_naming_the_file(defect, split, rgb_set):
    dataset = build_dataset("segpc2021", rgb_set["root"], rgb_set["list_dir"], split, SEGPC_CLASSES)
    path = rgb_set["root"] / f"{rgb_set['names'][split][0]}.npz"
    corrupt, phrases = READER_DEFECTS[defect]
    corrupt(path)
    with pytest.raises(DataError) as excinfo:
        dataset[0]
    assert_data_error(excinfo, path, *phrases)


def test_missing_lists_dirs_and_files(rgb_set, tmp_path):
    root, list_dir = rgb_set["root"], rgb_set["list_dir"]
    with pytest.raises(DataError) as excinfo:
        build_dataset("isic2018", root, tmp_path / "nolists", "train", ISIC_CLASSES)
    assert_data_error(excinfo, tmp_path / "nolists" / "train.txt", "list file does not exist")
    with pytest.raises(DataError) as excinfo:
        build_dataset("isic2018", tmp_path / "nodata", list_dir, "train", ISIC_CLASSES)
    assert_data_error(excinfo, tmp_path / "nodata", "data directory does not exist")
    write_lines(list_dir / "val.txt", ["103_1", "missing_1.npz"])
    with pytest.raises(DataError) as excinfo:
        build_dataset("segpc2021", root, list_dir, "val", SEGPC_CLASSES)
    assert_data_error(excinfo, root / "missing_1.npz", "does not exist", "1 of 2")
    write_lines(list_dir / "test.txt", [" "])
    with pytest.raises(DataError) as excinfo:
        build_dataset("segpc2021", root, list_dir, "test", SEGPC_CLASSES)
    assert_data_error(excinfo, list_dir / "test.txt", "list file is empty")


# ----------------------------------------------------------------------------- bad input: preparation
def corrupt_bytes(path, keep: float) -> None:
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: int(len(data) * keep)] if keep else b"not an image at all")


@pytest.fixture
def isic_src(tmp_path):
    write_isic2018_download(tmp_path / "src", num_images=4, height=16, width=20, seed=0)
    return tmp_path / "src"


@pytest.mark.parametrize("defect", ["no_image_dir", "no_mask_dir", "missing_mask", "garbage_jpg", "truncated_jpg",
                                    "mask_size"])
def test_prepare_isic_bad_input(defect, isic_src, tmp_path, capsys):
    image = isic_src / ISIC_IMAGES / "ISIC_0000002.jpg"
    mask = isic_src / ISIC_MASKS / "ISIC_0000002_segmentation.png"
    if defect == "no_image_dir":
        os.rename(isic_src / ISIC_IMAGES, tmp_path / "moved")
        named, phrase = isic_src / ISIC_IMAGES, "folder does not exist"
    elif defect == "no_mask_dir":
        os.rename(isic_src / ISIC_MASKS, tmp_path / "moved")
        named, phrase = isic_src / ISIC_MASKS, "folder does not exist"
    elif defect == "missing_mask":
        os.remove(mask)
        named, phrase = mask, f"ground-truth mask missing for image {image}"
    elif defect == "mask_size":
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(mask)
        named, phrase = mask, "differs from image size"
    else:
        corrupt_bytes(image, 0.0 if defect == "garbage_jpg" else 0.5)
        named, phrase = image, "cannot read image"
    status, _ = prepare_isic(isic_src, tmp_path / "out")
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named}: ") and phrase in err, err
    assert not os.path.exists(tmp_path / "out" / "lists")  # no lists for a failed preparation


@pytest.fixture
def segpc_src(tmp_path):
    write_segpc2021_download(tmp_path / "src", num_train=3, num_validation=0, num_test=0, height=32, width=32,
                             num_cells=2, seed=0)
    return tmp_path / "src" / "TCIA_SegPC_dataset" / "train"


@pytest.mark.parametrize("defect", ["no_folders", "image_without_masks", "mask_without_image", "mask_values",
                                    "empty_mask", "mask_size", "corrupt_bmp", "duplicate_name"])
def test_prepare_segpc_bad_input(defect, segpc_src, tmp_path, capsys):
    image, mask = segpc_src / "x" / "101.bmp", segpc_src / "y" / "101_2.bmp"
    src = tmp_path / "src"
    if defect == "no_folders":
        os.rename(segpc_src / "y", segpc_src / "labels")
        named, phrase = src, "no labelled SegPC folder"
    elif defect == "image_without_masks":
        for n in (1, 2):
            os.remove(segpc_src / "y" / f"101_{n}.bmp")
        named, phrase = image, "image without instance masks"
    elif defect == "mask_without_image":
        os.remove(image)
        named, phrase = segpc_src / "y" / "101_1.bmp", "instance mask without its image"
    elif defect == "mask_values":
        write_bmp(mask, np.full((32, 32), 255, np.uint8))
        named, phrase = mask, "unexpected mask values [255]"
    elif defect == "empty_mask":
        write_bmp(mask, np.zeros((32, 32), np.uint8))
        named, phrase = mask, "instance mask is empty"
    elif defect == "mask_size":
        write_bmp(mask, np.zeros((8, 8), np.uint8))
        named, phrase = mask, "differs from image size"
    elif defect == "corrupt_bmp":
        corrupt_bytes(image, 0.5)
        named, phrase = image, "cannot read image"
    else:
        other = tmp_path / "src" / "TCIA_SegPC_dataset" / "validation"
        write_bmp(other / "x" / "101.bmp", np.zeros((32, 32, 3), np.uint8))
        write_bmp(other / "y" / "101_1.bmp", np.full((32, 32), 20, np.uint8))
        named, phrase = other / "x" / "101.bmp", "also used by"
    status, _ = prepare_segpc(src, tmp_path / "out")
    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named}: ") and phrase in err, err
    assert not os.path.exists(tmp_path / "out" / "lists")


# ----------------------------------------------------------------------------- phantoms
def test_rgb_phantoms_load_and_look_right(tmp_path):
    isic = write_isic2018_phantom(tmp_path / "ISIC2018", tmp_path / "lists_ISIC", num_train=2, num_val=1, num_test=1,
                                  size=48, seed=0)
    assert isic["entries"] == {"train": ["ISIC_0000000", "ISIC_0000001"], "val": ["ISIC_0000002"],
                               "test": ["ISIC_0000003"]}
    for name in sum(isic["entries"].values(), []):
        with np.load(tmp_path / "ISIC2018" / f"{name}.npz") as archive:
            image, label = archive["image"].astype(float), archive["label"]
        assert 0.05 < label.mean() < 0.8
        assert image[label == 1].mean() < image[label == 0].mean() - 40  # darker lesion on skin
    segpc = write_segpc2021_phantom(tmp_path / "SegPC2021", tmp_path / "lists_SegPC", num_train=1, num_val=1,
                                    num_test=1, size=48, field_size=96, num_cells=2, seed=0)
    assert segpc["entries"]["val"] == ["101_1", "101_2"]
    for split in ("train", "test"):
        dataset = build_dataset("segpc2021", segpc["root_path"], segpc["list_dir"], split, SEGPC_CLASSES)
        item = dataset[0]
        assert item["image"].shape == (3, 48, 48) and set(np.unique(item["label"])) == {0, 1, 2}
        pixels = unnormalize(torch.as_tensor(item["image"]))
        label = np.asarray(item["label"])
        field = pixels.max(-1) > 0.2  # not the zero padding of a crop at the field border
        brightness = {c: pixels[(label == c) & field].mean() for c in range(3)}
        assert brightness[2] < brightness[1] < brightness[0]  # dark nucleus, lighter cytoplasm, light background


def test_rgb_phantoms_are_deterministic_by_seed(tmp_path):
    def arrays(root):
        out = []
        for name in sorted(os.listdir(root)):
            with np.load(os.path.join(root, name)) as archive:
                out += [archive["image"], archive["label"]]
        return out

    for key, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_segpc2021_phantom(tmp_path / key, tmp_path / f"lists_{key}", num_train=1, num_val=1, num_test=1,
                                size=32, field_size=64, num_cells=2, seed=seed)
    first, same, other = (arrays(tmp_path / key) for key in "abc")
    assert all(np.array_equal(x, y) for x, y in zip(first, same))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))


def test_phantom_cli_for_rgb_sets(tmp_path, capsys):
    assert phantom_main(["--dataset", "isic2018", "--out", str(tmp_path), "--size", "32", "--num_train", "2",
                         "--num_valid", "1", "--num_test", "1"]) == 0
    for path in ("ISIC2018/ISIC_0000003.npz", "lists/lists_ISIC2018/train.txt", "lists/lists_ISIC2018/val.txt",
                 "lists/lists_ISIC2018/test.txt"):
        assert os.path.isfile(tmp_path / path), path
    assert read_lines(tmp_path / "lists" / "lists_ISIC2018" / "val.txt") == ["ISIC_0000002"]
    assert phantom_main(["--dataset", "segpc2021", "--out", str(tmp_path), "--official", "--seed", "1"]) == 0
    assert os.path.isfile(tmp_path / "SegPC2021_official" / "TCIA_SegPC_dataset" / "train" / "y" / "100_1.bmp")
    assert prepare_segpc(tmp_path / "SegPC2021_official", tmp_path / "prepared")[0] == 0
    leftovers = [name for _, _, files in os.walk(tmp_path) for name in files if name.endswith(".tmp")]
    assert leftovers == []
    assert phantom_main(["--dataset", "isic2018", "--out", str(tmp_path), "--depth", "3"]) == 2
    assert "--depth applies to ACDC and Synapse only" in capsys.readouterr().err
    assert phantom_main(["--dataset", "acdc", "--out", str(tmp_path), "--official"]) == 2
    assert phantom_main(["--dataset", "isic2018", "--out", str(tmp_path), "--official", "--size", "8"]) == 2
