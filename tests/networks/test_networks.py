"""networks/: DMW-LA and DS-GIM against naive references, memory life cycle, the whole model, weights loading."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import timm
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import networks.sim_mpnet.maxvit_encoder as maxvit_encoder
from networks import create_model, model_summary
from networks.registry import model_config
from networks.shared.attention import clustered_attention
from networks.shared.losses import MultiHeadLoss
from networks.sim_mpnet import DMWLA, DSGIM, SimMPNet, dataset_settings, next_memory_k
from networks.sim_mpnet.config import PRETRAINED_FILES, SimMPNetConfig, dsgim_decay
from tests.networks.test_weights_log import logged_records
from tests.reference import LoopDMWLA, LoopDSGIM, use_reference_impl

TINY = dict(num_classes=4, img_size=64, img_size_s2=64, scale="pico", num_k=3, feature_dim=16, pretrained=False,
            warmup_iters=1, pool_size=8, decoder_num_k=3, decoder_feature_dim=16)


def buffers_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in module.named_buffers()}


def assert_same_state(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


def make_pair(in_channels=6, num_k=4, feature_dim=5, pool_size=7, k=3, seed=0, dtype=torch.float64):
    """A fast DMW-LA in its memory phase and a loop copy with identical weights and buffers."""
    torch.manual_seed(seed)
    fast = DMWLA(in_channels, num_k, feature_dim, pool_size=pool_size, warmup_iters=0).to(dtype)
    fast.pool.normal_()
    fast.prototypes.normal_()
    fast.set_k(k)
    reference = copy.deepcopy(fast)
    reference.__class__ = LoopDMWLA
    return fast, reference


# ----- DMW-LA ---------------------------------------------------------------------------------------------------------
# (in_channels, feature_dim): attention on theta/phi/g, and in the narrower input channel space (DMWLA.factored)
CHANNEL_CASES = [(6, 5), (3, 8)]


@pytest.mark.parametrize("in_channels,feature_dim", CHANNEL_CASES)
@pytest.mark.parametrize("batch,size,k,num_k", [(2, 5, 3, 4), (3, 4, 7, 6), (1, 2, 5, 9)])
def test_dmwla_training_forward_and_update_match_loop_reference(batch, size, k, num_k, in_channels, feature_dim):
    # (1, 2, 5, 9): 4 tokens for 9 clusters, so clusters are empty or have fewer members than k
    fast, reference = make_pair(in_channels, num_k=num_k, feature_dim=feature_dim, k=k)
    assert fast.factored == (in_channels < feature_dim)
    x = torch.randn(batch, in_channels, size, size, dtype=torch.float64)
    fast.train(), reference.train()
    for _ in range(3):  # several steps: the updated bank feeds the next forward
        out_fast, out_ref = fast(x), reference(x)
        torch.testing.assert_close(out_fast, out_ref, rtol=0, atol=1e-9)
        assert_same_state(buffers_of(fast), buffers_of(reference), atol=1e-9)
        torch.testing.assert_close(fast.phi_ema.weight, reference.phi_ema.weight, rtol=0, atol=1e-12)
        x = x + 0.1 * torch.randn_like(x)


@pytest.mark.parametrize("in_channels,feature_dim", CHANNEL_CASES)
def test_dmwla_float32_matches_reference_relative(in_channels, feature_dim):
    fast, reference = make_pair(in_channels, feature_dim=feature_dim, dtype=torch.float32)
    x = torch.randn(2, in_channels, 6, 6)
    fast.train(), reference.train()
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.pool, reference.pool, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("in_channels,feature_dim", CHANNEL_CASES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_dmwla_gradients_match_reference(in_channels, feature_dim, mode):
    fast, reference = make_pair(in_channels, feature_dim=feature_dim)
    x_fast = torch.randn(2, in_channels, 4, 4, dtype=torch.float64, requires_grad=True)
    x_ref = x_fast.detach().clone().requires_grad_()
    getattr(fast, mode)(), getattr(reference, mode)()
    fast(x_fast).square().sum().backward()
    reference(x_ref).square().sum().backward()
    torch.testing.assert_close(x_fast.grad, x_ref.grad, rtol=0, atol=1e-9)
    for (name, p_fast), p_ref in zip(fast.named_parameters(), reference.parameters()):
        if p_fast.requires_grad:
            torch.testing.assert_close(p_fast.grad, p_ref.grad, rtol=0, atol=1e-9, msg=name)


def test_dmwla_update_replaces_k_least_used_columns_with_mixture():
    # hand-made case: one cluster, pool columns with known usage order, tokens with known salience
    layer = DMWLA(2, num_k=1, feature_dim=2, pool_size=4, warmup_iters=0).double()
    with torch.no_grad():
        layer.phi_ema.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        layer.phi.weight.copy_(layer.phi_ema.weight)
        layer.pool.copy_(torch.tensor([[0.0, 3.0, 1.0, 2.0], [0.0, 3.0, 1.0, 2.0]], dtype=torch.float64))
        layer.prototypes.fill_(1.0)
    layer.set_k(2)
    tokens = torch.tensor([[1.0, 1.0], [5.0, 5.0], [2.0, 2.0]], dtype=torch.float64)  # salience order: 1, 2, 0
    layer.update_memory(tokens.T.reshape(1, 2, 3, 1))
    # least used columns are 0 (value 0) then 2 (value 1); they get 0.7 old + 0.3 token(5) / token(2)
    expected = torch.tensor([0.7 * 0 + 0.3 * 5, 3.0, 0.7 * 1 + 0.3 * 2, 2.0], dtype=torch.float64)
    torch.testing.assert_close(layer.pool[0], expected)
    torch.testing.assert_close(layer.prototypes[:, 0], expected.mean().repeat(2))


def test_dmwla_eval_forward_never_changes_buffers():
    torch.manual_seed(0)
    for warmup_iters in (0, 3):
        layer = DMWLA(4, num_k=2, feature_dim=8, pool_size=5, warmup_iters=warmup_iters).eval()
        before = buffers_of(layer)
        ema_before = layer.phi_ema.weight.clone()
        with torch.no_grad():
            layer(torch.randn(2, 4, 6, 6))
        assert_same_state(before, buffers_of(layer))
        assert torch.equal(ema_before, layer.phi_ema.weight)
        assert layer._warmup_step == 0


def test_warmup_then_kmeans_structures_bank_into_clusters():
    """Features from well separated blobs: after warm-up each cluster block holds exactly one blob."""
    torch.manual_seed(0)
    num_k, pool_size, dim = 3, 10, 4
    layer = DMWLA(dim, num_k=num_k, feature_dim=dim, pool_size=pool_size, warmup_iters=4).train()
    with torch.no_grad():
        layer.phi.weight.copy_(torch.eye(dim).view(dim, dim, 1, 1))
    centers = torch.eye(dim)[:num_k] * 10.0
    for _ in range(4):
        assert layer.in_warmup
        blob = torch.randint(num_k, (8, 1, 1))  # every pixel of an image belongs to one random blob
        x = centers[blob.squeeze(-1).squeeze(-1)].view(8, dim, 1, 1) + 0.1 * torch.randn(8, dim, 6, 6)
        layer(x)
    assert not layer.in_warmup and int(layer.warmup_step) == 4
    # the bank still holds random init columns where nothing was sampled; sampled columns sit near a centre
    nearest = torch.cdist(layer.pool.T, centers).argmin(1).view(num_k, pool_size)
    near_centre = torch.cdist(layer.pool.T, centers).min(1).values.view(num_k, pool_size) < 1.0
    blobs_seen = set()
    for cluster in range(num_k):
        members = nearest[cluster][near_centre[cluster]]
        if len(members):
            assert members.eq(members[0]).all(), f"cluster {cluster} mixes blobs"
            blobs_seen.add(int(members[0]))
    assert layer.pool.shape == (dim, num_k * pool_size)
    torch.testing.assert_close(layer.prototypes.norm(dim=0), torch.ones(num_k))


def test_warmup_kmeans_on_pure_blob_bank():
    torch.manual_seed(1)
    num_k, pool_size, dim = 4, 6, 8
    layer = DMWLA(dim, num_k=num_k, feature_dim=dim, pool_size=pool_size, warmup_iters=1)
    centers = torch.randn(num_k, dim) * 20
    blob_of_column = torch.randperm(num_k * pool_size) % num_k
    with torch.no_grad():
        layer.pool.copy_((centers[blob_of_column] + 0.01 * torch.randn(num_k * pool_size, dim)).T)
    layer.finish_warmup()
    blob_of_slot = torch.cdist(layer.pool.T, centers).argmin(1).view(num_k, pool_size)
    assert all(row.eq(row[0]).all() for row in blob_of_slot)
    assert sorted(int(row[0]) for row in blob_of_slot) == list(range(num_k))
    # prototypes are the normalised centroids: each points at its block's blob centre
    cosine = torch.nn.functional.normalize(centers, dim=1) @ layer.prototypes
    assert torch.equal(cosine.argmax(0), blob_of_slot[:, 0])


def test_dmwla_state_dict_round_trip_restores_memory_and_momentum_encoder():
    torch.manual_seed(0)
    layer = DMWLA(4, num_k=2, feature_dim=6, pool_size=5, warmup_iters=2).train()
    for _ in range(4):
        layer(torch.randn(2, 4, 5, 5))
    layer.set_k(4)
    state = layer.state_dict()
    assert {"pool", "prototypes", "warmup_step", "k", "phi_ema.weight"} <= state.keys()
    clone = DMWLA(4, num_k=2, feature_dim=6, pool_size=5, warmup_iters=2)
    clone.load_state_dict(state)
    assert clone._k == 4 and clone._warmup_step == 2 and not clone.in_warmup
    assert_same_state(buffers_of(layer), buffers_of(clone))
    x = torch.randn(2, 4, 5, 5)
    clone.train()
    torch.testing.assert_close(layer(x), clone(x))
    assert_same_state(buffers_of(layer), buffers_of(clone))


def test_set_k_validates_range():
    layer = DMWLA(2, num_k=2, feature_dim=2, pool_size=10)
    assert layer._k == 5 and int(layer.k) == 5
    for bad in (0, 11):
        with pytest.raises(ValueError, match="K must lie"):
            layer.set_k(bad)


# ----- W-LD -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("previous,current,expected", [
    (1.0, 1.0, 50),     # no change: M/2
    (1.0, 0.8, 40),     # (0.5 - 0.1) * 100
    (1.0, 1.3, 65),     # (0.5 + 0.15) * 100
    (1.0, 0.5, 25),     # exactly M/4 is kept
    (1.0, 1.5, 75),     # exactly 3M/4 is kept
    (1.0, 0.4, 50),     # 20 < 25: reset
    (0.2, 1.0, 50),     # 90 > 75: reset
    (float("nan"), 1.0, 50),
])
def test_next_memory_k_table(previous, current, expected):
    assert next_memory_k(previous, current, 100) == expected


def test_next_memory_k_scales_with_pool_size():
    assert next_memory_k(1.0, 0.8, 20) == 8 and next_memory_k(1.0, 0.1, 20) == 10


# ----- DS-GIM ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("channels,height,width", [(8, 4, 6), (12, 6, 6), (16, 8, 4)])
def test_dsgim_matches_loop_reference(channels, height, width):
    torch.manual_seed(0)
    fast = DSGIM(channels).double().eval()
    reference = copy.deepcopy(fast)
    reference.__class__ = LoopDSGIM
    x = torch.randn(3, channels, height, width, dtype=torch.float64)
    torch.testing.assert_close(fast(x, 0.85), reference(x, 0.85), rtol=0, atol=1e-9)


def test_dsgim_sample_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    module = DSGIM(16).eval()
    x = torch.randn(4, 16, 6, 6)
    with torch.no_grad():
        together = module(x, dsgim_decay(1))
        alone = torch.cat([module(x[i:i + 1], dsgim_decay(1)) for i in range(4)])
        permuted = module(x.flip(0), dsgim_decay(1))
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(permuted, together.flip(0), rtol=1e-5, atol=1e-6)


def test_dsgim_decay_coefficients_follow_the_released_formula():
    import math
    for i in range(6):
        assert dsgim_decay(i) == pytest.approx(math.exp(-(0.25 - 2 ** (-2.5 - 5 * i / 12))))
    assert 0 < dsgim_decay(0) < 1 and dsgim_decay(5) < dsgim_decay(0)


def test_dsgim_rejects_odd_maps():
    with pytest.raises(ValueError, match="even"):
        DSGIM(4)(torch.randn(1, 4, 5, 6), 0.9)


# ----- SimMPNet -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale,img_size,img_size_s2,channels", [
    ("pico", 64, 64, 1), ("pico", 96, 64, 3), ("nano", 64, 96, 1),
])
def test_output_shapes(scale, img_size, img_size_s2, channels):
    model = SimMPNet(**{**TINY, "scale": scale, "img_size": img_size, "img_size_s2": img_size_s2,
                        "in_chans": channels}).eval()
    with torch.no_grad():
        outputs = model(torch.randn(2, channels, img_size, img_size))
    assert len(outputs) == 4 and all(o.shape == (2, 4, img_size, img_size) for o in outputs)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_trainable_parameter_gets_a_gradient(channels):
    """DistributedDataParallel needs it (no unused parameters): an RGB model has no grey-to-RGB stem."""
    torch.manual_seed(0)
    model = SimMPNet(**{**TINY, "in_chans": channels, "warmup_iters": 0}).train()
    assert (model.gray_to_rgb is None) == (channels == 3) and model.config.in_chans == channels
    sum(o.mean() for o in model(torch.randn(2, channels, 64, 64))).backward()
    assert [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    with pytest.raises(ValueError, match=f"expected input \\[B, {channels}"):
        model(torch.randn(2, 4 - channels, 64, 64))


def test_small_model_shapes_and_released_parameter_count():
    """Trainable parameters receiving a gradient in one training step = the released model's 93,492,639."""
    torch.manual_seed(0)
    model = SimMPNet(num_classes=9, img_size=256, img_size_s2=224, scale="small", num_k=9, feature_dim=256,
                     pretrained=False).train()
    outputs = model(torch.randn(1, 1, 256, 256))
    assert all(o.shape == (1, 9, 256, 256) for o in outputs)
    sum(o.mean() for o in outputs).backward()
    receiving = sum(p.numel() for p in model.parameters() if p.requires_grad and p.grad is not None)
    assert receiving == 93_492_639


def test_model_training_runs_warmup_memory_phase_and_eval_keeps_buffers():
    torch.manual_seed(0)
    model = SimMPNet(**TINY).train()
    x = torch.randn(2, 1, 64, 64)
    assert model.in_warmup
    model(x)
    assert not model.in_warmup
    before = buffers_of(model)
    model(x)  # memory phase: W-LD changes the banks
    changed = {n for n, b in buffers_of(model).items() if not torch.equal(b, before[n])}
    assert any(n.endswith(".pool") for n in changed) and any(n.endswith(".prototypes") for n in changed)
    model.eval()
    before = buffers_of(model)
    with torch.no_grad():
        model(x)
    assert_same_state(before, buffers_of(model))


def test_reference_model_matches_fast_model():
    torch.manual_seed(0)
    # feature_dim 48: the 32-channel layers attend in channel space, the wider ones on theta/phi/g
    fast = SimMPNet(**{**TINY, "feature_dim": 48, "decoder_feature_dim": 48}).double().train()
    reference = use_reference_impl(copy.deepcopy(fast))
    x = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    for _ in range(3):  # warm-up, k-means, memory phase with updates
        torch.manual_seed(1)
        out_fast = fast(x)
        torch.manual_seed(1)
        out_ref = reference(x)
        for a, b in zip(out_fast, out_ref):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
        assert_same_state(buffers_of(fast), buffers_of(reference), atol=1e-9)


def test_grad_checkpointing_gives_the_same_step_and_batchnorm_statistics():
    torch.manual_seed(0)
    plain = SimMPNet(**TINY).double().train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(2, 1, 64, 64, dtype=torch.float64)
    for _ in range(3):  # warm-up, k-means, memory phase with updates
        for model in (plain, checkpointed):
            model.zero_grad()
            torch.manual_seed(1)
            sum(o.square().mean() for o in model(x)).backward()
        for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
            assert (a.grad is None) == (b.grad is None), name
            if a.grad is not None:
                torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12, msg=name)
        # BatchNorm running statistics and memory banks: updated once per step, as without checkpointing
        assert_same_state(buffers_of(plain), buffers_of(checkpointed), atol=1e-12)
    batchnorms = [m for m in checkpointed.encoder1.stages.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and all(int(m.num_batches_tracked) == 3 for m in batchnorms)

    def bytes_saved_for_backward(model):
        storages = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model.encoder1(torch.randn(2, 3, 64, 64, dtype=torch.float64))
        return sum(storages.values())

    assert bytes_saved_for_backward(checkpointed) < 0.5 * bytes_saved_for_backward(plain)


@pytest.mark.parametrize("batch,tokens,num_clusters,rows,layout", [
    (2, 37, 4, 5, "random"),       # several tiles per cluster, runs padded
    (1, 3, 9, 4, "random"),        # fewer queries than clusters: most clusters empty
    (3, 20, 3, 6, "one cluster"),  # every query in the last cluster
    (2, 300, 2, 7, "random"),      # tiles of the largest size
])
def test_clustered_attention_matches_per_query_softmax(batch, tokens, num_clusters, rows, layout):
    """Against a loop over queries: softmax over the query's own cluster block, values and all gradients."""
    torch.manual_seed(0)
    query = torch.randn(batch, tokens, 6, dtype=torch.float64, requires_grad=True)
    key = torch.randn(num_clusters * rows, 6, dtype=torch.float64, requires_grad=True)
    value = torch.randn(num_clusters * rows, 5, dtype=torch.float64, requires_grad=True)
    if layout == "one cluster":
        assignment = torch.full((batch, tokens), num_clusters - 1)
    else:
        assignment = torch.randint(num_clusters, (batch, tokens))
    expected = torch.stack([torch.stack([
        torch.softmax(key[c * rows:(c + 1) * rows] @ query[b, n], 0) @ value[c * rows:(c + 1) * rows]
        for n, c in enumerate(assignment[b].tolist())]) for b in range(batch)])
    out = clustered_attention(query, key, value, assignment, num_clusters)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), (query, key, value))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (query, key, value))
    for grad, reference in zip(grads, expected_grads):
        torch.testing.assert_close(grad, reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("phase", ["warm-up", "memory"])
def test_dmwla_stores_no_token_by_token_matrix_for_backward(phase):
    """The global and intra-cluster attention run as fused kernels: nothing of size N x N (N = H*W tokens) is kept."""
    torch.manual_seed(0)
    layer = DMWLA(8, 3, 16, pool_size=8, warmup_iters=1 if phase == "memory" else 2).train()
    x = torch.randn(2, 8, 32, 32)
    if phase == "memory":
        layer(x)
    largest = []

    def pack(tensor):
        largest.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        layer(x)
    tokens = 32 * 32
    assert largest and max(largest) < 2 * tokens * tokens // 8


def test_memory_phase_and_dsgim_trace_as_single_graphs():
    """torch.compile sees one graph per forward in the memory phase (training with W-LD update, and evaluation) and in
    DS-GIM: no host round trip (.item(), data-dependent shapes) breaks the hot path."""
    torch.manual_seed(0)
    layer = DMWLA(8, 3, 16, pool_size=8, warmup_iters=1).train()
    x = torch.randn(2, 8, 8, 8)
    warmup = torch._dynamo.explain(layer)(x)  # warm-up sampling + k-means run eagerly (compiler.disable)
    assert not layer.in_warmup and warmup.graph_count >= 1
    for mode in ("train", "eval"):
        getattr(layer, mode)()
        explanation = torch._dynamo.explain(layer)(x)
        assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons
    explanation = torch._dynamo.explain(DSGIM(8).train())(x, dsgim_decay(0))
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


# ATen ops that make the host wait for a CUDA device: they return a Python value (item(), int(t), bool(t), equal), have
# an output size that depends on the data (nonzero, boolean indexing, unique, repeat_interleave by a tensor), or check
# the index range on the host (bincount, one_hot).
HOST_SYNC_OPS = {"_local_scalar_dense", "equal", "is_nonzero", "nonzero", "masked_select", "_unique2", "unique_dim",
                 "unique_consecutive", "bincount", "one_hot", "repeat_interleave"}


class HostSyncRecorder(TorchDispatchMode):
    """Records, for every op that would synchronise with a CUDA device, its name; also boolean-mask indexing."""

    def __init__(self):
        super().__init__()
        self.synchronising = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        boolean_index = name in ("index", "index_put", "index_put_") and any(
            isinstance(index, torch.Tensor) and index.dtype == torch.bool for index in tree_flatten(args[1])[0])
        if name in HOST_SYNC_OPS or boolean_index:
            self.synchronising.append(name)
        return func(*args, **(kwargs or {}))


def test_no_host_synchronisation_in_training_and_evaluation_of_the_memory_phase():
    """A whole training step of the model in the memory phase (forward with W-LD updates, multi-head loss, backward)
    and an evaluation forward run no op that makes the host wait for the GPU. The recorder itself is checked on ops
    that do."""
    torch.manual_seed(0)
    model = SimMPNet(**TINY).train()
    criterion = MultiHeadLoss(TINY["num_classes"])
    image, label = torch.randn(2, 1, 64, 64), torch.randint(TINY["num_classes"], (2, 64, 64))
    model(image)  # the one warm-up forward, then k-means: once per run, not the hot path
    assert not any(layer.in_warmup for layer in model.memory_layers())
    with HostSyncRecorder() as training:
        criterion(model(image), label).backward()
    with HostSyncRecorder() as evaluation:
        model.eval()(image)
    assert training.synchronising == [] and evaluation.synchronising == []

    with HostSyncRecorder() as recorder:  # the recorder sees a synchronising op
        counts = torch.bincount(label.flatten(), minlength=TINY["num_classes"])
        label[label > 0].sum()
        int(counts.max())
    assert recorder.synchronising == ["bincount", "index", "_local_scalar_dense"]


def test_set_memory_k_reaches_every_layer_and_state_dict_restores_it():
    model = SimMPNet(**TINY)
    model.set_memory_k(3)
    assert model.memory_k == 3 and all(layer._k == 3 for layer in model.memory_layers())
    assert len(model.memory_layers()) == 2 + 2 + 6 + 2 + 4
    clone = SimMPNet(model.config, pretrained=False)
    clone.load_state_dict(model.state_dict())
    assert all(layer._k == 3 for layer in clone.memory_layers())


def test_bf16_autocast_gives_finite_outputs_and_float32_banks():
    torch.manual_seed(0)
    model = SimMPNet(**TINY).train()
    x = torch.randn(2, 1, 64, 64)
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = model(x)
            loss = sum(o.float().square().mean() for o in outputs)
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(o).all() for o in outputs)
    assert all(layer.pool.dtype == torch.float32 and torch.isfinite(layer.pool).all()
               for layer in model.memory_layers())


def test_invalid_configuration_messages():
    with pytest.raises(ValueError, match="multiple of 32"):
        SimMPNet(**{**TINY, "img_size": 70})
    with pytest.raises(ValueError, match="supports img_size 224, 256"):
        SimMPNet(**{**TINY, "scale": "small", "img_size": 128})
    with pytest.raises(ValueError, match="unknown scale"):
        SimMPNet(**{**TINY, "scale": "huge"})
    with pytest.raises(ValueError, match="expected input"):
        SimMPNet(**TINY)(torch.randn(1, 2, 64, 64))


@pytest.mark.parametrize("dataset, classes, num_k, feature_dim", [
    ("synapse", 9, 9, 256), ("ACDC", 4, 4, 128), ("segpc2021", 3, 3, 256), ("isic2018", 2, 2, 256)])
def test_per_dataset_settings_follow_the_paper(dataset, classes, num_k, feature_dim):
    """The paper's table (Sec. 4.1): create_model for a data set picks its num_k / feature_dim; an option wins."""
    assert dataset_settings(dataset, classes) == dict(num_k=num_k, feature_dim=feature_dim)
    config = model_config("sim_mpnet", dataset=dataset.lower(), num_classes=classes)
    assert (config.num_classes, config.num_k, config.feature_dim) == (classes, num_k, feature_dim)
    assert model_config("sim_mpnet", dataset=dataset.lower(), num_classes=classes, num_k=5).num_k == 5


def test_a_dataset_without_settings_gets_one_cluster_per_class():
    config = model_config("sim_mpnet", dataset="brats", num_classes=5)
    assert (config.num_k, config.feature_dim) == (5, SimMPNetConfig.feature_dim)


def test_presets_and_unknown_options():
    pico = model_config("sim_mpnet_pico")
    assert (pico.scale, pico.img_size, pico.img_size_s2, pico.pool_size, pico.warmup_iters) == ("pico", 64, 64, 16, 20)
    small = model_config("sim_mpnet")
    assert (small.scale, small.img_size, small.img_size_s2, small.pool_size) == ("small", 256, 224, 100)
    with pytest.raises(ValueError, match="no option"):
        model_config("sim_mpnet", depth=3)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("no_such_model")


def test_model_summary_counts_parameters_and_flops():
    model = SimMPNet(**TINY)
    summary = model_summary(model, 64)
    assert summary["params"] == sum(p.numel() for p in model.parameters())
    assert summary["trainable"] < summary["params"]  # the momentum encoders are frozen
    assert summary["gflops"] > 0 and model.training


# ----- pretrained weights -------------------------------------------------------------------------------------------
@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(maxvit_encoder, "PRETRAINED_DIR", tmp_path)
    monkeypatch.setattr(maxvit_encoder, "_warned_missing", set())
    return tmp_path


def test_pretrained_loads_timm_checkpoint_saved_under_released_name(weights_dir):
    torch.manual_seed(3)
    source = timm.create_model("maxvit_rmlp_pico_rw_256", pretrained=False, img_size=64)
    torch.save(source.state_dict(), weights_dir / PRETRAINED_FILES["maxvit_rmlp_pico_rw_256"])
    model = SimMPNet(**{**TINY, "pretrained": None})
    for name, tensor in model.encoder1.stages.state_dict().items():
        assert torch.equal(tensor, source.stages.state_dict()[name]), name
    assert torch.equal(model.encoder1.stem.conv1.weight, source.stem.conv1.weight)
    by_path = SimMPNet(**{**TINY, "pretrained": str(weights_dir / PRETRAINED_FILES["maxvit_rmlp_pico_rw_256"])})
    assert torch.equal(by_path.encoder1.stem.conv1.weight, source.stem.conv1.weight)


def test_pretrained_checkpoint_at_another_size_is_resized_by_timm(weights_dir):
    source = timm.create_model("maxvit_rmlp_pico_rw_256", pretrained=False)  # native 256: 8x8 windows
    torch.save({"state_dict": source.state_dict()}, weights_dir / PRETRAINED_FILES["maxvit_rmlp_pico_rw_256"])
    model = SimMPNet(**{**TINY, "pretrained": None})  # 64: 2x2 windows
    assert torch.equal(model.encoder1.stem.conv1.weight, source.stem.conv1.weight)


def test_pretrained_of_wrong_architecture_is_a_clear_error(weights_dir):
    wrong = timm.create_model("maxvit_rmlp_nano_rw_256", pretrained=False, img_size=64)
    path = weights_dir / PRETRAINED_FILES["maxvit_rmlp_pico_rw_256"]
    torch.save(wrong.state_dict(), path)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*not a maxvit_rmlp_pico_rw_256 checkpoint"):
        SimMPNet(**{**TINY, "pretrained": None})
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": cannot read checkpoint"):
        SimMPNet(**{**TINY, "pretrained": None})


def test_missing_pretrained_warns_once_and_false_is_silent(weights_dir):
    with logged_records("simmpnet") as records:
        SimMPNet(**{**TINY, "pretrained": None})
        SimMPNet(**{**TINY, "pretrained": None})  # second time: no warning
        SimMPNet(**{**TINY, "pretrained": False})
    assert [(record.levelname, record.getMessage()[:21]) for record in records] == \
        [("WARNING", "NO PRETRAINED WEIGHTS")]
    with pytest.raises(ValueError, match="not found"):
        SimMPNet(**{**TINY, "pretrained": str(weights_dir / "absent.pth")})


def test_no_hard_coded_cuda_in_library_code():
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("networks", "utils", "datasets"):
        for path in (root / folder).glob("*.py"):
            text = path.read_text()
            if re.search(r"\.cuda\(|device\s*=\s*['\"]cuda['\"]|torch\.device\(['\"]cuda['\"]\)", text):
                offenders.append(path.name)
    assert not offenders, f"hard-coded CUDA in {offenders}"
