"""networks.shared.losses against a naive float64 reference (loops over classes and subsets) and a hand-computed
case."""
import math
from itertools import chain, combinations

import pytest
import torch

from networks.shared.losses import DICE_SMOOTH, DiceLoss, MultiHeadLoss, head_subsets


def naive_dice_loss(logits, target, num_classes):
    probs = torch.softmax(logits.double(), dim=1)
    loss = 0.0
    for c in range(num_classes):
        p, t = probs[:, c], (target == c).double()
        loss += 1 - (2 * (p * t).sum() + DICE_SMOOTH) / ((p * p).sum() + (t * t).sum() + DICE_SMOOTH)
    return loss / num_classes


def naive_multi_head_loss(outputs, target, num_classes, ce_weight, dice_weight):
    heads = range(len(outputs))
    subsets = chain.from_iterable(combinations(heads, k) for k in range(1, len(outputs) + 1))
    loss = 0.0
    for subset in subsets:
        logits = sum(outputs[i].double() for i in subset)
        loss += ce_weight * torch.nn.functional.cross_entropy(logits, target)
        loss += dice_weight * naive_dice_loss(logits, target, num_classes)
    return loss


def random_batch(num_heads=4, batch=2, num_classes=5, size=(6, 7), seed=0):
    gen = torch.Generator().manual_seed(seed)
    outputs = tuple(3 * torch.randn(batch, num_classes, *size, generator=gen) for _ in range(num_heads))
    target = torch.randint(0, num_classes, (batch, *size), generator=gen)
    return outputs, target


def test_head_subsets():
    subsets = head_subsets(4)
    assert len(subsets) == 15 and len(set(subsets)) == 15
    assert set(subsets) == {s for k in range(1, 5) for s in combinations(range(4), k)}


def test_dice_loss_matches_naive():
    (logits,), target = random_batch(num_heads=1)
    ours = DiceLoss(5)(logits, target)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), naive_dice_loss(logits, target, 5), rtol=1e-5, atol=1e-6)


def test_dice_loss_on_probabilities():
    (logits,), target = random_batch(num_heads=1)
    probs = torch.softmax(logits, dim=1)
    torch.testing.assert_close(DiceLoss(5)(probs, target, softmax=False), DiceLoss(5)(logits, target))


@pytest.mark.parametrize("num_heads, weights", [(4, (0.3, 0.7)), (3, (1.0, 0.25)), (1, (0.5, 0.5))])
def test_multi_head_loss_matches_naive(num_heads, weights):
    outputs, target = random_batch(num_heads=num_heads, seed=num_heads)
    ours = MultiHeadLoss(5, *weights)(outputs, target)
    reference = naive_multi_head_loss(outputs, target, 5, *weights)
    torch.testing.assert_close(ours.double(), reference, rtol=1e-5, atol=1e-5)


def test_hand_computed_uniform_logits():
    # Zero logits: probabilities 1/2 for both classes at both pixels; targets (0, 1).
    target = torch.tensor([[[0, 1]]])
    outputs = (torch.zeros(1, 2, 1, 2), torch.zeros(1, 2, 1, 2))
    # Per class: intersection 1/2, sum p^2 = 1/2, sum t^2 = 1 -> loss 1 - (1 + s) / (1.5 + s).
    dice = 1 - (1 + DICE_SMOOTH) / (1.5 + DICE_SMOOTH)
    assert DiceLoss(2)(outputs[0], target).item() == pytest.approx(dice, rel=1e-6)
    # Three subsets of two heads, each with summed logits still zero: CE = ln 2.
    expected = 3 * (0.3 * math.log(2) + 0.7 * dice)
    assert MultiHeadLoss(2)(outputs, target).item() == pytest.approx(expected, rel=1e-6)


def test_gradients_flow_to_every_head():
    outputs, target = random_batch()
    outputs = tuple(o.clone().requires_grad_(True) for o in outputs)
    MultiHeadLoss(5)(outputs, target).backward()
    for o in outputs:
        assert o.grad is not None and torch.isfinite(o.grad).all() and o.grad.abs().sum() > 0


@pytest.mark.parametrize("num_heads", [2, 4])
def test_gradient_matches_naive(num_heads):
    outputs, target = random_batch(num_heads=num_heads)
    ours_in = tuple(o.clone().requires_grad_(True) for o in outputs)
    ref_in = tuple(o.double().requires_grad_(True) for o in outputs)
    MultiHeadLoss(5)(ours_in, target).backward()
    naive_multi_head_loss(ref_in, target, 5, 0.3, 0.7).backward()
    for ours, ref in zip(ours_in, ref_in):
        torch.testing.assert_close(ours.grad.double(), ref.grad, rtol=1e-4, atol=1e-6)


def test_subset_maps_are_recomputed_not_stored():
    """Autograd keeps the heads (and the target), not the ~5 full-size maps of each of the 15 subsets."""
    outputs, target = random_batch(num_heads=4)
    outputs = tuple(o.clone().requires_grad_(True) for o in outputs)
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = MultiHeadLoss(5)(outputs, target)
    heads_bytes = sum(o.numel() * o.element_size() for o in outputs)
    assert sum(storages.values()) <= heads_bytes + target.numel() * target.element_size() + 4096
    loss.backward()
    assert all(o.grad is not None for o in outputs)


def test_bfloat16_logits_are_scored_in_float32():
    outputs, target = random_batch()
    loss = MultiHeadLoss(5)(tuple(o.bfloat16() for o in outputs), target)
    assert loss.dtype == torch.float32
    reference = naive_multi_head_loss(tuple(o.bfloat16() for o in outputs), target, 5, 0.3, 0.7)
    torch.testing.assert_close(loss.double(), reference, rtol=1e-5, atol=1e-5)


def test_a_lone_logits_tensor_is_one_head():
    """A single-output network (the smp baselines) trains with the plain 0.3 CE + 0.7 Dice."""
    outputs, target = random_batch()
    loss = MultiHeadLoss(5)(outputs[0], target)
    torch.testing.assert_close(loss, MultiHeadLoss(5)((outputs[0],), target), rtol=0, atol=0)
    reference = naive_multi_head_loss((outputs[0],), target, 5, 0.3, 0.7)
    torch.testing.assert_close(loss.double(), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("outputs, target, message", [
    ((), torch.zeros(1, 4, 4, dtype=torch.long), "non-empty"),
    ((torch.zeros(1, 2, 4, 4),), torch.zeros(1, 4, 4, dtype=torch.long), "expected logits \\[B, 3"),
    ((torch.zeros(1, 3, 4, 4),), torch.zeros(1, 4, 5, dtype=torch.long), "does not match"),
])
def test_bad_input(outputs, target, message):
    with pytest.raises(ValueError, match=message):
        MultiHeadLoss(3)(outputs, target)
