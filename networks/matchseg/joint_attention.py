"""Joint Attention between a query and its support set (MatchSeg's second contribution).

The paper gives no equations; this is the design of ``shared/matchseg_spec.md`` section 4. At one level, with the
query map u [B, C, H, W], the supports V [B, k, C, H, W], N = H*W tokens and C' = max(C // 8, 8):

* query path (joint): every query token attends, in one softmax, over the query's own tokens and every support's
  tokens: A = softmax(f_q(u) f_k([u; V])^T / sqrt(C')) of size N x (k+1)N, u' = u + gamma_q * A f_v([u; V]);
* support path: every support token attends over the query's tokens: A_i = softmax(f_q(v_i) f_k(u)^T / sqrt(C'))
  (N x N per support), v_i' = v_i + gamma_s * A_i f_v(u).

f_q, f_k (C -> C') and f_v (C -> C) are 1x1 convolutions with bias, shared by the query and the supports, so the
module works for any k and is invariant to the supports' order (the query's softmax runs over a set of keys; each
support is updated independently). gamma_q and gamma_s are learnable scalars initialised to 0: at initialisation the
module is the identity and the network is plain UniverSeg. Both attentions run through
:func:`networks.shared.attention.attention` (``F.scaled_dot_product_attention``), whose fused kernels keep no
attention matrix for backward; they need one width for queries/keys (C') and values (C), so the narrower side is
padded with zero columns (:func:`fused_attention`): without it PyTorch silently takes its explicit path.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..shared.attention import attention, to_map, to_tokens
from .blocks import fold, init_conv


def key_dim(channels: int, reduction: int = 8, minimum: int = 8) -> int:
    """C' of the query/key projections."""
    return max(channels // reduction, minimum)


def fused_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """:func:`attention` (unscaled softmax(query key^T) value) with one width for query/key and value: PyTorch's fused
    kernels (CPU flash, CUDA flash) need it and otherwise fall back to the explicit Nq x Nk matrix, kept for backward.
    The narrower side gets zero columns, which add nothing to the dot products; the value's are cut off again."""
    key_width, value_width = query.shape[-1], value.shape[-1]
    if key_width < value_width:
        query, key = F.pad(query, (0, value_width - key_width)), F.pad(key, (0, value_width - key_width))
    elif value_width < key_width:
        value = F.pad(value, (0, key_width - value_width))
    return attention(query, key, value)[..., :value_width]


class JointAttention(nn.Module):
    """(u [B, C, H, W], V [B, k, C, H, W]) -> (u', V'). ``update_supports=False``: only the query path (for a last
    block whose supports nobody reads; no gamma_s then), and V is returned unchanged."""

    def __init__(self, channels: int, reduction: int = 8, minimum_dim: int = 8, update_supports: bool = True):
        super().__init__()
        self.key_dim = key_dim(channels, reduction, minimum_dim)
        self.to_query = nn.Conv2d(channels, self.key_dim, 1)
        self.to_key = nn.Conv2d(channels, self.key_dim, 1)
        self.to_value = nn.Conv2d(channels, channels, 1)
        for conv in (self.to_query, self.to_key, self.to_value):
            init_conv(conv, "linear")
        self.gamma_query = nn.Parameter(torch.zeros(()))
        self.gamma_support = nn.Parameter(torch.zeros(())) if update_supports else None

    def forward(self, query: torch.Tensor, supports: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, shots, channels, height, width = supports.shape
        tokens = height * width
        scale = self.key_dim ** -0.5  # `attention` is unscaled: the queries carry 1 / sqrt(C')

        query_q = to_tokens(self.to_query(query)) * scale  # [B, N, C']
        query_k = to_tokens(self.to_key(query))  # [B, N, C']
        query_v = to_tokens(self.to_value(query))  # [B, N, C]
        folded = fold(supports)
        # support tokens of a sample, support after support: [B, k*N, C'] / [B, k*N, C]
        support_k = to_tokens(self.to_key(folded)).reshape(batch, shots * tokens, self.key_dim)
        support_v = to_tokens(self.to_value(folded)).reshape(batch, shots * tokens, channels)

        joint = fused_attention(query_q, torch.cat([query_k, support_k], 1), torch.cat([query_v, support_v], 1))
        query = query + self.gamma_query * to_map(joint, height, width)
        if self.gamma_support is None:
            return query, supports

        support_q = to_tokens(self.to_query(folded)).reshape(batch, shots * tokens, self.key_dim) * scale
        # each support token attends over the query's N tokens: all k supports of a sample in one call
        cross = fused_attention(support_q, query_k, query_v)  # [B, k*N, C]
        cross = to_map(cross.reshape(batch * shots, tokens, channels), height, width)
        return query, supports + self.gamma_support * cross.view(batch, shots, channels, height, width)
