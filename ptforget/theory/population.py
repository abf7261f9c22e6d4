"""Exact population objectives, gradients, flows and local geometry of the two-mode model (docs/theory.md R1-R10).

Conventions (whitened / Mahalanobis units, Sigma = sigma^2 I):
  * truth: mu_o* = 0, mu_n* = delta e1; target p* = beta* N(0, I) + (1 - beta*) N(delta e1, I);
  * model q = beta N(mu_o, I) + (1 - beta) N(mu_n, I), weight parameter eta (beta = sigmoid(eta), "logit") or
    beta itself ("direct", clamped to [clip, 1 - clip] after each step);
  * forward KL ("fkl"): KL(p_data || q), p_data = lam p_rep + (1 - lam) p_n, p_rep = p_o ("p_old") or q0;
  * reverse KL ("rkl"): KL(q || p*). Both are reported as KL divergences (>= 0), i.e. the cross-entropy minus
    the data entropy for "fkl"; gradients are those of the cross-entropy.
Expectations are exact up to quadrature error (~1e-10): composite Gauss-Legendre along e1 and Gauss-Hermite in
the (at most two) directions orthogonal to e1 spanned by off-axis model means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ptforget.errors import ConfigError, check_choice

from ._quadrature import LOG_SQRT_2PI, composite_gauss_legendre, gauss_hermite_lebesgue

OBJECTIVES = ("fkl", "rkl")
WEIGHTS = ("logit", "direct")
REPLAY_SOURCES = ("p_old", "q0")
GROUPS = ("weight", "old", "new")
TAIL = 13.0  # Mahalanobis half-width added around all means (Gaussian tail e^{-84})
#: how far (Mahalanobis units) beyond the span of the start and the targets a flow's means may wander before the
#: flow counts as diverged: it bounds the quadrature grid, so a step that is too large fails fast instead of
#: growing the grid until memory runs out
EXCURSION = 64.0
PANEL = 0.5
ORDER = 12

__all__ = [
    "PopulationSpec",
    "contraction_factor",
    "fisher_condition_number",
    "fisher_eigenvalues",
    "fisher_information",
    "hessian_at_optimum",
    "population_flow",
    "population_gradient",
    "population_loss",
    "replay_importance_stats",
    "theta_star",
]


# ----------------------------------------------------------------------------------------------- validation
def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def check_delta(delta: Any) -> float:
    """Validate a Mahalanobis separation (finite, >= 0)."""
    if not _finite(delta) or float(delta) < 0:
        raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
    return float(delta)


def check_open_unit(value: Any, name: str) -> float:
    """Validate a probability in the open interval (0, 1)."""
    if not _finite(value) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {value!r}")
    return float(value)


def check_replay(replay: Any) -> float:
    """Validate a replay fraction in [0, 1)."""
    if not _finite(replay) or not 0.0 <= float(replay) < 1.0:
        raise ValueError(f"replay must lie in [0, 1), got {replay!r}")
    return float(replay)


def check_dim(dim: Any) -> int:
    """Validate a data dimension (integer >= 1)."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    return int(dim)


def check_positive(value: Any, name: str) -> float:
    """Validate a finite positive number."""
    if not _finite(value) or float(value) <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def lr_multipliers(lr_mult: Mapping[str, float] | None, train_means: bool = True,
                   key: str = "lr_mult") -> dict[str, float]:
    """Per-group step multipliers {weight, old, new} (default 1); train_means=False zeroes the mean groups.

    The one definition for the theory engine and the mixture generators (``key`` names the config key in errors).
    """
    out = {g: 1.0 for g in GROUPS}
    if lr_mult is not None and not isinstance(lr_mult, Mapping):
        raise ConfigError(key, lr_mult, "a mapping of weight / old / new to numbers >= 0, or null")
    for k, v in (lr_mult or {}).items():
        check_choice(k, key, GROUPS)
        if isinstance(v, bool) or not _finite(v) or float(v) < 0:
            raise ConfigError(f"{key}.{k}", v, "a finite number >= 0")
        out[k] = float(v)
    if not train_means:
        out["old"] = out["new"] = 0.0
    return out


@dataclass(frozen=True)
class PopulationSpec:
    """The world a population objective lives in (whitened units)."""

    delta: float
    beta_star: float = 0.5
    dim: int = 1
    weight: str = "logit"
    replay: float = 0.0
    replay_source: str = "p_old"
    beta0: float | None = None
    new_offset: float = 1.0

    def __post_init__(self) -> None:
        check_delta(self.delta)
        check_open_unit(self.beta_star, "beta_star")
        check_dim(self.dim)
        check_choice(self.weight, "weight", WEIGHTS)
        check_replay(self.replay)
        check_choice(self.replay_source, "replay_source", REPLAY_SOURCES)
        if self.beta0 is not None:
            check_open_unit(self.beta0, "beta0")
        if not _finite(self.new_offset):
            raise ValueError(f"new_offset must be a finite number, got {self.new_offset!r}")

    @property
    def b0(self) -> float:
        """Initial old weight (beta0, defaulting to beta_star)."""
        return float(self.beta_star if self.beta0 is None else self.beta0)

    def reference(self, objective: str) -> list[tuple[float, float]]:
        """(weight, axial mean) components of p_data ("fkl") or p* ("rkl"); all lie on the e1 axis."""
        check_choice(objective, "objective", OBJECTIVES)
        d, lam = float(self.delta), float(self.replay)
        if objective == "rkl":
            return [(self.beta_star, 0.0), (1.0 - self.beta_star, d)]
        comps = [(1.0 - lam, d)]
        if lam > 0:
            if self.replay_source == "p_old":
                comps.append((lam, 0.0))
            else:
                comps += [(lam * self.b0, 0.0), (lam * (1.0 - self.b0), d - float(self.new_offset))]
        return comps


def theta_star(delta: float, beta_star: float, weight: str = "logit", dim: int = 1) -> dict[str, np.ndarray]:
    """Parameters of the true target (the reverse-KL optimum) in the chosen weight coordinates."""
    b = check_open_unit(beta_star, "beta_star")
    check_choice(weight, "weight", WEIGHTS)
    dim = check_dim(dim)
    w = math.log(b / (1 - b)) if weight == "logit" else b
    new = np.zeros(dim)
    new[0] = check_delta(delta)
    return {"weight": np.array(w), "old": np.zeros(dim), "new": new}


# ------------------------------------------------------------------------------------ torch (general) path
def _log_weights_t(wp: torch.Tensor, weight: str) -> tuple[torch.Tensor, torch.Tensor]:
    if weight == "logit":
        return -torch.nn.functional.softplus(-wp), -torch.nn.functional.softplus(wp)
    return torch.log(wp), torch.log1p(-wp)


def _perp_basis(vectors: list[np.ndarray], min_dims: int, ambient: int) -> np.ndarray:
    """Orthonormal columns spanning the given (d-1)-vectors, padded with unit vectors up to min_dims."""
    basis: list[np.ndarray] = []
    for v in vectors:
        r = v - sum((b @ v) * b for b in basis) if basis else v.copy()
        n = np.linalg.norm(r)
        if n > 1e-12 * max(1.0, np.linalg.norm(v)):
            basis.append(r / n)
    for i in range(ambient):
        if len(basis) >= min(min_dims, ambient):
            break
        e = np.zeros(ambient)
        e[i] = 1.0
        r = e - sum((b @ e) * b for b in basis) if basis else e
        if np.linalg.norm(r) > 1e-8:
            basis.append(r / np.linalg.norm(r))
    return np.stack(basis, axis=1) if basis else np.zeros((ambient, 0))


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def population_loss(
    objective: str,
    params: Mapping[str, Any],
    spec: PopulationSpec,
    *,
    n_perp: int = 48,
    min_perp_dims: int = 0,
) -> torch.Tensor:
    """Exact population objective (a KL divergence) as a differentiable float64 torch scalar.

    params: {"weight": eta or beta (per spec.weight), "old": mu_o in R^d, "new": mu_n in R^d} (whitened).
    The integral over R^d is reduced to the span of e1 and the off-axis parts of the model means (<= 3-D);
    min_perp_dims forces extra orthogonal directions (used for second derivatives off the span).
    """
    check_choice(objective, "objective", OBJECTIVES)
    d = spec.dim
    wp = _as_tensor(params["weight"]).reshape(())
    mo = _as_tensor(params["old"]).reshape(-1)
    mn = _as_tensor(params["new"]).reshape(-1)
    if mo.shape[0] != d or mn.shape[0] != d:
        raise ValueError(f"params 'old' and 'new' must have length dim={d}")
    if spec.weight == "direct" and not 0.0 < float(wp.detach()) < 1.0:
        raise ValueError(f"params['weight'] must lie in (0, 1) for direct weights, got {float(wp.detach())}")
    lb, l1b = _log_weights_t(wp, spec.weight)
    ref = spec.reference(objective)
    if d > 1:
        P = torch.as_tensor(
            _perp_basis([mo.detach().numpy()[1:], mn.detach().numpy()[1:]], min_perp_dims, d - 1)
        )
    else:
        P = torch.zeros((0, 0), dtype=torch.float64)
    k_perp = P.shape[1]
    co = torch.cat([mo[:1], mo[1:] @ P]) if k_perp else mo[:1]
    cn = torch.cat([mn[:1], mn[1:] @ P]) if k_perp else mn[:1]
    axial = [a for _, a in ref] + [float(mo[0].detach()), float(mn[0].detach())]
    x1, v1 = composite_gauss_legendre(min(axial) - TAIL, max(axial) + TAIL, PANEL, ORDER)
    grids = [torch.as_tensor(x1)]
    wgrids = [torch.as_tensor(v1)]
    if k_perp:
        z, wz = gauss_hermite_lebesgue(n_perp)
        for _ in range(k_perp):
            grids.append(torch.as_tensor(z))
            wgrids.append(torch.as_tensor(wz))
    mesh = torch.meshgrid(*grids, indexing="ij")
    X = torch.stack([m.reshape(-1) for m in mesh], dim=1)
    V = torch.ones(X.shape[0], dtype=torch.float64)
    for wm in torch.meshgrid(*wgrids, indexing="ij"):
        V = V * wm.reshape(-1)
    k = X.shape[1]
    const = k * LOG_SQRT_2PI

    def logphi(c: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((X - c) ** 2).sum(dim=1) - const

    logq = torch.logaddexp(lb + logphi(co), l1b + logphi(cn))
    ref_terms = []
    for w, a in ref:
        c = torch.zeros(k, dtype=torch.float64)
        c[0] = a
        ref_terms.append(math.log(w) + logphi(c))
    logp = torch.logsumexp(torch.stack(ref_terms), dim=0)
    if objective == "fkl":
        return (V * torch.exp(logp) * (logp - logq)).sum()
    return (V * torch.exp(logq) * (logq - logp)).sum()


def population_gradient(
    objective: str, params: Mapping[str, Any], spec: PopulationSpec
) -> dict[str, np.ndarray]:
    """Exact gradient of population_loss w.r.t. {weight, old, new} (autograd through the quadrature)."""
    leaves = {k: _as_tensor(params[k]).reshape(() if k == "weight" else (-1,)).clone().requires_grad_(True)
              for k in GROUPS}
    loss = population_loss(objective, leaves, spec)
    grads = torch.autograd.grad(loss, [leaves[k] for k in GROUPS])
    out = {k: g.detach().numpy().copy() for k, g in zip(GROUPS, grads, strict=True)}
    out["loss"] = np.array(float(loss.detach()))
    return out


# ------------------------------------------------------------------------------------- numpy 1-D fast path
class AxisEngine:
    """Population loss and its analytic gradient for collinear means (everything on e1), numpy float64.

    Orthogonal directions are identical standard normals for every component, so the d-dimensional KL equals
    the 1-D one and the gradient has no orthogonal part. Used by population_flow (fast, ~50 us per call).
    """

    def __init__(self, objective: str, spec: PopulationSpec, lo: float, hi: float) -> None:
        self.objective = check_choice(objective, "objective", OBJECTIVES)
        self.weight = spec.weight
        self.spec = spec
        self.lo, self.hi = lo, hi
        self.x, self.v = composite_gauss_legendre(lo, hi, PANEL, ORDER)
        ref = spec.reference(objective)
        terms = np.stack([math.log(w) - 0.5 * (self.x - a) ** 2 for w, a in ref])
        self.logp = np.logaddexp.reduce(terms, axis=0) - LOG_SQRT_2PI
        if objective == "fkl":
            self.pv = self.v * np.exp(self.logp)
            self.neg_entropy = float(np.sum(self.pv * self.logp))

    @classmethod
    def covering(cls, objective: str, spec: PopulationSpec, means: list[float]) -> AxisEngine:
        """Engine whose grid covers the reference components and the given model means by TAIL units."""
        axial = [a for _, a in spec.reference(objective)] + list(means)
        return cls(objective, spec, min(axial) - TAIL, max(axial) + TAIL)

    def covers(self, mo: float, mn: float) -> bool:
        """Whether the grid still reaches TAIL - 2 units beyond both model means."""
        m = TAIL - 2.0
        return self.lo + m <= min(mo, mn) and max(mo, mn) <= self.hi - m

    def evaluate(self, wp: float, mo: float, mn: float) -> tuple[float, float, float, float]:
        """(KL loss, d/dweight, d/dmu_o, d/dmu_n) at weight parameter wp and axial means mo, mn."""
        x = self.x
        if self.weight == "logit":
            lb, l1b = -np.logaddexp(0.0, -wp), -np.logaddexp(0.0, wp)
            beta = math.exp(lb)
        else:
            beta = wp
            lb, l1b = math.log(wp), math.log1p(-wp)
        xo = x - mo
        xn = x - mn
        a = lb - 0.5 * xo * xo
        b = l1b - 0.5 * xn * xn
        lq = np.logaddexp(a, b)
        wo = np.exp(a - lq)
        lq = lq - LOG_SQRT_2PI
        if self.objective == "fkl":
            r = -self.pv
            loss = self.neg_entropy - float(np.dot(self.pv, lq))
        else:
            f = lq - self.logp
            r = self.v * np.exp(lq) * f
            loss = float(np.sum(self.v * np.exp(lq) * f))
        wn = 1.0 - wo
        if self.weight == "logit":
            gw = float(np.dot(r, wo)) - beta * float(r.sum())
        else:
            gw = float(np.dot(r, wo)) / beta - float(np.dot(r, wn)) / (1.0 - beta)
        rwo = r * wo
        gmo = float(np.dot(rwo, xo))
        gmn = float(np.dot(r - rwo, xn))
        return loss, gw, gmo, gmn


def population_flow(
    objective: str,
    delta: float,
    beta_star: float,
    beta0: float | None,
    new_offset: float,
    lr: float,
    steps: int,
    weight: str = "logit",
    replay: float = 0.0,
    dim: int = 1,
    replay_source: str = "p_old",
    lr_mult: Mapping[str, float] | None = None,
    sigma: float = 1.0,
    train_means: bool = True,
    record_every: int = 1,
    clip: float = 1e-3,
) -> dict[str, np.ndarray]:
    """Full-batch gradient descent on the exact population objective, from the paper's initial state.

    Start: beta = beta0 (default beta_star), mu_o = mu_o*, mu_n = mu_n* - new_offset e1. Steps:
    weight param -= lr * m_weight * dL/dparam; means (data units, Sigma = sigma^2 I) -= lr * m_g * grad, i.e.
    whitened means move by lr * m_g / sigma^2 * grad_whitened. Direct weights are clamped to [clip, 1-clip].
    For "rkl" the replay arguments are ignored (replay leaves the population objective unchanged, R10).
    Returns arrays over recorded steps (0, record_every, ..., steps): step, weight (beta), old_mean_error and
    new_mean_error (Euclidean, data units), old_mean/new_mean (first whitened coordinate), separation
    (Mahalanobis distance between the model means) and loss (the KL divergence).
    """
    check_choice(objective, "objective", OBJECTIVES)
    delta = check_delta(delta)
    beta_star = check_open_unit(beta_star, "beta_star")
    b0 = beta_star if beta0 is None else check_open_unit(beta0, "beta0")
    check_choice(weight, "weight", WEIGHTS)
    replay = check_replay(replay)
    check_choice(replay_source, "replay_source", REPLAY_SOURCES)
    check_dim(dim)
    sigma = check_positive(sigma, "sigma")
    lr = check_positive(lr, "lr")
    if not _finite(new_offset):
        raise ValueError(f"new_offset must be a finite number, got {new_offset!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, (int, np.integer)) or record_every < 1:
        raise ValueError(f"record_every must be an integer >= 1, got {record_every!r}")
    if not _finite(clip) or not 0.0 < clip < 0.5:
        raise ValueError(f"clip must lie in (0, 0.5), got {clip!r}")
    mult = lr_multipliers(lr_mult, train_means)
    spec = PopulationSpec(delta, beta_star, 1, weight, replay if objective == "fkl" else 0.0, replay_source,
                          b0, float(new_offset))
    hw = lr * mult["weight"]
    ho = lr * mult["old"] / sigma**2
    hn = lr * mult["new"] / sigma**2
    mo, mn = 0.0, delta - float(new_offset)
    if weight == "logit":
        wp = math.log(b0 / (1.0 - b0))
    else:
        wp = min(max(b0, clip), 1.0 - clip)
    engine = AxisEngine.covering(objective, spec, [mo, mn])
    span = [min(0.0, mn, delta) - EXCURSION, max(0.0, mn, delta) + EXCURSION]
    rec: dict[str, list[float]] = {k: [] for k in
                                   ("step", "weight", "old_mean", "new_mean", "separation", "loss")}
    for t in range(int(steps) + 1):
        if not engine.covers(mo, mn):
            engine = AxisEngine.covering(objective, spec, [mo, mn])
        loss, gw, gmo, gmn = engine.evaluate(wp, mo, mn)
        if t % record_every == 0 or t == steps:
            rec["step"].append(t)
            rec["weight"].append(1.0 / (1.0 + math.exp(-wp)) if weight == "logit" else wp)
            rec["old_mean"].append(mo)
            rec["new_mean"].append(mn)
            rec["separation"].append(abs(mn - mo))
            rec["loss"].append(loss)
        if t == steps:
            break
        wp -= hw * gw
        if weight == "direct":
            wp = min(max(wp, clip), 1.0 - clip)
        mo -= ho * gmo
        mn -= hn * gmn
        if not (math.isfinite(wp) and math.isfinite(mo) and math.isfinite(mn)):
            raise FloatingPointError(f"population_flow diverged at step {t}; reduce lr (lr={lr})")
        if not (span[0] <= mo <= span[1] and span[0] <= mn <= span[1]):
            raise FloatingPointError(f"population_flow diverged at step {t}: a mean left [{span[0]:g}, {span[1]:g}]; "
                                     f"reduce lr (lr={lr})")
    out = {k: np.asarray(v, dtype=np.float64) for k, v in rec.items()}
    out["step"] = out["step"].astype(np.int64)
    out["old_mean_error"] = sigma * np.abs(out["old_mean"])
    out["new_mean_error"] = sigma * np.abs(out["new_mean"] - delta)
    return out


# ---------------------------------------------------------------------------------------- local geometry
def _expand(axial: np.ndarray, perp: np.ndarray, cross: np.ndarray, dim: int) -> np.ndarray:
    """Assemble the (1+2d) matrix [weight, mu_o(d), mu_n(d)] from axial 3x3 and perpendicular 2x2 blocks."""
    n = 1 + 2 * dim
    H = np.zeros((n, n))
    ax = [0, 1, 1 + dim]
    H[np.ix_(ax, ax)] = axial
    for j in range(1, dim):
        pj = [1 + j, 1 + dim + j]
        H[np.ix_(pj, pj)] = perp
        H[np.ix_(ax, pj)] = cross
        H[np.ix_(pj, ax)] = cross.T
    return H


def _data_units(H: np.ndarray, dim: int, sigma: float) -> np.ndarray:
    j = np.concatenate([[1.0], np.full(2 * dim, 1.0 / sigma)])
    return H * j[:, None] * j[None, :]


def hessian_at_optimum(
    delta: float, beta_star: float, weight: str = "logit", dim: int = 1, sigma: float = 1.0
) -> np.ndarray:
    """Hessian of KL(q || p*) at theta*, ordered [weight, mu_o (d), mu_n (d)], by torch autograd.

    Computed exactly in a 2-D reduced space (axis + one orthogonal direction, when dim >= 2) and replicated
    over the isotropic orthogonal directions. Mean coordinates are in data units (Sigma = sigma^2 I).
    """
    delta = check_delta(delta)
    dim = check_dim(dim)
    sigma = check_positive(sigma, "sigma")
    k = min(dim, 2)
    spec = PopulationSpec(delta, beta_star, k, weight)
    ts = theta_star(delta, beta_star, weight, k)
    flat0 = torch.as_tensor(np.concatenate([np.atleast_1d(ts["weight"]), ts["old"], ts["new"]]))

    def fn(flat: torch.Tensor) -> torch.Tensor:
        p = {"weight": flat[0], "old": flat[1:1 + k], "new": flat[1 + k:]}
        return population_loss("rkl", p, spec, min_perp_dims=k - 1)

    Hr = torch.autograd.functional.hessian(fn, flat0).numpy()
    ax = [0, 1, 1 + k]
    if k == 1:
        H = Hr[np.ix_(ax, ax)]
    else:
        pj = [2, 4]
        H = _expand(Hr[np.ix_(ax, ax)], Hr[np.ix_(pj, pj)], Hr[np.ix_(ax, pj)], dim)
    H = 0.5 * (H + H.T)
    return _data_units(H, dim, sigma)


def fisher_information(
    delta: float, beta_star: float, weight: str = "logit", dim: int = 1, sigma: float = 1.0
) -> np.ndarray:
    """Fisher information E_{p*}[s s^T] of the mixture at theta*, from explicit scores (1-D quadrature).

    Scores: s_eta = w_o - beta (logit) or w_o/beta - w_n/(1-beta) (direct), s_mu_o = w_o (x - mu_o),
    s_mu_n = w_n (x - mu_n); orthogonal directions contribute E[w_a w_b] blocks (E z^2 = 1).
    """
    delta = check_delta(delta)
    b = check_open_unit(beta_star, "beta_star")
    check_choice(weight, "weight", WEIGHTS)
    dim = check_dim(dim)
    sigma = check_positive(sigma, "sigma")
    x, v = composite_gauss_legendre(-TAIL, delta + TAIL, PANEL, ORDER)
    a = math.log(b) - 0.5 * x**2
    c = math.log(1 - b) - 0.5 * (x - delta) ** 2
    lp = np.logaddexp(a, c)
    wo = np.exp(a - lp)
    wn = 1.0 - wo
    pv = v * np.exp(lp - LOG_SQRT_2PI)
    sw = wo - b if weight == "logit" else wo / b - wn / (1 - b)
    S = np.stack([sw, wo * x, wn * (x - delta)])
    axial = (S * pv) @ S.T
    W = np.stack([wo, wn])
    perp = (W * pv) @ W.T
    F = _expand(axial, perp, np.zeros((3, 2)), dim)
    return _data_units(F, dim, sigma)


def fisher_eigenvalues(
    delta: float, beta_star: float, weight: str = "logit", dim: int = 1, sigma: float = 1.0
) -> np.ndarray:
    """Ascending eigenvalues of the Fisher information (= Hessian of the reverse KL) at theta*."""
    return np.linalg.eigvalsh(fisher_information(delta, beta_star, weight, dim, sigma))


def fisher_condition_number(
    delta: float, beta_star: float, weight: str = "logit", dim: int = 1, sigma: float = 1.0
) -> float:
    """lambda_max / lambda_min of the Fisher information at theta* (R8)."""
    ev = fisher_eigenvalues(delta, beta_star, weight, dim, sigma)
    return float(ev[-1] / ev[0])


def contraction_factor(
    delta: float,
    beta_star: float,
    lr: float,
    weight: str = "logit",
    dim: int = 1,
    lr_mult: Mapping[str, float] | None = None,
    sigma: float = 1.0,
    train_means: bool = True,
) -> dict[str, float]:
    """Linear convergence of reverse-KL GD near theta* (R8/P7).

    The linearised map is I - lr M H (M = per-group multipliers, frozen groups dropped). Returns lambda_min
    and lambda_max of M^1/2 H M^1/2, the paper's factor 1 - lr lambda_min and the exact spectral radius.
    """
    lr = check_positive(lr, "lr")
    mult = lr_multipliers(lr_mult, train_means)
    H = fisher_information(delta, beta_star, weight, dim, sigma)
    m = np.concatenate([[mult["weight"]], np.full(dim, mult["old"]), np.full(dim, mult["new"])])
    keep = m > 0
    if not keep.any():
        raise ValueError("lr_mult freezes every parameter group; nothing to converge")
    r = np.sqrt(m[keep])
    A = H[np.ix_(keep, keep)] * r[:, None] * r[None, :]
    ev = np.linalg.eigvalsh(A)
    return {
        "lambda_min": float(ev[0]),
        "lambda_max": float(ev[-1]),
        "factor": float(1.0 - lr * ev[0]),
        "spectral_radius": float(np.max(np.abs(1.0 - lr * ev))),
    }


def replay_importance_stats(
    delta: float,
    beta_star: float,
    replay: float,
    beta0: float | None = None,
    new_offset: float = 1.0,
    replay_source: str = "p_old",
    dim: int = 1,
    weight: str = "logit",
) -> dict[str, float]:
    """IS statistics of reverse KL with mixture replay at the initial model theta0 (R10/P12).

    Proposal rho = lam p_rep + (1 - lam) q. Returns sup_x q/rho (on the quadrature grid), the exact bound
    1/(1 - lam), and the second-moment inflation E_q[omega |g|^2] / E_q[|g|^2] of the per-sample gradient
    g = s (log q - log p*), also bounded by 1/(1 - lam).
    """
    delta = check_delta(delta)
    b = check_open_unit(beta_star, "beta_star")
    lam = check_replay(replay)
    b0 = b if beta0 is None else check_open_unit(beta0, "beta0")
    check_choice(replay_source, "replay_source", REPLAY_SOURCES)
    check_choice(weight, "weight", WEIGHTS)
    dim = check_dim(dim)
    mo, mn = 0.0, delta - float(new_offset)
    x, v = composite_gauss_legendre(min(mo, mn, 0.0) - TAIL, max(mn, delta) + TAIL, PANEL, ORDER)
    a = math.log(b0) - 0.5 * (x - mo) ** 2
    c = math.log(1 - b0) - 0.5 * (x - mn) ** 2
    lq = np.logaddexp(a, c)
    wo = np.exp(a - lq)
    wn = 1 - wo
    lps = np.logaddexp(math.log(b) - 0.5 * x**2, math.log(1 - b) - 0.5 * (x - delta) ** 2)
    lrep = -0.5 * x**2 if replay_source == "p_old" else lq
    rho = lam * np.exp(lrep) + (1 - lam) * np.exp(lq)
    q = np.exp(lq)
    omega = q / rho
    f = lq - lps
    sw = wo - b0 if weight == "logit" else wo / b0 - wn / (1 - b0)
    g2 = f**2 * (sw**2 + wo**2 * ((x - mo) ** 2 + dim - 1) + wn**2 * ((x - mn) ** 2 + dim - 1))
    qv = v * q
    return {
        "sup_weight": float(omega.max()),
        "weight_bound": 1.0 / (1.0 - lam),
        "second_moment_ratio": float(np.sum(qv * omega * g2) / np.sum(qv * g2)),
        "variance_inflation_bound": 1.0 / (1.0 - lam),
    }
