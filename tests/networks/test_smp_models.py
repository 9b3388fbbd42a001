"""The segmentation_models_pytorch baselines (networks.smp): registry names, shapes, validation, local encoder
weights, and that building one never touches the network."""
from __future__ import annotations

import dataclasses
import json
import socket

import pytest
import segmentation_models_pytorch as smp
import torch

from networks import create_model, list_models
from networks.smp import SMPFPNConfig, SMPModel, SMPUnetConfig

SMALL = dict(num_classes=3, in_chans=1, img_size=64)
TINY = dict(SMALL, encoder_name="resnet18")  # faster to build: the weight-file tests


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(autouse=True)
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


def test_registered_names_and_configs():
    assert {"unet", "unetplusplus", "fpn"} <= set(list_models())
    model = create_model("unet", **SMALL)
    assert isinstance(model, SMPModel) and isinstance(model.config, SMPUnetConfig)
    assert model.arch == "unet" and isinstance(model.net, smp.Unet)
    assert (model.num_classes, model.in_chans, model.img_size) == (3, 1, 64)
    assert isinstance(create_model("unetplusplus", **SMALL).net, smp.UnetPlusPlus)
    fpn = create_model("fpn", **SMALL)
    assert isinstance(fpn.net, smp.FPN) and isinstance(fpn.config, SMPFPNConfig)
    # the CLI options: img_size and encoder_name
    options = {f.name for f in dataclasses.fields(SMPUnetConfig) if f.metadata.get("help")}
    assert options == {"img_size", "encoder_name"}


def test_unet_forward_shape_single_tensor():
    model = create_model("unet", **SMALL)
    out = model(torch.randn(2, 1, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 64, 64)
    assert model.forward_batch({"image": torch.randn(1, 1, 64, 64)}).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("name", ["unet", "unetplusplus", "fpn"])
def test_rgb_input(name):
    model = create_model(name, num_classes=2, in_chans=3, img_size=64, encoder_name="resnet18")
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_bad_sizes_and_options():
    with pytest.raises(ValueError, match="img_size must be a positive multiple of 32"):
        create_model("unet", num_classes=3, in_chans=1, img_size=100)
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model("fpn", img_size=48)
    # depth 4 needs multiples of 16 and four decoder widths
    model = create_model("unet", num_classes=3, in_chans=1, img_size=48, encoder_depth=4,
                         decoder_channels=(128, 64, 32, 16))
    assert model(torch.randn(1, 1, 48, 48)).shape == (1, 3, 48, 48)
    with pytest.raises(ValueError, match="decoder_channels"):
        create_model("unet", encoder_depth=4)
    with pytest.raises(ValueError, match="encoder_depth"):
        create_model("unet", encoder_depth=6)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("unet", num_classes=1)
    with pytest.raises(ValueError, match="unknown encoder_name 'resnet35'"):
        create_model("unet", encoder_name="resnet35")
    with pytest.raises(ValueError, match="no option"):
        create_model("fpn", decoder_channels=(1, 2, 3, 4, 5))


def test_bad_input_shape():
    model = create_model("unet", **SMALL)
    with pytest.raises(ValueError, match=r"expected input \[B, 1, H, W\]"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 1, 64, 48))


def test_config_round_trip_through_json():
    model = create_model("unetplusplus", num_classes=4, in_chans=1, img_size=64, encoder_name="resnet18",
                         decoder_attention_type="scse")
    stored = json.loads(json.dumps(dataclasses.asdict(model.config)))  # tuples become lists
    rebuilt = create_model("unetplusplus", **stored)
    assert rebuilt.config == model.config
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_parameter_count_matches_smp():
    model = create_model("unet", num_classes=2, in_chans=3, encoder_name="resnet34")
    reference = smp.Unet(encoder_name="resnet34", encoder_weights=None, in_channels=3, classes=2)
    # by hand: torchvision ResNet-34 without fc 21_797_672 - 513_000 = 21_284_672; decoder blocks (3x3 convs without
    # bias + BatchNorm, inputs 512+256, 256+128, 128+64, 64+64, 32 -> 256, 128, 64, 32, 16) 3_151_552; head 16*2*9 + 2
    assert _n_params(model) == _n_params(reference) == 21_284_672 + 3_151_552 + 290


def test_grad_checkpointing_refused():
    model = create_model("unet", **SMALL)
    model.set_grad_checkpointing(False)
    with pytest.raises(ValueError, match="unet does not support --grad_checkpointing"):
        model.set_grad_checkpointing(True)


# ----- local encoder weights ----------------------------------------------------------------------------------------
def test_load_encoder_state_dict(tmp_path):
    torch.manual_seed(0)
    first = create_model("unet", **TINY)
    path = tmp_path / "encoder.pth"
    torch.save(first.net.encoder.state_dict(), path)
    torch.manual_seed(1)
    second = create_model("unet", pretrained=str(path), **TINY)
    assert _same_tensors(second.net.encoder.state_dict(), first.net.encoder.state_dict())
    decoder_1, decoder_2 = first.net.decoder.state_dict(), second.net.decoder.state_dict()
    assert not all(torch.equal(decoder_1[k], decoder_2[k]) for k in decoder_1 if decoder_1[k].is_floating_point())


def test_load_wrapped_and_prefixed_files(tmp_path):
    first = create_model("unet", **TINY)
    expected = first.net.encoder.state_dict()
    files = {
        "wrapped.pth": {"state_dict": first.net.encoder.state_dict()},
        "whole_smp_model.pth": first.net.state_dict(),  # keys encoder.*, decoder.*, segmentation_head.*
        "checkpoint.pth": {"format": 1, "model": first.state_dict()},  # keys net.encoder.*, ...
    }
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        model = create_model("unetplusplus", pretrained=tmp_path / name, **TINY)
        assert _same_tensors(model.net.encoder.state_dict(), expected), name


def test_load_torchvision_resnet_with_fc(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    resnet = torchvision.models.resnet18(weights=None)
    state = resnet.state_dict()
    assert "fc.weight" in state
    torch.save(state, tmp_path / "resnet18.pth")
    rgb = create_model("unet", num_classes=2, in_chans=3, img_size=64, encoder_name="resnet18",
                       pretrained=tmp_path / "resnet18.pth")
    assert _same_tensors(rgb.net.encoder.state_dict(), {k: v for k, v in state.items() if not k.startswith("fc.")})
    # a grey model gets the RGB first convolution summed over its input channels (as smp does for ImageNet)
    grey = create_model("unet", num_classes=2, in_chans=1, img_size=64, encoder_name="resnet18",
                        pretrained=tmp_path / "resnet18.pth")
    assert torch.allclose(grey.net.encoder.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(grey.net.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_bad_encoder_files(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(ValueError, match=f"{missing}: encoder weights file not found"):
        create_model("unet", pretrained=missing, **TINY)
    other = tmp_path / "resnet18_encoder.pth"
    torch.save(create_model("unet", **TINY).net.encoder.state_dict(), other)
    with pytest.raises(ValueError, match=f"{other}: not a resnet34 encoder checkpoint"):
        create_model("unet", pretrained=other, **SMALL)  # resnet34 has more blocks
    with pytest.raises(ValueError, match=f"{other}: not a resnet18 encoder checkpoint"):
        create_model("unet", pretrained=other, **dict(TINY, in_chans=2))  # first conv: 1 input channel, not RGB
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{garbage}: cannot read weights"):
        create_model("unet", pretrained=garbage, **TINY)
    not_a_state = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_a_state)
    with pytest.raises(ValueError, match=f"{not_a_state}: not a state_dict"):
        create_model("unet", pretrained=not_a_state, **TINY)
    with pytest.raises(ValueError, match="local"):
        create_model("unet", pretrained=True, **TINY)


# ----- nothing downloads ----------------------------------------------------------------------------------------------
def test_construction_never_uses_the_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during model construction: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    import huggingface_hub
    import segmentation_models_pytorch.encoders as smp_encoders
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(smp_encoders, "hf_hub_download", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    create_model("unet", **SMALL)
    for name in ("unetplusplus", "fpn"):
        create_model(name, **TINY)
    create_model("unet", encoder_name="tu-resnet18", **SMALL)  # a timm encoder: built with pretrained=False
    path = tmp_path / "encoder.pth"
    torch.save(create_model("unet", **TINY).net.encoder.state_dict(), path)
    create_model("unet", pretrained=path, **TINY)
