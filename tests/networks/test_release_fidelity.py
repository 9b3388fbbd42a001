"""``--fidelity release`` against the authors' release: fixtures made by running the release's own modules on CPU in
float64 (``tests/fixtures/release/make_fixtures.py``, not run here), plus the release behaviours that live in its
training loop (eval-mode training, W-LD timing), the paper-mode guards of the same issue (``--warmup_iters 0``) and
float16 attention."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from datasets.phantoms.synapse import write_synapse_phantom
from networks import create_model
from networks.shared.attention import attention, clustered_attention
from networks.sim_mpnet import DMWLA, DSGIM, SimMPNet, SimMPNetTrainOptions, dsgim_decay
from networks.sim_mpnet.config import SimMPNetConfig
from networks.sim_mpnet.dsgim import far_key_mask
from utils.checkpoint import model_checkpoint
from utils.cli import build_test_parser, build_train_parser
from utils.trainer import train

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "release"
TOLERANCE = dict(atol=1e-9, rtol=1e-9)
PICO = dict(scale="pico", img_size=64, img_size_s2=64, feature_dim=16, pool_size=8, warmup_iters=2)


def assert_equal_to_release(ours: torch.Tensor, release, what: str) -> None:
    release = torch.as_tensor(release, dtype=torch.float64)
    torch.testing.assert_close(ours.detach().double(), release, **TOLERANCE, msg=lambda m: f"{what}: {m}")


# ----- DS-GIM (items 1 and 2) ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dsgim_fixture() -> dict:
    with np.load(FIXTURES / "dsgim.npz") as data:
        return {key: data[key] for key in data.files}


def release_dsgim(fixture: dict) -> DSGIM:
    """Our release-mode DS-GIM with the fixture's weights (the release's names: ConvBlock.conv.* = our conv.*)."""
    module = DSGIM(384, fidelity="release").double()
    state = module.state_dict()
    for key in fixture:
        if key.startswith("weight:") and key.endswith(":codes"):
            name = key.split(":")[1]
            value = fixture[f"weight:{name}:offset"] + fixture[key].astype(np.float64) * 2.0 ** -int(
                fixture[f"weight:{name}:bits"])
            state[name.replace("ConvBlock.conv.", "conv.")].copy_(torch.from_numpy(value))
    return module


def fixture_input(fixture: dict, case: str) -> torch.Tensor:
    return torch.from_numpy(fixture[f"{case}:x_codes"].astype(np.float64) * 2.0 ** -int(fixture[f"{case}:x_bits"]))


@pytest.mark.parametrize("case", ["large", "small"])
def test_dsgim_training_forward_equals_release(dsgim_fixture, case):
    """Batch of 2 at 14x14x384: element 0 takes the truncated-decay path (all-zero masks), element 1 the 0/1 window
    masks and the two distance masks; BatchNorm in training mode (its running statistics compared too)."""
    module = release_dsgim(dsgim_fixture).train()
    x = fixture_input(dsgim_fixture, case)
    with torch.no_grad():
        out = module(x, dsgim_decay(1))
    assert_equal_to_release(out, dsgim_fixture[f"{case}:train_out"], f"{case} training output")
    for key in dsgim_fixture:
        if key.startswith(f"{case}:running:"):
            name = key.split(":")[2].replace("ConvBlock.conv.", "conv.")
            assert_equal_to_release(module.state_dict()[name], dsgim_fixture[key], name)


def test_dsgim_fixture_covers_both_second_masks(dsgim_fixture):
    """The large case has rows whose distance threshold is below 1 (second mask = complement of the first) and rows
    at or above 1 (second mask = all keys); the small case has the first kind only."""
    assert 0 < float(dsgim_fixture["large:thresholds_below_one"]) < 1
    assert float(dsgim_fixture["small:thresholds_below_one"]) == 1


def test_dsgim_evaluation_equals_release_one_slice_at_a_time(dsgim_fixture):
    """Item 2: the release tests one slice at a time, so every slice takes element 0's path; our evaluation gives
    every sample that path whatever the batch, so batched inference equals the release's batch-1 test."""
    module = release_dsgim(dsgim_fixture).train()
    x = fixture_input(dsgim_fixture, "large")
    with torch.no_grad():
        module(x, dsgim_decay(1))  # BatchNorm running statistics as the release's fixture had them
        module.eval()
        batched = module(x, dsgim_decay(1))
        alone = torch.cat([module(x[i:i + 1], dsgim_decay(1)) for i in range(len(x))])
    assert_equal_to_release(batched, dsgim_fixture["large:eval_out"], "batched evaluation")
    assert_equal_to_release(alone, dsgim_fixture["large:eval_out"], "one slice at a time")


def test_release_model_batched_inference_equals_one_slice_at_a_time():
    torch.manual_seed(0)
    model = SimMPNet(**PICO, num_classes=3, fidelity="release", pretrained=False).double().train()
    for _ in range(4):  # warm-up, k-means, the extra forward, one memory-phase step
        model(torch.randn(2, 1, 64, 64, dtype=torch.float64))
    model.eval()
    x = torch.randn(3, 1, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        batched = model(x)
        alone = [model(x[i:i + 1]) for i in range(len(x))]
    for head, output in enumerate(batched):
        torch.testing.assert_close(output, torch.cat([single[head] for single in alone]), rtol=1e-10, atol=1e-10)


def test_release_dsgim_attention_of_element_zero_is_uniform():
    """Element 0's query and key see zeros: uniform attention, so the attended map is spatially constant (before
    the output layers) and the decay coefficient plays no part."""
    torch.manual_seed(0)
    module = DSGIM(8, fidelity="release").double().train()
    captured = {}
    module.fc.register_forward_hook(lambda _m, inputs, _o: captured.setdefault("mixed", inputs[0]))
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    first = module(x, 0.9)
    assert torch.allclose(captured["mixed"][0], captured["mixed"][0][:1].expand(36, -1), atol=1e-12)
    assert not torch.allclose(captured["mixed"][1], captured["mixed"][1][:1].expand(36, -1))
    torch.testing.assert_close(module(x, 0.1), first)


# ----- DMW-LA (items 3 and 4, W-LD's replication) --------------------------------------------------------------
class ReplayedDraws:
    """The release's random draws of one forward, handed back in order; a call of another kind or size fails."""

    def __init__(self, calls: list) -> None:
        self.calls = list(calls)

    def randint(self, high: int, size: tuple[int, ...]) -> torch.Tensor:
        return self._next("randint", high, tuple(size))

    def randperm(self, n: int) -> torch.Tensor:
        return self._next("randperm", n, (n,))

    def _next(self, kind: str, n: int, size: tuple[int, ...]) -> torch.Tensor:
        assert self.calls, f"our layer draws {kind}({n}, {size}) where the release drew nothing more"
        release_kind, release_n, release_size, values = self.calls.pop(0)
        assert (kind, n, size) == (release_kind, release_n, tuple(release_size)), "draws differ from the release's"
        return values.clone()


@pytest.fixture(scope="module")
def dmwla_fixtures() -> list[dict]:
    return torch.load(FIXTURES / "dmwla.pt", weights_only=True)


@pytest.mark.parametrize("index", [0, 1], ids=["channels-below-feature-dim", "channels-above-feature-dim"])
def test_dmwla_warmup_kmeans_and_memory_steps_equal_release(dmwla_fixtures, index):
    """warmup_iters + 1 warm-up forwards (k-means with scikit-learn after forward warmup_iters, then the extra one),
    then two memory-phase forwards with W-LD updates (K 4, then K 6 on four tokens: replication); output, bank,
    prototypes and phi_ema after every forward, with the release's random draws."""
    fixture = dmwla_fixtures[index]
    layer = DMWLA(fixture["in_channels"], fixture["num_k"], fixture["feature_dim"], pool_size=fixture["pool_size"],
                  warmup_iters=fixture["warmup_iters"], fidelity="release").double().train()
    with torch.no_grad():
        for ours, release in (("theta", "theta"), ("phi", "phi"), ("phi_ema", "phi"), ("g", "g"), ("out", "o")):
            getattr(layer, ours).weight.copy_(fixture["weights"][release])
        layer.pool.copy_(fixture["pool"])
        layer.prototypes.copy_(fixture["prototypes"])
    forwards = iter(fixture["draws"])
    replays = []

    def next_draws():
        replays.append(ReplayedDraws(next(forwards)))
        return replays[-1]

    layer._release_draws = next_draws
    warmup = fixture["warmup_iters"]
    for step, (x, expected) in enumerate(zip(fixture["inputs"], fixture["steps"])):
        assert layer.in_warmup == (step <= warmup), step
        layer.set_k(expected["k"])
        with torch.no_grad():
            out = layer(x)
        assert not replays[-1].calls, f"forward {step}: the release drew more than our layer"
        assert_equal_to_release(out, expected["out"], f"forward {step} output")
        assert_equal_to_release(layer.pool, expected["pool"], f"forward {step} bank")
        assert_equal_to_release(layer.prototypes, expected["prototypes"], f"forward {step} prototypes")
        assert_equal_to_release(layer.phi_ema.weight, expected["phi_ema"], f"forward {step} phi_ema")
    assert not layer.in_warmup
    # the fixture exercises k-means' random fill and W-LD's replication (permutations of other sizes than the bank)
    total = fixture["pool"].shape[1]
    assert any(call[0] == "randperm" and call[1] != total for forward in fixture["draws"] for call in forward)


def test_release_kmeans_is_sklearn_with_first_members_by_index():
    """Item 3 without the fixture: the prototypes are scikit-learn's k-means++ centroids (random_state 0), in
    float32, normalised; a full cluster keeps its first pool_size member columns."""
    from sklearn.cluster import KMeans

    from networks.sim_mpnet.dmwla import RandomDraws, release_structure_pool

    generator = torch.Generator().manual_seed(3)
    pool = torch.cat([torch.randn(4, 30, generator=generator, dtype=torch.float64) + shift
                      for shift in (0.0, 6.0)], dim=1)
    new_pool, prototypes = release_structure_pool(pool, 2, 10, RandomDraws(0, 0))
    fitted = KMeans(n_clusters=2, random_state=0).fit(pool.T.numpy())
    centroids = torch.nn.functional.normalize(torch.from_numpy(fitted.cluster_centers_).float(), dim=1)
    torch.testing.assert_close(prototypes, centroids.T.double(), rtol=0, atol=0)
    for cluster in range(2):
        members = np.flatnonzero(fitted.labels_ == cluster)[:10]
        torch.testing.assert_close(new_pool[:, cluster * 10:(cluster + 1) * 10], pool[:, members], rtol=0, atol=0)


def test_release_draws_are_the_same_on_every_rank_and_step():
    from networks.sim_mpnet.dmwla import RandomDraws

    assert torch.equal(RandomDraws(5, 3).randperm(20), RandomDraws(5, 3).randperm(20))
    assert not torch.equal(RandomDraws(5, 3).randperm(20), RandomDraws(5, 4).randperm(20))


# ----- W-LD timing and the decoder's K (item 5) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def wld_fixture() -> dict:
    return torch.load(FIXTURES / "wld.pt", weights_only=True)


def k_sequence(fidelity: str, fixture: dict) -> tuple[list[int], set[int]]:
    model = SimMPNet(**{**PICO, "pool_size": fixture["pool_size"]}, fidelity=fidelity, pretrained=False)
    model.start_training(SimMPNetTrainOptions(wld_start_epoch=fixture["wld_start_epoch"]))
    encoder_k, decoder_k = [], set()
    for epoch, step, loss, _ in fixture["rows"]:
        model.after_optimizer_step(epoch, step == 0, loss)
        encoder = {layer._k for layer in model.encoder2_memory_layers()}
        assert len(encoder) == 1
        encoder_k.append(encoder.pop())
        decoder_k |= {layer._k for layer in model.decoder.modules() if isinstance(layer, DMWLA)}
    return encoder_k, decoder_k


def test_wld_k_sequence_equals_release(wld_fixture):
    """The release's W-LD statements (run by the fixture script on a scripted loss sequence): K first changes at
    the first step of epoch wld_start + 1 and drives encoder 2's layers only; the decoder's stay at M/2."""
    encoder_k, decoder_k = k_sequence("release", wld_fixture)
    assert encoder_k == [row[3] for row in wld_fixture["rows"]]
    assert decoder_k == {wld_fixture["pool_size"] // 2}
    assert len(set(encoder_k)) > 3, "the scripted losses should move K"


def test_paper_wld_differs_from_release_timing(wld_fixture):
    encoder_k, decoder_k = k_sequence("paper", wld_fixture)
    assert encoder_k != [row[3] for row in wld_fixture["rows"]]
    assert len(decoder_k) > 1  # paper mode: one K for every layer


# ----- eval-mode training from the first in-training test evaluation (item 6) ----------------------------------
def batchnorm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in model.state_dict().items()
            if name.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def test_release_trains_in_eval_mode_after_the_first_test_evaluation_epoch():
    torch.manual_seed(0)
    model = SimMPNet(**PICO, num_classes=3, fidelity="release", pretrained=False)
    model.start_training(SimMPNetTrainOptions(wld_start_epoch=1))
    x = torch.randn(2, 1, 64, 64)
    for epoch in (0, 1):
        model.before_epoch(epoch)
        model.train()
        assert all(module.training for module in model.modules())
        for _ in range(2):
            model(x)
    assert not model.in_warmup
    model.before_epoch(2)
    model.eval()
    model.train()  # what the trainer does around an evaluation
    assert model.training
    for module in model.modules():
        kept = module is model or isinstance(module, (DMWLA, DSGIM)) or type(module).__name__ == "MaxViTEncoder"
        assert module.training == kept, type(module).__name__
    statistics, pools = batchnorm_state(model), [layer.pool.clone() for layer in model.memory_layers()]
    model(x)
    for name, value in batchnorm_state(model).items():
        assert torch.equal(value, statistics[name]), f"{name} changed in eval-mode training"
    assert all(not torch.equal(layer.pool, pool) for layer, pool in zip(model.memory_layers(), pools))

    paper = SimMPNet(**PICO, num_classes=3, pretrained=False)
    paper.start_training(SimMPNetTrainOptions(wld_start_epoch=1))
    paper.before_epoch(5)
    paper.train()
    assert all(module.training for module in paper.modules())


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("phantom")
    return write_synapse_phantom(root / "Synapse", root / "lists", num_train=2, num_test=1, size=64, depth=6,
                                 seed=0)


def test_trainer_freezes_normalisation_from_the_epoch_after_wld_start(phantom, tmp_path):
    """Through the training script's code path, resumed between the two epochs: epoch 1 (> wld_start_epoch 0)
    leaves every BatchNorm statistic as epoch 0 left it, while the memory banks keep changing."""
    def config(*extra: str):
        return build_train_parser("synapse").parse_config(
            ["--root_path", phantom["root_path"], "--volume_path", phantom["volume_path"], "--list_dir",
             phantom["list_dir"], "--scale", "pico", "--img_size", "64", "--img_size_s2", "64", "--pool_size", "8",
             "--feature_dim", "16", "--warmup_iters", "2", "--pretrained", "none", "--device", "cpu",
             "--batch_size", "4", "--num_workers", "0", "--val_list", "none", "--fidelity", "release",
             "--wld_start_epoch", "0", "--output_dir", str(tmp_path / "run"), *extra])

    train(config("--max_epochs", "1"))
    shutil.copy(tmp_path / "run" / "last.pth", tmp_path / "epoch0.pth")
    train(config("--max_epochs", "2", "--resume", "auto"))
    before = torch.load(tmp_path / "epoch0.pth", weights_only=True)
    after = torch.load(tmp_path / "run" / "last.pth", weights_only=True)
    assert after["model_config"]["fidelity"] == "release" and after["next_epoch"] == 2
    names = [name for name in after["model"] if name.endswith(("running_mean", "running_var"))]
    assert names
    for name in names:
        assert torch.equal(after["model"][name], before["model"][name]), name
    pools = [name for name in after["model"] if name.endswith(".pool")]
    assert all(not torch.equal(after["model"][name], before["model"][name]) for name in pools)


# ----- the option, checkpoints, --warmup_iters 0 -------------------------------------------------------------------
def test_fidelity_is_an_option_saved_in_checkpoints(capsys):
    assert build_train_parser("synapse").parse_args([]).fidelity == "paper"
    assert build_train_parser("synapse").parse_args(["--fidelity", "release"]).fidelity == "release"
    with pytest.raises(SystemExit):
        build_train_parser("synapse").parse_args(["--fidelity", "faithful"])
    assert "invalid choice" in capsys.readouterr().err
    assert build_test_parser("synapse").parse_args([]).fidelity is None  # as stored in the checkpoint
    model = create_model("sim_mpnet_pico", num_classes=3, fidelity="release", pretrained=False)
    rebuilt = create_model(model.arch, **model_checkpoint(model)["model_config"], pretrained=False)
    assert rebuilt.config.fidelity == "release"
    assert all(layer.fidelity == "release" for layer in rebuilt.memory_layers())
    assert rebuilt.encoder2.dsgim.fidelity == "release"
    with pytest.raises(ValueError, match="fidelity"):
        SimMPNetConfig(fidelity="faithful")


def test_warmup_iters_zero_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_train_parser("synapse").parse_args(["--warmup_iters", "0"])
    assert "--warmup_iters" in capsys.readouterr().err
    model = SimMPNet(**{**PICO, "warmup_iters": 0}, num_classes=3, pretrained=False)
    with pytest.raises(ValueError, match="k-means structures the memory bank"):
        model.start_training(SimMPNetTrainOptions())


# ----- float16 (both modes) ----------------------------------------------------------------------------------------
def test_attention_logits_stay_finite_in_float16():
    """Unscaled logits of activations ~300 over 64 features reach ~6e6, far beyond float16's 65504: computed in
    float32, the float16 result matches float64 to float16 rounding."""
    generator = torch.Generator().manual_seed(0)
    query, key = (300 * torch.rand(2, 50, 64, generator=generator, dtype=torch.float64) for _ in range(2))
    value = torch.randn(2, 50, 8, generator=generator, dtype=torch.float64)
    reference = torch.softmax(query @ key.transpose(1, 2), -1) @ value
    half = attention(query.half(), key.half(), value.half())
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.double(), reference, atol=2e-2, rtol=2e-2)
    assignment = torch.randint(3, (2, 50), generator=generator)
    bank = 300 * torch.rand(3 * 10, 64, generator=generator, dtype=torch.float64)
    clustered = clustered_attention(query.half(), bank.half(), bank[:, :8].half(), assignment, 3)
    assert clustered.dtype == torch.float16 and torch.isfinite(clustered).all()
    torch.testing.assert_close(clustered.double(), clustered_attention(query, bank, bank[:, :8], assignment, 3),
                               atol=0.5, rtol=2e-2)


def test_dsgim_distance_split_in_float16_equals_float64():
    """Paper DS-GIM's far/near split from the logits' row means: those overflow float16 here (~3e6)."""
    generator = torch.Generator().manual_seed(1)
    query, key = (300 * torch.rand(2, 36, 64, generator=generator, dtype=torch.float64) for _ in range(2))
    assert (query @ key.mean(1, keepdim=True).transpose(1, 2)).abs().max() > 65504
    assert torch.equal(far_key_mask(query.half(), key.half()), far_key_mask(query.half().double(),
                                                                            key.half().double()))


@pytest.mark.parametrize("fidelity", ["paper", "release"])
def test_blocks_under_float16_autocast_with_large_activations(fidelity):
    """DMW-LA (warm-up, then the memory phase) and DS-GIM under float16 autocast, activations ~1000: their logits
    exceed float16's range, their outputs stay finite."""
    torch.manual_seed(0)
    layer = DMWLA(16, 3, 32, pool_size=4, warmup_iters=1, fidelity=fidelity).train()
    dsgim = DSGIM(16, fidelity=fidelity).train()
    x = 1000 * torch.rand(2, 16, 8, 8)
    with torch.no_grad():
        theta, phi = (conv(x).flatten(2) for conv in (layer.theta, layer.phi))
        assert (theta.transpose(1, 2) @ phi).abs().max() > 65504
        query, key = dsgim.query(x).flatten(2), dsgim.key(x).flatten(2)
        assert (query.transpose(1, 2) @ key).abs().max() > 65504
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            outputs = [layer(x) for _ in range(3)]  # warm-up (and the release's extra forward), then memory phase
            mixed = dsgim(x, dsgim_decay(0))
    except RuntimeError as exc:  # pragma: no cover - a torch build without CPU float16 autocast
        pytest.skip(f"CPU float16 autocast unavailable: {exc}")
    assert not layer.in_warmup
    assert all(torch.isfinite(out).all() for out in outputs) and torch.isfinite(mixed).all()
