"""utils.metrics against medpy on the full volume, hand-computed protocol rows and hand-computed means."""
import math

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from utils.metrics import METRIC_NAMES, case_metrics, summarize, unpredicted_note

NAN = float("nan")


def random_blob_labels(shape, num_classes, rng, box=None, smoothing=1.5):
    """Label map of smooth random blobs (several components per class); ``box`` confines them to a sub-volume."""
    labels = np.zeros(shape, dtype=np.int64)
    region = box if box is not None else tuple(slice(0, n) for n in shape)
    region_shape = labels[region].shape
    for label in range(1, num_classes):
        field = ndimage.gaussian_filter(rng.standard_normal(region_shape), smoothing)
        labels[region][field > np.quantile(field, 0.85)] = label
    return labels


def medpy_full_volume(pred, gt, num_classes, spacing=None):
    """Reference rows from medpy on the full volume, for classes present in both maps (others NaN)."""
    rows = np.full((num_classes - 1, 4), np.nan)
    for label in range(1, num_classes):
        p, g = pred == label, gt == label
        if p.any() and g.any():
            rows[label - 1] = (medpy_binary.dc(p, g), medpy_binary.hd95(p, g, voxelspacing=spacing),
                               medpy_binary.jc(p, g), medpy_binary.assd(p, g, voxelspacing=spacing))
    return rows


def assert_matches_medpy(pred, gt, num_classes, spacing=None):
    reference = medpy_full_volume(pred, gt, num_classes, spacing)
    both_present = ~np.isnan(reference[:, 0])
    assert both_present.any()
    for protocol in ("transunet", "strict"):
        ours = case_metrics(pred, gt, num_classes, protocol=protocol, spacing=spacing)
        # Bit-identical, not approximately equal: the crop must not change a single float.
        np.testing.assert_array_equal(ours[both_present], reference[both_present])


@pytest.mark.parametrize("shape, spacing", [
    ((40, 48), None),
    ((37, 29), (0.8, 1.3)),
    ((9, 20, 24), None),
    ((10, 17, 21), (2.5, 0.7, 0.9)),
    ((8, 16, 16), 1.7),
])
def test_matches_medpy_blobs_touching_border(shape, spacing):
    rng = np.random.default_rng(sum(shape))
    pred, gt = random_blob_labels(shape, 4, rng), random_blob_labels(shape, 4, rng)
    # The blobs fill the whole array, so some touch every face of the volume.
    assert all((gt[(slice(None),) * axis + (0,)] > 0).any() for axis in range(gt.ndim))
    assert ndimage.label(gt == 1)[1] > 1  # several components
    assert_matches_medpy(pred, gt, 4, spacing)


@pytest.mark.parametrize("spacing", [None, (3.0, 0.75, 0.75)])
def test_matches_medpy_when_crop_is_smaller_than_volume(spacing):
    """Organs confined to sub-boxes (one touching a corner), so the crop really cuts the volume."""
    rng = np.random.default_rng(7)
    shape = (24, 64, 64)
    pred, gt = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    boxes = {1: (slice(4, 14), slice(10, 30), slice(12, 28)),   # interior
             2: (slice(0, 9), slice(40, 64), slice(0, 20)),     # touches three faces
             3: (slice(15, 24), slice(20, 50), slice(44, 64))}  # touches two faces
    for label, box in boxes.items():
        shifted = tuple(slice(max(s.start - 1, 0), s.stop) for s in box)
        gt[box][random_blob_labels(gt[box].shape, 2, rng) > 0] = label
        pred[shifted][random_blob_labels(pred[shifted].shape, 2, rng) > 0] = label
    assert_matches_medpy(pred, gt, 4, spacing)


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_threaded_scoring_matches_medpy_and_the_single_thread(workers):
    """Classes scored in parallel threads give medpy's values, bit for bit, whatever the thread count."""
    rng = np.random.default_rng(11)
    pred, gt = random_blob_labels((12, 40, 44), 6, rng), random_blob_labels((12, 40, 44), 6, rng)
    pred[pred == 5] = 0  # one organ missing from the prediction
    reference = medpy_full_volume(pred, gt, 6, (2.0, 0.8, 0.8))
    ours = case_metrics(pred, gt, 6, spacing=(2.0, 0.8, 0.8), workers=workers)
    np.testing.assert_array_equal(ours[:4], reference[:4])
    np.testing.assert_array_equal(ours[4], (0.0, 0.0, 0.0, 0.0))  # transunet row for an organ not predicted
    np.testing.assert_array_equal(ours, case_metrics(pred, gt, 6, spacing=(2.0, 0.8, 0.8), workers=1))


def test_hand_computed_shifted_squares():
    gt = np.zeros((6, 6), np.int64)
    pred = np.zeros((6, 6), np.int64)
    gt[1:3, 2:4] = 1
    pred[1:3, 1:3] = 1
    # Overlap 2 of 4+4 voxels; every voxel of a 2x2 square is surface; half the surface distances are 0, half 1.
    np.testing.assert_allclose(case_metrics(pred, gt, 2), [[0.5, 1.0, 2 / 6, 0.5]])
    # Column spacing 3 scales the distances (all along columns).
    np.testing.assert_allclose(case_metrics(pred, gt, 2, spacing=(1.0, 3.0)), [[0.5, 3.0, 2 / 6, 1.5]])
    np.testing.assert_allclose(case_metrics(pred, gt, 2, surface=False), [[0.5, NAN, 2 / 6, NAN]])


@pytest.fixture
def one_of_each_case():
    """class 1 in both, 2 predicted only, 3 missed (ground truth only), 4 absent in both."""
    gt = np.zeros((5, 8, 8), np.int64)
    pred = np.zeros_like(gt)
    gt[1:4, 1:4, 1:4] = 1
    pred[1:4, 1:4, 1:4] = 1  # perfect: dice 1, distances 0
    pred[2, 6, 6] = 2
    gt[3, 6:8, 5:7] = 3
    return pred, gt


def test_protocol_transunet(one_of_each_case):
    pred, gt = one_of_each_case
    expected = [[1, 0, 1, 0],   # both present
                [1, 0, 1, 0],   # predicted, absent in ground truth
                [0, 0, 0, 0],   # missed
                [0, 0, 0, 0]]   # absent in both
    np.testing.assert_array_equal(case_metrics(pred, gt, 5), expected)
    np.testing.assert_array_equal(case_metrics(pred, gt, 5, protocol="transunet"), expected)


def test_protocol_strict(one_of_each_case):
    pred, gt = one_of_each_case
    expected = [[1, 0, 1, 0],
                [0, NAN, 0, NAN],
                [0, NAN, 0, NAN],
                [NAN, NAN, NAN, NAN]]
    np.testing.assert_array_equal(case_metrics(pred, gt, 5, protocol="strict"), expected)


def test_surface_false_blanks_distance_columns(one_of_each_case):
    pred, gt = one_of_each_case
    rows = case_metrics(pred, gt, 5, surface=False)
    full = case_metrics(pred, gt, 5)
    dice, hd95, jaccard, asd = (METRIC_NAMES.index(n) for n in ("dice", "hd95", "jaccard", "asd"))
    assert np.isnan(rows[:, [hd95, asd]]).all()
    np.testing.assert_array_equal(rows[:, [dice, jaccard]], full[:, [dice, jaccard]])


def test_accepts_bool_and_integral_float_labels():
    gt = np.zeros((6, 6), np.int64)
    gt[1:4, 1:4] = 1
    pred = np.roll(gt, 1, axis=0)
    expected = case_metrics(pred, gt, 2)
    np.testing.assert_array_equal(case_metrics(pred.astype(bool), gt.astype(np.float32), 2), expected)


@pytest.mark.parametrize("pred, gt, kwargs, message", [
    (np.zeros((4, 4)), np.zeros((4, 5)), {}, "shapes differ"),
    (np.full((4, 4), 3), np.zeros((4, 4)), {}, "pred: labels must lie in \\[0, 2\\]"),
    (np.zeros((4, 4)), np.full((4, 4), -1), {}, "gt: labels must lie"),
    (np.full((4, 4), 0.5), np.zeros((4, 4)), {}, "pred: labels must be integers"),
    (np.zeros(4), np.zeros(4), {}, "pred: expected a 2-D"),
    (np.zeros((4, 4)), np.zeros((4, 4)), {"protocol": "nnunet"}, "protocol must be one of"),
    (np.zeros((4, 4)), np.zeros((4, 4)), {"spacing": (1.0, 0.0)}, "spacing must be"),
    (np.zeros((4, 4)), np.zeros((4, 4)), {"spacing": (1.0, 1.0, 1.0)}, "spacing must be"),
    (np.zeros((4, 4)), np.zeros((4, 4)), {"workers": 0}, "workers must be"),
])
def test_bad_input(pred, gt, kwargs, message):
    with pytest.raises(ValueError, match=message):
        case_metrics(pred, gt, 3, **kwargs)


def test_summarize_hand_computed_with_nan():
    per_case = {
        "case_a": np.array([[0.8, 2.0, 0.6, 1.0], [NAN, NAN, NAN, NAN], [NAN, NAN, NAN, NAN]]),
        "case_b": np.array([[0.6, NAN, 0.4, NAN], [0.5, 4.0, 0.3, 2.0], [NAN, NAN, NAN, NAN]]),
    }
    summary = summarize(per_case)
    # class 1: dice (0.8+0.6)/2, hd95 2 (NaN skipped); class 2: case_b only; class 3: nothing -> NaN, skipped.
    assert summary["per_class"][0] == pytest.approx({"dice": 0.7, "hd95": 2.0, "jaccard": 0.5, "asd": 1.0})
    assert summary["per_class"][1] == pytest.approx({"dice": 0.5, "hd95": 4.0, "jaccard": 0.3, "asd": 2.0})
    assert all(math.isnan(v) for v in summary["per_class"][2].values())
    assert summary["mean_dice"] == pytest.approx(0.6)
    assert summary["mean_hd95"] == pytest.approx(3.0)
    assert summary["mean_jaccard"] == pytest.approx(0.4)
    assert summary["mean_asd"] == pytest.approx(1.5)
    assert summary["num_cases"] == 2


def test_summarize_is_transunet_mean_of_case_metrics(one_of_each_case):
    """Without NaN, summarize is the release's average: mean over cases per class, then over classes."""
    pred, gt = one_of_each_case
    rows = [case_metrics(pred, gt, 5), case_metrics(np.roll(pred, 1, axis=1), gt, 5)]
    summary = summarize({"a": rows[0], "b": rows[1]})
    per_class = (rows[0] + rows[1]) / 2
    for column, name in enumerate(METRIC_NAMES):
        assert summary[f"mean_{name}"] == pytest.approx(per_class[:, column].mean())
        assert [c[name] for c in summary["per_class"]] == pytest.approx(per_class[:, column].tolist())


@pytest.mark.parametrize("per_case, message", [
    ({}, "no cases"),
    ({"a": np.zeros((2, 4)), "b": np.zeros((3, 4))}, "different metric-table shapes"),
    ({"a": np.zeros((2, 3))}, "expected \\[num_classes - 1, 4\\]"),
])
def test_summarize_bad_input(per_case, message):
    with pytest.raises(ValueError, match=message):
        summarize(per_case)


def test_the_note_on_unpredicted_classes_counts_the_hd95_zeros_that_mean_nothing_predicted():
    gt = np.zeros((8, 8), dtype=np.int64)
    gt[1:4, 1:4], gt[5:7, 5:7] = 1, 2
    nothing = np.zeros_like(gt)  # predicts nothing: every HD95 0 under the transunet protocol
    partial = np.where(gt == 1, 1, 0)  # class 1 right, class 2 not predicted
    per_case = {"a": case_metrics(nothing, gt, 3), "b": case_metrics(partial, gt, 3)}
    assert summarize(per_case)["per_class"][1]["hd95"] == 0.0  # the trap: reads as perfect
    note = unpredicted_note(per_case, ["one", "two"], "transunet")
    assert "predicted nothing for 3 (case, class) pairs (one in 1 of 2, two in 2 of 2 cases)" in note
    assert unpredicted_note({"b": case_metrics(gt, gt, 3)}, ["one", "two"], "transunet") is None
    assert unpredicted_note({"a": case_metrics(nothing, gt, 3, protocol="strict")}, ["one", "two"], "strict") is None
