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
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention, to_map, to_tokens
from .config import DSGIM_SELECTED_WINDOWS

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
    row_mean = query @ key.mean(1, keepdim=True).transpose(1, 2)  # [B, N, 1] = mean_j q_i . k_j
    distance = (row_mean - row_mean.transpose(1, 2)).abs()
    farthest = distance.argsort(dim=-1, descending=True, stable=True)[..., : tokens // 2]
    far = torch.zeros_like(distance, dtype=torch.bool).scatter_(-1, farthest, True)
    return far | torch.eye(tokens, dtype=torch.bool, device=query.device)


class BottleneckConvBlock(nn.Sequential):
    """3x3 conv-BN-ReLU to C/4 and back to C (the release's DS-GIM conv block)."""

    def __init__(self, channels: int, reduction: int = 4):
        hidden = max(channels // reduction, 1)
        super().__init__(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        )


class DSGIM(nn.Module):
    """Double-Similarity Global Internal enhancement Module; forward(x, decay) with x [B, C, H, W], H and W even."""

    def __init__(self, channels: int, selected_windows: int = DSGIM_SELECTED_WINDOWS):
        super().__init__()
        if not 1 <= selected_windows <= WINDOW_GRID * WINDOW_GRID:
            raise ValueError(f"selected_windows must lie in [1, {WINDOW_GRID ** 2}], got {selected_windows}")
        self.channels, self.selected_windows = channels, selected_windows
        self.query = nn.Conv2d(channels, channels, 1)
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.fc = nn.Linear(channels, channels)
        self.conv = BottleneckConvBlock(channels)

    def forward(self, x: torch.Tensor, decay: float) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % WINDOW_GRID or width % WINDOW_GRID:
            raise ValueError(f"DS-GIM needs an even feature map, got {height}x{width}")
        selected = selected_window_mask(x, self.selected_windows)
        one = torch.ones((), dtype=x.dtype, device=x.device)
        query = to_tokens(self.query(x * torch.where(selected, decay * one, one)))
        key = to_tokens(self.key(x * torch.where(selected, one, decay * one)))
        value = to_tokens(self.value(x))
        far = far_key_mask(query, key)
        mixed = attention(query, key, value, far) + attention(query, key, value, ~far)
        return self.conv(to_map(self.fc(mixed), height, width))
