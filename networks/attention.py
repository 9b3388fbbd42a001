"""Small tensor helpers shared by the attention blocks."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C], tokens in image row-column order."""
    return feature_map.flatten(2).transpose(1, 2)


def to_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, H*W, C] -> [B, C, H, W] (inverse of `to_tokens`)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              allowed: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(query key^T) value, unscaled as in the paper, through PyTorch's fused attention.

    query [B, Nq, D], key [B, Nk, D], value [B, Nk, Dv]; `allowed` is an optional boolean mask broadcastable to
    [B, Nq, Nk] that is True where a key takes part in a query's softmax. On CUDA this runs the fused kernels and never
    stores the Nq x Nk matrix.
    """
    # Fused kernels need unit stride along features; tokens taken from a feature map are transposed views.
    query = query.contiguous()
    key = key.to(query.dtype).contiguous()
    value = value.to(query.dtype).contiguous()
    mask = None if allowed is None else allowed.unsqueeze(1)
    out = F.scaled_dot_product_attention(query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1),
                                         attn_mask=mask, scale=1.0)
    return out.squeeze(1)
