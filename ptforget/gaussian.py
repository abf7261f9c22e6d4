"""Gaussian density maths shared by the task and the generator families (pure tensors, no project imports)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: up to this size a last-axis reduction is written as elementwise ops: PyTorch's CPU reduction over a short inner
#: axis (the d coordinates, the K components of these models) runs 3-15x slower than the equivalent adds ...
SHORT_AXIS = 8
#: ... on tensors of at least this many elements (batched members, evaluations); smaller ones (one run's step) are
#: dispatch-bound, where one native op beats several elementwise ones
LARGE = 1 << 16


def _short(t: Tensor) -> bool:
    """Use the elementwise form: a short last axis on a large tensor, or any short axis inside a compiled graph
    (where the elementwise ops fuse into one loop and a BLAS call would not)."""
    return t.shape[-1] <= SHORT_AXIS and (t.numel() >= LARGE or torch.compiler.is_compiling())


def sum_last(t: Tensor) -> Tensor:
    """``t.sum(-1)``, as elementwise adds when the last axis is short."""
    if not _short(t):
        return t.sum(-1)
    parts = t.unbind(-1)
    out = parts[0]
    for p in parts[1:]:
        out = out + p
    return out


def logsumexp_last(t: Tensor) -> Tensor:
    """``torch.logsumexp(t, -1)``, as elementwise ops when the last axis is short (same value and gradient)."""
    if not _short(t):
        return torch.logsumexp(t, -1)
    parts = t.unbind(-1)
    m = parts[0]
    for p in parts[1:]:
        m = torch.maximum(m, p)
    m = m.detach().clamp_min(torch.finfo(t.dtype).min)  # its gradient cancels; all -inf stays -inf
    acc = torch.exp(parts[0] - m)
    for p in parts[1:]:
        acc = acc + torch.exp(p - m)
    return m + torch.log(acc)


def small_matmul_t(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w.mT`` for x (*B, n, d), w (*B', m, d); as d broadcast multiply-adds when d is short (a BLAS call on
    an inner dimension of 2 is ~2x slower than the elementwise form and is not fused by anything)."""
    d = x.shape[-1]
    if not _short(x):
        return x @ w.mT
    out = x[..., 0:1] * w[..., 0].unsqueeze(-2)
    for i in range(1, d):
        out = out + x[..., i:i + 1] * w[..., i].unsqueeze(-2)
    return out


def categorical(probs: Tensor, n: int) -> Tensor:
    """n independent draws from each categorical distribution in probs (*B, K) -> (*B, n) long: the number of
    cumulative weights below a uniform draw (inverse CDF; ``torch.multinomial`` costs ~10x more for K this small)."""
    cum = torch.cumsum(probs, -1)
    u = torch.rand(*probs.shape[:-1], n, 1, device=probs.device, dtype=probs.dtype) * cum[..., -1:].unsqueeze(-2)
    below = (u >= cum[..., :-1].unsqueeze(-2)).to(torch.long)
    return sum_last(below) if below.shape[-1] > 0 else below.squeeze(-1)


def gaussian_log_prob(x: Tensor, loc: Tensor, scale_tril_inv: Tensor, log_det: Tensor) -> Tensor:
    """Log density of N(loc, L L^T) for every (sample, component) pair, with optional leading member dimensions.

    x: (*B, n, d); loc: (*B, K, d); scale_tril_inv: (*B', K, d, d) = L^{-1}; log_det: (*B', K) = sum log diag L,
    where B' is B or empty (a covariance shared by the members). Unbatched (B empty), x may be (..., d).
    Returns (*B, n, K).
    """
    K, d = loc.shape[-2:]
    # L^-1 (x - mu_k) = L^-1 x - L^-1 mu_k: one (n, d) x (d, K d) matmul instead of a batched einsum (~2.5x faster)
    w = scale_tril_inv.reshape(*scale_tril_inv.shape[:-3], K * d, d)
    zx = small_matmul_t(x, w).reshape(*x.shape[:-1], K, d)
    z = zx - (scale_tril_inv @ loc.unsqueeze(-1)).squeeze(-1).unsqueeze(-3)
    return -0.5 * sum_last(z * z) - log_det.unsqueeze(-2) - 0.5 * d * math.log(2 * math.pi)


def halfspace_stats(weights: Tensor, loc: Tensor, cov: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Exact mass and conditional mean of a Gaussian mixture on the half-space {x : a.x > b}.

    For N(m, S): y = a.x ~ N(a.m, a'Sa), P(y > b) = Phi(alpha) with alpha = (a.m - b)/s, and
    E[x | y > b] = m + S a / s * phi(alpha) / Phi(alpha). Mixtures combine these with their weights.
    weights: (*B, K); loc: (*B, K, d); cov: (*B or nothing, K, d, d). Returns mass (*B,) and mean (*B, d).
    """
    Sa = cov @ a  # (K, d)
    s = torch.sqrt((Sa * a).sum(-1)).clamp_min(1e-30)
    alpha = (loc @ a - b) / s
    Phi = torch.special.ndtr(alpha)
    phi = torch.exp(-0.5 * alpha**2 - 0.5 * math.log(2 * math.pi))
    mass = (weights * Phi).sum(-1)
    # weights * Phi * (m + Sa/s * phi/Phi) = weights * (Phi m + Sa/s phi): stable when Phi -> 0
    num = (weights.unsqueeze(-1) * (Phi.unsqueeze(-1) * loc + Sa / s.unsqueeze(-1) * phi.unsqueeze(-1))).sum(-2)
    return mass, num / mass.clamp_min(1e-30).unsqueeze(-1)
