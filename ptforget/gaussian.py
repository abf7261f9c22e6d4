"""Gaussian density maths shared by the task and the generator families (pure tensors, no project imports)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def gaussian_log_prob(x: Tensor, loc: Tensor, scale_tril_inv: Tensor, log_det: Tensor) -> Tensor:
    """Log density of N(loc, L L^T) for every (sample, component) pair.

    x: (n, d); loc: (K, d); scale_tril_inv: (K, d, d) = L^{-1}; log_det: (K,) = sum log diag L.
    Returns (n, K).
    """
    K, d = loc.shape
    # L^-1 (x - mu_k) = L^-1 x - L^-1 mu_k: one (n, d) x (d, K d) matmul instead of a batched einsum (~2.5x faster)
    zx = (x @ scale_tril_inv.reshape(K * d, d).T).reshape(*x.shape[:-1], K, d)
    z = zx - (scale_tril_inv @ loc.unsqueeze(-1)).squeeze(-1)
    return -0.5 * (z**2).sum(-1) - log_det - 0.5 * d * math.log(2 * math.pi)


def halfspace_stats(weights: Tensor, loc: Tensor, cov: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Exact mass and conditional mean of a Gaussian mixture on the half-space {x : a.x > b}.

    For N(m, S): y = a.x ~ N(a.m, a'Sa), P(y > b) = Phi(alpha) with alpha = (a.m - b)/s, and
    E[x | y > b] = m + S a / s * phi(alpha) / Phi(alpha). Mixtures combine these with their weights.
    weights: (K,); loc: (K, d); cov: (K, d, d).
    """
    Sa = cov @ a  # (K, d)
    s = torch.sqrt((Sa * a).sum(-1)).clamp_min(1e-30)
    alpha = (loc @ a - b) / s
    normal = torch.distributions.Normal(torch.zeros((), dtype=loc.dtype, device=loc.device), 1.0)
    Phi = normal.cdf(alpha)
    phi = torch.exp(normal.log_prob(alpha))
    mass_k = weights * Phi
    mass = mass_k.sum()
    # weights * Phi * (m + Sa/s * phi/Phi) = weights * (Phi m + Sa/s phi): stable when Phi -> 0
    num = (weights.unsqueeze(-1) * (Phi.unsqueeze(-1) * loc + Sa / s.unsqueeze(-1) * phi.unsqueeze(-1))).sum(0)
    return mass, num / mass.clamp_min(1e-30)
