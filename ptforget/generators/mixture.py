"""Gaussian mixture with direct parameters: the model family of the two-mode theory.

Component 0 is the old component, components 1..K-1 are new. Parameters are split into three optimizer groups,
``weight``, ``old`` (old mean and old scale) and ``new`` (everything else), each with its own learning-rate
multiplier, so the old component can be slowed as in Chen et al. (their SLOW_FACTOR = 0.005 on weight and old).

Weight parametrisation (the forward-KL collapse law depends on it, paper R3):
  * ``logit``: free logits for components 0..K-2, the last logit fixed at 0; for K = 2 the old weight is
    sigmoid(eta), the parametrisation of the theory engine.
  * ``direct``: free weights w_0..w_{K-2}, the last is 1 - sum; after each optimizer step every weight is
    clamped to [weight_clip, 1 - weight_clip] and renormalised (Chen et al. clip pi_1 to [1e-3, 1 - 1e-3]).

Covariance: ``fixed`` (the task's shared covariance, not trained: the theory's setting), ``diag`` (per-component
trainable log-scales) or ``full`` (per-component trainable Cholesky factor with log-diagonal).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ptforget.errors import check, check_choice
from ptforget.gaussian import categorical, gaussian_log_prob, logsumexp_last, small_matmul_t
from ptforget.generators.base import Generator, StepCost, region_stats
from ptforget.tasks import TwoModeTask
from ptforget.theory.population import lr_multipliers

WEIGHTS = ("logit", "direct")
COVARIANCES = ("fixed", "diag", "full")


class GaussianMixture(Generator):
    """K-component Gaussian mixture initialised at the task's q0.

    Args:
        task: the two-mode task (gives q0 and the shared covariance).
        components: K >= 2. Extra new components start next to q0's new mean and share its weight.
        weight: ``logit`` or ``direct``.
        covariance: ``fixed``, ``diag`` or ``full``.
        lr_mult: learning-rate multipliers for the groups ``weight``, ``old``, ``new``.
        weight_clip: clamp for direct weights.
        train_means: train the component means (False freezes them: the weight-only setting of paper R2-R3).
    """

    has_components = True
    natively_batched = True
    #: calibrated by scripts/calibrate_costs.py, 2026-12-07, on the project's 2-core box under a load average of ~10
    step_cost = StepCost(fixed_ms=4.29, per_sample_us=3.27, eval_ms=112.0)

    def __init__(
        self,
        task: TwoModeTask,
        components: int = 2,
        weight: str = "logit",
        covariance: str = "fixed",
        lr_mult: dict[str, float] | None = None,
        weight_clip: float = 1e-3,
        train_means: bool = True,
        init_jitter: float = 0.5,
    ) -> None:
        super().__init__()
        check(isinstance(components, int) and components >= 2, "generator.components", components,
              "an integer >= 2")
        check_choice(weight, "generator.weight", WEIGHTS)
        check_choice(covariance, "generator.covariance", COVARIANCES)
        check(0 < weight_clip < 0.5 / components, "generator.weight_clip", weight_clip,
              f"a number in (0, {0.5 / components:g})")
        self.K, self.dim = components, task.dim
        self.weight_mode, self.cov_mode = weight, covariance
        self.lr_mult = lr_multipliers(lr_mult, key="generator.lr_mult")
        self.weight_clip = weight_clip

        q0 = task.q0_params()
        w_old = float(q0["weight_old"])
        w = torch.tensor([w_old] + [(1 - w_old) / (components - 1)] * (components - 1))
        if weight == "logit":
            logits = torch.log(w) - torch.log(w[-1])
            self.weight_param = nn.Parameter(logits[:-1].clone())
        else:
            self.weight_param = nn.Parameter(w[:-1].clone())

        mu_new = q0["mu_new"].detach().cpu()
        extra = [mu_new]
        g = torch.Generator().manual_seed(1234)
        for _ in range(components - 2):
            extra.append(mu_new + init_jitter * torch.randn(task.dim, generator=g))
        self.mu_old = nn.Parameter(q0["mu_old"].detach().cpu().clone(), requires_grad=train_means)
        self.mu_rest = nn.Parameter(torch.stack(extra), requires_grad=train_means)

        L = q0["scale_tril"].detach().cpu()
        if covariance == "fixed":
            self.register_buffer("fixed_tril", L.clone())
            # constants of the shared covariance, computed once (the step does not re-solve them)
            Linv = torch.linalg.solve_triangular(L.expand(components, -1, -1), torch.eye(task.dim).expand(
                components, -1, -1), upper=False)
            self.register_buffer("fixed_tril_inv", Linv.contiguous(), persistent=False)
            self.register_buffer("fixed_log_det", torch.log(torch.diagonal(L)).sum().expand(components).clone(),
                                 persistent=False)
        elif covariance == "diag":
            log_s = torch.log(torch.diagonal(L)).clone()
            self.log_scale_old = nn.Parameter(log_s.clone())
            self.log_scale_rest = nn.Parameter(log_s.expand(components - 1, -1).clone())
        else:
            raw = L.clone()
            raw.diagonal().copy_(torch.log(torch.diagonal(L)))
            self.tril_old = nn.Parameter(raw.clone())
            self.tril_rest = nn.Parameter(raw.expand(components - 1, -1, -1).clone())

    # ------------------------------------------------------------------ parameters
    def log_weights(self) -> Tensor:
        """(*B, K) log mixture weights."""
        wp = self.weight_param
        if self.weight_mode == "logit":
            logits = torch.cat([wp, wp.new_zeros(*wp.shape[:-1], 1)], -1)
            return torch.log_softmax(logits, -1)
        w = torch.cat([wp, 1 - wp.sum(-1, keepdim=True)], -1)
        return torch.log(w.clamp_min(1e-30))

    def weights(self) -> Tensor:
        return self.log_weights().exp()

    def means(self) -> Tensor:
        """(*B, K, d) component means."""
        return torch.cat([self.mu_old.unsqueeze(-2), self.mu_rest], -2)

    def scale_trils(self) -> Tensor:
        """(*B, K, d, d) Cholesky factors of the component covariances ((K, d, d), shared, when fixed)."""
        if self.cov_mode == "fixed":
            return self.fixed_tril.expand(self.K, self.dim, self.dim)
        if self.cov_mode == "diag":
            return torch.diag_embed(torch.cat([self.log_scale_old.unsqueeze(-2), self.log_scale_rest], -2).exp())
        raw = torch.cat([self.tril_old.unsqueeze(-3), self.tril_rest], -3).tril()
        diag = torch.diagonal(raw, dim1=-2, dim2=-1)
        return raw - torch.diag_embed(diag) + torch.diag_embed(diag.exp())

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        old = [self.mu_old]
        new = [self.mu_rest]
        if self.cov_mode == "diag":
            old.append(self.log_scale_old)
            new.append(self.log_scale_rest)
        elif self.cov_mode == "full":
            old.append(self.tril_old)
            new.append(self.tril_rest)
        groups = [("weight", [self.weight_param]), ("old", old), ("new", new)]
        return [
            {"params": [p for p in ps if p.requires_grad], "lr": lr * self.lr_mult[name], "name": name}
            for name, ps in groups
            if any(p.requires_grad for p in ps)
        ]

    @property
    def has_projection(self) -> bool:
        return self.weight_mode == "direct"

    @torch.no_grad()
    def project_(self) -> None:
        if self.weight_mode != "direct":
            return
        w = torch.cat([self.weight_param, 1 - self.weight_param.sum(-1, keepdim=True)], -1)
        w = w.clamp(self.weight_clip, 1 - self.weight_clip)
        w = w / w.sum(-1, keepdim=True)
        self.weight_param.copy_(w[..., :-1])

    # ------------------------------------------------------------------ density
    def _tril_terms(self) -> tuple[Tensor, Tensor, Tensor]:
        if self.cov_mode == "fixed":
            return self.scale_trils(), self.fixed_tril_inv, self.fixed_log_det
        L = self.scale_trils()
        eye = torch.eye(self.dim, dtype=L.dtype, device=L.device).expand_as(L)
        Linv = torch.linalg.solve_triangular(L, eye, upper=False)
        log_det = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        return L, Linv, log_det

    def component_log_prob(self, x: Tensor) -> Tensor:
        """(*B, n, K) log N(x; mu_k, Sigma_k) for x (*B, n, d)."""
        _, Linv, log_det = self._tril_terms()
        return gaussian_log_prob(x, self.means(), Linv, log_det)

    def log_prob(self, x: Tensor) -> Tensor:
        return logsumexp_last(self.component_log_prob(x) + self.log_weights().unsqueeze(-2))

    def responsibilities(self, x: Tensor) -> Tensor:
        """(*B, n, K) posterior component probabilities w_k(x)."""
        return torch.softmax(self.component_log_prob(x) + self.log_weights().unsqueeze(-2), -1)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        B, d = self.batch_shape, self.dim
        k = categorical(self.weights(), n)
        eps = torch.randn(*B, n, d, device=self.device)
        mu = torch.gather(self.means(), -2, k.unsqueeze(-1).expand(*B, n, d))
        if self.cov_mode == "fixed":  # one shared factor: no per-sample gather
            return mu + small_matmul_t(eps, self.fixed_tril)
        L = self.scale_trils()
        Lk = torch.gather(L, -3, k[..., None, None].expand(*B, n, d, d))
        return mu + (Lk @ eps.unsqueeze(-1)).squeeze(-1)

    def component_rsample(self, n: int) -> Tensor:
        """(*B, K, n, d) reparameterised samples from every component (gradient to means and scales)."""
        eps = torch.randn(*self.batch_shape, self.K, n, self.dim, device=self.device)
        if self.cov_mode == "fixed":
            return self.means().unsqueeze(-2) + small_matmul_t(eps, self.fixed_tril)
        return self.means().unsqueeze(-2) + eps @ self.scale_trils().mT

    def expectation(self, f: Callable[[Tensor], Tensor], n: int) -> Tensor:
        """sum_k w_k E_{N(mu_k, Sigma_k)}[f]: exact in the weights, pathwise in each component; (*B,)."""
        B, K = self.batch_shape, self.K
        per = max(1, math.ceil(n / K))
        x = self.component_rsample(per)
        vals = f(x.reshape(*B, K * per, self.dim)).reshape(*B, K, per)
        return (self.weights() * vals.mean(-1)).sum(-1)

    # ------------------------------------------------------------------ readout
    @torch.no_grad()
    def region_view(self, task: TwoModeTask, n: int) -> dict[str, Tensor]:
        """Exact for a Gaussian mixture: the old region is a half-space."""
        L = self.scale_trils()
        return region_stats(self.weights(), self.means(), L @ L.transpose(-1, -2), task)

    @torch.no_grad()
    def component_view(self) -> dict[str, Tensor]:
        return mixture_component_view(self.weights(), self.means(), self.scale_trils())


def mixture_component_view(w: Tensor, mu: Tensor, L: Tensor) -> dict[str, Tensor]:
    """Old weight, old mean, weight-averaged new mean and BC(old, first new) of a mixture (component 0 = old);
    w (*B, K), mu (*B, K, d), L (*B or nothing, K, d, d)."""
    rest = w[..., 1:] / w[..., 1:].sum(-1, keepdim=True)
    return {"weight": w[..., 0], "comp_old_mean": mu[..., 0, :],
            "comp_new_mean": (rest.unsqueeze(-1) * mu[..., 1:, :]).sum(-2),
            "comp_bc": gaussian_bc(mu[..., 0, :], L[..., 0, :, :], mu[..., 1, :], L[..., 1, :, :])}


def gaussian_bc(mu1: Tensor, L1: Tensor, mu2: Tensor, L2: Tensor) -> Tensor:
    """Bhattacharyya coefficient between N(mu1, L1 L1') and N(mu2, L2 L2') (closed form; leading dims broadcast)."""
    S1, S2 = L1 @ L1.mT, L2 @ L2.mT
    S = 0.5 * (S1 + S2)
    d = mu1 - mu2
    maha = (d * torch.linalg.solve(S, d.unsqueeze(-1)).squeeze(-1)).sum(-1)
    logdet = torch.logdet(S) - 0.5 * (torch.logdet(S1) + torch.logdet(S2))
    return torch.exp(-(maha / 8 + logdet / 2))
