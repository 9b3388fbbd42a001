"""Naive reference implementations of DMW-LA and DS-GIM: loops over clusters, windows and rows, materialised attention.

They restate the method independently of the vectorised modules in networks/ and serve two purposes: the tests assert
that the fast modules equal them, and benchmarks/bench_model.py times them (`--impl reference`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from networks.shared.attention import to_map, to_tokens
from networks.sim_mpnet.dmwla import DMWLA
from networks.sim_mpnet.dsgim import DSGIM


def softmax_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T) v with the full matrix materialised, no scaling."""
    return torch.bmm(torch.softmax(torch.bmm(query, key.transpose(1, 2)), dim=-1), value)


class LoopDMWLA(DMWLA):
    """DMW-LA computed cluster by cluster, as the release does, with materialised attention matrices."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta, phi, g = to_tokens(self.theta(x)), to_tokens(self.phi(x)), to_tokens(self.g(x))
        context = softmax_attention(theta, phi, g)
        if self.in_warmup:
            if self.training:
                self._sample_into_pool(x)
                self._advance_warmup()
            return x + self.out(to_map(context, *x.shape[-2:]))
        batch, tokens, dim = theta.shape
        flat = theta.reshape(-1, dim)
        with torch.no_grad():
            cosine = F.cosine_similarity(flat[:, None, :], self.prototypes.T[None, :, :], dim=-1, eps=1e-12)
            assignment = cosine.argmax(1)
        intra = torch.zeros_like(flat)
        pool = self.pool.clone()
        for cluster in range(self.num_k):
            members = torch.nonzero(assignment == cluster).flatten()
            block = pool[:, cluster * self.pool_size:(cluster + 1) * self.pool_size]
            weights = torch.softmax(flat[members] @ block, dim=-1)
            intra = intra.index_put((members,), weights @ block.T)
        out = x + self.out(to_map(context + intra.reshape(batch, tokens, dim), *x.shape[-2:]))
        if self.training:
            self.update_memory(x)
        return out

    @torch.no_grad()
    def update_memory(self, x: torch.Tensor) -> None:
        features = to_tokens(self.phi_ema(x.to(self.pool.dtype))).reshape(-1, self.feature_dim)
        assignment = torch.stack([features @ self.prototypes[:, c] for c in range(self.num_k)], dim=1).argmax(1)
        size, k = self.pool_size, self._k
        for cluster in range(self.num_k):
            block = self.pool[:, cluster * size:(cluster + 1) * size]
            usage = torch.softmax(block, dim=1).sum(0)
            stale = torch.sort(usage, stable=True).indices[:k]
            members = torch.nonzero(assignment == cluster).flatten()
            if len(members) == 0:
                continue
            salience = torch.softmax(features[members], dim=0).sum(1)
            ranked = members[torch.sort(salience, descending=True, stable=True).indices]
            chosen = ranked[torch.arange(k, device=ranked.device) % len(ranked)]  # fewer than k: repeat cyclically
            columns = cluster * size + stale
            mixed = (1 - self.pool_momentum) * self.pool[:, columns] + self.pool_momentum * features[chosen].T
            self.pool[:, columns] = mixed
        for cluster in range(self.num_k):
            self.prototypes[:, cluster] = self.pool[:, cluster * size:(cluster + 1) * size].mean(1)
        m = self.ema_momentum
        self.phi_ema.weight.copy_(m * self.phi_ema.weight + (1 - m) * self.phi.weight)


class LoopDSGIM(DSGIM):
    """DS-GIM with explicit loops over samples, windows and rows and a materialised N x N attention."""

    def forward(self, x: torch.Tensor, decay: float, site: int = 0) -> torch.Tensor:
        batch, channels, height, width = x.shape
        wh, ww = height // 2, width // 2
        query_scale = torch.ones_like(x[:, :1])
        key_scale = torch.ones_like(x[:, :1])
        for b in range(batch):
            scores = []
            for row in range(2):
                for col in range(2):
                    window = x[b, :, row * wh:(row + 1) * wh, col * ww:(col + 1) * ww].reshape(channels, -1).T
                    cosine = F.cosine_similarity(window[:, None, :], window[None, :, :], dim=-1, eps=1e-12)
                    scores.append(torch.triu(cosine).sum().item())
            ranked = sorted(range(4), key=lambda w: -scores[w])
            for w in range(4):
                rows = slice((w // 2) * wh, (w // 2 + 1) * wh)
                cols = slice((w % 2) * ww, (w % 2 + 1) * ww)
                if w in ranked[:self.selected_windows]:
                    query_scale[b, :, rows, cols] = decay
                else:
                    key_scale[b, :, rows, cols] = decay
        query = to_tokens(self.query(x * query_scale))
        key = to_tokens(self.key(x * key_scale))
        value = to_tokens(self.value(x))
        logits = torch.bmm(query, key.transpose(1, 2))
        tokens = logits.shape[1]
        far = torch.zeros_like(logits, dtype=torch.bool)
        for b in range(batch):
            row_mean = logits[b].mean(1)
            distance = (row_mean[:, None] - row_mean[None, :]).abs()
            for i in range(tokens):
                far[b, i, torch.sort(distance[i], descending=True, stable=True).indices[:tokens // 2]] = True
                far[b, i, i] = True
        weights = (torch.softmax(logits.masked_fill(~far, float("-inf")), dim=-1)
                   + torch.softmax(logits.masked_fill(far, float("-inf")), dim=-1))
        return self.conv(to_map(self.fc(torch.bmm(weights, value)), *x.shape[-2:]), site)


def use_reference_impl(model: nn.Module) -> nn.Module:
    """Switch every DMW-LA and DS-GIM of `model` to the loop implementations (same parameters and buffers)."""
    for module in model.modules():
        if type(module) is DMWLA:
            module.__class__ = LoopDMWLA
        elif type(module) is DSGIM:
            module.__class__ = LoopDSGIM
    return model
