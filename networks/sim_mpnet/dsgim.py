"""DS-GIM: Double-Similarity Global Internal enhancement Module.

1. Cosine similarity picks windows: the map is split into a 2 x 2 grid of windows; a window's score is the sum of the
   upper triangle (diagonal included) of its tokens' pairwise cosine similarities; the `selected_windows` best windows
   get the decay coefficient.
2. Query and key see the decayed input with complementary masks: the query decays the selected windows, the key decays
   the others. Value sees the plain input.
3. Euclidean distance splits the attention: with m_i the mean of query i's logits, key j is "far" from query i when
   |m_i - m_j| is among the N // 2 largest of row i (query i itself always counts as far). Two softmax branches, over
   the far and over the near keys, are added; their weights mix the values. Logits are unscaled, as released.
4. A linear layer and a bottleneck conv block (C -> C/4 -> C) produce the output.

A sample's output never depends on the rest of its batch, and any even map size and width work (the release
hard-codes 14x14x384 and gives batch element 0 a different mask). m_i = q_i . mean_j(k_j), so the split needs no
N x N matrix and both branches run as fused attention.

``fidelity="release"`` computes what the authors' release computes (any even map size and width here):

* Its window mask is an integer tensor, so the decay coefficient written into it truncates to 0: batch element 0
  gets 0 on its whole map for both query and key (uniform attention, a spatially constant output), the others a
  hard 0/1 mask (query: the input outside the selected windows; key: inside them).
* Key j is "far" from query i when |m_i - m_j| is at least the N // 2-th largest distance of row i (ties included,
  query i itself always). The second mask compares that 0/1 mask (not the distances) with the threshold: it is the
  complement of the far mask where the threshold is below 1, and all ones where it is 1 or more. Each branch
  multiplies the logits by its 0/1 mask and fills the zeros (excluded keys, and logits that are exactly 0) with -100
  before its softmax.
* At test time the release infers one slice at a time, so every slice takes the element-0 path: in evaluation mode
  every sample does here, whatever the batch, so that batched inference equals the release's batch-1 test. Training
  forwards (``self.training``) give batch element 0 the element-0 path, as the release does.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..shared.attention import attention, full_range_autocast, in_float16, to_map, to_tokens
from ..shared.layers import SharedAffineBatchNorm2d
from .config import FIDELITY_MODES, SimMPNetConfig

WINDOW_GRID = 2  # windows per side


def window_scores(x: torch.Tensor) -> torch.Tensor:
    """Self-similarity of each window of the 2x2 grid, [B, 4] in row-major window order.

    Sum over i <= j of cos(t_i, t_j) = (||sum_i u_i||^2 + sum_i ||u_i||^2) / 2 with u the unit tokens.
    """
    batch, channels, height, width = x.shape
    grid = WINDOW_GRID
    windows = x.reshape(batch, channels, grid, height // grid, grid, width // grid)
    windows = windows.permute(0, 2, 4, 3, 5, 1).reshape(batch, grid * grid, -1, channels)
    unit = F.normalize(windows, dim=-1)
    total = unit.sum(2).square().sum(-1)
    diagonal = unit.square().sum((2, 3))
    return (total + diagonal) / 2


def selected_window_mask(x: torch.Tensor, selected: int) -> torch.Tensor:
    """[B, 1, H, W] boolean map, True inside the `selected` most self-similar windows."""
    batch, _, height, width = x.shape
    best = window_scores(x).argsort(dim=-1, descending=True, stable=True)[:, :selected]
    chosen = torch.zeros(batch, WINDOW_GRID * WINDOW_GRID, dtype=torch.bool, device=x.device)
    chosen.scatter_(1, best, True)
    chosen = chosen.view(batch, 1, WINDOW_GRID, WINDOW_GRID)
    return chosen.repeat_interleave(height // WINDOW_GRID, 2).repeat_interleave(width // WINDOW_GRID, 3)


def far_key_mask(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """[B, N, N] boolean, True where key j is in the far half of query i (self included)."""
    tokens = query.shape[1]
    if in_float16(query):  # --amp fp16: the unscaled logits' means overflow float16
        with full_range_autocast(query):
            return far_key_mask(query.float(), key.float())
    row_mean = query @ key.mean(1, keepdim=True).transpose(1, 2)  # [B, N, 1] = mean_j q_i . k_j
    distance = (row_mean - row_mean.transpose(1, 2)).abs()
    farthest = distance.argsort(dim=-1, descending=True, stable=True)[..., : tokens // 2]
    far = torch.zeros_like(distance, dtype=torch.bool).scatter_(-1, farthest, True)
    return far | torch.eye(tokens, dtype=torch.bool, device=query.device)


# The release fills excluded (and exactly-zero) logits with this value before each softmax.
RELEASE_EXCLUDED_LOGIT = -100.0
# The release adds this to the diagonal of the distances so that a query always counts itself as far.
RELEASE_SELF_DISTANCE = 10000.0


def release_split_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The release's two distance-split softmax branches: [B, N, Dv] (see the module docstring).

    query, key [B, N, D], value [B, N, Dv]; materialises the N x N logits, as the release does. In float16 the logits
    and softmax run in float32.
    """
    if in_float16(query):
        with full_range_autocast(query):
            return release_split_attention(query.float(), key.float(), value.float()).to(torch.float16)
    logits = query @ key.transpose(1, 2)  # [B, N, N]
    tokens = logits.shape[-1]
    row_mean = logits.mean(-1, keepdim=True)
    distance = (row_mean - row_mean.transpose(1, 2)).abs()
    threshold = distance.topk(tokens // 2, dim=-1).values[..., -1:]  # the N // 2-th largest distance of each row
    self_far = distance + RELEASE_SELF_DISTANCE * torch.eye(tokens, dtype=distance.dtype, device=distance.device)
    far = (self_far >= threshold).to(logits.dtype)  # 0/1, ties with the threshold included
    second = (far <= threshold).to(logits.dtype)  # the 0/1 mask compared with the threshold, as released

    def branch(mask: torch.Tensor) -> torch.Tensor:
        masked = mask * logits
        return masked.masked_fill(masked == 0, RELEASE_EXCLUDED_LOGIT).softmax(-1)

    return (branch(far) + branch(second)) @ value.to(logits.dtype)


class BottleneckConvBlock(nn.Sequential):
    """3x3 conv-BN-ReLU to C/4 and back to C (the release's DS-GIM conv block); forward(x, site).

    ``sites`` > 1: the block serves that many call sites, each normalised with its own running statistics
    (:class:`SharedAffineBatchNorm2d`: same weights, so the same parameters as one block); 1: plain BatchNorm2d.
    """

    def __init__(self, channels: int, reduction: int = 4, sites: int = 1):
        hidden = max(channels // reduction, 1)

        def norm(width: int) -> nn.Module:
            return nn.BatchNorm2d(width) if sites == 1 else SharedAffineBatchNorm2d(width, sites)

        super().__init__(
            nn.Conv2d(channels, hidden, 3, padding=1), norm(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 3, padding=1), norm(channels), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, site: int = 0) -> torch.Tensor:
        for layer in self:
            x = layer(x, site) if isinstance(layer, SharedAffineBatchNorm2d) else layer(x)
        return x


class DSGIM(nn.Module):
    """Double-Similarity Global Internal enhancement Module; forward(x, decay, site) with x [B, C, H, W], H and W
    even.

    One module serves every block of its stage (shared weights, as released); ``sites`` > 1 gives each of those call
    sites (``site`` = the block's index) its own BatchNorm running statistics, since each sees another input
    distribution (docs/fidelity.md, "DS-GIM's normalisation statistics").
    """

    def __init__(self, channels: int, selected_windows: int = SimMPNetConfig.dsgim_selected_windows,
                 fidelity: str = SimMPNetConfig.fidelity, sites: int = 1):
        super().__init__()
        if not 1 <= selected_windows <= WINDOW_GRID * WINDOW_GRID:
            raise ValueError(f"selected_windows must lie in [1, {WINDOW_GRID ** 2}], got {selected_windows}")
        if fidelity not in FIDELITY_MODES:
            raise ValueError(f"fidelity must be one of {', '.join(FIDELITY_MODES)}, got {fidelity!r}")
        self.channels, self.selected_windows, self.fidelity, self.sites = channels, selected_windows, fidelity, sites
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.fc = nn.Linear(channels, channels)
        self.conv = BottleneckConvBlock(channels, sites=sites)

    def forward(self, x: torch.Tensor, decay: float, site: int = 0) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % WINDOW_GRID or width % WINDOW_GRID:
            raise ValueError(f"DS-GIM needs an even feature map, got {height}x{width}")
        selected = selected_window_mask(x, self.selected_windows)
        if self.fidelity == "release":
            return self._release_forward(x, selected, site)
        one = torch.ones((), dtype=x.dtype, device=x.device)
        query = to_tokens(self.query(x * torch.where(selected, decay * one, one)))
        key = to_tokens(self.key(x * torch.where(selected, one, decay * one)))
        value = to_tokens(self.value(x))
        far = far_key_mask(query, key)
        mixed = attention(query, key, value, far) + attention(query, key, value, ~far)
        return self.conv(to_map(self.fc(mixed), height, width), site)

    def _release_forward(self, x: torch.Tensor, selected: torch.Tensor, site: int) -> torch.Tensor:
        """The release's forward: the decay truncated to 0 (see the module docstring)."""
        height, width = x.shape[-2:]
        query_keep, key_keep = ~selected, selected  # [B, 1, H, W]
        # batch element 0 (training) or every sample (evaluation: the release tests one slice at a time): all zero
        zeroed = torch.ones(x.shape[0], 1, 1, 1, dtype=torch.bool, device=x.device)
        if self.training:
            zeroed = torch.arange(x.shape[0], device=x.device).view(-1, 1, 1, 1) == 0
        query = to_tokens(self.query(x * (query_keep & ~zeroed).to(x.dtype)))
        key = to_tokens(self.key(x * (key_keep & ~zeroed).to(x.dtype)))
        value = to_tokens(self.value(x))
        mixed = release_split_attention(query, key, value)
        return self.conv(to_map(self.fc(mixed), height, width), site)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, selected_windows={self.selected_windows}, fidelity={self.fidelity}, "
                f"sites={self.sites}")
