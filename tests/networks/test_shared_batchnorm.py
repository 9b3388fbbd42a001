"""SharedAffineBatchNorm2d (one affine transform, running statistics per call site) against plain BatchNorm2d layers,
one per site, and the loading of a single BatchNorm2d's state (checkpoints written before per-site statistics)."""
from __future__ import annotations

import torch
import torch.nn as nn

from networks.shared.layers import SharedAffineBatchNorm2d

SITES = 3
CHANNELS = 4


def site_inputs() -> list[torch.Tensor]:
    """A different distribution per site (mean 3 * site, scale 1 + site)."""
    generator = torch.Generator().manual_seed(0)
    return [3.0 * site + (1.0 + site) * torch.randn(5, CHANNELS, 6, 6, generator=generator, dtype=torch.float64)
            for site in range(SITES)]


def shared_and_plain() -> tuple[SharedAffineBatchNorm2d, list[nn.BatchNorm2d]]:
    shared = SharedAffineBatchNorm2d(CHANNELS, SITES).double()
    with torch.no_grad():
        shared.weight.copy_(torch.linspace(0.5, 2.0, CHANNELS))
        shared.bias.copy_(torch.linspace(-1.0, 1.0, CHANNELS))
    plain = [nn.BatchNorm2d(CHANNELS).double() for _ in range(SITES)]
    for layer in plain:
        layer.load_state_dict({**layer.state_dict(), "weight": shared.weight.detach(), "bias": shared.bias.detach()})
    return shared, plain


def test_each_site_normalises_like_its_own_batchnorm_in_training_and_evaluation():
    shared, plain = shared_and_plain()
    for _ in range(4):  # training: each site's statistics follow only that site's batches
        for site, x in enumerate(site_inputs()):
            torch.testing.assert_close(shared(x, site), plain[site](x), rtol=0, atol=1e-12)
    for site, layer in enumerate(plain):
        torch.testing.assert_close(shared.sites[site].running_mean, layer.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(shared.sites[site].running_var, layer.running_var, rtol=0, atol=1e-12)
    shared.eval()
    for site, x in enumerate(site_inputs()):
        torch.testing.assert_close(shared(x, site), plain[site].eval()(x), rtol=0, atol=1e-12)
    means = torch.stack([site.running_mean for site in shared.sites])
    assert (means[1:] - means[:-1]).min() > 0.5  # the sites did learn different statistics


def test_parameters_are_those_of_one_batchnorm():
    shared = SharedAffineBatchNorm2d(CHANNELS, SITES)
    assert sum(p.numel() for p in shared.parameters()) == sum(p.numel() for p in nn.BatchNorm2d(CHANNELS).parameters())


def test_a_single_batchnorm_state_loads_into_every_site():
    single = nn.BatchNorm2d(CHANNELS).double()
    for x in site_inputs():
        single(x)
    wrapper = nn.Sequential(nn.Identity(), single)
    target = nn.Sequential(nn.Identity(), SharedAffineBatchNorm2d(CHANNELS, SITES).double())
    target.load_state_dict(wrapper.state_dict(), strict=True)
    shared = target[1]
    assert torch.equal(shared.weight, single.weight) and torch.equal(shared.bias, single.bias)
    for site in shared.sites:
        assert torch.equal(site.running_mean, single.running_mean) and torch.equal(site.running_var, single.running_var)
        assert int(site.num_batches_tracked) == int(single.num_batches_tracked)
    x = site_inputs()[1]
    torch.testing.assert_close(shared.eval()(x, 2), single.eval()(x), rtol=0, atol=1e-12)
