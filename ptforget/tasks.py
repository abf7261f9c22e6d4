"""The two-mode world: old mode N(mu_o, Sigma), new mode N(mu_n, Sigma), target p* = b* p_old + (1-b*) p_new.

Geometry: the modes sit at -+ (Delta/2) along the first axis of the whitened space, so the Mahalanobis
separation is exactly ``delta`` whatever the covariance. Pure tensors, no Lightning.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from ptforget.errors import check, check_choice, is_number
from ptforget.gaussian import gaussian_log_prob, logsumexp_last, small_matmul_t

REWARDS = ("new_bump", "both_bumps", "new_region", "old_region", "log_p_star", "log_p_new")
#: rewards that are constant on each region: the mode-wise rewards (r_o, r_n) of the theory (paper R12, R13)
REGION_REWARDS = {"new_region": {"reward_old": 0.0, "reward_new": 1.0},
                  "old_region": {"reward_old": 1.0, "reward_new": 0.0}}
#: mixture weights closer than this to 0 or 1 are 0 or 1 in float32 (log-weights become -inf)
WEIGHT_MARGIN = 1e-6
#: the shared scale sigma (sigma^2 and 1/sigma^2 stay normal float32 numbers with room for the data)
SIGMA_RANGE = (1e-6, 1e6)
#: the smallest fraction of a change of the old weight that the old-region mass must show: between two modes
#: Delta apart the region's mass moves by (2 Phi(Delta / 2) - 1) times the weight's change, so below MIN_DELTA a
#: run that forgets reads as one that does not (Delta = 0: the mass stays 1/2 while the weight moves)
REGION_RESOLUTION = 0.2
MIN_DELTA = 2 * NormalDist().inv_cdf(0.5 + REGION_RESOLUTION / 2)
#: the largest separation trained or predicted: the density grid and squared distances stay finite in float32
MAX_DELTA = 1e3


def check_separation(delta: Any, key: str = "task.delta") -> None:
    """A separation that training, the reports and the theory can resolve: in [MIN_DELTA, MAX_DELTA] (the task
    itself accepts any Delta >= 0: exact computations use Delta = 0 as one Gaussian)."""
    check(is_number(delta) and MIN_DELTA <= delta <= MAX_DELTA, key, delta,
          f"a number in [{MIN_DELTA:.3g}, {MAX_DELTA:g}] (below {MIN_DELTA:.3g} the old-region mass moves by less "
          f"than {REGION_RESOLUTION:g} of a change of the old weight: forgetting would read as none; above "
          f"{MAX_DELTA:g} the density grid overflows)")


@dataclass
class TwoModeTask:
    """Two equal-covariance Gaussian modes and the initial model q0.

    Args:
        dim: data dimension d >= 1.
        delta: Mahalanobis separation of the two modes (>= 0).
        sigma: scale of the shared covariance sigma^2 I (used when ``cov`` is None).
        covariance: optional full d x d shared covariance (must be symmetric positive definite).
        beta_star: target old weight, in (0, 1).
        beta0: initial old weight of q0, in (0, 1); None means beta_star.
        new_offset: where q0's new component starts, in Mahalanobis units from mu_n* toward mu_o*
            (0 = already correct, delta = on top of the old mode, negative = further away).
        new_shift: optional extra offset of q0's new mean perpendicular to the axis (Mahalanobis units
            along the second whitened axis; needs dim >= 2).
        reward_kind: default reward of the ``reward`` hook; one of REWARDS.
        reward_width: width (in units of Sigma) of the bump rewards.
    """

    dim: int = 2
    delta: float = 4.0
    sigma: float = 1.0
    covariance: list[list[float]] | None = None
    beta_star: float = 0.5
    beta0: float | None = None
    new_offset: float = 1.0
    new_shift: float = 0.0
    reward_kind: str = "new_bump"
    reward_width: float = 1.0
    device: str = "cpu"
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check(isinstance(self.dim, int) and not isinstance(self.dim, bool) and self.dim >= 1, "task.dim", self.dim,
              "an integer >= 1")
        check(_finite(self.delta) and self.delta >= 0, "task.delta", self.delta, "a finite number >= 0")
        check(_finite(self.sigma) and SIGMA_RANGE[0] <= self.sigma <= SIGMA_RANGE[1], "task.sigma", self.sigma,
              f"a number in [{SIGMA_RANGE[0]:g}, {SIGMA_RANGE[1]:g}] (sigma^2 must stay a normal float32)")
        check(_finite(self.beta_star) and WEIGHT_MARGIN <= self.beta_star <= 1 - WEIGHT_MARGIN, "task.beta_star",
              self.beta_star, f"a number in the open interval (0, 1), at least {WEIGHT_MARGIN:g} from 0 and 1 "
              "(float32 training)")
        if self.beta0 is None:
            self.beta0 = self.beta_star
        check(_finite(self.beta0) and WEIGHT_MARGIN <= self.beta0 <= 1 - WEIGHT_MARGIN, "task.beta0", self.beta0,
              f"a number in the open interval (0, 1), at least {WEIGHT_MARGIN:g} from 0 and 1, or null for beta_star")
        check(_finite(self.new_offset), "task.new_offset", self.new_offset, "a finite number")
        check(_finite(self.new_shift), "task.new_shift", self.new_shift, "a finite number")
        check(self.new_shift == 0 or self.dim >= 2, "task.new_shift", self.new_shift, "0 when task.dim == 1")
        check_choice(self.reward_kind, "task.reward_kind", REWARDS)
        check(_finite(self.reward_width) and self.reward_width > 0, "task.reward_width", self.reward_width,
              "a finite number > 0")
        if self.covariance is None:
            cov = torch.eye(self.dim, dtype=torch.float64) * self.sigma**2
        else:
            rows = self.covariance
            check(isinstance(rows, list | tuple) and len(rows) == self.dim
                  and all(isinstance(r, list | tuple) and len(r) == self.dim and all(_finite(v) and not isinstance(
                      v, bool | str) for v in r) for r in rows), "task.covariance", self.covariance,
                  f"a {self.dim}x{self.dim} matrix: a list of {self.dim} lists of {self.dim} numbers, or null")
            cov = torch.as_tensor(rows, dtype=torch.float64)
            check(bool(torch.isfinite(cov).all()) and bool(torch.allclose(cov, cov.T)), "task.covariance",
                  self.covariance, "a finite symmetric matrix")
            check(bool(torch.linalg.eigvalsh(cov).min() > 0), "task.covariance", self.covariance,
                  "a positive definite matrix")
        self._cov64 = cov
        self._chol64 = torch.linalg.cholesky(cov)
        e1 = torch.zeros(self.dim, dtype=torch.float64)
        e1[0] = 1.0
        # Whitened axis e1 mapped to data space through the Cholesky factor: Mahalanobis length 1.
        axis = self._chol64 @ e1
        self._mu_old64 = -0.5 * self.delta * axis
        self._mu_new64 = 0.5 * self.delta * axis
        start = self._mu_new64 - self.new_offset * axis
        if self.new_shift:
            e2 = torch.zeros(self.dim, dtype=torch.float64)
            e2[1] = 1.0
            start = start + self.new_shift * (self._chol64 @ e2)
        self._mu_new0_64 = start

    # ------------------------------------------------------------------ tensors (float32 on the device)
    def _t(self, name: str, x: Tensor) -> Tensor:
        key = (name, self.device)
        if key not in self._cache:
            self._cache[key] = x.to(device=self.device, dtype=torch.float32)
        return self._cache[key]

    @property
    def mu_old(self) -> Tensor:
        return self._t("mu_old", self._mu_old64)

    @property
    def mu_new(self) -> Tensor:
        return self._t("mu_new", self._mu_new64)

    @property
    def mu_new_init(self) -> Tensor:
        """Mean of q0's new component."""
        return self._t("mu_new_init", self._mu_new0_64)

    @property
    def cov(self) -> Tensor:
        return self._t("cov", self._cov64)

    @property
    def scale_tril(self) -> Tensor:
        return self._t("chol", self._chol64)

    @property
    def bc(self) -> float:
        """Bhattacharyya coefficient between the two target modes, exp(-Delta^2 / 8)."""
        return math.exp(-self.delta**2 / 8.0)

    def to(self, device: str | torch.device) -> TwoModeTask:
        """Move the task's tensors to ``device`` (in place) and return self."""
        self.device = str(device)
        return self

    # ------------------------------------------------------------------ distributions
    def _mixture(self, which: str) -> MixtureSameFamily:
        weight_old, mu_n = self._mixture_params(which)
        probs = torch.tensor([weight_old, 1.0 - weight_old], device=self.device)
        loc = torch.stack([self.mu_old, mu_n])
        comp = MultivariateNormal(loc, scale_tril=self.scale_tril.expand(2, self.dim, self.dim))
        return MixtureSameFamily(Categorical(probs=probs), comp)

    @property
    def p_old(self) -> MultivariateNormal:
        return MultivariateNormal(self.mu_old, scale_tril=self.scale_tril)

    @property
    def p_new(self) -> MultivariateNormal:
        return MultivariateNormal(self.mu_new, scale_tril=self.scale_tril)

    def _mixture_params(self, which: str) -> tuple[float, Tensor]:
        """(old weight, new mean) of ``star`` (p*) or ``q0`` (initial model); the old mean is mu_o* in both."""
        if which == "star":
            return self.beta_star, self.mu_new
        return float(self.beta0), self.mu_new_init

    @property
    def p_star(self) -> MixtureSameFamily:
        return self._mixture("star")

    @property
    def q0(self) -> MixtureSameFamily:
        """Initial model: old component correct (mean mu_o*, weight beta0), new component at mu_new_init."""
        return self._mixture("q0")

    def sample(self, which: str, n: int, shape: tuple[int, ...] = ()) -> Tensor:
        """(*shape, n, d) samples of ``old``, ``new``, ``star`` (p*) or ``q0``, drawn with out-of-place randn/rand.

        Same distributions as ``p_old`` / ``p_new`` / ``p_star`` / ``q0``; ``shape`` is the leading member dimension
        of batched seeds (independent draws per member); out of place, so it also draws independent samples per
        member under ``torch.func.vmap``.
        """
        eps = small_matmul_t(torch.randn(*shape, n, self.dim, device=self.device), self.scale_tril)
        if which == "old":
            return self.mu_old + eps
        if which == "new":
            return self.mu_new + eps
        weight_old, mu_n = self._mixture_params(which)
        is_old = (torch.rand(*shape, n, 1, device=self.device) < weight_old).to(eps.dtype)
        return is_old * self.mu_old + (1 - is_old) * mu_n + eps

    def log_prob(self, which: str, x: Tensor) -> Tensor:
        """Closed-form log density of ``old``, ``new``, ``star`` or ``q0`` at x (the same values as ``p_old.log_prob``
        etc., without building distribution objects; the hot path of reverse KL and of every evaluation)."""
        key = ("lp_terms", self.device)
        if key not in self._cache:
            L = self.scale_tril
            Linv = torch.linalg.solve_triangular(L, torch.eye(self.dim, device=L.device), upper=False)
            self._cache[key] = (Linv.unsqueeze(0).expand(2, -1, -1).contiguous(),
                                torch.log(torch.diagonal(L)).sum().expand(2))
        Linv, log_det = self._cache[key]
        if which in ("old", "new"):
            mu = self.mu_old if which == "old" else self.mu_new
            return gaussian_log_prob(x, mu.unsqueeze(0), Linv[:1], log_det[:1])[..., 0]
        wkey = ("lp_mix", which, self.device)
        if wkey not in self._cache:  # cached: no host-to-device copy per call
            weight_old, mu_n = self._mixture_params(which)
            self._cache[wkey] = (torch.stack([self.mu_old, mu_n]), torch.tensor(
                [math.log(weight_old), math.log1p(-weight_old)], device=self.device))
        loc, log_w = self._cache[wkey]
        return logsumexp_last(gaussian_log_prob(x, loc, Linv, log_det) + log_w)

    def grid(self, panel: float = 0.25, order: int = 8, margin: float = 10.0) -> tuple[Tensor, Tensor] | None:
        """Gauss-Legendre nodes (n, 1) and weights (n,) over the task's support, for 1-D tasks (None otherwise).

        The interval reaches ``margin`` standard deviations beyond both modes and q0's new mean, so an integral
        of a model's density over it is exact to quadrature error for any model that keeps its mass near the
        modes (the families' region view and KL use it in 1-D instead of Monte Carlo).
        """
        if self.dim != 1:
            return None
        key = ("grid", panel, order, margin, self.device)
        if key not in self._cache:
            import numpy as np

            s = float(self._chol64[0, 0])
            pts = [float(self._mu_old64[0]), float(self._mu_new64[0]), float(self._mu_new0_64[0])]
            lo, hi = min(pts) - margin * s, max(pts) + margin * s
            a, b = (float(v.reshape(-1)[0]) for v in self._discriminant())
            # panel edges on the region boundary and on mu_o* (the core's edge): no step inside a panel
            mo = float(self._mu_old64[0])
            edge = [mo - k * s * np.sign(self.delta) for k in (1.0, 3.0)]  # the old core's slab
            cuts = sorted({lo, hi, min(max(b / a, lo), hi) if a != 0 else lo, *edge})
            t, w = np.polynomial.legendre.leggauss(order)
            edges = np.unique(np.concatenate([np.linspace(c0, c1, max(1, math.ceil((c1 - c0) / (panel * s))) + 1)
                                              for c0, c1 in itertools.pairwise(cuts) if c1 > c0]))
            half, mid = 0.5 * np.diff(edges), 0.5 * (edges[1:] + edges[:-1])
            x = (mid[:, None] + half[:, None] * t[None, :]).ravel()
            v = (half[:, None] * w[None, :]).ravel()
            self._cache[key] = (torch.tensor(x, dtype=torch.float32, device=self.device).unsqueeze(-1),
                                torch.tensor(v, dtype=torch.float32, device=self.device))
        return self._cache[key]

    def q0_params(self) -> dict[str, Tensor | float]:
        """Parameters of q0 for initialising mixture generators."""
        return {"weight_old": float(self.beta0), "mu_old": self.mu_old, "mu_new": self.mu_new_init,
                "scale_tril": self.scale_tril}

    # ------------------------------------------------------------------ regions and rewards
    def _discriminant(self) -> tuple[Tensor, Tensor]:
        """(a, b) with old region {x : a.x > b}: the Bayes region of the old mode under p*."""
        key = ("disc", self.device)
        if key not in self._cache:
            prec = torch.cholesky_inverse(self._chol64)
            a = prec @ (self._mu_old64 - self._mu_new64)
            # beta* p_o > (1-beta*) p_n  <=>  a.x > 0.5 (mu_o' P mu_o - mu_n' P mu_n) + log((1-b*)/b*)
            b = 0.5 * (self._mu_old64 @ prec @ self._mu_old64 - self._mu_new64 @ prec @ self._mu_new64)
            b = b + math.log((1 - self.beta_star) / self.beta_star)
            self._cache[key] = (a.to(self.device, torch.float32), b.to(self.device, torch.float32))
        return self._cache[key]

    def old_region(self, x: Tensor) -> Tensor:
        """Boolean mask: x lies in the Bayes region of the old mode under p*."""
        a, b = self._discriminant()
        if self.delta == 0:
            return torch.full(x.shape[:-1], self.beta_star > 0.5, dtype=torch.bool, device=x.device)
        return x @ a > b

    def old_region_halfspace(self) -> tuple[Tensor, Tensor]:
        """(a, b) of the half-space {a.x > b} that is the old region (exact region metrics for mixtures)."""
        return self._discriminant()

    def old_core(self, near: float = 1.0, far: float = 3.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(a, lo, hi, u): the old mode's far side, the slab {lo < a.x < hi} of points between ``near`` and ``far``
        Mahalanobis units beyond mu_o* along the axis away from the new mode, and the unit data-space axis u from
        mu_o* to mu_n*. The conditional mean there locates the old mode with almost none of the new mode's tail
        (it lies Delta + 1 away) and none of a model's far tails (the ``core_pos`` readout)."""
        key = ("core", near, far, self.device)
        if key not in self._cache:
            prec = torch.cholesky_inverse(self._chol64)
            d = self._mu_new64 - self._mu_old64
            a = prec @ d / max(self.delta, 1e-30)  # a.x has unit variance under each mode
            c = float(a @ self._mu_old64)
            u = d / torch.linalg.norm(d).clamp_min(1e-30)
            self._cache[key] = tuple(v.to(self.device, torch.float32) for v in (
                a, torch.tensor(c - far, dtype=torch.float64), torch.tensor(c - near, dtype=torch.float64), u))
        return self._cache[key]

    def reward(self, x: Tensor, kind: str | None = None) -> Tensor:
        """Reward hook for reward-driven objectives.

        ``new_bump``: exp(-|x - mu_n|^2_Sigma / (2 w^2)) in [0, 1], high only on the new mode;
        ``both_bumps``: the larger of the old and new bumps (past behaviour visible in the reward);
        ``new_region``: 1 outside the old Bayes region, 0 inside (mode-wise constant rewards r_o = 0, r_n = 1,
        the setting of the theory's TTT-Discover and OAPL fixed points, paper R12-R13); ``old_region``: the
        reverse, r_o = 1 > r_n = 0 (the side of R13's condition r_o >= r_n where old mass is kept);
        ``log_p_star`` / ``log_p_new``: log densities.
        """
        kind = kind or self.reward_kind
        check_choice(kind, "reward", REWARDS)
        if kind == "log_p_star":
            return self.p_star.log_prob(x)
        if kind == "log_p_new":
            return self.p_new.log_prob(x)
        if kind == "new_region":
            return (~self.old_region(x)).to(x.dtype)
        if kind == "old_region":
            return self.old_region(x).to(x.dtype)
        bump_new = self._bump(x, self.mu_new)
        if kind == "new_bump":
            return bump_new
        return torch.maximum(bump_new, self._bump(x, self.mu_old))

    def _bump(self, x: Tensor, mu: Tensor) -> Tensor:
        z = torch.linalg.solve_triangular(self.scale_tril, (x - mu).unsqueeze(-1), upper=False).squeeze(-1)
        return torch.exp(-0.5 * (z**2).sum(-1) / self.reward_width**2)


def _finite(v: object) -> bool:
    try:
        return math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
