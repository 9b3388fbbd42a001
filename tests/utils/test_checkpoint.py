"""utils/checkpoint.py: atomic writes, RNG round trip, checkpoint validation and model rebuilding."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from networks.sim_mpnet import SimMPNet
from utils.checkpoint import (
    CheckpointError, atomic_torch_save, atomic_write_json, atomic_write_text, build_model_from_checkpoint,
    capture_rng_state, config_mismatches, load_checkpoint, model_checkpoint, restore_rng_state, save_checkpoint,
)

TINY = dict(num_classes=3, img_size=64, img_size_s2=64, scale="pico", num_k=2, feature_dim=16, warmup_iters=2,
            pool_size=4)


def draw_all() -> tuple:
    """One draw from each generator the trainer relies on."""
    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = SimMPNet(**TINY, pretrained=False)
    model.train()
    with torch.no_grad():  # one warm-up forward: the memory buffers differ from their initial values
        model(torch.rand(2, 1, 64, 64))
    model.set_memory_k(3)
    return model.eval()


def test_atomic_write_replaces_whole_file_and_leaves_no_tmp(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1, "nan": float("nan"), "arr": np.arange(3)})
    assert json.loads(target.read_text()) == {"a": 1, "nan": None, "arr": [0, 1, 2]}
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pth"
    atomic_torch_save({"x": torch.ones(2)}, target)
    before = target.read_bytes()

    def disk_full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("utils.checkpoint.os.fsync", disk_full)  # fails after the temporary file was written
    with pytest.raises(OSError):
        atomic_torch_save({"x": torch.zeros(1000)}, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pth"]


def test_rng_state_round_trip_through_a_checkpoint_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path / "rng.pth", {"arch": "x", "model": {}, "model_config": {}, "rng": capture_rng_state()})
    expected = draw_all()
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "rng.pth")["rng"])  # weights_only loading must accept it
    assert draw_all() == expected


@pytest.mark.parametrize("content, problem", [
    (b"", "cannot read checkpoint"),
    (b"this is not a checkpoint", "cannot read checkpoint"),
])
def test_corrupt_checkpoint_names_file(tmp_path, content, problem):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value)


def test_truncated_checkpoint_is_rejected(tmp_path, tiny_model):
    path = tmp_path / "cut.pth"
    save_checkpoint(path, model_checkpoint(tiny_model))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_bare_state_dict_is_not_our_checkpoint(tmp_path, tiny_model):
    path = tmp_path / "release_style.pth"
    torch.save(tiny_model.state_dict(), path)
    with pytest.raises(CheckpointError, match="not a checkpoint of this codebase"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pth")


def test_config_mismatches_ignores_unrequested_values():
    saved = {"scale": "pico", "num_classes": 3}
    assert config_mismatches(saved, {"scale": None, "num_classes": 3}) == []
    assert config_mismatches(saved, {"scale": "small"}) == ["scale: checkpoint has 'pico', requested 'small'"]


def test_rebuilt_model_equals_saved_model(tmp_path, tiny_model):
    path = tmp_path / "model.pth"
    save_checkpoint(path, model_checkpoint(tiny_model))
    rebuilt, ckpt = build_model_from_checkpoint(path, {"num_classes": 3, "scale": None})
    assert rebuilt.config == tiny_model.config
    rebuilt_state = rebuilt.state_dict()
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(rebuilt_state[name], tensor), name
    assert rebuilt.memory_k == 3
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(rebuilt.eval()(image), tiny_model(image)):
            assert torch.equal(ours, theirs)


def test_requested_architecture_contradicting_checkpoint(tmp_path, tiny_model):
    path = tmp_path / "model.pth"
    save_checkpoint(path, model_checkpoint(tiny_model))
    with pytest.raises(CheckpointError) as info:
        build_model_from_checkpoint(path, {"num_classes": 9, "scale": "small"})
    message = str(info.value)
    assert message.startswith(str(path)) and "num_classes: checkpoint has 3, requested 9" in message
    assert "scale: checkpoint has 'pico', requested 'small'" in message


def test_weights_not_fitting_config(tmp_path, tiny_model):
    path = tmp_path / "mixed.pth"
    saved = model_checkpoint(tiny_model)
    saved["model_config"]["num_classes"] = 5  # config says 5 classes, weights have 3
    save_checkpoint(path, saved)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        build_model_from_checkpoint(path)


def test_training_optimizer_is_released_adamw_and_resumes_older_optimizer_state():
    """make_optimizer (fused where available) updates like PyTorch's plain single-tensor AdamW with the released
    settings, skips a frozen parameter, and takes over the state of a plain AdamW (checkpoints written before)."""
    from utils.optimisation import WEIGHT_DECAY, make_optimizer

    torch.manual_seed(0)
    weights = [torch.randn(5, 3), torch.randn(7), torch.randn(2, 2)]
    ours = [w.clone().requires_grad_(i != 2) for i, w in enumerate(weights)]
    plain = [w.clone().requires_grad_(i != 2) for i, w in enumerate(weights)]
    optimizer = make_optimizer(ours, lr=1e-2)
    reference = torch.optim.AdamW(plain, lr=1e-2, weight_decay=WEIGHT_DECAY, foreach=False, fused=False)
    for _ in range(3):
        for a, b in zip(ours[:2], plain[:2]):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        optimizer.step(), reference.step()
        for a, b in zip(ours, plain):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours[2], weights[2], rtol=0, atol=0)
    resumed = make_optimizer([p.detach().clone().requires_grad_(p.requires_grad) for p in plain], lr=1e-2)
    resumed.load_state_dict(reference.state_dict())
    assert resumed.state_dict()["state"].keys() == reference.state_dict()["state"].keys() == {0, 1}
