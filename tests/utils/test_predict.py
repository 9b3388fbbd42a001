"""predict.py (utils/predict/): unlabeled NIfTI, DICOM, prepared and image inputs with the geometry kept, against
the test scripts' own predictions; volumes.csv; flip test-time augmentation (also in the test scripts); every bad
input; skipping, overwriting and no half-written output.

The tiny Sim-MPNet models are built here from random weights (a few training-mode forwards take them past the memory
warm-up) and saved as checkpoints with ``args.dataset``, as training would; both sides of every comparison run the
library functions the scripts call (``utils.predict.main`` is ``predict.py``; ``evaluate(build_test_parser(set)...)``
is ``test_<set>.py``).
"""
from __future__ import annotations

import csv
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import get_dataset
from datasets.acdc import minmax_normalize
from datasets.prepare.synapse import HU_MAX, HU_MIN, clip_and_scale_hu, load_raw_case
from datasets.synapse import write_synapse_test_case
from datasets.phantoms.synapse import synapse_case
from networks import create_model
from tests.conftest import TINY_SIZE, tiny_options
from utils.predict import run as predict_module  # the run's names (monkeypatched)
from utils.checkpoint import build_model_from_checkpoint, model_checkpoint, save_checkpoint
from utils.cli import build_test_parser
from utils.evaluator import evaluate, evaluate_model
from utils.inference import FLIP_DIMS, predict_image, predict_volume, sum_of_heads
from utils.metrics import case_metrics
from utils.predict import main as predict_main

SPACING = (0.8, 0.7, 2.5)  # anisotropic, mm
ORIGIN = (120.0, 90.0, -40.0)
# How the test scan is stored relative to the training orientation (nibabel orientation transform): x becomes the
# second axis, flipped; y the first; z stays the third, flipped.
FILE_ORNT = np.array([[1, -1], [0, 1], [2, -1]])
SYNAPSE_CLASSES = 9


pytestmark = pytest.mark.usefixtures("single_thread")

def tiny_model(in_chans: int, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """A tiny Sim-MPNet taken past its memory warm-up by training-mode forwards (no optimizer step)."""
    torch.manual_seed(seed)
    options = tiny_options("sim_mpnet")
    model = create_model("sim_mpnet", pretrained=False, num_classes=num_classes, in_chans=in_chans, **options)
    model.train()
    with torch.no_grad():
        for _ in range(options["warmup_iters"] + 1):
            model(torch.rand(4, in_chans, options["img_size"], options["img_size"]))
    return model.eval()


def save_model(model: torch.nn.Module, path: Path, dataset: str | None) -> Path:
    state = model_checkpoint(model)
    if dataset is not None:
        state["args"] = {"dataset": dataset}
    save_checkpoint(path, state)
    return path


def run_predict(capsys, *args) -> tuple[int, str, str]:
    """``predict.py ARGS`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    status = predict_main([*map(str, args), "--device", "cpu"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
    return path


def write_dicom_series(folder: Path, data_xyz: np.ndarray, affine: np.ndarray, series_uid: str) -> Path:
    """A CT series of int16 slices (one file per slice along z) with the geometry of ``affine`` (nibabel RAS):
    image position, orientation and pixel spacing from ITK's LPS origin, direction and spacing."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    volume = sitk.GetImageFromArray(np.ascontiguousarray(data_xyz.transpose(2, 1, 0)).astype(np.int16))
    volume.SetSpacing(spacing.tolist())
    volume.SetOrigin(lps[:3, 3].tolist())
    volume.SetDirection(direction.ravel().tolist())
    orientation = "\\".join(f"{value:.8f}" for value in (*direction[:, 0], *direction[:, 1]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in range(volume.GetDepth()):
        image = volume[:, :, index]
        position = volume.TransformIndexToPhysicalPoint((0, 0, index))
        tags = {"0008|0060": "CT", "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0018": f"{series_uid}.{index + 1}",
                "0020|000d": "1.2.826.0.1.3680043.8.498.1", "0020|000e": series_uid, "0020|0013": str(index + 1),
                "0020|0032": "\\".join(f"{value:.8f}" for value in position), "0020|0037": orientation,
                "0018|0050": f"{spacing[2]:.8f}", "0028|1052": "0", "0028|1053": "1"}
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid.rsplit('.', 1)[-1]}_{index:03d}.dcm"))
        writer.Execute(image)
    return folder


def in_orientation(image: nib.Nifti1Image, codes: str = "LPS") -> tuple[np.ndarray, np.ndarray]:
    """(voxels, affine) of an image reoriented to ``codes``."""
    transform = nib.orientations.ornt_transform(nib.orientations.io_orientation(image.affine),
                                                nib.orientations.axcodes2ornt(tuple(codes)))
    reoriented = image.as_reoriented(transform)
    return np.asarray(reoriented.dataobj), reoriented.affine


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------------------------------------------
# A CT scan: BTCV-like raw file (training orientation), its prepared test volume, and a copy stored otherwise
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ct")
    image, label = synapse_case(np.random.default_rng([0, 1]), 48, 6)  # [z, x, y] in [0, 1]
    image, label = image[:, :, 4:44], label[:, :, 4:44]  # 48 x 40 slices: resized to the network's 64 and back
    hu = np.round(HU_MIN + image.astype(np.float64) * (HU_MAX - HU_MIN)).astype(np.int16)
    raw_xyz = hu.transpose(1, 2, 0)  # the raw file's (x, y, z), in the training orientation (LPS)
    affine_lps = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    affine_lps[:3, 3] = ORIGIN

    # The prepared test volume, by the preparation's own code from a BTCV-like raw file.
    raw_dir = root / "RawData"
    raw_dir.mkdir()
    nifti(raw_xyz, affine_lps, raw_dir / "img0001.nii.gz")
    nifti(label.transpose(1, 2, 0).astype(np.int16), affine_lps, raw_dir / "label0001.nii.gz")
    prepared, prepared_label = load_raw_case(str(raw_dir / "img0001.nii.gz"), str(raw_dir / "label0001.nii.gz"))
    np.testing.assert_array_equal(prepared, clip_and_scale_hu(hu))
    test_dir, list_dir = root / "test_vol_h5", root / "lists"
    write_synapse_test_case(str(test_dir), "case0001", prepared, prepared_label)
    list_dir.mkdir()
    (list_dir / "test_vol.txt").write_text("case0001\n")

    # The same scan stored with another voxel order (axes swapped, two flipped) and the matching affine.
    file_data = nib.orientations.apply_orientation(raw_xyz, FILE_ORNT)
    file_affine = affine_lps @ nib.orientations.inv_ornt_aff(FILE_ORNT, raw_xyz.shape)
    scans = root / "scans"
    scans.mkdir()
    scan = nifti(np.ascontiguousarray(file_data), file_affine, scans / "scan.nii.gz")

    checkpoint = save_model(tiny_model(1, SYNAPSE_CLASSES), root / "synapse.pth", "synapse")
    result = dict(root=root, raw_xyz=raw_xyz, affine_lps=affine_lps, file_data=file_data, file_affine=file_affine,
                  scan=scan, checkpoint=checkpoint, test_dir=test_dir, list_dir=list_dir,
                  h5=test_dir / "case0001.npy.h5", label=prepared_label)
    result["test_prediction"] = synapse_test_prediction(result, root / "test")
    return result


def synapse_test_args(ct: dict, output: Path, *extra: str) -> list[str]:
    return ["--volume_path", str(ct["test_dir"]), "--list_dir", str(ct["list_dir"]), "--checkpoint",
            str(ct["checkpoint"]), "--output_dir", str(output), "--device", "cpu", *extra]


def synapse_test_prediction(ct: dict, output: Path, *extra: str) -> np.ndarray:
    """test_synapse.py's prediction of case0001 ([z, x, y]), read back from its --is_savenii file."""
    evaluate(build_test_parser("synapse").parse_config(synapse_test_args(ct, output, "--is_savenii", *extra)))
    return np.rint(nib.load(output / "predictions" / "case0001_pred.nii.gz").get_fdata().T).astype(np.int64)


@pytest.fixture(scope="module")
def ct_predicted(ct, tmp_path_factory) -> dict:
    """predict.py on the reoriented scan, with probabilities and overlays."""
    out = tmp_path_factory.mktemp("ct_out")
    status = predict_main(["--checkpoint", str(ct["checkpoint"]), "--input", str(ct["scan"]), "--output", str(out),
                           "--device", "cpu", "--save_probabilities", "--save_overlays", "2"])
    assert status == 0
    return dict(out=out, image=nib.load(out / "scan.nii.gz"))


def test_nifti_prediction_keeps_the_geometry_and_equals_test_synapse_voxel_for_voxel(ct, ct_predicted):
    image, scan = ct_predicted["image"], nib.load(ct["scan"])
    assert image.shape == scan.shape == ct["file_data"].shape
    np.testing.assert_allclose(image.affine, scan.affine, atol=1e-6)
    for form in ("qform", "sform"):
        np.testing.assert_allclose(getattr(image, f"get_{form}")(), getattr(scan, f"get_{form}")(), atol=1e-6)
        assert int(image.header[f"{form}_code"]) == int(scan.header[f"{form}_code"])
    assert image.header.get_zooms() == pytest.approx(scan.header.get_zooms())
    assert image.get_data_dtype() == np.uint8
    reference = ct["test_prediction"]  # test_synapse.py, [z, x, y] of the training orientation
    assert len(np.unique(reference)) > 1, "a constant prediction would not test the geometry"
    expected = nib.orientations.apply_orientation(reference.transpose(1, 2, 0), FILE_ORNT)  # stored like the scan
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected)


def test_without_reorientation_the_prediction_differs(ct, ct_predicted, tmp_path, capsys):
    status, _, _ = run_predict(capsys, "--checkpoint", ct["checkpoint"], "--input", ct["scan"], "--output", tmp_path,
                               "--orientation", "stored")
    assert status == 0
    stored = np.asarray(nib.load(tmp_path / "scan.nii.gz").dataobj)
    assert stored.shape == ct["file_data"].shape
    assert not np.array_equal(stored, np.asarray(ct_predicted["image"].dataobj))


def test_dicom_series_gives_the_same_labels(ct, ct_predicted, tmp_path, capsys):
    series = write_dicom_series(tmp_path / "series", ct["file_data"], ct["file_affine"], "1.2.826.0.1.3680043.8.498.2")
    status, out, err = run_predict(capsys, "--checkpoint", ct["checkpoint"], "--input", series, "--output",
                                   tmp_path / "out")
    assert status == 0, err
    image = nib.load(tmp_path / "out" / "series.nii.gz")
    labels, affine = in_orientation(image)
    expected, expected_affine = in_orientation(ct_predicted["image"])
    np.testing.assert_allclose(affine, expected_affine, atol=1e-4)
    np.testing.assert_array_equal(labels, expected)


def test_volumes_csv_counts_voxels_times_spacing(ct, ct_predicted):
    labels = np.asarray(ct_predicted["image"].dataobj)
    rows = read_csv(ct_predicted["out"] / "volumes.csv")
    names = get_dataset("synapse").class_names
    assert [(row["case"], row["class"]) for row in rows] == [("scan", name) for name in names]
    for index, row in enumerate(rows, start=1):
        voxels = int(np.count_nonzero(labels == index))
        assert int(row["voxels"]) == voxels
        assert float(row["volume_ml"]) == pytest.approx(voxels * np.prod(SPACING) / 1000.0, rel=1e-5)


def test_probabilities_and_overlay(ct, ct_predicted):
    labels = np.asarray(ct_predicted["image"].dataobj)
    with np.load(ct_predicted["out"] / "scan_probabilities.npz") as archive:
        probabilities, names = archive["probabilities"], list(archive["class_names"])
    assert probabilities.dtype == np.float16 and probabilities.shape == (SYNAPSE_CLASSES, *labels.shape)
    assert names == ["background", *get_dataset("synapse").class_names]
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=5e-3)
    # labels: argmax at the network's size, resized (nearest); probabilities resized linearly: they agree but at edges
    assert (probabilities.argmax(axis=0) == labels).mean() > 0.9
    overlay = np.asarray(Image.open(ct_predicted["out"] / "overlays" / "scan.png"))
    assert overlay.ndim == 3 and overlay.shape[2] == 3 and overlay.std() > 0


def test_prepared_volume_is_written_as_test_synapse_writes_it(ct, tmp_path, capsys):
    status, _, err = run_predict(capsys, "--checkpoint", ct["checkpoint"], "--input", ct["h5"], "--output", tmp_path)
    assert status == 0, err
    written = nib.load(tmp_path / "case0001.nii.gz")
    reference = nib.load(ct["root"] / "test" / "predictions" / "case0001_pred.nii.gz")
    np.testing.assert_array_equal(np.asarray(written.dataobj), np.rint(reference.get_fdata()))
    np.testing.assert_array_equal(written.affine, reference.affine)
    assert all(row["volume_ml"] == "" for row in read_csv(tmp_path / "volumes.csv"))  # no geometry: no mL


def test_skips_existing_outputs_unless_overwrite(ct, tmp_path, capsys):
    args = ["--checkpoint", ct["checkpoint"], "--input", ct["scan"], "--output", tmp_path]
    assert run_predict(capsys, *args)[0] == 0
    label_file = tmp_path / "scan.nii.gz"
    first = label_file.stat().st_mtime_ns
    status, out, _ = run_predict(capsys, *args)
    assert status == 0 and "0 written, 1 skipped" in out and label_file.stat().st_mtime_ns == first
    assert len(read_csv(tmp_path / "volumes.csv")) == SYNAPSE_CLASSES - 1  # rows of the skipped input, from its file
    status, out, _ = run_predict(capsys, *args, "--save_probabilities")  # a missing output: predicted again
    assert status == 0 and "1 written" in out and (tmp_path / "scan_probabilities.npz").is_file()
    status, out, _ = run_predict(capsys, *args, "--overwrite")
    assert status == 0 and "1 written" in out and label_file.stat().st_mtime_ns != first


def test_checkpoint_without_dataset_needs_dataset_and_acdc_keeps_the_stored_voxel_order(ct, tmp_path, capsys):
    model = tiny_model(1, SYNAPSE_CLASSES)
    bare = save_model(model, tmp_path / "bare.pth", None)
    status, _, err = run_predict(capsys, "--checkpoint", bare, "--input", ct["scan"], "--output", tmp_path / "a")
    assert status == 2 and "names no data set" in err and "--dataset" in err
    # ACDC: min-max normalised, slices along the stored third axis whatever the affine says
    status, _, err = run_predict(capsys, "--checkpoint", bare, "--input", ct["scan"], "--output", tmp_path / "b",
                                 "--dataset", "acdc")
    assert status == 0, err
    volume = minmax_normalize(ct["file_data"]).transpose(2, 0, 1)
    expected = predict_volume(model, volume, model.img_size).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "b" / "scan.nii.gz").dataobj), expected)


# ----------------------------------------------------------------------------------------------------------------
# Test-time augmentation
# ----------------------------------------------------------------------------------------------------------------
class TwoHeadNet(torch.nn.Module):
    """A small conv net with two heads, deliberately not mirror-symmetric."""

    def __init__(self, in_chans: int = 1, num_classes: int = 3):
        super().__init__()
        torch.manual_seed(1)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(in_chans, 6, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(6, 6, 3, padding=(2, 1), dilation=(2, 1)), torch.nn.ReLU())
        self.heads = torch.nn.ModuleList(torch.nn.Conv2d(6, num_classes, 1) for _ in range(2))

    def forward(self, x):
        features = self.body(x)
        return tuple(head(features) for head in self.heads)


def manual_flip_tta(model: torch.nn.Module, slices: np.ndarray) -> np.ndarray:
    """Mean over the 4 mirrorings of softmax(sum of heads), each mirrored back: [N, K, H, W]."""
    x = torch.from_numpy(slices)
    with torch.no_grad():
        total = sum(torch.softmax(sum_of_heads(model(x.flip(dims))), 1).flip(dims) for dims in FLIP_DIMS)
    return (total / len(FLIP_DIMS)).numpy()


def test_flip_tta_averages_mirrored_probabilities_and_none_is_unchanged():
    model = TwoHeadNet().eval()
    volume = np.random.default_rng(3).standard_normal((3, 32, 32)).astype(np.float32)
    plain = predict_volume(model, volume, 32)
    np.testing.assert_array_equal(predict_volume(model, volume, 32, tta="none"), plain)
    labels, probabilities = predict_volume(model, volume, 32, return_probabilities=True)
    np.testing.assert_array_equal(labels, plain)
    with torch.no_grad():
        softmax = torch.softmax(sum_of_heads(model(torch.from_numpy(volume[:, None]))), 1).numpy()
    np.testing.assert_allclose(probabilities, softmax.transpose(1, 0, 2, 3), rtol=1e-6, atol=1e-7)

    averaged = manual_flip_tta(model, volume[:, None])
    tta_labels, tta_probabilities = predict_volume(model, volume, 32, batch_size=2, tta="flip",
                                                   return_probabilities=True)
    np.testing.assert_allclose(tta_probabilities, averaged.transpose(1, 0, 2, 3), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(tta_labels, averaged.argmax(1))
    np.testing.assert_array_equal(predict_volume(model, volume, 32, tta="flip"), tta_labels)
    assert not np.array_equal(tta_labels, plain)  # the augmentation changes something here

    image = np.random.default_rng(4).standard_normal((3, 32, 32)).astype(np.float32)
    rgb = TwoHeadNet(in_chans=3).eval()
    np.testing.assert_array_equal(predict_image(rgb, image, 32, tta="flip"), manual_flip_tta(rgb, image[None])[0]
                                  .argmax(0))
    with pytest.raises(ValueError, match="tta must be one of"):
        predict_volume(model, volume, 32, tta="rotate")


def test_tta_in_test_synapse_and_predict_give_the_same_labels(ct, tmp_path, capsys):
    tta_reference = synapse_test_prediction(ct, tmp_path / "test", "--tta", "flip")
    summary = (tmp_path / "test" / "summary.json").read_text()
    assert '"tta": "flip"' in summary
    status, _, err = run_predict(capsys, "--checkpoint", ct["checkpoint"], "--input", ct["h5"], "--output",
                                 tmp_path / "out", "--tta", "flip")
    assert status == 0, err
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "out" / "case0001.nii.gz").dataobj).T,
                                  tta_reference)


# ----------------------------------------------------------------------------------------------------------------
# 2-D colour images (ISIC-2018)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def isic(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("isic")
    spec = get_dataset("isic2018")
    phantom = spec.phantom.write(root / "ISIC2018", root / "lists", seed=0, num_train=1, num_val=1, num_test=3,
                                 size=TINY_SIZE)
    # seed 2: a random model whose predictions hold both classes (most seeds give one class everywhere)
    checkpoint = save_model(tiny_model(3, spec.num_classes, seed=2), root / "isic.pth", "isic2018")
    items = spec.build(phantom["volume_path"], phantom["list_dir"], spec.test_split, spec.num_classes)
    images = root / "images"
    images.mkdir()
    for entry, path in zip(items.entries, items.paths):
        with np.load(path) as archive:
            Image.fromarray(archive["image"]).save(images / f"{entry}.png")
    return dict(root=root, phantom=phantom, checkpoint=checkpoint, items=items, images=images)


def test_png_gives_the_same_mask_as_test_isic2018(isic, tmp_path, capsys):
    test_dir = tmp_path / "test"
    record = evaluate(build_test_parser("isic2018").parse_config(
        ["--volume_path", isic["phantom"]["volume_path"], "--list_dir", isic["phantom"]["list_dir"], "--checkpoint",
         str(isic["checkpoint"]), "--output_dir", str(test_dir), "--device", "cpu"]))
    assert record["tta"] == "none"
    predictions: dict[str, np.ndarray] = {}  # the evaluation's own predictions, as test_isic2018.py makes them
    model, _ = build_model_from_checkpoint(isic["checkpoint"])
    evaluate_model(model, isic["items"], kind="image", img_size=model.img_size, num_classes=2,
                   on_case=lambda case, image, prediction, label, context: predictions.update({case: prediction}))

    assert len(predictions) == 3 and len(np.unique(np.concatenate([p.ravel() for p in predictions.values()]))) == 2
    status, _, err = run_predict(capsys, "--checkpoint", isic["checkpoint"], "--input", isic["images"], "--output",
                                 tmp_path / "out")
    assert status == 0, err
    rows = {row["case"]: row for row in read_csv(test_dir / "metrics.csv")}
    for case, prediction in predictions.items():
        mask = np.asarray(Image.open(tmp_path / "out" / f"{case}.png"))
        assert mask.dtype == np.uint8 and mask.shape == prediction.shape
        np.testing.assert_array_equal(mask, prediction)
        label = isic["items"][list(predictions).index(case)]["label"]
        assert float(rows[case]["dice"]) == pytest.approx(case_metrics(mask, label, 2)[0, 0], abs=1e-5)
    volumes = read_csv(tmp_path / "out" / "volumes.csv")
    assert {row["case"]: int(row["pixels"]) for row in volumes} == {
        case: int(np.count_nonzero(prediction == 1)) for case, prediction in predictions.items()}

    # the prepared item itself and a lossless BMP copy give the same mask
    case, path = isic["items"].entries[0], Path(isic["items"].paths[0])
    Image.open(isic["images"] / f"{case}.png").save(tmp_path / "copy.bmp")
    for source, name in ((path, case), (tmp_path / "copy.bmp", "copy")):
        status, _, err = run_predict(capsys, "--checkpoint", isic["checkpoint"], "--input", source, "--output",
                                     tmp_path / "more")
        assert status == 0, err
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "more" / f"{name}.png")), predictions[case])


def test_image_of_another_size_is_resized_and_its_mask_resized_back(isic, tmp_path, capsys):
    picture = np.asarray(Image.open(sorted(isic["images"].glob("*.png"))[0]).resize((90, 70)))
    Image.fromarray(picture).save(tmp_path / "big.jpg", quality=95)
    status, _, err = run_predict(capsys, "--checkpoint", isic["checkpoint"], "--input", tmp_path / "big.jpg",
                                 "--output", tmp_path / "out", "--save_probabilities", "--save_overlays")
    assert status == 0, err
    mask = np.asarray(Image.open(tmp_path / "out" / "big.png"))
    assert mask.shape == (70, 90) and set(np.unique(mask)) <= {0, 1}
    with np.load(tmp_path / "out" / "big_probabilities.npz") as archive:
        assert archive["probabilities"].shape == (2, 70, 90)
    assert np.asarray(Image.open(tmp_path / "out" / "overlays" / "big.png")).shape[0] == 70


# ----------------------------------------------------------------------------------------------------------------
# Bad input: one line per file, the others processed, exit 1 with the list; no half-written output
# ----------------------------------------------------------------------------------------------------------------
def test_bad_volume_inputs_are_reported_and_the_others_processed(ct, tmp_path, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    good = scans / "good.nii.gz"
    good.write_bytes(ct["scan"].read_bytes())
    data, affine = ct["file_data"], ct["file_affine"]
    raw = gzip.decompress(good.read_bytes())
    (scans / "truncated.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    (scans / "garbage.nii").write_bytes(b"this is not a NIfTI file" * 20)
    nifti(np.stack([data, data], axis=-1), affine, scans / "fourd.nii.gz")
    nifti(data[:, :, 0], affine, scans / "twod.nii.gz")
    nifti(np.where(data > 0, np.nan, data.astype(np.float32)), affine, scans / "nan.nii.gz")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(scans / "photo.png")
    (scans / "empty").mkdir()
    write_dicom_series(scans / "mixed", data[:, :, :2], affine, "1.2.826.0.1.3680043.8.498.3")
    write_dicom_series(scans / "mixed", data[:, :, 2:4], affine, "1.2.826.0.1.3680043.8.498.4")
    (scans / "notes.txt").write_text("ignored")
    out = tmp_path / "out"

    status, stdout, err = run_predict(capsys, "--checkpoint", ct["checkpoint"], "--input", scans, "--output", out)
    assert status == 1
    problems = {"truncated.nii.gz": "cannot read NIfTI", "garbage.nii": "cannot read NIfTI",
                "fourd.nii.gz": "4-D", "twod.nii.gz": "2-D", "nan.nii.gz": "NaN", "photo.png": "2-D image file",
                "empty": "empty folder", "mixed": "mixed series"}
    lines = error_lines(err)
    assert len(lines) == len(problems), err
    for name, problem in problems.items():
        matching = [line for line in lines if line.startswith(f"error: {scans / name}: ")]
        assert len(matching) == 1 and problem in matching[0], (name, lines)
    assert f"{len(problems)} input(s) failed:" in err
    assert "notes.txt" in stdout  # noted as ignored, not a failure
    assert sorted(path.name for path in out.iterdir()) == ["good.nii.gz", "volumes.csv"]
    assert {row["case"] for row in read_csv(out / "volumes.csv")} == {"good"}


def test_bad_image_inputs(isic, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    source = sorted(isic["images"].glob("*.png"))[0]
    (folder / "good.png").write_bytes(source.read_bytes())
    Image.open(source).convert("L").save(folder / "grey.png")
    Image.open(source).convert("L").convert("RGB").save(folder / "grey_as_rgb.png")
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(folder / "deep.png")
    (folder / "truncated.png").write_bytes(source.read_bytes()[:100])
    np.savez(folder / "four.npz", image=np.zeros((16, 16, 4), np.uint8), label=np.zeros((16, 16), np.uint8))
    nifti(np.zeros((8, 8, 3), np.int16), np.eye(4), folder / "scan.nii.gz")
    status, stdout, err = run_predict(capsys, "--checkpoint", isic["checkpoint"], "--input", folder, "--output",
                                      tmp_path / "out")
    assert status == 1
    lines = error_lines(err)
    expected = {"deep.png": "16-bit or float grey image (mode I;16)", "four.npz": "wrong channel count",
                "truncated.png": "cannot read", "scan.nii.gz": "segments 2-D colour images"}
    assert len(lines) == len(expected), err
    for name, problem in expected.items():
        assert any(line.startswith(f"error: {folder / name}: ") and problem in line for line in lines), (name, lines)
    assert (tmp_path / "out" / "good.png").is_file() and not (tmp_path / "out" / "deep.png").exists()
    # an 8-bit grey image is segmented as its grey RGB twin, with a note
    assert f"note: {folder / 'grey.png'}: grey image (mode L) repeated in R, G and B" in stdout
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "grey.png")),
                          np.asarray(Image.open(tmp_path / "out" / "grey_as_rgb.png")))


def test_fatal_problems_are_one_line_and_exit_2(ct, isic, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        (["--checkpoint", ct["checkpoint"], "--input", tmp_path / "empty"], "empty folder"),
        (["--checkpoint", ct["checkpoint"], "--input", tmp_path / "missing.nii.gz"], "does not exist"),
        (["--checkpoint", tmp_path / "none.pth", "--input", ct["scan"]], "checkpoint file not found"),
        (["--checkpoint", ct["checkpoint"], "--input", ct["scan"], "--orientation", "LPX"], "--orientation"),
        (["--checkpoint", isic["checkpoint"], "--input", ct["scan"], "--dataset", "synapse"], "channel"),
    ]
    for args, message in cases:
        status, _, err = run_predict(capsys, *args, "--output", tmp_path / "out")
        assert status == 2 and len(err.strip().splitlines()) == 1 and message in err, (args, err)


def test_an_input_failing_while_written_leaves_no_output(ct, tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise predict_module.DataError(ct["scan"], "simulated failure while writing")

    monkeypatch.setattr(predict_module, "label_nifti_bytes", fail)
    status, _, err = run_predict(capsys, "--checkpoint", ct["checkpoint"], "--input", ct["scan"], "--output",
                                 tmp_path, "--save_probabilities", "--save_overlays")
    assert status == 1 and "simulated failure" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["volumes.csv"]  # probabilities and overlay removed
