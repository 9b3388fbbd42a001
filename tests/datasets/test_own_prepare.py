"""Own data sets: each raw format's phantom prepares into the existing prepared formats, the readers read them,
the descriptor states what was done (CT statistics checked against a naive computation over the raw files), the
splits follow splits_final.json / imagesTs / seeded blocks, worker processes change nothing, and the phantom CLI."""
from __future__ import annotations

import glob
import json
import os
import shutil

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from datasets.own.descriptor import load_descriptor
from datasets.own.geometry import choose_slice_axes, image_to_original, to_original_grid, to_source_values
from datasets.phantoms.cli import main as phantoms_main
from datasets.phantoms.own import write_folder_phantom, write_msd_phantom, write_nnunet_phantom
from datasets.prepare.own import main
from datasets.rgb import RGBSegmentationDataset
from datasets.synapse import SynapseDataset
from tests.datasets.test_own_bad_input import tiny_nnunet


def prepare(src, out, *extra: str) -> None:
    assert main(["--src", str(src), "--out", str(out), "--no_progress", *extra]) == 0


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    raw = {"nnunet": write_nnunet_phantom(str(root / "raw"), num_train=4, num_test=1),
           "msd": write_msd_phantom(str(root / "raw"), num_train=4),
           "folder": write_folder_phantom(str(root / "raw"), num_train=6, size=24)}
    for name, src in raw.items():
        prepare(src, root / name)
    return root, raw


def raw_array(path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


def prepared_volume(desc, case: str) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) of a prepared case, from its h5 volume or its stacked training slices."""
    path = os.path.join(desc.volume_path, case + ".npy.h5")
    if os.path.isfile(path):
        with h5py.File(path) as handle:
            return handle["image"][()], handle["label"][()]
    slices = [np.load(p) for p in sorted(glob.glob(os.path.join(desc.root_path, case + "_slice*.npz")))]
    return np.stack([s["image"] for s in slices]), np.stack([s["label"] for s in slices])


def test_nnunet_volumes_are_the_synapse_format_with_a_descriptor(sets):
    root, raw = sets
    desc = load_descriptor(root / "nnunet")
    assert (desc.kind, desc.source_format, desc.class_names, desc.in_chans) == ("volume", "nnunet",
                                                                               ("organ", "lesion"), 1)
    assert desc.splits["test"] == ("phantom_004",)  # the labelled imagesTs
    assert sorted(desc.splits["train"] + desc.splits["val"]) == [f"phantom_{i:03d}" for i in range(4)]
    spacings = [(1.5, 1.8)[int(case[-3:]) % 2] for case in desc.splits["train"]]  # the phantom's cases alternate
    assert desc.target_spacing == (np.median(spacings),) * 2
    train = SynapseDataset(desc.root_path, desc.list_dir, "train", desc.num_classes)
    test = SynapseDataset(desc.volume_path, desc.list_dir, "test", desc.num_classes)
    assert len(train) == 6 * len(desc.splits["train"]) and train[0]["image"].shape[0] == 1
    volume = test[0]
    assert volume["image"].shape == tuple(desc.cases["phantom_004"].prepared_shape)
    assert set(np.unique(volume["label"])) == {0, 1, 2}


def test_ct_statistics_are_the_training_foregrounds(sets):
    """nnU-Net's CT scheme: every foreground voxel of the training cases (fewer than the sample size here)."""
    root, raw = sets
    desc = load_descriptor(root / "nnunet")
    values = np.concatenate([raw_array(f"{raw['nnunet']}/imagesTr/{case}_0000.nii.gz")[
        raw_array(f"{raw['nnunet']}/labelsTr/{case}.nii.gz") > 0].astype(np.float64) for case in desc.splits["train"]])
    (ct,) = desc.intensity
    assert ct.scheme == "ct"
    np.testing.assert_allclose(ct.clip, np.percentile(values, [0.5, 99.5]))
    np.testing.assert_allclose((ct.mean, ct.std), (values.mean(), values.std()))


def test_predictions_go_back_to_the_original_grid(sets):
    root, raw = sets
    desc = load_descriptor(root / "nnunet")
    for case in ("phantom_004", desc.splits["train"][0]):
        geometry = desc.cases[case]
        _, label = prepared_volume(desc, case)
        original = raw_array(geometry.source)
        back = to_original_grid(label, geometry, desc)
        assert back.shape == original.shape
        assert (back == original).mean() > 0.97  # nearest resampling there and back between 1.5 and 1.8 mm
        scores = to_original_grid(np.stack([label == k for k in range(3)]), geometry, desc)
        np.testing.assert_array_equal(scores.argmax(0), back)


def test_msd_multimodal_volumes_zscore_per_case(sets):
    root, _ = sets
    desc = load_descriptor(root / "msd")
    assert desc.source_format == "msd" and desc.in_chans == 2 and desc.channel_names == ("T1", "T2")
    assert [i.scheme for i in desc.intensity] == ["zscore", "zscore"]
    image, label = prepared_volume(desc, desc.splits["test"][0])
    assert image.ndim == 4 and image.shape[1] == 2 and image[:, 0].shape == label.shape
    for channel in range(2):  # z-scored, then resampled: still about 0 and 1
        assert abs(image[:, channel].mean()) < 0.1 and abs(image[:, channel].std() - 1) < 0.1


def test_channels_option_keeps_the_named_channels(tmp_path, sets):
    """--channels 1: the T2 channel alone, z-scored as the two-channel preparation's second channel was."""
    root, raw = sets
    prepare(raw["msd"], tmp_path / "t2", "--channels", "1")
    both, t2 = load_descriptor(root / "msd"), load_descriptor(tmp_path / "t2")
    assert (t2.in_chans, t2.channel_names, t2.intensity) == (1, ("T2",), both.intensity[1:])
    case = both.splits["test"][0]
    np.testing.assert_array_equal(prepared_volume(t2, case)[0], prepared_volume(both, case)[0][:, 1])
    assert main(["--src", raw["msd"], "--out", str(tmp_path / "bad"), "--channels", "2"]) == 1


def test_folder_binary_masks_become_classes_0_1(sets):
    root, raw = sets
    desc = load_descriptor(root / "folder")
    assert (desc.kind, desc.class_names, desc.label_values, desc.in_chans) == ("image", ("foreground",), (0, 255), 3)
    data = RGBSegmentationDataset(desc.root_path, desc.list_dir, "test", desc.num_classes)
    item = data[0]
    mask = np.asarray(Image.open(f"{raw['folder']}/masks/{item['case_name']}.png"))
    expected = np.asarray(Image.fromarray((mask == 255).astype(np.uint8)).resize((224, 224), Image.NEAREST))
    np.testing.assert_array_equal(item["label"], expected)
    assert item["image"].shape == (3, 224, 224)
    assert image_to_original(item["label"], desc.cases[item["case_name"]]).shape == mask.shape


def test_nnunet_2d_png_rgb_and_splits_final(tmp_path, sets):
    """nnU-Net's natural-image convention (one RGB .png = 3 channels) and splits_final.json --fold."""
    _, raw = sets
    src = tmp_path / "Dataset902_Pictures"
    for folder in ("imagesTr", "labelsTr"):
        (src / folder).mkdir(parents=True)
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(f"{raw['folder']}/images"))
    for name in names:
        shutil.copy(f"{raw['folder']}/images/{name}.png", src / "imagesTr" / f"{name}_0000.png")
        mask = np.asarray(Image.open(f"{raw['folder']}/masks/{name}.png")) // 255
        Image.fromarray(mask.astype(np.uint8)).save(src / "labelsTr" / f"{name}.png")
    json.dump({"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "cell": 1},
               "numTraining": len(names), "file_ending": ".png"}, open(src / "dataset.json", "w"))
    folds = [{"train": names[:4], "val": names[4:]}, {"train": names[2:], "val": names[:2]}]
    json.dump(folds, open(src / "splits_final.json", "w"))
    prepare(src, tmp_path / "out", "--fold", "1", "--size", "32")
    desc = load_descriptor(tmp_path / "out")
    assert desc.kind == "image" and desc.class_names == ("cell",) and desc.image_size == (32, 32)
    assert desc.splits == {"train": tuple(names[2:]), "val": tuple(names[:2]), "test": tuple(names[:2])}
    assert "fold 1" in desc.split_source
    assert RGBSegmentationDataset(desc.root_path, desc.list_dir, "val", 2)[0]["image"].shape == (3, 32, 32)


def test_workers_and_ct_window(tmp_path, sets):
    """Two worker processes write what one does; --ct_window is the Synapse scheme (clip, scale to [0, 1])."""
    root, raw = sets
    prepare(raw["nnunet"], tmp_path / "two", "--workers", "2")
    one, two = load_descriptor(root / "nnunet"), load_descriptor(tmp_path / "two")
    assert one.intensity == two.intensity and one.cases.keys() == two.cases.keys()
    for case in one.cases:
        for a, b in zip(prepared_volume(one, case), prepared_volume(two, case)):
            np.testing.assert_array_equal(a, b)
    prepare(raw["nnunet"], tmp_path / "window", "--ct_window", "-125", "275")
    window = load_descriptor(tmp_path / "window")
    assert (window.intensity[0].scheme, window.intensity[0].clip) == ("window", (-125.0, 275.0))
    image, _ = prepared_volume(window, "phantom_004")
    assert np.median(image) > 0 and image.max() < 1.1 and image.min() > -0.1  # [0, 1], cubic resampling's ringing


def test_phantom_cli_formats(tmp_path, capsys):
    assert phantoms_main(["--format", "folder", "--out", str(tmp_path), "--num_train", "3", "--size", "16"]) == 0
    assert "python -m datasets.prepare.own --src" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "Folder_Phantom" / "masks")) == 3
    assert phantoms_main(["--format", "msd", "--out", str(tmp_path), "--size", "16"]) == 2


def test_label_values_that_are_not_consecutive_are_mapped_and_back(tmp_path):
    """dataset.json declares 0, 1 and 4: prepared classes 0, 1, 2; predictions go back to the declared values."""
    src = tiny_nnunet(tmp_path / "raw", labels={"background": 0, "a": 1, "b": 4})
    for case in range(3):
        path = f"{src}/labelsTr/c{case}.nii.gz"
        label = raw_array(path)
        nib.save(nib.Nifti1Image(np.where(label == 2, 4, label).astype(np.uint8), np.eye(4)), path)
    prepare(src, tmp_path / "out")
    desc = load_descriptor(tmp_path / "out")
    assert (desc.class_names, desc.label_values) == (("a", "b"), (0, 1, 4))
    case = desc.splits["test"][0]
    _, label = prepared_volume(desc, case)
    assert set(np.unique(label)) == {0, 1, 2}
    back = to_source_values(to_original_grid(label, desc.cases[case], desc), desc)
    np.testing.assert_array_equal(back, raw_array(desc.cases[case].source))


def test_folder_class_index_masks_and_palette_pngs(tmp_path):
    """Masks of class indices, one saved with a colour palette (its indices are the classes, not its colours)."""
    src = tmp_path / "folder"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    mask = np.zeros((8, 8), np.uint8)
    mask[1:4, 1:4], mask[5:7, 5:7] = 1, 2
    for index in range(4):
        Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(src / "images" / f"p{index}.jpg")
        picture = Image.fromarray(mask)
        if index == 0:
            picture = picture.convert("P")
            picture.putpalette([0, 0, 0, 250, 10, 10, 10, 250, 10] + [0] * 759)
        picture.save(src / "masks" / f"p{index}.png")
    prepare(src, tmp_path / "out", "--size", "8")
    desc = load_descriptor(tmp_path / "out")
    assert desc.class_names == ("class_1", "class_2") and desc.label_values == (0, 1, 2)
    for split in ("train", "val", "test"):
        for item in RGBSegmentationDataset(desc.root_path, desc.list_dir, split, 3):
            np.testing.assert_array_equal(item["label"], mask)


def test_grey_and_16_bit_pictures(tmp_path):
    """nnU-Net 2-D with one grey channel: 8-bit kept, 16-bit scaled by its own range to 0..255, both repeated in R, G
    and B (stored at their own size: --size equal to it)."""
    src = tmp_path / "Dataset908_Grey"
    for folder in ("imagesTr", "labelsTr"):
        (src / folder).mkdir(parents=True)
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8)
    pictures = {"g0": ramp.astype(np.uint8) * 3, "g1": ramp * 1000 + 500, "g2": ramp.astype(np.uint8)}
    for name, picture in pictures.items():
        Image.fromarray(picture).save(src / "imagesTr" / f"{name}_0000.png")
        Image.fromarray((ramp > 40).astype(np.uint8)).save(src / "labelsTr" / f"{name}.png")
    json.dump({"channel_names": {"0": "grey"}, "labels": {"background": 0, "bright": 1}, "numTraining": 3,
               "file_ending": ".png"}, open(src / "dataset.json", "w"))
    prepare(src, tmp_path / "out", "--size", "8")
    desc = load_descriptor(tmp_path / "out")
    assert desc.in_chans == 3 and desc.channel_names == ("grey",)
    for name, picture in pictures.items():
        stored = np.load(os.path.join(desc.root_path, f"{name}.npz"))["image"]
        expected = picture if picture.dtype == np.uint8 else np.rint((picture.astype(float) - 500) * 255 / 63000)
        for channel in range(3):
            np.testing.assert_array_equal(stored[..., channel], expected.astype(np.uint8))


def test_slices_run_along_the_coarse_axis_of_anisotropic_storage():
    """nnU-Net's 2-D rule: slice along the axis of the largest median spacing (sagittal 4 mm x 1 mm x 1 mm stacks
    give sagittal slices, [x, z, y]); isotropic cases give axial slices."""
    assert choose_slice_axes([(4.0, 1.0, 1.0), (3.5, 0.9, 0.9), (1.0, 1.0, 1.0)]) == (0, 2, 1)
    assert choose_slice_axes([(0.8, 5.0, 0.8)] * 2) == (1, 2, 0)
    assert choose_slice_axes([(1.0, 1.0, 1.0), (0.7, 0.7, 0.7)]) == (2, 1, 0)
