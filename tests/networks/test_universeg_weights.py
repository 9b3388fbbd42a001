"""UniverSeg's own weights in our networks (networks/matchseg/universeg_weights.py), checked against UniverSeg's own
outputs: ``tests/fixtures/universeg/`` holds a small UniverSeg state_dict (widths 6, 8, 10, 12, in UniverSeg's key
layout) and the logits UniverSeg's code computed with it (``make_fixture.py`` there says how it was generated)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datasets import get_dataset
from networks import create_model
from networks.matchseg.joint_attention import JointAttention
from networks.matchseg.universeg_weights import UniverSegWeightsWarning
from tests.conftest import TINY_PHANTOM, TINY_SIZE
from utils.checkpoint import CheckpointError, build_model_from_checkpoint, load_checkpoint, peek_arch
from utils.cli import build_test_parser, build_train_parser
from utils.evaluator import evaluate
from utils.trainer import build_model, train

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "universeg"
WEIGHTS = FIXTURES / "universeg_w6-8-10-12.pt"
CASES = torch.load(FIXTURES / "cases.pt", weights_only=True)
WIDTHS = tuple(CASES["widths"])
SIZE = CASES["size"]
FLOAT32_TOLERANCE = 1e-5  # measured: 2e-6, the float32 rounding of either implementation (float64: 4e-15)
FLOAT64_TOLERANCE = 1e-12


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def file_state() -> dict:
    return dict(torch.load(WEIGHTS, weights_only=True))


def foreground_logit(model, case: dict, dtype: torch.dtype) -> torch.Tensor:
    """Our logit z of the foreground (the model returns (0, z)), in ``dtype``."""
    model = model.to(dtype).eval()
    with torch.no_grad():
        logits = model(case["image"].to(dtype), case["support_images"].to(dtype), case["support_labels"])
    assert torch.equal(logits[:, 0], torch.zeros_like(logits[:, 0]))
    return logits[:, 1:]


def assert_universeg_outputs(model, case: dict) -> None:
    torch.testing.assert_close(foreground_logit(model, case, torch.float32), case["logits32"],
                               atol=FLOAT32_TOLERANCE, rtol=0)
    torch.testing.assert_close(foreground_logit(model, case, torch.float64), case["logits64"],
                               atol=FLOAT64_TOLERANCE, rtol=0)


def assert_one_line_about(error: Exception, path: Path, *fragments: str) -> None:
    message = str(error)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


CASE_IDS = [f"k{case['shots']}" for case in CASES["cases"]]


# ----- outputs against UniverSeg's ---------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES["cases"], ids=CASE_IDS)
def test_universeg_on_universeg_weights_gives_universeg_outputs(case):
    model = create_model("universeg", pretrained=WEIGHTS, widths=WIDTHS, img_size=SIZE, input_norm="unit")
    assert_universeg_outputs(model, case)


@pytest.mark.parametrize("case", CASES["cases"], ids=CASE_IDS)
def test_grey_matchseg_starts_exactly_as_universeg_and_says_joint_attention_was_left(case):
    """Joint Attention after every block at 24 px (all maps <= 1024 pixels); gamma = 0, so UniverSeg's outputs."""
    with pytest.warns(UniverSegWeightsWarning) as caught:
        model = create_model("matchseg", pretrained=WEIGHTS, widths=WIDTHS, img_size=SIZE, in_chans=1,
                             input_norm="unit")
    attention = [name for name, module in model.named_modules() if isinstance(module, JointAttention)]
    assert len(attention) == 2 * len(WIDTHS) - 1
    (warning,) = caught
    message = str(warning.message)
    assert message.startswith(f"{WEIGHTS}: not in the file, left at initialisation: ")
    assert all(name in message for name in attention) and "starts exactly as UniverSeg" in message
    assert_universeg_outputs(model, case)


def test_bare_weights_file_builds_a_universeg_checkpoint_from_its_tensors():
    """The engine's checkpoint loader takes the bare file through the family's importer: config read off the
    tensors, no training args, and UniverSeg's outputs (the fixture's widths at the importer's img_size 128)."""
    assert peek_arch(WEIGHTS) == "universeg"
    model, checkpoint = build_model_from_checkpoint(WEIGHTS)
    assert model.arch == "universeg" and "args" not in checkpoint and checkpoint["imported_by"] == "universeg"
    config = model.config
    assert (config.widths, config.in_chans, config.num_classes, config.joint_attention, config.input_norm) == \
           (WIDTHS, 1, 2, 0, "unit")
    assert model.input_normalization == "unit"
    for case in CASES["cases"]:
        assert_universeg_outputs(model, case)


# ----- files that do not fit -----------------------------------------------------------------------------------------
def without_key(state: dict) -> tuple[dict, str]:
    del state["dec_blocks.1.support.vmapped.conv.bias"]
    return state, "missing keys dec_blocks.1.support.vmapped.conv.bias"


def with_extra_key(state: dict) -> tuple[dict, str]:
    state["enc_blocks.0.cross.extra.weight"] = torch.zeros(1)
    return state, "unknown keys enc_blocks.0.cross.extra.weight"


def with_wrong_shape(state: dict) -> tuple[dict, str]:
    state["enc_blocks.2.target.vmapped.conv.weight"] = torch.zeros(10, 10, 5, 5)
    return state, "enc_blocks.2.target.vmapped.conv.weight [10, 10, 5, 5] (model: encoder.2.query_conv.0.weight " \
                  "[10, 10, 3, 3])"


@pytest.mark.parametrize("corrupt", [without_key, with_extra_key, with_wrong_shape])
@pytest.mark.parametrize("loader", ["pretrained", "checkpoint"])
def test_file_that_does_not_fit_gives_one_error_naming_file_and_keys(corrupt, loader, tmp_path):
    state, expected = corrupt(file_state())
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    if loader == "pretrained":
        with pytest.raises(ValueError) as caught:
            create_model("universeg", pretrained=path, widths=WIDTHS, img_size=SIZE)
    else:
        assert peek_arch(path) == "universeg"  # test.py declares universeg's options, and the load says what is wrong
        with pytest.raises(CheckpointError) as caught:
            build_model_from_checkpoint(path)
    assert_one_line_about(caught.value, path, expected)


def test_file_of_another_layout_is_refused(tmp_path):
    path = tmp_path / "ours.pt"
    torch.save(create_model("universeg", pretrained=False, widths=WIDTHS, img_size=SIZE).state_dict(), path)
    with pytest.raises(ValueError) as caught:
        create_model("universeg", pretrained=path, widths=WIDTHS, img_size=SIZE)
    assert_one_line_about(caught.value, path, "not UniverSeg's weight layout", "encoder.0.cross.conv.weight")
    with pytest.raises(CheckpointError, match="not a checkpoint of this codebase"):
        load_checkpoint(path)


def test_rgb_universeg_on_grey_weights_says_how_to_fix_it():
    with pytest.raises(ValueError) as caught:
        create_model("universeg", pretrained=WEIGHTS, widths=WIDTHS, img_size=SIZE, in_chans=3)
    assert_one_line_about(caught.value, WEIGHTS, "enc_blocks.0.cross.cross_conv.weight [6, 3, 3, 3] (model: "
                          "encoder.0.cross.conv.weight [6, 7, 3, 3])", "--in_chans 1")


def test_universeg_of_other_widths_names_them():
    with pytest.raises(ValueError) as caught:
        create_model("universeg", pretrained=WEIGHTS, widths=(8, 8, 8, 8), img_size=SIZE)
    assert_one_line_about(caught.value, WEIGHTS, "the file's widths are (6, 8, 10, 12), the model's (8, 8, 8, 8)")


def test_missing_file_and_download_request_are_refused(tmp_path):
    with pytest.raises(ValueError) as caught:
        create_model("universeg", pretrained=tmp_path / "absent.pt")
    assert_one_line_about(caught.value, tmp_path / "absent.pt", "not found")
    with pytest.raises(ValueError, match="would download"):
        create_model("universeg", pretrained=True)


# ----- partial load --------------------------------------------------------------------------------------------------
def test_rgb_matchseg_loads_what_fits_and_reports_the_rest():
    """RGB: the first cross convolution's weight (query 3 + support 4 channels) has no grey counterpart; it stays at
    its initialisation, everything that fits comes from the file, and the warning says both."""
    options = dict(widths=WIDTHS, img_size=SIZE, in_chans=3)
    torch.manual_seed(0)
    untouched = create_model("matchseg", pretrained=False, **options).state_dict()
    torch.manual_seed(0)
    with pytest.warns(UniverSegWeightsWarning) as caught:
        model = create_model("matchseg", pretrained=WEIGHTS, **options)
    messages = [str(warning.message) for warning in caught]
    skipped = next(message for message in messages if "skipped" in message)
    assert skipped.startswith(f"{WEIGHTS}: skipped 1 file tensor(s) of another shape, left at initialisation: "
                              f"enc_blocks.0.cross.cross_conv.weight [6, 3, 3, 3]") and "--in_chans 1" in skipped
    assert any("left at initialisation: encoder_attention" in message for message in messages)
    assert any("input_norm='dataset'" in message for message in messages)  # RGB default: ImageNet statistics
    ours, state = model.state_dict(), file_state()
    assert torch.equal(ours["encoder.0.cross.conv.weight"], untouched["encoder.0.cross.conv.weight"])
    for file_key, our_key in [("enc_blocks.0.cross.cross_conv.bias", "encoder.0.cross.conv.bias"),
                              ("enc_blocks.1.target.vmapped.conv.weight", "encoder.1.query_conv.0.weight"),
                              ("dec_blocks.2.support.vmapped.conv.bias", "decoder.2.support_conv.0.bias"),
                              ("out_conv.conv.weight", "head.weight")]:
        assert torch.equal(ours[our_key], state[file_key]), our_key
    assert torch.equal(ours["encoder_attention.3.to_value.weight"], untouched["encoder_attention.3.to_value.weight"])


def test_partial_load_that_starts_no_convolution_is_an_error():
    with pytest.raises(ValueError) as caught:
        create_model("matchseg", pretrained=WEIGHTS, widths=(16, 16, 16, 16), img_size=SIZE, in_chans=1)
    assert_one_line_about(caught.value, WEIGHTS, "no convolution of the file fits the model")


# ----- through the scripts -------------------------------------------------------------------------------------------
def test_training_with_pretrained_starts_from_the_file(tiny_phantoms, tmp_path):
    """train.py --pretrained FILE on the BUSI phantom (colour images, a grey model): the model the run builds holds
    the file's weights, and after one step at a tiny learning rate the saved weights are still the file's to 1e-4
    (a random start differs by about 0.1) but not all equal to them (it trained)."""
    phantom = tiny_phantoms("busi")
    run_dir = tmp_path / "run"
    config = build_train_parser("busi").parse_config(
        ["--model", "universeg", "--pretrained", str(WEIGHTS), "--in_chans", "1", "--widths", *map(str, WIDTHS),
         "--img_size", str(TINY_SIZE), "--input_norm", "unit", "--root_path", phantom["root_path"],
         "--volume_path", phantom["volume_path"], "--list_dir", phantom["list_dir"], "--device", "cpu",
         "--support_size", "1", "--support_cache", str(tmp_path / "cache"), "--batch_size", "2",
         "--num_workers", "0", "--base_lr", "1e-6", "--max_steps", "1", "--max_epochs", "1",
         "--output_dir", str(run_dir)])
    imported = load_checkpoint(WEIGHTS)["model"]
    built = build_model(config).state_dict()
    assert all(torch.equal(built[key], tensor) for key, tensor in imported.items()) and built.keys() == imported.keys()
    assert train(config)["global_step"] == 1
    trained = load_checkpoint(run_dir / "last.pth")["model"]
    differences = [(trained[key] - tensor).abs().max().item() for key, tensor in imported.items()]
    assert max(differences) < 1e-4 and max(differences) > 0


def test_testing_the_bare_weights_file_needs_no_training(tmp_path):
    """test.py --checkpoint universeg_....pt: the importer's model (img_size 128) on a 128 px BUSI phantom,
    supports from the named pool (the file records no training data)."""
    spec = get_dataset("busi").phantom
    options = {name: value for name, value in {**TINY_PHANTOM, "size": 128}.items() if name in spec.options}
    phantom = spec.write(tmp_path / spec.dir_name, tmp_path / "lists" / spec.list_dir_name, seed=0, **options)
    record = evaluate(build_test_parser("busi").parse_config(
        ["--checkpoint", str(WEIGHTS), "--volume_path", phantom["volume_path"], "--list_dir", phantom["list_dir"],
         "--device", "cpu", "--support_dataset", "busi", "--support_root", phantom["root_path"],
         "--support_list_dir", phantom["list_dir"], "--support_size", "1", "--support_cache", str(tmp_path / "cache"),
         "--output_dir", str(tmp_path / "test")]))
    assert record["num_cases"] >= 1 and "context" in record
