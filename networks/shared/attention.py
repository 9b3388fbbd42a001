"""Small tensor helpers shared by the attention blocks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C], tokens in image row-column order."""
    return feature_map.flatten(2).transpose(1, 2)


def to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, H*W, C] -> [B, C, H, W] (inverse of `to_tokens`)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


def in_float16(tensor: torch.Tensor) -> bool:
    """Whether products with this tensor run in float16: it is float16, or autocast to float16 is on for its device
    (``--amp fp16``)."""
    if tensor.dtype == torch.float16:
        return True
    device = tensor.device.type
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16


def full_range_autocast(tensor: torch.Tensor) -> torch.autocast:
    """Autocast switched off on the tensor's device: under ``--amp fp16`` it would cast float32 logits back."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              allowed: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(query key^T) value, unscaled as in the paper, through PyTorch's fused attention.

    query [B, Nq, D], key [B, Nk, D], value [B, Nk, Dv]; `allowed` is an optional boolean mask broadcastable to
    [B, Nq, Nk] that is True where a key takes part in a query's softmax. On CUDA this runs the fused kernels and never
    stores the Nq x Nk matrix. In float16 (float16 queries, or autocast to float16) the logits and softmax are computed
    in float32 and the result is returned in float16: unscaled logits of activations of a few hundred exceed float16's
    range (65504).
    """
    if in_float16(query):
        with full_range_autocast(query):
            return attention(query.float(), key.float(), value.float(), allowed).to(torch.float16)
    # Fused kernels need unit stride along features; tokens taken from a feature map are transposed views.
    query = query.contiguous()
    key = key.to(query.dtype).contiguous()
    value = value.to(query.dtype).contiguous()
    mask = None if allowed is None else allowed.unsqueeze(1)
    out = F.scaled_dot_product_attention(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1),
                                         attn_mask=mask, scale=1.0)
    return out.squeeze(1)


def cluster_one_hot(assignment: torch.Tensor, num_k: int, dtype: torch.dtype) -> torch.Tensor:
    """[T] cluster indices -> [T, num_k] one-hot. A broadcast compare: F.one_hot and bincount wait for the GPU (they
    check the index range on the host), and this runs in every training step."""
    return (assignment[:, None] == torch.arange(num_k, device=assignment.device)).to(dtype)


# Largest number of queries attended together in `clustered_attention`; smaller when clusters are small.
MAX_CLUSTER_TILE = 64


def clustered_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        assignment: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Each query's softmax attention (unscaled) over the keys of its own cluster only.

    query [B, N, D]; key [num_clusters * M, D] and value [num_clusters * M, Dv], shared by the batch, cluster c owning
    rows c*M..(c+1)*M; assignment [B, N] the cluster of each query. Returns [B, N, Dv].

    Equal to attention over all num_clusters * M keys under a cluster mask, with 1 / num_clusters of its products:
    the queries are sorted by cluster into tiles, each cluster's run padded to whole tiles, and every tile attends to
    its cluster's M keys. Shapes depend only on the input's (the padded length is bounded by
    B*N + num_clusters * (tile - 1)), so there is no host synchronisation; every index map is a permutation, so
    gradients are deterministic. Float16 is attended in float32 (see :func:`attention`).
    """
    if in_float16(query):
        with full_range_autocast(query):
            return clustered_attention(query.float(), key.float(), value.float(), assignment,
                                       num_clusters).to(torch.float16)
    batch, tokens, dim = query.shape
    device = query.device
    cluster_rows = key.shape[0] // num_clusters
    total = batch * tokens
    tile = min(MAX_CLUSTER_TILE, 1 << max(0, math.ceil(total / num_clusters) - 1).bit_length())
    num_tiles = (total + num_clusters * (tile - 1)) // tile + 1
    slots = num_tiles * tile

    cluster = assignment.reshape(total)
    counts = cluster_one_hot(cluster, num_clusters, torch.long).sum(0)
    padded = (counts + tile - 1) // tile * tile
    run_start = padded.cumsum(0) - padded  # first slot of each cluster's padded run
    order = cluster.argsort(stable=True)  # queries grouped by cluster, in token order within a cluster
    sorted_cluster = cluster[order]
    rank = torch.arange(total, device=device) - (counts.cumsum(0) - counts)[sorted_cluster]
    slot = run_start[sorted_cluster] + rank  # slot of the order[i]-th query
    # slot -> query (the extra index `total` is a zero row for padding), and query -> slot
    source = torch.full((slots,), total, device=device).index_put((slot,), order)
    target = torch.empty_like(slot).index_put((order,), slot)

    queries = torch.cat([query.reshape(total, dim), query.new_zeros(1, dim)])[source]
    tile_cluster = (torch.arange(num_tiles, device=device)[:, None] * tile >= run_start + padded).sum(1)
    # each tile's key block by a one-hot product (a gather's backward would scatter-add into shared rows)
    pick = cluster_one_hot(tile_cluster.clamp(max=num_clusters - 1), num_clusters, key.dtype)
    keys = (pick @ key.reshape(num_clusters, -1)).view(num_tiles, 1, cluster_rows, dim)
    values = (pick @ value.reshape(num_clusters, -1)).view(num_tiles, 1, cluster_rows, -1)
    out = F.scaled_dot_product_attention(queries.view(num_tiles, 1, tile, dim).contiguous(),
                                         keys.to(query.dtype), values.to(query.dtype), scale=1.0)
    return out.reshape(slots, -1)[target].view(batch, tokens, -1)
