"""HD95 / ASD in millimetres through the evaluator (items with a ``spacing`` entry) against medpy's hd95 / assd with
``voxelspacing``; pixels unless asked; the unit named in metrics.csv, summary.json and the printed tables."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary

from networks import SegmentationModel
from utils.evaluator import evaluate_model, metric_tables, metrics_csv_text, summary_record
from utils.metrics import metric_columns

SIZE = 16
SPACING = (4.0, 0.7, 1.3)  # (D, H, W) mm: anisotropic, so a unit mix-up changes the numbers


@dataclass
class EchoConfig:
    num_classes: int = 3
    in_chans: int = 1
    img_size: int = SIZE


class EchoModel(SegmentationModel):
    """Predicts the class stored in the image's intensities (a fixed, known prediction through the real path)."""

    def __init__(self):
        super().__init__()
        self.config = EchoConfig()
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward_batch(self, batch):
        classes = batch["image"][:, 0].round().long().clamp(0, 2)
        return torch.nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2).float() * 10 + self.anchor


def case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, ground truth) [D, H, W]: two classes as shifted boxes of random size."""
    rng = np.random.default_rng(seed)
    gt, pred = np.zeros((6, SIZE, SIZE), np.int64), np.zeros((6, SIZE, SIZE), np.int64)
    for label, (low, high) in ((1, (2, 8)), (2, (9, 14))):
        a, b = sorted(rng.integers(low, high, 2)) + np.array([0, 2])
        gt[1:5, a:b, 3:12] = label
        pred[2:6, a + 1:b + 1, 2:11 + int(rng.integers(0, 3))] = label
    return pred, gt


def items(with_spacing: bool) -> list[dict]:
    out = []
    for seed in range(2):
        pred, gt = case(seed)
        item = {"image": pred.astype(np.float32), "label": gt, "case_name": f"case{seed}"}
        if with_spacing:
            item["spacing"] = np.array(SPACING)
        out.append(item)
    return out


def medpy_rows(pred: np.ndarray, gt: np.ndarray, spacing) -> np.ndarray:
    return np.array([[medpy_binary.hd95(pred == c, gt == c, voxelspacing=spacing),
                      medpy_binary.assd(pred == c, gt == c, voxelspacing=spacing)] for c in (1, 2)])


def test_mm_distances_are_medpys_with_voxelspacing():
    per_case, _ = evaluate_model(EchoModel(), items(True), kind="volume", img_size=SIZE, num_classes=3,
                                 distance_unit="mm")
    pixels, _ = evaluate_model(EchoModel(), items(True), kind="volume", img_size=SIZE, num_classes=3)
    for seed in range(2):
        pred, gt = case(seed)
        np.testing.assert_allclose(per_case[f"case{seed}"][:, [1, 3]], medpy_rows(pred, gt, SPACING), rtol=1e-12)
        np.testing.assert_allclose(pixels[f"case{seed}"][:, [1, 3]], medpy_rows(pred, gt, None), rtol=1e-12)
        assert not np.allclose(per_case[f"case{seed}"][:, 1], pixels[f"case{seed}"][:, 1])


def test_mm_without_spacing_is_one_clear_error():
    with pytest.raises(ValueError, match="case0: HD95 / ASD in mm need the voxel spacing.*--distance_unit pixel"):
        evaluate_model(EchoModel(), items(False), kind="volume", img_size=SIZE, num_classes=3, distance_unit="mm")
    with pytest.raises(ValueError, match="distance unit must be one of pixel, mm"):
        evaluate_model(EchoModel(), items(True), kind="volume", img_size=SIZE, num_classes=3, distance_unit="cm")


def test_the_unit_is_named_in_the_files_and_tables():
    per_case, summary = evaluate_model(EchoModel(), items(True), kind="volume", img_size=SIZE, num_classes=3,
                                       distance_unit="mm")
    labels = ["a", "b"]
    header = next(csv.reader(io.StringIO(metrics_csv_text(per_case, labels, "mm"))))
    assert header == ["case", "class", "dice", "hd95_mm", "jaccard", "asd_mm"]
    assert next(csv.reader(io.StringIO(metrics_csv_text(per_case, labels)))) == ["case", "class", *metric_columns(
        "pixel")] == ["case", "class", "dice", "hd95", "jaccard", "asd"]  # the benchmark protocol's names, unchanged
    assert summary_record(summary, labels, "transunet", None, 2, "mm")["distance_unit"] == "mm"
    assert "hd95_mm" in metric_tables(per_case, summary, labels, "mm").splitlines()[0]
