"""utils.inference.predict_volume against a naive per-slice loop, batch-size invariance, modes, devices;
predict_image against hand-computed label maps and a naive loop; and utils.visual (overlays, PNG writing)."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from scipy.ndimage import zoom

from utils.inference import predict_image, predict_volume, resolve_device
from utils.visual import class_colours, overlay, save_png, side_by_side

NUM_CLASSES = 4


class FourHeadNet(nn.Module):
    """Small deterministic conv net with BatchNorm and four heads of logits [B, C, H, W]."""

    def __init__(self, num_classes=NUM_CLASSES, width=8, in_channels=1):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleList(nn.Conv2d(width, num_classes, 1) for _ in range(4))
        with torch.no_grad():  # non-trivial eval statistics, so train vs eval mode would differ
            self.body[1].running_mean.uniform_(-0.5, 0.5)
            self.body[1].running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        features = self.body(x)
        return tuple(head(features) for head in self.heads)


def random_volume(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def naive_predict(model, volume, img_size):
    """Release-style loop: one slice at a time, float64-free, argmax of the summed heads."""
    model.eval()
    out = np.zeros(volume.shape, dtype=np.int64)
    for index, image in enumerate(volume):
        h, w = image.shape
        resized = zoom(image, (img_size / h, img_size / w), order=3) if (h, w) != (img_size, img_size) else image
        with torch.no_grad():
            heads = model(torch.from_numpy(resized)[None, None].float())
            label = sum(heads).argmax(dim=1)[0].numpy()
        out[index] = zoom(label, (h / img_size, w / img_size), order=0) if (h, w) != (img_size, img_size) else label
    return out


pytestmark = pytest.mark.usefixtures("single_thread")

@pytest.fixture
def model():
    return FourHeadNet()


@pytest.mark.parametrize("shape, img_size", [((5, 40, 36), 32), ((3, 32, 32), 32), ((4, 24, 30), 48)])
def test_matches_naive_loop(model, shape, img_size):
    volume = random_volume(shape)
    prediction = predict_volume(model, volume, img_size, batch_size=2)
    assert prediction.shape == shape and prediction.dtype == np.int64
    assert len(np.unique(prediction)) > 1  # the comparison is not between constant maps
    np.testing.assert_array_equal(prediction, naive_predict(model, volume, img_size))


def test_identical_for_any_batch_size(model):
    volume = random_volume((7, 40, 44), seed=1)
    reference = predict_volume(model, volume, 32, batch_size=1)
    for batch_size in (3, 16):
        np.testing.assert_array_equal(predict_volume(model, volume, 32, batch_size=batch_size), reference)


def test_two_dimensional_image_is_one_slice(model):
    volume = random_volume((3, 40, 36), seed=2)
    prediction = predict_volume(model, volume[1], 32)
    assert prediction.shape == (40, 36) and prediction.dtype == np.int64
    np.testing.assert_array_equal(prediction, predict_volume(model, volume, 32)[1])


@pytest.mark.parametrize("initially_training", [True, False])
def test_mode_restored_and_eval_used(model, initially_training):
    model.train(initially_training)
    model.heads[0].eval()  # mixed modes must come back as they were
    modes = [m.training for m in model.modules()]
    running_mean = model.body[1].running_mean.clone()
    volume = random_volume((2, 32, 32), seed=3)
    prediction = predict_volume(model, volume, 32)
    assert [m.training for m in model.modules()] == modes
    torch.testing.assert_close(model.body[1].running_mean, running_mean, rtol=0, atol=0)  # eval BatchNorm
    np.testing.assert_array_equal(prediction, naive_predict(model, volume, 32))


def test_autocast_bfloat16_runs(model):
    volume = random_volume((3, 32, 32), seed=4)
    prediction = predict_volume(model, volume, 32, amp_dtype=torch.bfloat16)
    reference = predict_volume(model, volume, 32)
    assert prediction.shape == reference.shape and prediction.dtype == np.int64
    assert (prediction == reference).mean() > 0.9  # lower precision may flip a few near-ties only


def test_explicit_device_matches_model(model):
    volume = random_volume((2, 32, 32), seed=5)
    np.testing.assert_array_equal(predict_volume(model, volume, 32, device="cpu"), predict_volume(model, volume, 32))


@pytest.mark.parametrize("image, kwargs, message", [
    (np.zeros((2, 3, 32, 32), np.float32), {}, "2-D \\[H, W\\] or 3-D"),
    (np.full((2, 32, 32), np.nan, np.float32), {}, "NaN"),
    (np.zeros((2, 32, 32), np.float32), {"batch_size": 0}, "batch_size must be a positive integer"),
    (np.zeros((2, 32, 32), np.float32), {"device": "meta"}, "differs from the model's device"),
])
def test_bad_input(model, image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict_volume(model, image, 32, **kwargs)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_sim_mpnet_batch_size_invariant():
    from networks import create_model

    torch.manual_seed(0)
    model = create_model("sim_mpnet", num_classes=4, img_size=64, img_size_s2=64, scale="pico", pretrained=False,
                         num_k=3, feature_dim=16, pool_size=8, warmup_iters=1).eval()
    volume = random_volume((6, 80, 80), seed=6)
    single = predict_volume(model, volume, 64, batch_size=1)
    assert single.shape == (6, 80, 80) and single.dtype == np.int64
    np.testing.assert_array_equal(predict_volume(model, volume, 64, batch_size=4), single)


# ---- predict_image ------------------------------------------------------------------------------------------
class ColourNet(nn.Module):
    """Two heads of 1x1 convolutions on an RGB input: head 1 = the input itself (class c scores channel c), head 2 =
    a constant 0.3 for class 2. The label of a pixel is therefore argmax(r, g, b + 0.3)."""

    def __init__(self):
        super().__init__()
        self.identity = nn.Conv2d(3, 3, 1, bias=False)
        self.bias = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.identity.weight.copy_(torch.eye(3)[:, :, None, None])
            self.bias.weight.zero_()
            self.bias.bias.copy_(torch.tensor([0.0, 0.0, 0.3]))

    def forward(self, x):
        return self.identity(x), self.bias(x)


# (r, g, b) -> summed logits (r, g, b + 0.3) -> label, worked out by hand; the last colour is a near-tie that the
# second head decides: head 1 alone would give class 0 for (1, 1, 0.9), the sum (1, 1, 1.2) gives class 2.
HAND_COLOURS = {(2.0, 0.0, 0.0): 0, (0.0, 2.0, 0.0): 1, (0.0, 0.0, 2.0): 2, (1.0, 1.0, 0.9): 2, (-1.0, -2.0, -1.5): 0}


def quadrant_image(colours, height, width):
    """[3, H, W] float32 image whose four quadrants have the given colours (top-left, top-right, bottom-left,
    bottom-right), and the quadrant index of every pixel."""
    quadrant = np.add.outer(2 * (np.arange(height) >= height // 2), np.arange(width) >= width // 2)
    image = np.asarray(colours, np.float32)[quadrant].transpose(2, 0, 1)
    return np.ascontiguousarray(image), quadrant


def test_predict_image_labels_colours_as_worked_out_by_hand():
    colours = list(HAND_COLOURS)
    image, quadrant = quadrant_image(colours[:4], height=8, width=8)
    expected = np.array([0, 1, 2, 2])[quadrant]  # the labels of the four quadrants' colours
    prediction = predict_image(ColourNet(), image, img_size=8)  # network size = image size: no resizing
    assert prediction.dtype == np.int64 and prediction.shape == (8, 8)
    np.testing.assert_array_equal(prediction, expected)
    for colour, label in HAND_COLOURS.items():  # a one-colour image stays one label through both resizes
        flat = np.broadcast_to(np.float32(colour)[:, None, None], (3, 10, 14)).copy()
        np.testing.assert_array_equal(predict_image(ColourNet(), flat, img_size=16), np.full((10, 14), label))


def naive_predict_image(model, image, img_size):
    """One image: each channel zoomed (cubic) to img_size, heads summed, argmax, label zoomed back (nearest)."""
    model.eval()
    _, h, w = image.shape
    resized = np.stack([zoom(channel, (img_size / h, img_size / w), order=3) for channel in image])
    with torch.no_grad():
        label = sum(model(torch.from_numpy(resized)[None].float())).argmax(dim=1)[0].numpy()
    return zoom(label, (h / img_size, w / img_size), order=0)


@pytest.mark.parametrize("shape, img_size", [((3, 20, 28), 16), ((3, 24, 20), 48)])
def test_predict_image_matches_naive_loop(shape, img_size):
    model = FourHeadNet(in_channels=3)
    image = random_volume(shape, seed=7)
    prediction = predict_image(model, image, img_size)
    assert prediction.shape == shape[1:] and len(np.unique(prediction)) > 1
    np.testing.assert_array_equal(prediction, naive_predict_image(model, image, img_size))


def test_grey_slice_predicts_the_same_through_either_entry(model):
    """predict_volume and predict_image share one core: a grey slice [H, W] as a 1-channel image [1, H, W]."""
    volume = random_volume((3, 30, 26), seed=8)
    by_volume = predict_volume(model, volume, 32, batch_size=2)
    for index, slice2d in enumerate(volume):
        np.testing.assert_array_equal(predict_image(model, slice2d[None], 32), by_volume[index])


@pytest.mark.parametrize("image, kwargs, message", [
    (np.zeros((8, 8), np.float32), {}, "3-D \\[C, H, W\\]"),
    (np.full((3, 8, 8), np.inf, np.float32), {}, "NaN/inf"),
    (np.zeros((3, 8, 8), np.float32), {"img_size": 0}, "img_size must be a positive integer"),
    (np.zeros((3, 8, 8), np.float32), {"device": "meta"}, "differs from the model's device"),
])
def test_predict_image_bad_input(image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict_image(ColourNet(), image, **{"img_size": 8, **kwargs})


# ---- utils.visual -------------------------------------------------------------------------------------------


def test_overlay_colours_where_labels_are():
    image = np.linspace(-3.0, 5.0, 6 * 7).reshape(6, 7)
    label = np.zeros((6, 7), np.int64)
    label[1:3, 2:5], label[4, :] = 1, 3
    rgb = overlay(image, label, num_classes=4, alpha=0.5)
    assert rgb.dtype == np.uint8 and rgb.shape == (6, 7, 3)
    grey = np.round((image - image.min()) / (image.max() - image.min()) * 255)
    background = label == 0
    for channel in range(3):  # background shows the normalised grey image unchanged
        np.testing.assert_array_equal(rgb[..., channel][background], grey[background])
    colours = class_colours(4).astype(np.float64)
    for cls in (1, 3):
        expected = np.round(0.5 * grey[label == cls][:, None] + 0.5 * colours[cls])
        np.testing.assert_array_equal(rgb[label == cls], expected)
    assert len({tuple(c) for c in class_colours(20)[1:]}) == 19  # distinct colours, also past the fixed table


def test_overlay_alpha_one_paints_pure_colour_and_checks_input():
    label = np.array([[0, 1], [2, 0]])
    rgb = overlay(np.zeros((2, 2)), label, 3, alpha=1.0)
    np.testing.assert_array_equal(rgb[label > 0], class_colours(3)[[1, 2]])
    with pytest.raises(ValueError, match="labels must lie"):
        overlay(np.zeros((2, 2)), label, 2)
    with pytest.raises(ValueError, match="same shape"):
        overlay(np.zeros((2, 3)), label, 3)


def test_side_by_side_and_png_roundtrip(tmp_path):
    left = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    right = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    panels = side_by_side(left, right, gap=2)
    assert panels.shape == (5, 4 + 2 + 6, 3)
    np.testing.assert_array_equal(panels[:, :4], left)
    np.testing.assert_array_equal(panels[:, 6:], right)
    assert (panels[:, 4:6] == 255).all()
    path = tmp_path / "figures" / "case0001_12.png"
    save_png(path, panels)
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), panels)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind
    with pytest.raises(ValueError, match="uint8"):
        save_png(path, panels.astype(np.float32))
