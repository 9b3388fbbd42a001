"""networks/matchseg: UniverSeg's parameter count, a naive reference of the backbone, support-order invariance, Joint
Attention (naive reference, identity at gamma = 0, no attention matrix kept for backward), the loss against a naive
float64 reference, and clear errors for bad inputs. Tiny widths and 16-32 px inputs: CPU-cheap."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from networks import create_model, list_models
from networks.matchseg import CrossConv, DiceBCEFocalLoss, JointAttention, MatchSeg, MatchSegConfig
from networks.matchseg.joint_attention import key_dim

UNIVERSEG_PARAMETERS = 1_182_785  # UniverSeg's released model (JJGO/UniverSeg, universeg(): widths 64 x 4)


def tiny(name: str = "matchseg", dtype=torch.float64, seed: int = 0, **overrides) -> MatchSeg:
    torch.manual_seed(seed)
    options = dict(img_size=16, widths=(4, 6, 5), in_chans=1, ja_max_hw=64, ja_min_dim=3)
    return create_model(name, pretrained=False, **{**options, **overrides}).to(dtype)


def support_set(batch=2, shots=3, channels=1, size=16, num_classes=2, dtype=torch.float64, seed=1):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, channels, size, size, generator=generator, dtype=dtype)
    images = torch.rand(batch, shots, channels, size, size, generator=generator, dtype=dtype)
    labels = torch.randint(0, num_classes, (batch, shots, size, size), generator=generator)
    return image, images, labels


def randomise_gammas(model: torch.nn.Module, seed: int = 2) -> None:
    """Non-zero residual scales, so that Joint Attention changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "gamma" in name:
                parameter.copy_(0.5 + torch.rand((), generator=generator, dtype=parameter.dtype))


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----- parameter counts and configuration ------------------------------------------------------------------------
def test_universeg_preset_has_the_released_parameter_count():
    model = create_model("universeg", pretrained=False)
    assert (model.config.in_chans, model.config.num_classes, model.config.widths) == (1, 2, (64, 64, 64, 64))
    assert model.config.joint_attention == 0 and count(model) == UNIVERSEG_PARAMETERS
    # the last decoder block's support ConvOp exists (UniverSeg has it) but nobody reads its output: frozen
    frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
    assert frozen == ["decoder.2.support_conv.0.weight", "decoder.2.support_conv.0.bias"]


def test_matchseg_parameter_counts():
    counts = {name: count(create_model(name, pretrained=False)) for name in ("matchseg", "matchseg_wide")}
    print(f"parameters: universeg {UNIVERSEG_PARAMETERS:,}, matchseg {counts['matchseg']:,}, "
          f"matchseg_wide {counts['matchseg_wide']:,}")
    # RGB input adds 4 channels of 3x3x64 to the first cross convolution; 3 Joint Attention modules of
    # 2 (C C' + C') + C^2 + C + 2 parameters (C = 64, C' = 8)
    per_module = 2 * (64 * 8 + 8) + 64 * 64 + 64 + 2
    assert per_module == 5_202 == count(JointAttention(64))
    assert counts["matchseg"] == UNIVERSEG_PARAMETERS + 4 * 9 * 64 + 3 * per_module == 1_200_695
    assert counts["matchseg_wide"] == 7_483_007


def test_joint_attention_placement_follows_ja_max_hw():
    config = MatchSegConfig()  # 128 px: blocks at 128, 64, 32, 16 / 32, 64, 128
    assert config.ja_encoder_levels() == (False, False, True, True)
    assert config.ja_decoder_levels() == (True, False, False)
    model = MatchSeg(config)
    assert [type(m).__name__ for m in model.encoder_attention] == ["Identity"] * 2 + ["JointAttention"] * 2
    assert [type(m).__name__ for m in model.decoder_attention] == ["JointAttention"] + ["Identity"] * 2
    assert MatchSegConfig(joint_attention=0).ja_encoder_levels() == (False,) * 4
    with pytest.raises(ValueError, match="multiple of 8"):
        MatchSegConfig(img_size=100)
    with pytest.raises(ValueError, match="num_classes"):
        MatchSegConfig(num_classes=1)
    with pytest.raises(ValueError, match="weights.pt: UniverSeg weights file not found"):  # a path must exist
        create_model("matchseg", pretrained="weights.pt")


def test_presets_are_registered():
    assert {"matchseg", "matchseg_wide", "universeg"} <= set(list_models())


# ----- backbone against a naive reference -------------------------------------------------------------------------
def naive_forward(model: MatchSeg, image, support_images, support_labels):
    """Spec section 8 written out: every (query, support) pair concatenated and convolved by one Conv2d, mean over
    the support axis, per-support loops, Joint Attention by explicit softmax over explicit token lists."""
    config = model.config
    masks = torch.stack([(support_labels == c) for c in range(1, config.num_classes)], 2).to(image.dtype)
    query, supports = image, [torch.cat([support_images[:, j], masks[:, j]], 1) for j in range(support_images.shape[1])]

    def block(module, query, supports):
        pairs = [module.cross.conv(torch.cat([query, s], 1)) for s in supports]
        new_query = module.query_conv(sum(pairs) / len(pairs))
        return new_query, [module.support_conv(p) for p in pairs]

    def joint(module, query, supports):
        if not isinstance(module, JointAttention):
            return query, supports
        out_query = naive_joint_attention(module, query, torch.stack(supports, 1))
        return out_query[0], list(out_query[1].unbind(1))

    skips = []
    for level, (encoder, attention) in enumerate(zip(model.encoder, model.encoder_attention)):
        query, supports = joint(attention, *block(encoder, query, supports))
        if level < len(model.encoder) - 1:
            skips.append((query, supports))
            query, supports = F.max_pool2d(query, 2), [F.max_pool2d(s, 2) for s in supports]
    for decoder, attention in zip(model.decoder, model.decoder_attention):
        skip_query, skip_supports = skips.pop()

        def up(x):
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        query = torch.cat([up(query), skip_query], 1)
        supports = [torch.cat([up(s), t], 1) for s, t in zip(supports, skip_supports)]
        query, supports = joint(attention, *block(decoder, query, supports))
    z = model.head(query)
    return torch.cat([torch.zeros_like(z[:, :1]), z], 1)


def naive_joint_attention(module: JointAttention, query, supports):
    """Spec section 4 with loops over samples, tokens and supports and an explicit softmax."""
    batch, shots, channels, height, width = supports.shape
    scale = 1 / math.sqrt(module.key_dim)

    def project(conv, x):  # [C, H, W] -> [N, D] tokens, row-major
        return conv(x.unsqueeze(0))[0].flatten(1).T

    def softmax_attend(q, k, v):
        out = []
        for token in q:
            logits = (k @ token) * scale
            weights = torch.exp(logits - logits.max())
            out.append((weights / weights.sum()) @ v)
        return torch.stack(out)

    new_query, new_supports = [], []
    for b in range(batch):
        keys = torch.cat([project(module.to_key, query[b])] + [project(module.to_key, supports[b, j])
                                                                for j in range(shots)])
        values = torch.cat([project(module.to_value, query[b])] + [project(module.to_value, supports[b, j])
                                                                    for j in range(shots)])
        out = softmax_attend(project(module.to_query, query[b]), keys, values)
        new_query.append(query[b] + module.gamma_query * out.T.reshape(channels, height, width))
        updated = []
        for j in range(shots):
            if module.gamma_support is None:
                updated.append(supports[b, j])
                continue
            out = softmax_attend(project(module.to_query, supports[b, j]), project(module.to_key, query[b]),
                                 project(module.to_value, query[b]))
            updated.append(supports[b, j] + module.gamma_support * out.T.reshape(channels, height, width))
        new_supports.append(torch.stack(updated))
    return torch.stack(new_query), torch.stack(new_supports)


@pytest.mark.parametrize("name", ["universeg", "matchseg"])
@pytest.mark.parametrize("shots", [1, 3])
def test_network_matches_naive_reference(name, shots):
    model = tiny(name).eval()
    randomise_gammas(model)
    image, images, labels = support_set(shots=shots)
    with torch.no_grad():
        out = model(image, images, labels)
        expected = naive_forward(model, image, images, labels)
    assert out.shape == (2, 2, 16, 16)
    assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_cross_conv_equals_one_convolution_of_each_concatenated_pair():
    torch.manual_seed(0)
    cross = CrossConv(3, 5, 7).double()
    query, supports = torch.randn(2, 3, 6, 6, dtype=torch.float64), torch.randn(2, 4, 5, 6, 6, dtype=torch.float64)
    out = cross(query, supports)
    assert out.shape == (2, 4, 7, 6, 6)
    for j in range(4):
        torch.testing.assert_close(out[:, j], cross.conv(torch.cat([query, supports[:, j]], 1)), rtol=0, atol=1e-12)


# ----- support sets ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["universeg", "matchseg"])
def test_output_does_not_depend_on_the_order_of_the_supports(name):
    model = tiny(name).eval()
    randomise_gammas(model)
    image, images, labels = support_set(shots=4)
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = model(image, images, labels)
        permuted = model(image, images[:, order], labels[:, order])
    torch.testing.assert_close(out, permuted, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shots", [1, 3])
def test_any_number_of_supports_and_every_trainable_parameter_gets_a_gradient(shots):
    model = tiny("matchseg", dtype=torch.float32).train()
    image, images, labels = support_set(shots=shots, dtype=torch.float32)
    out = model.forward_batch({"image": image, "support_images": images, "support_labels": labels})
    assert out.shape == (2, 2, 16, 16) and torch.isfinite(out).all()
    model.default_loss()(out, labels[:, 0]).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_joint_attention_at_the_last_block_reads_its_supports():
    """With Joint Attention after the last decoder block, that block's supports are read (trainable ConvOp) and the
    module updates only the query (no gamma_support)."""
    model = tiny("matchseg", dtype=torch.float32, ja_max_hw=16 * 16).train()
    assert model.decoder_attention[-1].gamma_support is None
    assert all(p.requires_grad for p in model.parameters())
    image, images, labels = support_set(dtype=torch.float32)
    model.default_loss()(model(image, images, labels), labels[:, 0]).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_grad_checkpointing_gives_the_same_gradients():
    model = tiny("matchseg").train()
    randomise_gammas(model)
    image, images, labels = support_set()

    def gradients():
        model.zero_grad()
        model.default_loss()(model(image, images, labels), labels[:, 0]).backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]
    plain = gradients()
    model.set_grad_checkpointing(True)
    for grad, reference in zip(gradients(), plain):
        torch.testing.assert_close(grad, reference, rtol=0, atol=1e-12)


def test_example_context_runs_a_forward_without_data():
    model = tiny("matchseg", dtype=torch.float32).eval()
    image = torch.zeros(1, 1, 16, 16)
    context = model.example_context(image, shots=2)
    assert context["support_images"].shape == (1, 2, 1, 16, 16) and context["support_labels"].shape == (1, 2, 16, 16)
    with torch.no_grad():
        assert model.forward_batch({"image": image, **context}).shape == (1, 2, 16, 16)


def test_multi_class_supports_give_one_mask_channel_per_foreground_class():
    model = tiny("matchseg", num_classes=4).eval()
    assert model.encoder[0].cross.support_channels == 1 + 3
    image, images, labels = support_set(num_classes=4)
    with torch.no_grad():
        out = model(image, images, labels)
        expected = naive_forward(model, image, images, labels)
    assert out.shape == (2, 4, 16, 16)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


# ----- Joint Attention ---------------------------------------------------------------------------------------------
def test_joint_attention_with_zero_gammas_equals_the_backbone_without_it():
    with_ja = tiny("matchseg").eval()
    without = tiny("matchseg", joint_attention=0).eval()
    assert any(isinstance(m, JointAttention) for m in with_ja.modules())
    assert not any(isinstance(m, JointAttention) for m in without.modules())
    missing, unexpected = without.load_state_dict(with_ja.state_dict(), strict=False)
    assert missing == [] and unexpected and all("attention" in key for key in unexpected)
    image, images, labels = support_set()
    with torch.no_grad():
        assert torch.equal(with_ja(image, images, labels), without(image, images, labels))
        randomise_gammas(with_ja)  # and the module does change the output once its scales are not zero
        assert (with_ja(image, images, labels) - without(image, images, labels)).abs().max() > 1e-6


@pytest.mark.parametrize("update_supports", [True, False])
def test_joint_attention_matches_naive_reference_with_gradients(update_supports):
    torch.manual_seed(0)
    module = JointAttention(6, minimum_dim=3, update_supports=update_supports).double()
    randomise_gammas(module)
    query = torch.randn(2, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    supports = torch.randn(2, 3, 6, 3, 4, dtype=torch.float64, requires_grad=True)
    out_query, out_supports = module(query, supports)
    ref_query, ref_supports = naive_joint_attention(module, query, supports)
    torch.testing.assert_close(out_query, ref_query, rtol=0, atol=1e-12)
    torch.testing.assert_close(out_supports, ref_supports, rtol=0, atol=1e-12)
    weights = torch.randn_like(out_query), torch.randn_like(out_supports)
    inputs = (query, supports, *module.parameters())

    def grads(a, b):
        return torch.autograd.grad((a * weights[0]).sum() + (b * weights[1]).sum(), inputs, allow_unused=True)
    for grad, reference in zip(grads(out_query, out_supports), grads(ref_query, ref_supports)):
        if reference is None:
            assert grad is None or not grad.any()
        else:
            torch.testing.assert_close(grad, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("channels,minimum_dim", [(8, 8), (16, 8), (4, 8)])  # C' = C, C' < C (MatchSeg), C' > C
def test_joint_attention_stores_no_attention_matrix_for_backward(channels, minimum_dim):
    """Both attentions run as fused kernels: nothing as large as one sample's N x N matrix (N = H*W), let alone
    the N x (k+1)N of the query path, is kept; also when the query/key width C' differs from the value width C (the
    fused kernels need them equal: without padding PyTorch falls back to the explicit matrix)."""
    torch.manual_seed(0)
    module = JointAttention(channels, minimum_dim=minimum_dim).train()
    assert module.key_dim == max(channels // 8, minimum_dim) == key_dim(channels, 8, minimum_dim)
    randomise_gammas(module)
    query, supports = torch.randn(2, channels, 32, 32), torch.randn(2, 3, channels, 32, 32)
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out_query, out_supports = module(query, supports)
    (out_query.sum() + out_supports.sum()).backward()
    tokens = 32 * 32
    assert sizes and max(sizes) < tokens * tokens // 4
    assert module.gamma_query.grad is not None and module.to_query.weight.grad is not None


# ----- loss ---------------------------------------------------------------------------------------------------------
def naive_loss(logits, target, num_classes, alpha=0.25, gamma=2.0, smooth=1.0):
    """Per pixel and per image with Python floats."""
    batch, _, height, width = logits.shape
    dice_terms, bce, focal, pixels = [], 0.0, 0.0, 0
    for c in range(1, num_classes):
        for b in range(batch):
            inter = prob_sum = target_sum = 0.0
            for y in range(height):
                for x in range(width):
                    z, t = float(logits[b, c, y, x]), float(target[b, y, x] == c)
                    p = 1 / (1 + math.exp(-z))
                    inter, prob_sum, target_sum = inter + p * t, prob_sum + p, target_sum + t
                    ce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
                    p_t = p * t + (1 - p) * (1 - t)
                    bce += ce
                    focal += (alpha * t + (1 - alpha) * (1 - t)) * (1 - p_t) ** gamma * ce
                    pixels += 1
            dice_terms.append((2 * inter + smooth) / (prob_sum + target_sum + smooth))
    return (1 - sum(dice_terms) / len(dice_terms)) + bce / pixels + focal / pixels


@pytest.mark.parametrize("num_classes", [2, 3])
def test_loss_matches_naive_reference(num_classes):
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, num_classes, 5, 4, generator=generator, dtype=torch.float64)
    target = torch.randint(0, num_classes, (2, 5, 4), generator=generator)
    loss = DiceBCEFocalLoss(num_classes)(logits, target)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(naive_loss(logits, target, num_classes), rel=1e-12, abs=1e-12)
    # the constant background logit plays no part
    shifted = logits.clone()
    shifted[:, 0] = 7.0
    assert DiceBCEFocalLoss(num_classes)(shifted, target).item() == pytest.approx(loss.item(), rel=1e-15)


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected logits"):
        DiceBCEFocalLoss(2)(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="target shape"):
        DiceBCEFocalLoss(2)(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 5, dtype=torch.long))


# ----- bad inputs ---------------------------------------------------------------------------------------------------
def one_clear_error(call, match: str) -> None:
    with pytest.raises(ValueError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def test_missing_supports_give_one_clear_error():
    model = tiny("matchseg")
    image, images, labels = support_set()
    one_clear_error(lambda: model.forward_batch({"image": image, "label": labels[:, 0]}),
                    "matchseg segments a query against a support set, but the batch has no support_images / "
                    "support_labels")
    one_clear_error(lambda: model.forward_batch({"image": image, "support_images": images}),
                    "the batch has no support_labels")
    one_clear_error(lambda: model(image), "called without support_images")


@pytest.mark.parametrize("case,match", [
    ("image_channels", r"expected image \[B, 1, H, W\]"),
    ("odd_size", "multiples of 4"),
    ("support_channels", "expected support_images"),
    ("support_batch", "expected support_images"),
    ("support_size", "expected support_images"),
    ("no_supports", "expected support_images"),
    ("support_4d", "expected support_images"),
    ("label_count", r"expected support_labels \[B=2, k=3"),
    ("label_channel_axis", "expected support_labels"),
    ("float_labels", "class indices"),
])
def test_bad_support_shapes_give_one_clear_error(case, match):
    model = tiny("matchseg")
    image, images, labels = support_set()
    bad = {
        "image_channels": lambda: (image.repeat(1, 3, 1, 1), images, labels),
        "odd_size": lambda: (image[..., :14], images[..., :14], labels[..., :14]),
        "support_channels": lambda: (image, images.repeat(1, 1, 3, 1, 1), labels),
        "support_batch": lambda: (image, images[:1], labels[:1]),
        "support_size": lambda: (image, images[..., :8, :8], labels[..., :8, :8]),
        "no_supports": lambda: (image, images[:, :0], labels[:, :0]),
        "support_4d": lambda: (image, images[:, :, 0], labels),
        "label_count": lambda: (image, images, labels[:, :2]),
        "label_channel_axis": lambda: (image, images, labels.unsqueeze(2)),
        "float_labels": lambda: (image, images, labels.double()),
    }[case]()
    one_clear_error(lambda: model(*bad), match)
    one_clear_error(lambda: model.forward_batch(dict(zip(("image", "support_images", "support_labels"), bad))),
                    match)
