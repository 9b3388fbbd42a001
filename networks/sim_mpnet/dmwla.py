"""DMW-LA: Dynamic Memory Weights-Loss Attention with its prototype memory bank.

The bank (`pool`, feature_dim x num_k*pool_size) holds `pool_size` columns per cluster; `prototypes` holds one
vector per cluster. Life cycle of one layer:

1. warm-up (the first `warmup_iters` training forwards): plain non-local attention; sampled phi features fill the
   bank; after the last warm-up forward, k-means sorts the bank into `num_k` clusters of `pool_size` columns.
2. memory phase: each token goes to the prototype of highest cosine similarity and attends to that cluster's columns
   (intra-cluster term), plus ordinary global attention; output = out(intra + global) + x.
3. W-LD, after each training forward of the memory phase: per cluster, the K least-used columns are mixed with the K
   most salient tokens assigned to the cluster (tokens of the frozen momentum copy `phi_ema`); the prototypes become
   the cluster means; phi_ema follows phi with momentum. K is set from outside (see `networks.wld`).

Channel space: theta_i . phi_j = x_i^T (W_theta^T W_phi) x_j, theta_i . p = x_i^T (W_theta^T p) and
out(sum a_j g_j) = sum a_j (W_out W_g x_j). So when in_channels < feature_dim (encoder 2's first stages, the decoder's
last) both attention terms run on in_channels-wide tokens with merged 1x1 weights: the same function and gradients
with in_channels / feature_dim of the attention's products. Otherwise they run on theta, phi and g as written.

Evaluation mode never changes a buffer. Everything here is vectorised over clusters: no per-cluster Python loop and no
host synchronisation in forward or update (K and the warm-up counter are mirrored as Python ints).

Data-parallel training (an initialised torch.distributed group, every rank with the same local batch size): the
memory stays bit-identical on all ranks without buffer broadcasts, and equals that of one process fed the ranks'
batches concatenated in rank order. Warm-up draws its random numbers from a generator seeded by (sampling_seed,
step) and samples from the gathered candidates of all ranks; k-means runs on rank 0 and is broadcast; W-LD ranks
the tokens of all ranks (cluster softmax statistics are all-reduced, each rank's K best members are gathered).

``fidelity="release"`` computes what the authors' release computes (`DMWLA.fidelity`):

* warm-up lasts ``warmup_iters + 1`` training forwards (the release's condition is ``counter <= total``): k-means
  structures the bank after forward ``warmup_iters`` and the extra forward then overwrites about half of the columns
  at random slots; the share of sampled columns is computed in float32, as on the release's CUDA counter;
* k-means is scikit-learn's ``KMeans(num_k, random_state=0)`` (k-means++ initialisation) on the bank in its own
  dtype; the prototypes are the centroids converted to float32 and L2-normalised; a cluster keeps its first
  ``pool_size`` members by column index, and one with fewer is filled by a random permutation of its members
  repeated ``pool_size // count + 1`` times;
* W-LD: the K least-used columns are picked with ``topk`` as in the release (columns repeated by k-means tie, and
  ``topk`` orders ties its own way on each device); a cluster with fewer tokens than K draws K of its tokens
  repeated ``K // count + 1`` times in random order, and ranks that multiset by the softmax over the multiset.

Its random draws are the release's calls (``randint`` / ``randperm`` of the same sizes, in the same order), taken from
a CPU generator seeded by (``sampling_seed``, training forward) - the same on every rank; in release mode
``warmup_step`` counts every training forward. k-means through scikit-learn synchronises with the host.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..shared import collectives
from ..shared.attention import (
    attention, cluster_one_hot, clustered_attention, full_range_autocast, in_float16, to_map, to_tokens,
)
from .config import FIDELITY_MODES, SimMPNetConfig

# k-means settings of the release (faiss.Clustering): Lloyd iterations, restarts (the lowest inertia wins)
KMEANS_ITERATIONS = 100
KMEANS_RESTARTS = 10
SAMPLING_SEED_RANGE = 2 ** 31


def squared_distances(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[N, K] squared Euclidean distances."""
    return ((points[:, None, :] - centroids[None]) ** 2).sum(-1)


def kmeans(points: torch.Tensor, num_k: int, iterations: int = KMEANS_ITERATIONS, restarts: int = KMEANS_RESTARTS,
           seed: int = 0) -> torch.Tensor:
    """Lloyd's k-means with random distinct points as initial centroids, best of ``restarts``: [num_k, D].

    Written in torch (float64 here) rather than faiss (float32, thread-count dependent sums), so that banks equal up to
    rounding - on two GPUs, or one process against several - are clustered alike. An empty cluster keeps its centroid.
    """
    generator = torch.Generator(device=points.device).manual_seed(seed)
    best, best_inertia = None, float("inf")
    for _ in range(restarts):
        start = torch.randperm(len(points), generator=generator, device=points.device)
        centroids = points[start[torch.arange(num_k, device=points.device) % len(points)]]
        for _ in range(iterations):
            nearest = squared_distances(points, centroids).argmin(1)
            counts = torch.bincount(nearest, minlength=num_k)
            sums = torch.zeros_like(centroids).index_add_(0, nearest, points)
            updated = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
            converged = torch.equal(updated, centroids)
            centroids = updated
            if converged:
                break
        inertia = float(squared_distances(points, centroids).min(1).values.sum())
        if inertia < best_inertia:
            best, best_inertia = centroids, inertia
    return best


def structure_pool(pool: torch.Tensor, num_k: int, pool_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """k-means the bank's columns into `num_k` clusters of exactly `pool_size` columns.

    Returns (new pool [D, num_k*pool_size] whose c-th block holds cluster c, prototypes [D, num_k] = L2-normalised
    centroids, as released). Clusters are numbered by their lowest member column, so that restarts finding the same
    partition in another order give the same bank. A cluster's block takes its members in column order (as released);
    a cluster with fewer members repeats them cyclically (the release: at random), one with more keeps the nearest
    `pool_size`, an empty one takes the columns nearest its centroid (the release fails on an empty cluster).
    """
    columns = pool.detach().T.double()
    centroids = kmeans(columns, num_k, seed=seed)
    nearest = squared_distances(columns, centroids).argmin(1)
    index = torch.arange(len(columns), device=columns.device)
    first_member = torch.full((num_k,), len(columns), device=columns.device).scatter_reduce(0, nearest, index, "amin")
    order = (first_member * num_k + torch.arange(num_k, device=columns.device)).argsort()
    centroids = centroids[order]
    distance = squared_distances(columns, centroids)
    nearest = order.argsort()[nearest]
    blocks = []
    for cluster in range(num_k):
        members = torch.nonzero(nearest == cluster).flatten()
        if members.numel() == 0:
            members = index
        if members.numel() > pool_size:  # keep the nearest, then back to column order (robust to distance ties)
            members = members[distance[members, cluster].argsort(stable=True)[:pool_size]].sort().values
        blocks.append(members[torch.arange(pool_size, device=columns.device) % members.numel()])
    prototypes = F.normalize(centroids.to(pool.dtype), dim=1).T.contiguous()
    return pool[:, torch.cat(blocks)], prototypes


class RandomDraws:
    """The random draws of one training forward of a release-mode layer: the release's ``torch.randint`` /
    ``torch.randperm`` calls, from a CPU generator seeded by (seed, step), so that every rank draws the same."""

    def __init__(self, seed: int, step: int):
        state = np.random.SeedSequence([seed, step]).generate_state(1)[0]
        self.generator = torch.Generator().manual_seed(int(state))

    def randint(self, high: int, size: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(high, size, generator=self.generator)

    def randperm(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator)


def release_sample_count(step: int, warmup_iters: int, columns: int) -> int:
    """Columns the release writes at warm-up forward ``step`` (0-based) from ``columns`` candidates.

    The release computes ``(counter + 1) / total * 0.5`` on its float32 counter, a CUDA tensor (where division by a
    Python number multiplies by the number's float32 reciprocal), times the candidates in float32, truncated.
    """
    f32 = np.float32
    share = f32(step + 1) * (f32(1) / f32(warmup_iters)) * f32(0.5)
    return max(1, int(share * f32(columns)))


def release_structure_pool(pool: torch.Tensor, num_k: int, pool_size: int,
                           draws: RandomDraws) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's k-means of the bank: scikit-learn ``KMeans(num_k, random_state=0)`` on the columns in the bank's
    dtype. Returns (new pool, prototypes [D, num_k] = the centroids in float32, L2-normalised).

    A cluster's block takes its first ``pool_size`` members by column index; one with fewer takes
    ``pool_size`` entries of a random permutation of its members repeated ``pool_size // count + 1`` times (one
    ``randperm`` per such cluster, in cluster order). An empty cluster (the release fails on one) takes the columns
    nearest its centroid, as in paper mode.
    """
    try:
        from sklearn.cluster import KMeans
    except ImportError as exc:  # pragma: no cover - requirements.txt pins it
        raise ImportError("--fidelity release clusters the memory bank with scikit-learn's KMeans, as the release "
                          "does: install scikit-learn (pinned in requirements.txt)") from exc
    columns = np.ascontiguousarray(pool.detach().T.cpu().numpy())
    fitted = KMeans(n_clusters=num_k, random_state=0).fit(columns)
    labels = torch.from_numpy(fitted.labels_.astype(np.int64))
    centroids = torch.from_numpy(fitted.cluster_centers_)
    index = torch.arange(len(labels))
    blocks = []
    for cluster in range(num_k):
        members = index[labels == cluster][:pool_size]
        if members.numel() == 0:
            distance = squared_distances(torch.from_numpy(columns).double(), centroids[cluster:cluster + 1].double())
            members = distance[:, 0].argsort(stable=True)[:pool_size].sort().values
        if members.numel() < pool_size:
            repeated = members.repeat(pool_size // members.numel() + 1)
            members = repeated[draws.randperm(repeated.numel())][:pool_size]
        blocks.append(members)
    prototypes = F.normalize(centroids.float(), dim=1).T.contiguous()  # the release: torch.Tensor(centroids)
    return pool[:, torch.cat(blocks).to(pool.device)], prototypes.to(pool.device, pool.dtype)


def matrix(conv: nn.Conv2d) -> torch.Tensor:
    """Weight of a 1x1 convolution as a [out_channels, in_channels] matrix."""
    return conv.weight.flatten(1)


def member_salience(features: torch.Tensor, assignment: torch.Tensor, num_k: int) -> torch.Tensor:
    """Per token: sum over feature dimensions of the softmax over the tokens of its own cluster.

    features [T, D], assignment [T] -> [T]. The softmax runs over the cluster's tokens on all ranks (its maximum and
    normaliser are all-reduced). Cluster sums use a one-hot matmul (deterministic on every device).
    """
    dim = features.shape[1]
    index = assignment[:, None].expand(-1, dim)
    peak = features.new_full((num_k, dim), float("-inf")).scatter_reduce(0, index, features, "amax")
    peak = collectives.all_reduce(peak, "max")
    shifted = torch.exp(features - peak[assignment])
    one_hot = cluster_one_hot(assignment, num_k, features.dtype)
    totals = collectives.all_reduce(one_hot.T @ shifted)  # [num_k, D]
    return (shifted / totals[assignment]).sum(-1)


class DMWLA(nn.Module):
    """Dynamic Memory Weights-Loss Attention. Output has the input's shape."""

    def __init__(self, in_channels: int, num_k: int, feature_dim: int, pool_size: int = SimMPNetConfig.pool_size,
                 warmup_iters: int = SimMPNetConfig.warmup_iters, pool_momentum: float = SimMPNetConfig.pool_momentum,
                 ema_momentum: float = SimMPNetConfig.ema_momentum, fidelity: str = SimMPNetConfig.fidelity):
        super().__init__()
        if num_k < 1 or pool_size < 1 or warmup_iters < 0:
            raise ValueError(f"DMWLA needs num_k >= 1, pool_size >= 1, warmup_iters >= 0; "
                             f"got {num_k}, {pool_size}, {warmup_iters}")
        if fidelity not in FIDELITY_MODES:
            raise ValueError(f"fidelity must be one of {', '.join(FIDELITY_MODES)}, got {fidelity!r}")
        if fidelity == "release" and warmup_iters < 1:
            raise ValueError("--fidelity release needs warmup_iters >= 1 (the release divides by it)")
        self.fidelity = fidelity
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
        # seeds the warm-up sampling together with the step: drawn from the global RNG at construction, so it follows
        # the run's seed, is saved with the model and is the same on every rank
        self.register_buffer("sampling_seed", torch.randint(SAMPLING_SEED_RANGE, ()))
        # Python mirrors of the two integer buffers, so that forward never reads a device value back
        self.read_counters()

    # ----- state ------------------------------------------------------------------------------------------------
    @property
    def in_warmup(self) -> bool:
        if self.fidelity == "release":  # the release's `counter <= total`: one extra warm-up forward
            return self._warmup_step <= self.warmup_iters
        return self._warmup_step < self.warmup_iters

    def set_k(self, k: int) -> None:
        """Number of columns per cluster that the next W-LD update replaces."""
        k = int(k)
        if not 1 <= k <= self.pool_size:
            raise ValueError(f"K must lie in [1, {self.pool_size}], got {k}")
        self._k = k
        self.k.fill_(k)

    def read_counters(self) -> None:
        """Refresh the Python mirrors from the integer buffers (after they were loaded or broadcast)."""
        self._warmup_step = int(self.warmup_step)
        self._k = int(self.k)
        self._sampling_seed = int(self.sampling_seed)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.read_counters()

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_k={self.num_k}, feature_dim={self.feature_dim}, "
                f"pool_size={self.pool_size}, warmup_iters={self.warmup_iters}, fidelity={self.fidelity}")

    # ----- forward ----------------------------------------------------------------------------------------------
    @property
    def factored(self) -> bool:
        """Whether attention runs in the input's channel space (see the module docstring)."""
        return self.in_channels < self.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        query, key, value = self._query(x), *self._key_value(x)
        context = attention(query, key, value)  # global term
        release = self.fidelity == "release"
        if self.in_warmup:
            if self.training:
                draws = self._release_draws() if release else None
                if release:
                    self._release_sample_into_pool(x, draws)
                else:
                    self._sample_into_pool(x)
                self._advance_warmup(draws)
            return x + self._project_out(context, height, width)

        context = context + self.intra_cluster_attention(query, self._nearest_prototype(query))
        out = x + self._project_out(context, height, width)
        if self.training:
            if release:
                self.update_memory(x, self._release_draws())
                self._count_forward()
            else:
                self.update_memory(x)
        return out

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        """Query tokens [B, N, E] (E = in_channels when factored, else feature_dim)."""
        return to_tokens(x) if self.factored else to_tokens(self.theta(x))

    def _key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Key and value tokens of the global term: phi and g, or their images under W_theta^T and W_out."""
        if not self.factored:
            return to_tokens(self.phi(x)), to_tokens(self.g(x))
        tokens = to_tokens(x)
        theta, phi, g, out = (matrix(conv) for conv in (self.theta, self.phi, self.g, self.out))
        return tokens @ (phi.T @ theta), tokens @ (g.T @ out.T)

    def _memory_key_value(self, columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of feature_dim-wide memory vectors `columns` [..., D] in the query's space."""
        if not self.factored:
            return columns, columns
        return columns @ matrix(self.theta), columns @ matrix(self.out).T

    def _project_out(self, context: torch.Tensor, height: int, width: int) -> torch.Tensor:
        context = to_map(context, height, width)
        return context if self.factored else self.out(context)

    @torch.no_grad()
    def _nearest_prototype(self, query: torch.Tensor) -> torch.Tensor:
        """Cluster of each query token [B, N]: the prototype p of highest cosine similarity with theta, i.e. the
        largest theta . p / |p| (|theta| is the same for every prototype). Float32 under float16."""
        if in_float16(query):
            with full_range_autocast(query):
                return self._nearest_prototype(query.float())
        prototypes = F.normalize(self.prototypes.T.to(query.dtype), dim=-1)
        return (query @ self._memory_key_value(prototypes)[0].transpose(-1, -2)).argmax(-1)

    @torch.no_grad()
    def assign_clusters(self, x: torch.Tensor) -> torch.Tensor:
        """Memory cluster of each token of the input map x [B, C, H, W]: [B, H*W] in row-column order."""
        return self._nearest_prototype(self._query(x))

    def intra_cluster_attention(self, query: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
        """Each token's softmax over its cluster's columns, times those columns (their W_out images when factored):
        [B, N, E]."""
        # a snapshot: the W-LD update after this forward writes the bank in place, autograd needs the values used here
        key, value = self._memory_key_value(self.pool.T.clone())
        return clustered_attention(query, key, value, assignment, self.num_k)

    # ----- warm-up ----------------------------------------------------------------------------------------------
    # Warm-up sampling and k-means run eagerly under torch.compile: they seed generators and loop on data-dependent
    # conditions, and they run only during the first warmup_iters steps.
    @torch.compiler.disable
    @torch.no_grad()
    def _sample_into_pool(self, x: torch.Tensor) -> None:
        """Write a growing share of randomly sampled phi tokens of the input map x into random columns (as released).

        Under data parallelism the draws cover the global batch (this rank's images are the rank-th block of it) and
        the candidates of all ranks are gathered, so every rank writes the same columns with the same values.
        """
        phi = to_tokens(self.phi(x))
        batch, tokens, dim = phi.shape
        total = self.pool.shape[1]
        generator = torch.Generator(device=phi.device)
        seed = np.random.SeedSequence([self._sampling_seed, self._warmup_step]).generate_state(1)[0]
        generator.manual_seed(int(seed))
        global_batch = batch * collectives.world_size()
        per_image = max(total // global_batch, 1)
        positions = torch.randint(tokens, (global_batch, per_image), generator=generator, device=phi.device)
        own = positions[collectives.rank() * batch:][:batch, :, None].expand(-1, -1, dim)
        candidates = collectives.all_gather(phi.gather(1, own).to(self.pool.dtype)).reshape(-1, dim)
        share = 0.5 * (self._warmup_step + 1) / self.warmup_iters
        count = min(max(1, int(share * candidates.shape[0])), total)
        picks = torch.randint(candidates.shape[0], (count,), generator=generator, device=phi.device)
        slots = torch.randperm(total, generator=generator, device=phi.device)[:count]
        self.pool[:, slots] = candidates[picks].T

    @torch.no_grad()
    def _advance_warmup(self, draws: RandomDraws | None = None) -> None:
        self._count_forward()
        if self._warmup_step == self.warmup_iters:
            self.finish_warmup(draws=draws)

    @torch.no_grad()
    def _count_forward(self) -> None:
        self._warmup_step += 1
        self.warmup_step.fill_(self._warmup_step)

    @torch.compiler.disable
    def _release_draws(self) -> RandomDraws:
        """The random draws of this training forward (release mode)."""
        return RandomDraws(self._sampling_seed, self._warmup_step)

    @torch.compiler.disable
    @torch.no_grad()
    def _release_sample_into_pool(self, x: torch.Tensor, draws: RandomDraws) -> None:
        """The release's warm-up sampling: per image ``total // batch`` random phi tokens; of these, a share
        (step + 1) / warmup_iters / 2 (computed as the release does, `release_sample_count`) drawn with replacement
        into as many distinct random columns. Under data parallelism the draws cover the global batch."""
        phi = to_tokens(self.phi(x))
        batch, tokens, dim = phi.shape
        total = self.pool.shape[1]
        global_batch = batch * collectives.world_size()
        per_image = max(total // global_batch, 1)
        positions = draws.randint(tokens, (global_batch, 1, per_image)).to(phi.device).view(global_batch, per_image)
        own = positions[collectives.rank() * batch:][:batch, :, None].expand(-1, -1, dim)
        candidates = collectives.all_gather(phi.gather(1, own).to(self.pool.dtype)).reshape(-1, dim)
        count = min(release_sample_count(self._warmup_step, self.warmup_iters, candidates.shape[0]), total)
        picks = draws.randint(candidates.shape[0], (count,)).to(phi.device)
        slots = draws.randperm(total)[:count].to(phi.device)
        self.pool[:, slots] = candidates[picks].T

    @torch.compiler.disable
    @torch.no_grad()
    def finish_warmup(self, seed: int = 0, draws: RandomDraws | None = None) -> None:
        """Structure the bank with k-means; called after the last warm-up forward (in release mode, after forward
        ``warmup_iters``, before the extra one)."""
        if collectives.rank() == 0:  # computed once and broadcast
            if self.fidelity == "release":
                pool, prototypes = release_structure_pool(self.pool, self.num_k, self.pool_size,
                                                          draws if draws is not None else self._release_draws())
            else:
                pool, prototypes = structure_pool(self.pool, self.num_k, self.pool_size, seed=seed)
            self.pool.copy_(pool)
            self.prototypes.copy_(prototypes)
        collectives.broadcast(self.pool)
        collectives.broadcast(self.prototypes)

    # ----- W-LD memory update -----------------------------------------------------------------------------------
    @torch.no_grad()
    def update_memory(self, x: torch.Tensor, draws: RandomDraws | None = None) -> None:
        """W-LD update from the momentum tokens of `x`, then prototypes and phi_ema follow. `draws`: release mode."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            features = to_tokens(self.phi_ema(x.to(self.pool.dtype))).reshape(-1, self.feature_dim)
            assignment = (features @ self.prototypes).argmax(-1)
            self._replace_columns(features, assignment, draws)
            self.prototypes.copy_(self.pool.view(self.feature_dim, self.num_k, self.pool_size).mean(-1))
            self.phi_ema.weight.mul_(self.ema_momentum).add_(self.phi.weight.detach(), alpha=1 - self.ema_momentum)

    def _replace_columns(self, features: torch.Tensor, assignment: torch.Tensor,
                         draws: RandomDraws | None = None) -> None:
        num_k, pool_size, k, dim = self.num_k, self.pool_size, self._k, self.feature_dim
        device = features.device
        # least-used columns: smallest sum over features of the softmax across the cluster's columns
        usage = self.pool.view(dim, num_k, pool_size).softmax(-1).sum(0)  # [num_k, pool_size]
        if draws is None:
            stale = usage.argsort(dim=-1, stable=True)[:, :k]
        else:  # release mode: the release's op, so that ties (repeated columns) fall as in the release on a device
            stale = usage.topk(k, dim=-1, largest=False).indices
        columns = (torch.arange(num_k, device=device)[:, None] * pool_size + stale).flatten()

        # each rank's k most salient members per cluster (salience descending, token order on ties), with their
        # salience appended as a last feature; missing members get salience -inf
        salience = member_salience(features, assignment, num_k)
        order = salience.argsort(descending=True, stable=True)
        order = order[assignment[order].argsort(stable=True)]
        counts = cluster_one_hot(assignment, num_k, torch.long).sum(0)
        starts = counts.cumsum(0) - counts
        rank = torch.arange(k, device=device)
        present = rank < counts[:, None]  # [num_k, k]
        picked = order[(starts[:, None] + rank).clamp(max=len(order) - 1)]
        parts = [features[picked], salience[picked, None]]
        if draws is not None:  # release mode: each token's global index (its rank's block, then its own) as well
            token = collectives.rank() * len(features) + torch.arange(len(features), device=device)
            parts.insert(1, token[picked, None].to(features.dtype))
        candidates = torch.cat(parts, dim=-1)  # [num_k, k, D + 1] (+ 1 in release mode)
        candidates[..., -1].masked_fill_(~present, float("-inf"))

        # the global best k of the gathered candidates; a cluster with fewer members repeats them cyclically
        gathered = collectives.all_gather(candidates).transpose(0, 1).reshape(num_k, -1, candidates.shape[-1])
        counts = collectives.all_reduce(counts)
        best = gathered[..., -1].argsort(dim=-1, descending=True, stable=True)
        positions = best.gather(1, rank % counts.clamp(min=1)[:, None])  # [num_k, k]
        chosen = gathered[torch.arange(num_k, device=device)[:, None], positions, :dim]  # [num_k, k, D]
        if draws is not None:
            chosen = self._release_small_clusters(gathered, counts, chosen, draws)
        chosen = chosen.permute(2, 0, 1).reshape(dim, -1)

        old = self.pool[:, columns]
        mixed = (1 - self.pool_momentum) * old + self.pool_momentum * chosen
        has_members = (counts > 0).repeat_interleave(k)
        self.pool[:, columns] = torch.where(has_members, mixed, old)

    @torch.compiler.disable
    def _release_small_clusters(self, gathered: torch.Tensor, counts: torch.Tensor, chosen: torch.Tensor,
                                draws: RandomDraws) -> torch.Tensor:
        """The release's members of a cluster with 0 < count < K tokens: its tokens (in token order) repeated
        ``K // count + 1`` times, permuted at random, the first K kept; they are ranked by the softmax over that
        multiset (salience descending). ``gathered`` [num_k, R, D + 2] holds every such token (with its global index
        and salience); returns ``chosen`` [num_k, K, D] with those clusters replaced."""
        k, dim = self._k, self.feature_dim
        chosen = chosen.clone()
        for cluster, count in enumerate(counts.tolist()):
            if not 0 < count < k:
                continue
            entries = gathered[cluster]
            members = entries[entries[:, -1] > float("-inf")]  # every member of every rank (each rank has < K)
            members = members[members[:, dim].argsort(stable=True), :dim]  # in token order, as the release finds them
            repeated = members.repeat(k // count + 1, 1)
            multiset = repeated[draws.randperm(len(repeated))[:k].to(repeated.device)]  # [K, D]
            salience = multiset.softmax(0).sum(1)
            chosen[cluster] = multiset[salience.argsort(descending=True, stable=True)]
        return chosen
