"""Top-k support retrieval: embeddings L2-normalised, similarity = cosine, top-k per query on a torch device, in
chunks of queries.

Excluded from a query's candidates: the same index when the query list *is* the pool (``same_list=True``), the same
file path, and every pool image with the same group id (e.g. HAM10000 ``lesion_id``; ``None`` = no group). Order
(ties included): similarity descending, then pool index ascending — the tie order is defined, not left to the
device's topk. Errors, each one ValueError: ``k < 1``, an empty pool, ``k`` larger than a query's allowed pool.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .backends import EmbeddingBackend
from .cache import cached_embeddings

__all__ = ["topk_supports", "build_support_table"]


def _exclude(sim: torch.Tensor, start: int, same_list: bool, query_files, pool_files, query_groups,
             pool_groups) -> torch.Tensor:
    """Set to -inf the similarities ``sim`` [rows of queries start.., pool] of pool images that may not support
    the query: its own index (``same_list``), its own file path, its group (``None`` never matches)."""
    rows, pool_size = sim.shape
    if same_list:
        index = torch.arange(rows, device=sim.device)
        sim[index, index + start] = float("-inf")
    for query_ids, pool_ids in ((query_files, pool_files), (query_groups, pool_groups)):
        if query_ids is None or pool_ids is None:
            continue
        codes: dict[Any, int] = {}
        pool_codes = torch.tensor([-1 if g is None else codes.setdefault(g, len(codes)) for g in pool_ids],
                                  dtype=torch.long, device=sim.device)
        query_codes = torch.tensor([-2 if g is None else codes.get(g, -2) for g in query_ids[start:start + rows]],
                                   dtype=torch.long, device=sim.device)
        sim.masked_fill_(query_codes[:, None] == pool_codes[None, :], float("-inf"))
    return sim


def topk_supports(query_embeddings: np.ndarray | torch.Tensor, pool_embeddings: np.ndarray | torch.Tensor, k: int,
                  *, same_list: bool = False, query_files: Sequence[str] | None = None,
                  pool_files: Sequence[str] | None = None, query_groups: Sequence[Any] | None = None,
                  pool_groups: Sequence[Any] | None = None, device: str | torch.device = "cpu",
                  chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k pool images per query by cosine similarity: ``(indices [Q, k] long, similarities [Q, k] float32)``.

    Order: similarity descending, ties by pool index ascending. Excluded: the query's own index when
    ``same_list`` (query list is the pool list), any pool image with the same file path, and any pool image with
    the same group id (``None`` never matches). Returned on CPU.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"--support_size: k must be an integer >= 1, got {k!r}")
    k = int(k)
    query = torch.as_tensor(np.asarray(query_embeddings) if not torch.is_tensor(query_embeddings)
                            else query_embeddings).to(device=device, dtype=torch.float32)
    pool = torch.as_tensor(np.asarray(pool_embeddings) if not torch.is_tensor(pool_embeddings)
                           else pool_embeddings).to(device=device, dtype=torch.float32)
    if pool.ndim != 2 or pool.shape[0] == 0:
        raise ValueError(f"support pool is empty (pool embeddings shape {tuple(pool.shape)}): "
                         "the training split has no images")
    if query.ndim != 2 or query.shape[1] != pool.shape[1]:
        raise ValueError(f"query embeddings {tuple(query.shape)} do not match pool embeddings {tuple(pool.shape)}")
    num_queries, pool_size = query.shape[0], pool.shape[0]
    for name, ids, size in (("query_files", query_files, num_queries), ("pool_files", pool_files, pool_size),
                            ("query_groups", query_groups, num_queries), ("pool_groups", pool_groups, pool_size)):
        if ids is not None and len(ids) != size:
            raise ValueError(f"{name} has {len(ids)} entries for {size} embeddings")
    if same_list and num_queries != pool_size:
        raise ValueError(f"same_list=True but {num_queries} queries and {pool_size} pool images")
    if not (torch.isfinite(query).all() and torch.isfinite(pool).all()):
        raise ValueError("embeddings contain NaN or inf")
    if query_files is not None:
        query_files = [os.path.abspath(os.fspath(f)) for f in query_files]
    if pool_files is not None:
        pool_files = [os.path.abspath(os.fspath(f)) for f in pool_files]
    if k > pool_size:
        raise ValueError(f"--support_size {k} is larger than the support pool ({pool_size} training images)")
    query = torch.nn.functional.normalize(query, dim=1)
    pool = torch.nn.functional.normalize(pool, dim=1)
    all_indices, all_values = [], []
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        sim = _exclude(query[start:stop] @ pool.T, start, same_list, query_files, pool_files, query_groups,
                       pool_groups)
        # one more than k: a tie across the k-th place shows as values[:, k - 1] == values[:, k]
        values, indices = torch.topk(sim, min(k + 1, pool_size), dim=1)
        if bool(torch.isinf(values[:, k - 1]).any()):
            row = int(torch.nonzero(torch.isinf(values[:, k - 1]))[0, 0])
            allowed = int(torch.isfinite(sim[row]).sum())
            raise ValueError(f"--support_size {k} is larger than the support pool of query {start + row} "
                             f"({allowed} of {pool_size} training images left after excluding the query itself "
                             "and its group)")
        crossing = values[:, k - 1] == values[:, k] if values.shape[1] > k else None
        values, indices = values[:, :k], indices[:, :k]
        # deterministic ties: order the k picks by (value desc, index asc) ...
        indices, order = torch.sort(indices, dim=1)
        values = torch.gather(values, 1, order)
        values, order = torch.sort(values, dim=1, descending=True, stable=True)
        indices = torch.gather(indices, 1, order)
        # ... and where a tie crosses the k-th place, pick the lowest indices among the tied (full stable sort)
        if crossing is not None and bool(crossing.any()):
            rows = torch.nonzero(crossing)[:, 0]
            sorted_values, sorted_indices = torch.sort(sim[rows], dim=1, descending=True, stable=True)
            values[rows], indices[rows] = sorted_values[:, :k], sorted_indices[:, :k]
        all_indices.append(indices.cpu())
        all_values.append(values.cpu())
    if not all_indices:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)
    return torch.cat(all_indices), torch.cat(all_values)


def build_support_table(query_files: Sequence[str], pool_files: Sequence[str], backend: EmbeddingBackend,
                        load_image: Callable[[str], np.ndarray], k: int, cache_dir: str | os.PathLike, *,
                        query_groups: Sequence[Any] | None = None, pool_groups: Sequence[Any] | None = None,
                        device: str | torch.device = "cpu") -> torch.Tensor:
    """Support indices ``[len(query_files), k]`` into ``pool_files`` (the training split), embeddings cached.

    The query list is treated as the pool itself (own index excluded) when both lists are equal.
    """
    if len(pool_files) == 0:
        raise ValueError("support pool is empty: the training split has no images")
    same_list = [os.path.abspath(os.fspath(f)) for f in query_files] == \
        [os.path.abspath(os.fspath(f)) for f in pool_files]
    pool_embeddings = cached_embeddings(pool_files, backend, load_image, cache_dir)
    query_embeddings = pool_embeddings if same_list else cached_embeddings(query_files, backend, load_image,
                                                                           cache_dir)
    indices, _ = topk_supports(query_embeddings, pool_embeddings, k, same_list=same_list, query_files=query_files,
                               pool_files=pool_files, query_groups=query_groups, pool_groups=pool_groups,
                               device=device)
    return indices
