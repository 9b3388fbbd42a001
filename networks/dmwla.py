"""DMW-LA: Dynamic Memory Weights-Loss Attention with its prototype memory bank.

The bank (`pool`, feature_dim x num_k*pool_size) holds `pool_size` columns per cluster; `prototypes` holds one
vector per cluster. Life cycle of one layer:

1. warm-up (the first `warmup_iters` training forwards): plain non-local attention; sampled phi features fill the
   bank; after the last warm-up forward, k-means (faiss) sorts the bank into `num_k` clusters of `pool_size` columns.
2. memory phase: each token goes to the prototype of highest cosine similarity and attends to that cluster's columns
   (intra-cluster term), plus ordinary global attention; output = out(intra + global) + x.
3. W-LD, after each training forward of the memory phase: per cluster, the K least-used columns are mixed with the K
   most salient tokens assigned to the cluster (tokens of the frozen momentum copy `phi_ema`); the prototypes become
   the cluster means; phi_ema follows phi with momentum. K is set from outside (see `networks.wld`).

Evaluation mode never changes a buffer. Everything here is vectorised over clusters: no per-cluster Python loop and no
host synchronisation in forward or update (K and the warm-up counter are mirrored as Python ints).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention, to_map, to_tokens
from .config import EMA_MOMENTUM, POOL_MOMENTUM, POOL_SIZE, WARMUP_ITERS

# k-means settings of the release (faiss.Clustering): iterations, restarts, subsampling cap
KMEANS_ITERATIONS = 100
KMEANS_RESTARTS = 10
KMEANS_MAX_POINTS_PER_CENTROID = 1000


def structure_pool(pool: torch.Tensor, num_k: int, pool_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means the bank's columns into `num_k` clusters of exactly `pool_size` columns.

    Returns (new pool [D, num_k*pool_size] whose c-th block holds cluster c, prototypes [D, num_k] = L2-normalised
    centroids, as released). A cluster's block takes its members nearest-first; a cluster with fewer members repeats
    them cyclically, one with more keeps the nearest `pool_size`, an empty one takes the columns nearest its centroid
    (the release fills by index order, repeats at random and fails on an empty cluster).
    """
    import faiss  # imported here: only needed once per layer, at the end of warm-up

    columns = np.ascontiguousarray(pool.detach().T.float().cpu().numpy())
    kmeans = faiss.Kmeans(columns.shape[1], num_k, niter=KMEANS_ITERATIONS, nredo=KMEANS_RESTARTS, seed=seed,
                          max_points_per_centroid=KMEANS_MAX_POINTS_PER_CENTROID, min_points_per_centroid=1,
                          verbose=False)
    kmeans.train(columns)
    centroids = kmeans.centroids.astype(np.float64)
    distance = ((columns.astype(np.float64)[:, None, :] - centroids[None]) ** 2).sum(-1)  # [columns, num_k]
    nearest = distance.argmin(1)
    blocks = []
    for cluster in range(num_k):
        members = np.flatnonzero(nearest == cluster)
        if members.size == 0:
            members = np.arange(len(columns))
        members = members[np.argsort(distance[members, cluster], kind="stable")]
        blocks.append(np.resize(members, pool_size))  # cyclic repeat or truncation to pool_size
    index = torch.from_numpy(np.concatenate(blocks)).to(pool.device)
    prototypes = F.normalize(torch.from_numpy(centroids).to(pool), dim=1).T.contiguous()
    return pool[:, index], prototypes


def member_salience(features: torch.Tensor, assignment: torch.Tensor, num_k: int) -> torch.Tensor:
    """Per token: sum over feature dimensions of the softmax over the tokens of its own cluster.

    features [T, D], assignment [T] -> [T]. Cluster sums use a one-hot matmul (deterministic on every device).
    """
    dim = features.shape[1]
    index = assignment[:, None].expand(-1, dim)
    peak = features.new_full((num_k, dim), float("-inf")).scatter_reduce(0, index, features, "amax")
    shifted = torch.exp(features - peak[assignment])
    one_hot = F.one_hot(assignment, num_k).to(features.dtype)
    totals = one_hot.T @ shifted  # [num_k, D]
    return (shifted / totals[assignment]).sum(-1)


class DMWLA(nn.Module):
    """Dynamic Memory Weights-Loss Attention. Output has the input's shape."""

    def __init__(self, in_channels: int, num_k: int, feature_dim: int, pool_size: int = POOL_SIZE,
                 warmup_iters: int = WARMUP_ITERS, pool_momentum: float = POOL_MOMENTUM,
                 ema_momentum: float = EMA_MOMENTUM):
        super().__init__()
        if num_k < 1 or pool_size < 1 or warmup_iters < 0:
            raise ValueError(f"DMWLA needs num_k >= 1, pool_size >= 1, warmup_iters >= 0; "
                             f"got {num_k}, {pool_size}, {warmup_iters}")
        self.in_channels, self.num_k, self.feature_dim = in_channels, num_k, feature_dim
        self.pool_size, self.warmup_iters = pool_size, warmup_iters
        self.pool_momentum, self.ema_momentum = pool_momentum, ema_momentum

        self.theta = nn.Conv2d(in_channels, feature_dim, 1, bias=False)
        self.phi = nn.Conv2d(in_channels, feature_dim, 1, bias=False)
        self.phi_ema = nn.Conv2d(in_channels, feature_dim, 1, bias=False)
        self.g = nn.Conv2d(in_channels, feature_dim, 1, bias=False)
        self.out = nn.Conv2d(feature_dim, in_channels, 1, bias=False)
        self.phi_ema.load_state_dict(self.phi.state_dict())
        self.phi_ema.requires_grad_(False)

        self.register_buffer("pool", torch.rand(feature_dim, num_k * pool_size))
        self.register_buffer("prototypes", torch.rand(feature_dim, num_k))
        self.register_buffer("warmup_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("k", torch.tensor(pool_size // 2, dtype=torch.long))
        self.register_buffer("column_cluster", torch.arange(num_k).repeat_interleave(pool_size), persistent=False)
        # Python mirrors of the two integer buffers, so that forward never reads a device value back
        self._warmup_step = 0
        self._k = pool_size // 2

    # ----- state ------------------------------------------------------------------------------------------------
    @property
    def in_warmup(self) -> bool:
        return self._warmup_step < self.warmup_iters

    def set_k(self, k: int) -> None:
        """Number of columns per cluster that the next W-LD update replaces."""
        k = int(k)
        if not 1 <= k <= self.pool_size:
            raise ValueError(f"K must lie in [1, {self.pool_size}], got {k}")
        self._k = k
        self.k.fill_(k)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._warmup_step = int(self.warmup_step)
        self._k = int(self.k)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_k={self.num_k}, feature_dim={self.feature_dim}, "
                f"pool_size={self.pool_size}, warmup_iters={self.warmup_iters}")

    # ----- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        theta, phi, g = to_tokens(self.theta(x)), to_tokens(self.phi(x)), to_tokens(self.g(x))
        context = attention(theta, phi, g)  # global term
        if self.in_warmup:
            if self.training:
                self._sample_into_pool(phi.detach())
                self._advance_warmup()
            return x + self.out(to_map(context, height, width))

        context = context + self.intra_cluster_attention(theta, self.assign_clusters(theta))
        out = x + self.out(to_map(context, height, width))
        if self.training:
            self.update_memory(x)
        return out

    @torch.no_grad()
    def assign_clusters(self, theta: torch.Tensor) -> torch.Tensor:
        """Cluster of each token [B, N]: the prototype of highest cosine similarity."""
        cosine = F.normalize(theta, dim=-1) @ F.normalize(self.prototypes.to(theta.dtype), dim=0)
        return cosine.argmax(-1)

    def intra_cluster_attention(self, theta: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
        """Each token's softmax over its cluster's columns, times those columns: [B, N, D]."""
        # a snapshot: the W-LD update after this forward writes the bank in place, autograd needs the values used here
        columns = self.pool.T.clone().expand(theta.shape[0], -1, -1)
        allowed = assignment.unsqueeze(-1) == self.column_cluster  # [B, N, num_k*pool_size]
        return attention(theta, columns, columns, allowed)

    # ----- warm-up ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _sample_into_pool(self, phi: torch.Tensor) -> None:
        """Write a growing share of randomly sampled phi tokens into random columns (as released)."""
        batch, tokens, _ = phi.shape
        total = self.pool.shape[1]
        per_image = max(total // batch, 1)
        positions = torch.randint(tokens, (batch, per_image, 1), device=phi.device).expand(-1, -1, phi.shape[2])
        candidates = phi.gather(1, positions).reshape(-1, phi.shape[2])
        share = 0.5 * (self._warmup_step + 1) / self.warmup_iters
        count = min(max(1, int(share * candidates.shape[0])), total)
        picks = torch.randint(candidates.shape[0], (count,), device=phi.device)
        slots = torch.randperm(total, device=phi.device)[:count]
        self.pool[:, slots] = candidates[picks].T.to(self.pool.dtype)

    @torch.no_grad()
    def _advance_warmup(self) -> None:
        self._warmup_step += 1
        self.warmup_step.fill_(self._warmup_step)
        if self._warmup_step == self.warmup_iters:
            self.finish_warmup()

    @torch.no_grad()
    def finish_warmup(self, seed: int = 0) -> None:
        """Structure the bank with k-means; called after the last warm-up forward."""
        pool, prototypes = structure_pool(self.pool, self.num_k, self.pool_size, seed=seed)
        self.pool.copy_(pool)
        self.prototypes.copy_(prototypes)

    # ----- W-LD memory update -----------------------------------------------------------------------------------
    @torch.no_grad()
    def update_memory(self, x: torch.Tensor) -> None:
        """W-LD update from the momentum tokens of `x`, then prototypes and phi_ema follow."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            features = to_tokens(self.phi_ema(x.to(self.pool.dtype))).reshape(-1, self.feature_dim)
            assignment = (features @ self.prototypes).argmax(-1)
            self._replace_columns(features, assignment)
            self.prototypes.copy_(self.pool.view(self.feature_dim, self.num_k, self.pool_size).mean(-1))
            self.phi_ema.weight.mul_(self.ema_momentum).add_(self.phi.weight.detach(), alpha=1 - self.ema_momentum)

    def _replace_columns(self, features: torch.Tensor, assignment: torch.Tensor) -> None:
        num_k, pool_size, k = self.num_k, self.pool_size, self._k
        device = features.device
        # least-used columns: smallest sum over features of the softmax across the cluster's columns
        usage = self.pool.view(self.feature_dim, num_k, pool_size).softmax(-1).sum(0)  # [num_k, pool_size]
        stale = usage.argsort(dim=-1, stable=True)[:, :k]
        columns = (torch.arange(num_k, device=device)[:, None] * pool_size + stale).flatten()

        # most salient members: tokens grouped by cluster, by salience descending; fewer than k repeat cyclically
        salience = member_salience(features, assignment, num_k)
        order = salience.argsort(descending=True, stable=True)
        order = order[assignment[order].argsort(stable=True)]
        counts = torch.bincount(assignment, minlength=num_k)
        starts = counts.cumsum(0) - counts
        rank = torch.arange(k, device=device)
        positions = (starts[:, None] + rank % counts.clamp(min=1)[:, None]).clamp(max=len(order) - 1)
        chosen = features[order[positions]].permute(2, 0, 1).reshape(self.feature_dim, -1)  # [D, num_k*k]

        old = self.pool[:, columns]
        mixed = (1 - self.pool_momentum) * old + self.pool_momentum * chosen
        has_members = (counts > 0).repeat_interleave(k)
        self.pool[:, columns] = torch.where(has_members, mixed, old)
