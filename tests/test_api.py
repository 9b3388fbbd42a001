"""The Python API (api.py) against the scripts: for each model family (Sim-MPNet, an smp baseline, MatchSeg),
``segment()`` of a phantom case equals predict.py's output file voxel for voxel, whatever form the input takes (path,
nibabel image, array, PIL image); probabilities and flip TTA as predict.py writes them; ``evaluate()`` equals the
rows of test.py's metrics.csv and hand-computed values; a model is loaded once per Segmenter; every bad input raises
DataError naming the file or the argument.

The checkpoints are tiny random models saved as training would (``args.dataset``); predict.py is
``utils.predict.main`` and test.py ``utils.evaluator.evaluate`` in this process.
"""
from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

import api
from datasets import get_dataset
from datasets.io.pairs import write_pair_folder
from datasets.phantoms.synapse import synapse_case
from datasets.prepare.synapse import HU_MAX, HU_MIN
from networks import create_model
from tests.conftest import tiny_options
from tests.utils.test_predict import FILE_ORNT, nifti, save_model
from utils import checkpoint as checkpoint_module
from utils.cli import build_test_parser
from utils.evaluator import evaluate as run_test_py
from utils.predict import main as predict_main

pytestmark = pytest.mark.usefixtures("single_thread")

SPACING = (0.8, 0.7, 2.5)


def tiny(arch: str, in_chans: int, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """A tiny random model; Sim-MPNet taken past its memory warm-up by training-mode forwards."""
    torch.manual_seed(seed)
    options = tiny_options(arch)
    model = create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans, **options)
    if "warmup_iters" in options:
        model.train()
        with torch.no_grad():
            for _ in range(options["warmup_iters"] + 1):
                model(torch.rand(4, in_chans, options["img_size"], options["img_size"]))
    return model.eval()


def predict_file(checkpoint: Path, source: Path, out: Path, *extra: str) -> Path:
    """predict.py on one input; the path of its label map."""
    assert predict_main(["--checkpoint", str(checkpoint), "--input", str(source), "--output", str(out),
                         "--device", "cpu", *extra]) == 0
    labels = [path for path in out.iterdir() if path.name.endswith((".nii.gz", ".png"))]
    assert len(labels) == 1, labels
    return labels[0]


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict:
    """A CT scan stored in another voxel order than training's (Sim-MPNet pico, Synapse); ISIC-like images of
    48 x 40 px, resized to the network's 64 and back (U-Net); BUSI-like images with a support folder (MatchSeg)."""
    root = tmp_path_factory.mktemp("api")
    image, _ = synapse_case(np.random.default_rng([0, 1]), 48, 5)  # [z, x, y] in [0, 1]
    hu = np.round(HU_MIN + image[:, :, 4:44].astype(np.float64) * (HU_MAX - HU_MIN)).astype(np.int16)
    raw_xyz = hu.transpose(1, 2, 0)
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    data = np.ascontiguousarray(nib.orientations.apply_orientation(raw_xyz, FILE_ORNT))
    scan = nifti(data, affine @ nib.orientations.inv_ornt_aff(FILE_ORNT, raw_xyz.shape), root / "scan.nii.gz")

    isic = get_dataset("isic2018").phantom.write(root / "ISIC", root / "isic_lists", seed=0, num_train=1, num_val=1,
                                                 num_test=2, size=64)
    isic_items = get_dataset("isic2018").build(isic["volume_path"], isic["list_dir"], "test", 2)
    picture = Image.fromarray(isic_items.load(0)[0]).resize((48, 40))
    picture.save(root / "skin.png")

    busi = get_dataset("busi").phantom.write(root / "BUSI", root / "busi_lists", num_train=4, num_val=1, num_test=1,
                                             size=32, seed=3)
    busi_train = get_dataset("busi").build(busi["root_path"], busi["list_dir"], "train", 2)
    write_pair_folder(busi_train, root / "support")
    busi_test = get_dataset("busi").build(busi["root_path"], busi["list_dir"], "test", 2)
    Image.fromarray(busi_test.load(0)[0]).save(root / "breast.png")

    checkpoints = {"sim_mpnet_pico": save_model(tiny("sim_mpnet_pico", 1, 9), root / "sim.pth", "synapse"),
                   "unet": save_model(tiny("unet", 3, 2, seed=2), root / "unet.pth", "isic2018")}
    state = checkpoint_module.model_checkpoint(tiny("matchseg", 3, 2))
    state["args"] = {"dataset": "busi", "support_size": 2, "support_cache": str(root / "cache")}
    checkpoint_module.save_checkpoint(root / "matchseg.pth", state)
    checkpoints["matchseg"] = root / "matchseg.pth"
    return dict(root=root, scan=scan, picture=root / "skin.png", query=root / "breast.png", support=root / "support",
                busi_train=busi_train, checkpoints=checkpoints, isic=isic, isic_items=isic_items)


FAMILY_INPUT = {"sim_mpnet_pico": "scan", "unet": "picture", "matchseg": "query"}


@pytest.mark.parametrize("family", sorted(FAMILY_INPUT))
def test_segment_equals_predict_py_voxel_for_voxel(cases, family, tmp_path):
    checkpoint, source = cases["checkpoints"][family], cases[FAMILY_INPUT[family]]
    support = ("--support", str(cases["support"])) if family == "matchseg" else ()
    written = predict_file(checkpoint, source, tmp_path / "out", *support)
    segmenter = api.Segmenter.from_checkpoint(checkpoint, device="cpu",
                                              support=cases["support"] if support else None)
    from_path = segmenter.segment(source)
    if written.name.endswith(".nii.gz"):
        expected = nib.load(written)
        np.testing.assert_array_equal(from_path, np.asanyarray(expected.dataobj))
        loaded = nib.load(source)
        image = segmenter.segment(loaded)  # a nibabel image in, a nibabel image out, in its geometry
        assert isinstance(image, nib.Nifti1Image) and np.allclose(image.affine, expected.affine)
        np.testing.assert_array_equal(np.asanyarray(image.dataobj), np.asanyarray(expected.dataobj))
        array = segmenter.segment(np.asanyarray(loaded.dataobj), affine=loaded.affine)
        np.testing.assert_array_equal(array, np.asanyarray(expected.dataobj))
        assert len(np.unique(array)) > 1  # a test that can fail: more than one class predicted
    else:
        expected = np.asarray(Image.open(written))
        np.testing.assert_array_equal(from_path, expected)
        with Image.open(source) as picture:
            np.testing.assert_array_equal(segmenter.segment(picture), expected)
            np.testing.assert_array_equal(segmenter.segment(np.asarray(picture)), expected)
        assert from_path.shape == expected.shape == np.asarray(Image.open(source)).shape[:2]


def test_probabilities_and_flip_tta_equal_predict_py(cases, tmp_path):
    checkpoint, source = cases["checkpoints"]["unet"], cases["picture"]
    written = predict_file(checkpoint, source, tmp_path, "--tta", "flip", "--save_probabilities")
    labels, probabilities = api.segment(source, checkpoint, device="cpu", tta="flip", probabilities=True)
    np.testing.assert_array_equal(labels, np.asarray(Image.open(written)))
    with np.load(tmp_path / "skin_probabilities.npz") as archive:
        stored = archive["probabilities"]
    assert probabilities.dtype == np.float32 and probabilities.shape == stored.shape == (2, 40, 48)
    np.testing.assert_allclose(probabilities, stored.astype(np.float32), atol=1e-3)  # stored as float16
    plain = api.segment(source, checkpoint, device="cpu")
    assert not np.array_equal(api.segment(source, checkpoint, device="cpu", tta="flip", probabilities=True)[1],
                              api.segment(source, checkpoint, device="cpu", probabilities=True)[1])
    assert plain.shape == labels.shape


def test_support_pairs_equal_the_support_folder(cases, tmp_path):
    checkpoint, query = cases["checkpoints"]["matchseg"], cases["query"]
    written = predict_file(checkpoint, query, tmp_path, "--support", str(cases["support"]))
    pairs = [cases["busi_train"].load(index) for index in range(len(cases["busi_train"]))]
    segmenter = api.Segmenter.from_checkpoint(checkpoint, device="cpu", support=pairs)
    np.testing.assert_array_equal(segmenter.segment(query), np.asarray(Image.open(written)))


def test_a_segmenter_loads_its_model_once(cases, monkeypatch):
    loads = []
    original = checkpoint_module.torch.load
    monkeypatch.setattr(checkpoint_module.torch, "load", lambda *a, **k: loads.append(a) or original(*a, **k))
    segmenter = api.Segmenter.from_checkpoint(cases["checkpoints"]["unet"], device="cpu")
    first = segmenter.segment(cases["picture"])
    for _ in range(3):
        np.testing.assert_array_equal(segmenter.segment(cases["picture"]), first)
    assert len(loads) == 1


def test_evaluate_gives_test_py_rows(cases, tmp_path):
    """test.py's metrics.csv of the prepared ISIC-like test images, and evaluate() of segment() on the same files."""
    checkpoint, isic = cases["checkpoints"]["unet"], cases["isic"]
    run_test_py(build_test_parser("isic2018").parse_config(
        ["--volume_path", isic["volume_path"], "--list_dir", isic["list_dir"], "--checkpoint", str(checkpoint),
         "--output_dir", str(tmp_path), "--device", "cpu"]))
    with open(tmp_path / "metrics.csv", newline="") as handle:
        expected = {row["case"]: row for row in csv.DictReader(handle)}
    segmenter = api.Segmenter.from_checkpoint(checkpoint, device="cpu")
    items = cases["isic_items"]
    assert len(expected) == len(items)
    for index, (entry, path) in enumerate(zip(items.entries, items.paths)):
        rows = api.evaluate(segmenter.segment(path), items.load(index)[1], class_names=segmenter.class_names)
        row = expected[items.case_name(entry)]
        assert [r["class"] for r in rows] == [row["class"]]
        for name in ("dice", "hd95", "jaccard", "asd"):
            assert f"{rows[0][name]:.6g}" == row[name], (entry, name)


def test_evaluate_by_hand_with_the_spacing_of_nibabel_images():
    """A 4x4 square against a 4x6 rectangle along axis 1 (mm spacing 1 x 2): DSC 2*16/(16+24) = 0.8, IoU 16/24;
    the surface points of the rectangle are at most 2 columns (4 mm) from the square's."""
    truth = np.zeros((8, 10), np.uint8)
    prediction = np.zeros((8, 10), np.uint8)
    truth[2:6, 2:6] = 1
    prediction[2:6, 2:8] = 1
    (row,) = api.evaluate(prediction, truth, spacing=(1.0, 2.0))
    assert row["class"] == "class_1" and row["dice"] == pytest.approx(0.8) and row["jaccard"] == pytest.approx(2 / 3)
    assert 0 < row["hd95"] <= 4.0
    as_images = [nib.Nifti1Image(a[..., None], np.diag([1.0, 2.0, 3.0, 1.0])) for a in (prediction, truth)]
    (from_images,) = api.evaluate(*as_images)
    (explicit,) = api.evaluate(prediction[..., None], truth[..., None], spacing=(1.0, 2.0, 3.0))
    assert from_images == explicit
    (missed,) = api.evaluate(np.zeros_like(truth), truth, num_classes=2)  # transunet protocol: a missed organ is 0
    assert missed["dice"] == 0 and missed["hd95"] == 0


def test_bad_inputs_raise_one_data_error_naming_the_file_or_argument(cases, tmp_path):
    volume_model = api.Segmenter.from_checkpoint(cases["checkpoints"]["sim_mpnet_pico"], device="cpu")
    image_model = api.Segmenter.from_checkpoint(cases["checkpoints"]["unet"], device="cpu")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti file")
    cases_ = [
        (volume_model, dict(image=np.zeros((8, 8, 4))), "affine"),  # an array without geometry
        (volume_model, dict(image=np.zeros((8, 8, 4)), spacing=(1, 1)), "spacing"),
        (volume_model, dict(image=np.zeros((2, 8, 8, 4)), spacing=(1, 1, 1)), "image"),
        (volume_model, dict(image=tmp_path / "missing.nii.gz"), "missing.nii.gz"),
        (volume_model, dict(image=broken), "broken.nii.gz"),
        (volume_model, dict(image=Image.new("RGB", (8, 8))), "image"),
        (volume_model, dict(image=[1, 2, 3]), "image"),
        (image_model, dict(image=np.zeros((8, 8, 4), np.uint8)), "image"),
        (image_model, dict(image=np.zeros((8, 8, 3), np.float32)), "image"),
        (image_model, dict(image=Image.new("I;16", (8, 8))), "image"),
    ]
    for segmenter, arguments, named in cases_:
        with pytest.raises(api.DataError) as caught:
            segmenter.segment(**arguments)
        assert caught.value.path.endswith(named) and "\n" not in str(caught.value), (arguments, caught.value)
    with pytest.raises(api.DataError, match="support"):
        api.Segmenter.from_checkpoint(cases["checkpoints"]["matchseg"], device="cpu", support=[])
    with pytest.raises(api.DataError, match=r"support\[0\]"):
        api.Segmenter.from_checkpoint(cases["checkpoints"]["matchseg"], device="cpu",
                                      support=[(np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4), np.uint8))])
    with pytest.raises(api.DataError, match="support_sise: not an option of matchseg"):
        api.Segmenter.from_checkpoint(cases["checkpoints"]["matchseg"], device="cpu", support=cases["support"],
                                      support_sise=4)
    with pytest.raises(api.DataError, match="label"):
        api.evaluate(np.zeros((4, 4), int), np.zeros((4, 5), int))
