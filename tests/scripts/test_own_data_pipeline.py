"""Own data, zero code: the phantom raw sets (nnU-Net v2 raw CT volumes stored RAS and LPS at two spacings, a 2-D
folder of PNG pairs) prepared once with ``python -m datasets.prepare.own``, then trained, tested and segmented with
``--dataset PATH`` only: Sim-MPNet (pico) on the volumes, U-Net and MatchSeg on the 2-D folder. The predictions land in
each input's original grid (shape and affine); HD95 / ASD are in mm on the volumes, in pixels on the images."""
from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from datasets import DataError, get_dataset
from datasets.own.descriptor import load_descriptor
from datasets.own.spec import spec_from_descriptor
from datasets.phantoms.own import write_folder_phantom, write_nnunet_phantom
from datasets.prepare.own import main as prepare_main
from utils.cli import build_test_parser, build_train_parser
from utils.evaluator import evaluate
from utils.predict import main as predict_main
from utils.trainer import train

import visualize

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[2]
SIZE = 32
RUNTIME = ["--pretrained", "none", "--device", "cpu", "--num_workers", "0", "--max_epochs", "1", "--max_steps", "2",
           "--batch_size", "4", "--val_list", "none"]
MODELS = {  # tiny configurations of the registered families
    "sim_mpnet_pico": ["--img_size", str(SIZE), "--img_size_s2", str(SIZE), "--pool_size", "8", "--feature_dim", "16",
                       "--warmup_iters", "2"],
    "unet": ["--img_size", str(SIZE), "--encoder_name", "resnet18"],
    "matchseg": ["--img_size", str(SIZE), "--widths", "8", "8", "8", "8", "--support_size", "2",
                 "--support_selection", "random"],
}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """The raw phantoms and their prepared folders (prepared once for the module)."""
    root = tmp_path_factory.mktemp("own_data")
    raw_volumes = Path(write_nnunet_phantom(str(root / "raw"), num_train=4, num_test=2))
    raw_images = Path(write_folder_phantom(str(root / "raw"), num_train=8, size=40))
    for raw, name, extra in ((raw_volumes, "volumes", []), (raw_images, "images", ["--size", str(SIZE)])):
        assert prepare_main(["--src", str(raw), "--out", str(root / "data" / name), "--no_progress", *extra]) == 0
    return {"root": root, "raw_volumes": raw_volumes, "raw_images": raw_images,
            "volumes": root / "data" / "volumes", "images": root / "data" / "images"}


def train_run(dataset: Path, model: str, run_dir: Path) -> Path:
    config = build_train_parser().parse_config(["--dataset", str(dataset), "--model", model, *MODELS[model],
                                                *RUNTIME, "--output_dir", str(run_dir)])
    assert config.run.dataset == str(dataset.resolve())  # the run records the folder: its data set's identity
    train(config)
    return run_dir / "last.pth"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_prepared_folder_is_a_data_set(sets, monkeypatch, capsys, tmp_path):
    spec = get_dataset(sets["volumes"])
    descriptor = load_descriptor(sets["volumes"])
    assert spec.name == str(sets["volumes"].resolve()) and spec.short_name == "volumes"
    assert spec.class_names == ("organ", "lesion") and spec.num_classes == 3 and spec.kind == "volume"
    assert spec.distance_unit == "mm" and get_dataset(sets["images"]).distance_unit == "pixel"
    monkeypatch.chdir(sets["root"])  # a relative path names the same set
    assert get_dataset("data/volumes") is spec
    test = spec.build(spec.volume_path, spec.list_dir, spec.test_split, spec.num_classes)
    assert [test[index]["case_name"] for index in range(len(test))] == list(descriptor.splits["test"])
    for index in range(len(test)):  # every volume carries its prepared grid's spacing, slices along the 4 mm axis
        item = test[index]
        case = descriptor.cases[item["case_name"]]
        assert item["spacing"].tolist() == list(case.prepared_spacing) and item["spacing"][0] == pytest.approx(4.0)
        assert item["image"].shape == tuple(case.prepared_shape)
    with pytest.raises(ValueError, match="not a prepared data set"):
        get_dataset(sets["raw_volumes"])
    with pytest.raises(ValueError, match="data set folder .*/moved does not exist"):
        get_dataset(sets["root"] / "moved")
    with pytest.raises(DataError, match="2-channel volume sets are not supported yet"):
        spec_from_descriptor(dataclasses.replace(descriptor, in_chans=2))
    (tmp_path / "dataset_descriptor.json").write_text("{")  # a damaged descriptor: one line naming it, exit 2
    with pytest.raises(SystemExit) as stop:
        build_train_parser().parse_config(["--dataset", str(tmp_path)])
    assert stop.value.code == 2
    assert "dataset_descriptor.json: not a valid data set descriptor" in capsys.readouterr().err


def test_volumes_train_test_predict_in_the_original_grid(sets, tmp_path):
    checkpoint = train_run(sets["volumes"], "sim_mpnet_pico", tmp_path / "run")
    stored = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert stored["model_config"]["num_k"] == 3  # Sim-MPNet's memory: one cluster per class unless given

    # test.py with the checkpoint alone, from another working directory: the run's set, its test split, in mm
    out = tmp_path / "test"
    result = subprocess.run([sys.executable, str(REPO / "test.py"), "--checkpoint", str(checkpoint), "--device", "cpu",
                             "--is_savenii", "--output_dir", str(out)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    rows = read_csv(out / "metrics.csv")
    assert summary["distance_unit"] == "mm" and {"hd95_mm", "asd_mm"} <= set(rows[0])
    assert "hd95_mm" in result.stdout and "HD95 (mm)" in (out / "report.html").read_text()
    test_cases = load_descriptor(sets["volumes"]).splits["test"]
    assert {row["case"] for row in rows} == set(test_cases)
    for case in test_cases:  # the exports are in each case's original grid: the raw label file's
        original = nib.load(sets["raw_volumes"] / "labelsTs" / f"{case}.nii.gz")
        for suffix in ("_gt", "_pred", "_img"):
            exported = nib.load(out / "predictions" / f"{case}{suffix}.nii.gz")
            assert exported.shape == original.shape and np.allclose(exported.affine, original.affine, atol=1e-5)
        exported_label = np.asarray(nib.load(out / "predictions" / f"{case}_gt.nii.gz").dataobj)
        agreement = np.mean(exported_label == np.asarray(original.dataobj))
        assert agreement > 0.97, f"{case}: the exported ground truth matches the raw label on {agreement:.3f}"

    # visualize.py with the checkpoint alone: the run's set, its test cases
    figure = tmp_path / "figure.png"
    argv = ["predictions", "--checkpoint", str(checkpoint), "--device", "cpu", "--out", str(figure)]
    assert visualize.main(argv) == 0 and Image.open(figure).size[0] > 0

    # --distance_unit switches to the benchmark sets' pixels
    pixels = evaluate(build_test_parser().parse_config(["--checkpoint", str(checkpoint), "--device", "cpu",
                                                        "--distance_unit", "pixel", "--output_dir", str(out / "px")]))
    assert pixels["distance_unit"] == "pixel" and "hd95" in read_csv(out / "px" / "metrics.csv")[0]
    assert pixels["mean_dice"] == pytest.approx(summary["mean_dice"])

    # predict.py on the raw scans: the label maps in each scan's grid and affine
    predictions = tmp_path / "predictions"
    assert predict_main(["--checkpoint", str(checkpoint), "-i", str(sets["raw_volumes"] / "imagesTs"), "-o",
                         str(predictions), "--device", "cpu"]) == 0
    inputs = sorted((sets["raw_volumes"] / "imagesTs").glob("*.nii.gz"))
    assert inputs
    for path in inputs:
        scan, written = nib.load(path), nib.load(predictions / path.name)
        assert written.shape == scan.shape and np.allclose(written.affine, scan.affine, atol=1e-5)
        # a raw scan goes through the preparation's path (reorientation, resampling, intensities) and back: the
        # same labels as test.py's export of the prepared case
        case = path.name[:-len("_0000.nii.gz")]
        exported = nib.load(out / "predictions" / f"{case}_pred.nii.gz")
        np.testing.assert_array_equal(np.asarray(written.dataobj), np.asarray(exported.dataobj))
        counts = {row["class"]: int(row["voxels"]) for row in read_csv(predictions / "volumes.csv")
                  if row["case"] == path.name[:-len(".nii.gz")]}
        assert counts == {name: int(np.sum(np.asarray(written.dataobj) == index))
                          for index, name in enumerate(("organ", "lesion"), start=1)}  # the written map's voxels


@pytest.mark.parametrize("model", ["unet", "matchseg"])
def test_image_folder_train_test_predict(sets, tmp_path, model):
    checkpoint = train_run(sets["images"], model, tmp_path / "run")
    out = tmp_path / "test"
    summary = evaluate(build_test_parser().parse_config(["--checkpoint", str(checkpoint), "--device", "cpu",
                                                         "--output_dir", str(out)]))
    rows = read_csv(out / "metrics.csv")
    assert summary["distance_unit"] == "pixel" and "hd95" in rows[0]  # no spacing: pixels, the benchmark names
    assert {row["case"] for row in rows} == set(load_descriptor(sets["images"]).splits["test"])

    predictions = tmp_path / "predictions"
    images = sets["raw_images"] / "images"
    assert predict_main(["--checkpoint", str(checkpoint), "-i", str(images), "-o", str(predictions),
                         "--device", "cpu"]) == 0
    for path in sorted(images.iterdir()):
        with Image.open(path) as picture, Image.open(predictions / f"{path.stem}.png") as labels:
            assert labels.size == picture.size  # back at the picture's own size
