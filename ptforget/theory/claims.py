"""One exact prediction per claim P1-P17 of paper.md §5, for a given TheoryConfig.

Each ``pN_*`` function returns a Prediction holding named numbers (predicted law values and, where a law
is asymptotic, the exact population-flow value it should be compared with). Closed-form laws for the
near-on-policy methods (R11-R13) are exposed as small functions so tests can check them against direct
two-atom simulations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ._quadrature import LOG_SQRT_2PI, composite_gauss_legendre
from .overlap import (
    bhattacharyya,
    bhattacharyya_distance,
    chi2_overlap,
    hellinger_squared,
    misassignment,
    misassignment_bound,
    misassignment_general,
)
from .population import (
    ORDER,
    PANEL,
    REPLAY_SOURCES,
    TAIL,
    WEIGHTS,
    AxisEngine,
    PopulationSpec,
    check_choice,
    check_delta,
    check_dim,
    check_open_unit,
    check_positive,
    check_replay,
    contraction_factor,
    fisher_eigenvalues,
    fisher_information,
    hessian_at_optimum,
    lr_multipliers,
    population_flow,
    population_gradient,
    replay_importance_stats,
)

SDFT_ANCHORS = ("p_star", "p_new")
#: the largest separation the predictions are computed for: chi^2 = e^(delta^2) - 1 (P2) overflows a float64
#: beyond 26.6, where the modes no longer overlap at all (BC = e^(-delta^2 / 8) < 1e-36)
MAX_DELTA = 26.0
STARVATION_MODES = ("on_policy", "mixture", "fixed_slots")
Quantity = tuple[str, float, str, str]


def _is_real(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# ----------------------------------------------------------------------------------------------- config
@dataclass
class TheoryConfig:
    """Parameters of the default theory task (whitened units; see population.py for conventions)."""

    dim: int = 2
    delta: float = 4.0
    sigma: float = 1.0
    beta_star: float = 0.5
    beta0: float | None = None
    new_offset: float = 1.0
    weight: str = "logit"
    lr: float = 0.05
    steps: int = 2000
    replay: float = 0.1
    replay_source: str = "p_old"
    batch: int = 16
    lr_mult: dict[str, float] | None = None
    train_means: bool = True
    clip: float = 1e-3
    delta_grid: tuple[float, ...] = (4.0, 5.0, 6.0, 7.0, 8.0)
    beta_star_grid: tuple[float, ...] = (0.05, 0.2, 0.5)
    # SDFT (R11): teacher old odds times kappa per refresh; anchored EMA teacher (1-lam) q_ema + lam a.
    kappa: float = 0.9
    sdft_lam: float = 0.1
    sdft_anchor: str = "p_star"
    refreshes: int = 10
    # TTT-Discover (R12): entropic tilt gamma, KL strength lam to a reference with old weight beta_ref.
    gamma: float = 1.0
    lam: float = 0.5
    beta_ref: float | None = None
    reward_old: float = 0.0
    reward_new: float = 1.0
    # OAPL (R13): temperature tau, ``refreshes`` lag refreshes.
    tau: float = 5.0

    def __post_init__(self) -> None:
        check_dim(self.dim)
        check_delta(self.delta)
        if self.delta > MAX_DELTA:
            raise ValueError(f"delta must be at most {MAX_DELTA:g} (chi^2 = e^(delta^2) - 1 overflows beyond; "
                             f"BC < 1e-36 there), got {self.delta!r}")
        check_positive(self.sigma, "sigma")
        check_open_unit(self.beta_star, "beta_star")
        if self.beta0 is None:
            self.beta0 = self.beta_star
        check_open_unit(self.beta0, "beta0")
        if not math.isfinite(float(self.new_offset)):
            raise ValueError(f"new_offset must be a finite number, got {self.new_offset!r}")
        check_choice(self.weight, "weight", WEIGHTS)
        check_positive(self.lr, "lr")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        check_replay(self.replay)
        check_choice(self.replay_source, "replay_source", REPLAY_SOURCES)
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {self.batch!r}")
        lr_multipliers(self.lr_mult, self.train_means)
        if not 0.0 < float(self.clip) < 0.5:
            raise ValueError(f"clip must lie in (0, 0.5), got {self.clip!r}")
        for d in self.delta_grid:
            if not _is_real(d) or not 0 <= float(d) <= MAX_DELTA:
                raise ValueError(f"delta_grid entries must be numbers in [0, {MAX_DELTA:g}], got {d!r}")
        self.delta_grid = tuple(float(d) for d in self.delta_grid)
        self.beta_star_grid = tuple(check_open_unit(b, "beta_star_grid entry") for b in self.beta_star_grid)
        if len(self.delta_grid) < 2:
            raise ValueError(f"delta_grid must hold at least two values, got {list(self.delta_grid)}")
        if len(self.beta_star_grid) < 2:
            raise ValueError(f"beta_star_grid must hold at least two values, got {list(self.beta_star_grid)}")
        check_positive(self.kappa, "kappa")
        if not 0.0 <= float(self.sdft_lam) <= 1.0:
            raise ValueError(f"sdft_lam must lie in [0, 1], got {self.sdft_lam!r}")
        check_choice(self.sdft_anchor, "sdft_anchor", SDFT_ANCHORS)
        if isinstance(self.refreshes, bool) or not isinstance(self.refreshes, int) or self.refreshes < 0:
            raise ValueError(f"refreshes must be an integer >= 0, got {self.refreshes!r}")
        if not math.isfinite(self.gamma) or self.gamma < 0:
            raise ValueError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        if not math.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam!r}")
        if self.beta_ref is None:
            self.beta_ref = self.beta0
        check_open_unit(self.beta_ref, "beta_ref")
        for name in ("reward_old", "reward_new"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        check_positive(self.tau, "tau")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], ignore_unknown: bool = False) -> TheoryConfig:
        """Build from a dict (e.g. a Hydra section); unknown keys raise unless ignore_unknown=True."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown and not ignore_unknown:
            raise ValueError(f"unknown TheoryConfig keys {unknown}; allowed keys are {sorted(names)}")
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("delta_grid", "beta_star_grid"):
            if k in kw:
                if not isinstance(kw[k], list | tuple):
                    raise ValueError(f"{k} must be a list of numbers, got {kw[k]!r}")
                kw[k] = tuple(kw[k])
        if kw.get("lr_mult") is not None:
            kw["lr_mult"] = dict(kw["lr_mult"])
        return cls(**kw)

    @property
    def mult(self) -> dict[str, float]:
        """Effective per-group multipliers (train_means=False zeroes the mean groups)."""
        return lr_multipliers(self.lr_mult, self.train_means)

    def flow(self, objective: str, **overrides: Any) -> dict[str, np.ndarray]:
        """population_flow with this config's arguments, optionally overridden."""
        kw: dict[str, Any] = dict(
            delta=self.delta, beta_star=self.beta_star, beta0=self.beta0, new_offset=self.new_offset,
            lr=self.lr, steps=self.steps, weight=self.weight, replay=self.replay, dim=self.dim,
            replay_source=self.replay_source, lr_mult=self.lr_mult, sigma=self.sigma,
            train_means=self.train_means, clip=self.clip,
        )
        kw.update(overrides)
        return population_flow(objective, **kw)


@dataclass
class Prediction:
    """A claim's prediction: quantities are (name, value, unit, note) tuples."""

    claim: str
    title: str
    law: str
    tag: str
    quantities: list[Quantity] = field(default_factory=list)

    def value(self, name: str) -> float:
        """Look up a quantity by name."""
        for n, v, _, _ in self.quantities:
            if n == name:
                return v
        raise KeyError(f"{self.claim} has no quantity {name!r}")

    def add(self, name: str, value: float, unit: str = "", note: str = "") -> None:
        """Append a quantity (stored as a float)."""
        self.quantities.append((name, float(value), unit, note))


# ------------------------------------------------------------------------ closed forms for R10-R13 (helpers)
def starvation_probability(beta: float, batch: int, replay: float = 0.0, mode: str = "on_policy") -> float:
    """P(no old-mode sample in a batch of size B) (R10/P13).

    on_policy: (1-beta)^B; mixture (each draw from p_old w.p. lam, else from q): ((1-lam)(1-beta))^B;
    fixed_slots (ceil(lam B) replay slots): 0 when lam > 0, else on-policy.
    """
    b = float(beta)
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    lam = check_replay(replay)
    check_choice(mode, "mode", STARVATION_MODES)
    if mode == "on_policy" or (mode == "fixed_slots" and math.ceil(lam * batch) == 0):
        return (1.0 - b) ** batch
    if mode == "mixture":
        return ((1.0 - lam) * (1.0 - b)) ** batch
    return 0.0


def sdft_weight_after_refreshes(beta0: float, kappa: float, k: int) -> float:
    """R11: old weight after k teacher refreshes when each teacher multiplies the old odds by kappa."""
    check_open_unit(beta0, "beta0")
    check_positive(kappa, "kappa")
    return _sigmoid(_logit(beta0) + k * math.log(kappa))


def sdft_anchored_weight(beta0: float, beta_anchor: float, lam: float, k: int) -> float:
    """Old weight after k exact-tracking updates towards the teacher (1-lam) q + lam a: fixed point beta_a."""
    return beta_anchor + (1.0 - lam) ** k * (beta0 - beta_anchor)


def ttt_fixed_point(gamma: float, lam: float, reward_old: float, reward_new: float, beta_ref: float) -> float:
    """R12: stationary old weight of the entropic objective with KL strength lam (two-atom abstraction).

    Solves logit b = logit b_ref + (e^{g R_o} - e^{g R_n}) / (lam Z), Z = b e^{g R_o} + (1-b) e^{g R_n}, by
    bisection in logit space (the residual is increasing). gamma = inf gives the worst case (bound tight).
    lam = 0: 0 if R_n > R_o, 1 if R_o > R_n, else beta_ref.
    """
    lref = _logit(check_open_unit(beta_ref, "beta_ref"))
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    if reward_old == reward_new:
        return float(beta_ref)
    if lam == 0:
        return 0.0 if reward_new > reward_old else 1.0
    if math.isinf(gamma):
        a, b = (1.0, 0.0) if reward_old > reward_new else (0.0, 1.0)
    else:
        m = max(reward_old, reward_new)
        a, b = math.exp(gamma * (reward_old - m)), math.exp(gamma * (reward_new - m))

    def resid(ell: float) -> float:
        p = _sigmoid(ell)
        return ell - lref - (a - b) / (lam * (p * a + (1.0 - p) * b))

    lo, hi = lref - 1.0, lref + 1.0
    for _ in range(1100):  # doubling the bracket: 2^1100 exceeds every float, so this always ends
        if not resid(lo) > 0:
            break
        lo = lref - 2.0 * (lref - lo)
    for _ in range(1100):
        if not resid(hi) < 0:
            break
        hi = lref + 2.0 * (hi - lref)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"no finite stationary weight for lam={lam!r}, gamma={gamma!r} (the KL anchor is too weak)")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if resid(mid) > 0:
            hi = mid
        else:
            lo = mid
    return _sigmoid(0.5 * (lo + hi))


def ttt_lower_bound(beta_inf: float, lam: float, beta_ref: float) -> float:
    """R12 bound sigmoid(logit b_ref - 1/(lam (1 - b_inf))) on the stationary old weight (lam > 0)."""
    check_positive(lam, "lam")
    return _sigmoid(_logit(check_open_unit(beta_ref, "beta_ref")) - 1.0 / (lam * (1.0 - beta_inf)))


def oapl_weight(beta0: float, k: int, reward_old: float, reward_new: float, tau: float) -> float:
    """R13: old weight after k lag refreshes, sigmoid(logit b0 - k (r_n - r_o)/tau)."""
    check_open_unit(beta0, "beta0")
    check_positive(tau, "tau")
    return _sigmoid(_logit(beta0) - k * (reward_new - reward_old) / tau)


def _fit_slope(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or not np.all(np.isfinite(y)):
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def _bc_quadrature(delta: float) -> float:
    x, v = composite_gauss_legendre(-13.0, delta + 13.0, 0.5, 12)
    return float(np.sum(v * np.exp(-0.25 * x**2 - 0.25 * (x - delta) ** 2 - LOG_SQRT_2PI)))


# --------------------------------------------------------------------------------------------- P1 ... P17
def p1_fkl_mass_collapse(cfg: TheoryConfig) -> Prediction:
    """P1: forward KL on p_n alone drives beta to 0 while mu_n -> mu_n*."""
    p = Prediction("P1", "SFT (forward KL, p_n only): mass forgetting", "beta_t -> 0, mu_n -> mu_n*",
                   "V / R✓")
    r = cfg.flow("fkl", replay=0.0)
    p.add("predicted_final_weight", 0.0, "", "population optimum (R1)")
    p.add("flow_final_weight", r["weight"][-1], "", f"exact population GD after {cfg.steps} steps")
    p.add("flow_final_new_mean_error", r["new_mean_error"][-1], "data units", "predicted -> 0")
    p.add("flow_final_old_mean_error", r["old_mean_error"][-1], "data units", "see P4")
    p.add("flow_final_kl", r["loss"][-1], "nats", "KL(p_n || q_theta) -> 0")
    return p


def p2_fkl_collapse_rate(cfg: TheoryConfig) -> Prediction:
    """P2: logit 1/t law, direct-beta linear law with finite hitting time, chi^2 terminal rate."""
    p = Prediction("P2", "SFT collapse rate", "logit: beta0/(1+beta0 h t); direct: linear, hits 0 after "
                   "(beta0-beta0^2/2)/h steps; terminal rate chi^2 = e^{Delta^2}-1", "R✓")
    b0 = float(cfg.beta0)
    h = cfg.lr * cfg.mult["weight"]
    t = cfg.steps
    rl = cfg.flow("fkl", replay=0.0, weight="logit")
    p.add("logit_predicted_weight_at_T", b0 / (1 + b0 * h * t), "", f"T = {t} steps")
    p.add("logit_flow_weight_at_T", rl["weight"][-1], "", "exact population GD")
    t10 = max(1, t // 10)
    p.add("logit_predicted_weight_at_T/10", b0 / (1 + b0 * h * t10), "", f"T/10 = {t10} steps")
    p.add("logit_flow_weight_at_T/10", rl["weight"][t10], "", "exact population GD")
    if h > 0:  # a frozen weight (lr_mult.weight = 0) never reaches the clip: no hitting time to predict
        pred_steps = (b0 - b0**2 / 2) / h
        rd = cfg.flow("fkl", replay=0.0, weight="direct", steps=_direct_steps(cfg))
        hit = np.nonzero(rd["weight"] <= cfg.clip * (1 + 1e-9))[0]
        p.add("direct_predicted_steps_to_zero", pred_steps, "steps", "well-separated law")
        p.add("direct_flow_steps_to_clip", float(rd["step"][hit[0]]) if hit.size else float("inf"), "steps",
              f"first step with beta at the clip {cfg.clip}")
    p.add("chi2_overlap", chi2_overlap(cfg.delta), "", "terminal rate: direct d beta/dt = -chi2 beta")
    p.add("terminal_regime_threshold", math.exp(-cfg.delta**2 / 4), "", "beta below e^{-Delta^2/4}")
    return p


def _direct_steps(cfg: TheoryConfig) -> int:
    """Steps of P2's direct-weight flow: three predicted hitting times, at least the run's steps."""
    b0, h = float(cfg.beta0), cfg.lr * cfg.mult["weight"]
    return max(cfg.steps, int(3 * (b0 - b0**2 / 2) / h) + 10) if h > 0 else cfg.steps


def p3_fkl_weight_gradient(cfg: TheoryConfig) -> Prediction:
    """P3: exact forward-KL weight gradient vs (beta - m_{n->o})/(beta(1-beta)) and its bounds."""
    p = Prediction("P3", "SFT weight gradient", "dL_F/dbeta = (beta - m_n->o)/(beta(1-beta)) in "
                   "[(1-BC/(2 sqrt(beta(1-beta))))/(1-beta), 1/(1-beta)]", "R✓")
    b = float(cfg.beta0)
    spec = PopulationSpec(cfg.delta, cfg.beta_star, cfg.dim, "direct")
    th = {"weight": b, "old": np.zeros(cfg.dim), "new": np.eye(cfg.dim)[0] * cfg.delta}
    g = population_gradient("fkl", th, spec)
    m = misassignment(cfg.delta, b, "new_to_old")
    bc = bhattacharyya(cfg.delta)
    p.add("exact_gradient_direct", g["weight"], "", "autograd through quadrature, means at truth")
    p.add("formula_gradient_direct", (b - m) / (b * (1 - b)), "", "(beta - m_n->o)/(beta(1-beta))")
    p.add("upper_bound", 1 / (1 - b), "", "1/(1-beta)")
    p.add("lower_bound", (1 - bc / (2 * math.sqrt(b * (1 - b)))) / (1 - b), "", "AM-GM bound")
    p.add("formula_gradient_logit", b - m, "", "dL_F/deta = beta - m_n->o")
    return p


def p4_fkl_old_mean_drift(cfg: TheoryConfig) -> Prediction:
    """P4: under SFT the trainable old mean is pulled toward mu_n* with force proportional to m_{n->o}."""
    p = Prediction("P4", "SFT old-mean drift", "|grad_mu_o L_F| ~ m_n->o; Delta<~4: mu_o migrates onto mu_n*",
                   "R✓")
    b0 = float(cfg.beta0)
    mn0 = cfg.delta - cfg.new_offset
    spec = PopulationSpec(cfg.delta, cfg.beta_star, 1, cfg.weight, 0.0)
    eng = AxisEngine.covering("fkl", spec, [0.0, mn0])
    wp = _logit(b0) if cfg.weight == "logit" else b0
    _, _, gmo, _ = eng.evaluate(wp, 0.0, mn0)
    m = misassignment_general([0.0], [mn0], b0, [0.0], [cfg.delta], "new_to_old")
    r = cfg.flow("fkl", replay=0.0, train_means=True)
    p.add("initial_old_mean_force", -gmo / cfg.sigma, "1/data unit", "toward mu_n* (positive)")
    p.add("initial_misassignment_n_to_o", m, "", "m_n->o at theta0")
    p.add("force_per_misassignment", -gmo / m if m > 0 else 0.0, "", "O(Delta) proportionality factor")
    p.add("flow_final_old_mean_error", r["old_mean_error"][-1], "data units", f"after {cfg.steps} steps")
    p.add("flow_final_weight", r["weight"][-1], "", "")
    p.add("migrated", float(abs(r["old_mean"][-1] - cfg.delta) < 0.5), "flag", "mu_o within 0.5 of mu_n*")
    return p


def p5_fkl_replay_optimum(cfg: TheoryConfig) -> Prediction:
    """P5: forward KL with replay fraction lam has optimum beta = lam, mu_o = mu_o*."""
    p = Prediction("P5", "SFT + replay", "beta -> lam (p_old replay), mu_o -> mu_o*", "V / R✓")
    lam = cfg.replay
    pred = lam if cfg.replay_source == "p_old" else lam * float(cfg.beta0)
    r = cfg.flow("fkl")
    p.add("predicted_weight", pred, "", "lam (p_old) or ~lam beta0 + overlap (q0)")
    p.add("flow_final_weight", r["weight"][-1], "", f"exact population GD after {cfg.steps} steps")
    p.add("flow_final_old_mean_error", r["old_mean_error"][-1], "data units", "predicted -> 0 (p_old)")
    p.add("flow_max_old_mean_error", r["old_mean_error"].max(), "data units", "transient")
    return p


def p6_rkl_retention(cfg: TheoryConfig) -> Prediction:
    """P6: reverse KL converges to the true target: beta -> beta*, means -> truth, KL -> 0."""
    p = Prediction("P6", "Reverse KL retention", "(beta, mu_o, mu_n) -> (beta*, mu_o*, mu_n*), KL -> 0",
                   "V / R✓")
    r = cfg.flow("rkl")
    p.add("predicted_weight", cfg.beta_star, "", "")
    p.add("flow_final_weight", r["weight"][-1], "", f"after {cfg.steps} steps")
    p.add("flow_final_kl", r["loss"][-1], "nats", "")
    p.add("flow_final_old_mean_error", r["old_mean_error"][-1], "data units", "")
    p.add("flow_final_new_mean_error", r["new_mean_error"][-1], "data units", "")
    return p


def p7_rkl_contraction(cfg: TheoryConfig) -> Prediction:
    """P7: linear convergence of reverse-KL GD with factor 1 - h lambda_min of the Hessian at theta*."""
    p = Prediction("P7", "Reverse KL local rate", "||theta_t - theta*|| ~ (1 - h lambda_min)^t", "V / R✓")
    c = contraction_factor(cfg.delta, cfg.beta_star, cfg.lr, cfg.weight, cfg.dim, cfg.lr_mult, cfg.sigma,
                           cfg.train_means)
    b = cfg.beta_star
    s2 = cfg.sigma**2
    wentry = b * (1 - b) if cfg.weight == "logit" else 1 / (b * (1 - b))
    p.add("lambda_min", c["lambda_min"], "", "of M^1/2 H M^1/2 at theta*")
    p.add("lambda_max", c["lambda_max"], "", "")
    p.add("asymptotic_lambda_min", min(wentry, b / s2, (1 - b) / s2), "", "Delta -> inf, unit multipliers")
    p.add("predicted_factor", c["factor"], "per step", "1 - h lambda_min")
    p.add("spectral_radius", c["spectral_radius"], "per step", "max |1 - h eig|")
    steps = max(cfg.steps, 20000)
    r = cfg.flow("rkl", steps=steps)
    wstar = _logit(b) if cfg.weight == "logit" else b
    w = r["weight"]
    wp = np.log(w) - np.log1p(-w) if cfg.weight == "logit" else w
    err = np.sqrt((wp - wstar) ** 2 + r["old_mean_error"] ** 2 + r["new_mean_error"] ** 2)
    i1 = np.nonzero(err < 1e-4)[0]
    i2 = np.nonzero(err < 1e-9)[0]
    if i1.size and i2.size and i2[0] > i1[0]:
        emp = (err[i2[0]] / err[i1[0]]) ** (1.0 / (r["step"][i2[0]] - r["step"][i1[0]]))
    else:
        emp = float("nan")
    p.add("flow_empirical_factor", emp, "per step", "from err 1e-4 -> 1e-9 of the exact flow")
    return p


def p8_condition_number(cfg: TheoryConfig) -> Prediction:
    """P8: Hessian = Fisher at theta*, condition number -> max(b,1-b)/(b(1-b)) (Sigma = I)."""
    p = Prediction("P8", "Conditioning at theta*", "kappa(F) -> max(b*,1-b*)/(b*(1-b*)) kappa(Sigma)",
                   "V / R✓")
    ev = fisher_eigenvalues(cfg.delta, cfg.beta_star, cfg.weight, cfg.dim)
    H = hessian_at_optimum(cfg.delta, cfg.beta_star, cfg.weight, cfg.dim)
    F = fisher_information(cfg.delta, cfg.beta_star, cfg.weight, cfg.dim)
    b = cfg.beta_star
    p.add("condition_number", ev[-1] / ev[0], "", "whitened units")
    p.add("condition_number_limit", max(b, 1 - b) / (b * (1 - b)), "", "Delta -> inf (logit)")
    p.add("lambda_min", ev[0], "", "")
    p.add("lambda_max", ev[-1], "", "")
    p.add("max_abs_hessian_minus_fisher", float(np.abs(H - F).max()), "", "should be ~0")
    return p


def p9_misassignment(cfg: TheoryConfig) -> Prediction:
    """P9: exact misassignment probabilities at the truth and their BC bounds (R0)."""
    p = Prediction("P9", "Misassignment", "m_o->n <= sqrt((1-b)/b) BC, m_n->o <= sqrt(b/(1-b)) BC", "V / R✓")
    d, b = cfg.delta, cfg.beta_star
    for direc, tag in (("old_to_new", "o_to_n"), ("new_to_old", "n_to_o")):
        p.add(f"m_{tag}", misassignment(d, b, direc), "", "soft (logistic-normal)")
        p.add(f"m_{tag}_hard", misassignment(d, b, direc, hard=True), "", "P(wrong resp > 1/2)")
        p.add(f"m_{tag}_bound", misassignment_bound(d, b, direc), "", "R0")
    return p


def _rkl_drift(cfg: TheoryConfig, **kw: Any) -> tuple[float, float]:
    r = cfg.flow("rkl", **kw)
    return float(r["old_mean_error"].max()), float(r["separation"].min())


def p10_rkl_drift_vs_delta(cfg: TheoryConfig) -> Prediction:
    """P10: reverse-KL sup drift decays like BC at closest approach; slope of log drift vs Dmin^2/8 -> -1."""
    p = Prediction("P10", "Reverse KL drift vs separation", "sup drift ~ e^{-Dmin^2/8} poly(Dmin); "
                   "slope of log drift vs Dmin^2/8 -> -1; bounded by R7", "V / R✓")
    xs, ys = [], []
    b = cfg.beta_star
    for d in cfg.delta_grid:
        drift, dmin = _rkl_drift(cfg, delta=d)
        bound = math.sqrt((1 - b) / b) * math.exp(-dmin**2 / 8) * math.sqrt(cfg.dim + dmin**2 / 4)
        p.add(f"drift[Delta={d:g}]", drift, "data units", f"Dmin = {dmin:.3f}")
        p.add(f"r7_bound[Delta={d:g}]", bound * cfg.sigma, "data units", "O(.) with constant 1")
        if drift > 0:
            xs.append(dmin**2 / 8)
            ys.append(math.log(drift))
    p.add("fitted_slope", _fit_slope(np.array(xs), np.array(ys)), "", "predicted -> -1")
    p.add("predicted_slope", -1.0, "", "")
    return p


def _quasi_static_drift(cfg: TheoryConfig, beta: float) -> float:
    """Equilibrium |mu_o - mu_o*| with beta = beta* and mu_n frozen at its start (closest approach)."""
    steps = math.ceil(40.0 / beta)
    r = cfg.flow("rkl", beta_star=beta, beta0=beta, lr=1.0, steps=steps, weight="logit", sigma=1.0,
                 lr_mult={"weight": 0.0, "old": 1.0, "new": 0.0}, train_means=True, record_every=steps)
    return float(r["old_mean_error"][-1]) * cfg.sigma


def p11_rkl_drift_vs_beta(cfg: TheoryConfig) -> Prediction:
    """P11: reverse-KL drift grows like sqrt((1-b*)/b*) as the restoring force beta Sigma^-1 weakens.

    The law is quasi-static (mu_n held at its closest approach). In the exact flow the old mean also responds
    at rate ~beta h, so its transient sup drift can shrink with beta*; both are reported.
    """
    p = Prediction("P11", "Reverse KL drift vs beta*",
                   "drift ratio ~ sqrt((1-b*)/b*) / sqrt((1-b_ref)/b_ref)", "R")
    grid = sorted(cfg.beta_star_grid)
    ref = grid[-1]
    d_ref, _ = _rkl_drift(cfg, beta_star=ref, beta0=ref)
    q_ref = _quasi_static_drift(cfg, ref)
    for b in grid:
        dr, _ = _rkl_drift(cfg, beta_star=b, beta0=b)
        qs = _quasi_static_drift(cfg, b)
        pred = math.sqrt((1 - b) / b) / math.sqrt((1 - ref) / ref)
        p.add(f"predicted_ratio[beta*={b:g}]", pred, "", f"vs beta*={ref:g}")
        p.add(f"quasi_static_drift[beta*={b:g}]", qs, "data units", "mu_n frozen at start")
        p.add(f"quasi_static_ratio[beta*={b:g}]", qs / q_ref if q_ref > 0 else float("nan"), "", "")
        p.add(f"flow_drift[beta*={b:g}]", dr, "data units", "sup over the exact flow")
        p.add(f"flow_drift_ratio[beta*={b:g}]", dr / d_ref if d_ref > 0 else float("nan"), "", "")
    return p


def p12_rkl_replay_is(cfg: TheoryConfig) -> Prediction:
    """P12: reverse KL + IS-corrected replay: optimum unchanged, weight and inflation <= 1/(1-lam)."""
    p = Prediction("P12", "Reverse KL + replay (IS)", "beta -> beta* for any lam; omega <= 1/(1-lam); "
                   "2nd-moment inflation <= 1/(1-lam)", "V / R")
    s = replay_importance_stats(cfg.delta, cfg.beta_star, cfg.replay, cfg.beta0, cfg.new_offset,
                                cfg.replay_source, cfg.dim, cfg.weight)
    p.add("predicted_weight", cfg.beta_star, "", "population objective independent of lam")
    p.add("is_weight_bound", s["weight_bound"], "", "1/(1-lam)")
    p.add("sup_is_weight_at_theta0", s["sup_weight"], "", "exact, on the quadrature grid")
    p.add("variance_inflation_bound", s["variance_inflation_bound"], "", "1/(1-lam)")
    p.add("second_moment_ratio_at_theta0", s["second_moment_ratio"], "", "E_q[omega |g|^2]/E_q[|g|^2]")
    return p


def p13_starvation(cfg: TheoryConfig) -> Prediction:
    """P13: probability of a batch with no old-mode sample (at beta = beta0)."""
    p = Prediction("P13", "Old-mode starvation", "on-policy (1-b)^B; mixture ((1-lam)(1-b))^B <= (1-lam)^B; "
                   "fixed slots 0", "V / R")
    b, B, lam = float(cfg.beta0), cfg.batch, cfg.replay
    p.add("p_starve_on_policy", starvation_probability(b, B, 0.0), "", f"B={B}, beta={b:g}")
    p.add("p_starve_mixture", starvation_probability(b, B, lam, "mixture"), "", f"lam={lam:g}")
    p.add("mixture_bound", (1 - lam) ** B, "", "(1-lam)^B")
    p.add("p_starve_fixed_slots", starvation_probability(b, B, lam, "fixed_slots"), "",
          f"{math.ceil(lam * B)} replay slots")
    p.add("expected_old_on_policy", B * b, "samples", "B beta")
    p.add("expected_old_mixture", B * (lam + (1 - lam) * b), "samples", "B(lam + (1-lam) beta)")
    return p


def p14_sdft(cfg: TheoryConfig) -> Prediction:
    """P14: SDFT as reverse KL to a self-teacher: beta follows the teacher's odds; anchored EMA -> anchor."""
    p = Prediction("P14", "SDFT", "beta_k = sigmoid(logit b0 + k log kappa); retained iff kappa >= 1; "
                   "anchored EMA teacher fixed point = anchor", "V / R")
    b0, K = float(cfg.beta0), cfg.refreshes
    ba = cfg.beta_star if cfg.sdft_anchor == "p_star" else 0.0
    p.add("weight_after_refreshes", sdft_weight_after_refreshes(b0, cfg.kappa, K), "",
          f"K={K}, kappa={cfg.kappa:g}")
    p.add("mass_retained", float(cfg.kappa >= 1), "flag", "kappa >= 1")
    p.add("anchored_fixed_point", ba, "", f"anchor {cfg.sdft_anchor}")
    p.add("anchored_weight_after_refreshes", sdft_anchored_weight(b0, ba, cfg.sdft_lam, K), "",
          f"lam={cfg.sdft_lam:g}, exact tracking")
    don = abs(cfg.delta - cfg.new_offset)
    force = math.sqrt(b0 * (1 - b0)) * bhattacharyya(don) * math.sqrt(cfg.dim + don**2 / 4)
    p.add("cross_mode_forcing_bound_at_theta0", force, "", "no restoring term: drift accumulates")
    return p


def p15_ttt_discover(cfg: TheoryConfig) -> Prediction:
    """P15: TTT-Discover entropic objective with KL lam: stationary beta and its lower bound."""
    p = Prediction("P15", "TTT-Discover", "lam=0: beta -> 0; lam>0: logit b_inf = logit b_ref + "
                   "(e^{gR_o}-e^{gR_n})/(lam Z) >= logit b_ref - 1/(lam(1-b_inf))", "R (R✓ two-atom)")
    ro, rn, br = cfg.reward_old, cfg.reward_new, float(cfg.beta_ref)
    if cfg.lam > 0:
        binf = ttt_fixed_point(cfg.gamma, cfg.lam, ro, rn, br)
        worst = ttt_fixed_point(math.inf, cfg.lam, ro, rn, br)
        p.add("stationary_weight", binf, "", f"gamma={cfg.gamma:g}, lam={cfg.lam:g}")
        p.add("lower_bound", ttt_lower_bound(binf, cfg.lam, br), "", "")
        p.add("worst_case_weight_gamma_inf", worst, "", "bound tight")
    else:
        p.add("stationary_weight", ttt_fixed_point(cfg.gamma, 0.0, ro, rn, br), "", "no KL anchor")
    p.add("stationary_weight_no_kl", ttt_fixed_point(cfg.gamma, 0.0, ro, rn, br), "", "lam = 0")
    return p


def p16_oapl(cfg: TheoryConfig) -> Prediction:
    """P16: OAPL over K lag refreshes: beta_K = sigmoid(logit b0 - K (r_n - r_o)/tau)."""
    p = Prediction("P16", "OAPL", "beta_K = sigmoid(logit b0 - K(r_n - r_o)/tau); retained iff r_o >= r_n",
                   "R")
    b0, K = float(cfg.beta0), cfg.refreshes
    p.add("weight_after_refreshes", oapl_weight(b0, K, cfg.reward_old, cfg.reward_new, cfg.tau), "",
          f"K={K}, tau={cfg.tau:g}")
    p.add("logit_shift_per_refresh", -(cfg.reward_new - cfg.reward_old) / cfg.tau, "nats", "")
    p.add("mass_retained", float(cfg.reward_old >= cfg.reward_new), "flag", "r_o >= r_n")
    p.add("drift_scale_bc", bhattacharyya(cfg.delta), "", "drift O(BC)")
    return p


def p17_bc_closed_form(cfg: TheoryConfig) -> Prediction:
    """P17: BC of equal-covariance Gaussians = exp(-Delta^2/8)."""
    p = Prediction("P17", "Bhattacharyya coefficient", "int sqrt(phi1 phi2) = e^{-Delta^2/8}", "R✓")
    p.add("bc_closed_form", bhattacharyya(cfg.delta), "", "")
    p.add("bc_quadrature", _bc_quadrature(cfg.delta), "", "1-D Gauss-Legendre")
    p.add("bhattacharyya_distance", bhattacharyya_distance(cfg.delta), "", "Delta^2/8")
    p.add("hellinger_squared", hellinger_squared(cfg.delta), "", "2(1 - BC)")
    return p


CLAIMS: dict[str, Callable[[TheoryConfig], Prediction]] = {
    "P1": p1_fkl_mass_collapse,
    "P2": p2_fkl_collapse_rate,
    "P3": p3_fkl_weight_gradient,
    "P4": p4_fkl_old_mean_drift,
    "P5": p5_fkl_replay_optimum,
    "P6": p6_rkl_retention,
    "P7": p7_rkl_contraction,
    "P8": p8_condition_number,
    "P9": p9_misassignment,
    "P10": p10_rkl_drift_vs_delta,
    "P11": p11_rkl_drift_vs_beta,
    "P12": p12_rkl_replay_is,
    "P13": p13_starvation,
    "P14": p14_sdft,
    "P15": p15_ttt_discover,
    "P16": p16_oapl,
    "P17": p17_bc_closed_form,
}


# ------------------------------------------------------------------------------------------ resources
#: seconds per population-flow step: a fixed cost and a cost per quadrature node (measured on a laptop core,
#: rounded up: the estimate errs on the long side)
STEP_S, NODE_S = 3e-5, 1e-7
#: bytes a flow keeps per recorded step (six Python float lists, then six arrays)
RECORD_BYTES = 6 * 40


def _flow_nodes(delta: float, new_offset: float) -> int:
    """Quadrature nodes of a flow's grid: the span of the means and targets plus TAIL on each side."""
    lo, hi = min(0.0, delta - new_offset, delta), max(0.0, delta - new_offset, delta)
    return math.ceil((hi - lo + 2 * TAIL) / PANEL) * ORDER


def theory_budget(cfg: TheoryConfig) -> dict[str, Any]:
    """Estimated seconds and peak bytes of ``all_predictions(cfg)``, and the TheoryConfig field that drives each.

    Mirrors the claims' loops: every population flow (steps x quadrature nodes), the (1 + 2 dim)^2 Fisher and
    Hessian matrices and their eigenvalues, and the logistic-normal quadratures of the misassignment. Cheap: no
    prediction is computed.
    """
    nodes = _flow_nodes(cfg.delta, cfg.new_offset)
    flows: list[tuple[str, int, int, int]] = []  # (driver field, steps, record_every, nodes)
    flows += [("steps", cfg.steps, 1, nodes)] * 6  # P1, P2 (logit), P4, P5, P6 and P11's reference
    direct = _direct_steps(cfg)
    flows.append(("lr" if direct > cfg.steps else "steps", direct, 1, nodes))  # P2 (direct)
    flows.append(("steps", max(cfg.steps, 20000), 1, nodes))  # P7
    # P10 and P11 run one flow per grid entry: beyond the default grid sizes the grid is what costs
    flows += [("steps" if i < 5 else "delta_grid", cfg.steps, 1, _flow_nodes(d, cfg.new_offset))
              for i, d in enumerate(cfg.delta_grid)]
    for i, b in enumerate(cfg.beta_star_grid):  # P11: the exact flow and the quasi-static equilibrium
        flows.append(("steps" if i < 3 else "beta_star_grid", cfg.steps, 1, nodes))
        q = math.ceil(40.0 / b)
        flows.append(("beta_star_grid", q, q, nodes))
    time_by: dict[str, float] = {}
    mem_by: dict[str, float] = {}
    for field_name, steps, every, n in flows:
        time_by[field_name] = time_by.get(field_name, 0.0) + (steps + 1) * (STEP_S + NODE_S * n)
        mem_by[field_name] = max(mem_by.get(field_name, 0.0), (steps // every + 2) * RECORD_BYTES + 16 * 8 * n)
    n = 1 + 2 * cfg.dim  # P7/P8: Fisher, Hessian and their difference; eigenvalues are O(n^3)
    time_by["dim"] = 4 * 2e-9 * n**3
    mem_by["dim"] = 8 * 8.0 * n * n
    s = cfg.delta  # misassignment quadrature (P3, P4, P9): panels narrower than pi / s over [-13, s + 13]
    logistic = 16 * math.ceil((s + 26.0) / min(0.5, math.pi / max(s, 1e-12)))
    time_by["delta"] = 6 * 2e-8 * logistic
    mem_by["delta"] = 6 * 8.0 * logistic
    seconds, peak = sum(time_by.values()), max(mem_by.values())
    return {"seconds": seconds, "bytes": peak, "time_driver": max(time_by, key=time_by.get),
            "memory_driver": max(mem_by, key=mem_by.get)}


def max_stable_lr(cfg: TheoryConfig) -> float:
    """The largest gradient-descent step for which the exact flows stay stable near their optima, 2 / curvature.

    Curvature: the largest eigenvalue of the step-weighted Fisher at theta* (reverse KL) and the means' own
    curvature m / sigma^2 (forward KL pulls a mean onto its data with unit curvature in whitened units). A
    direct weight is clamped to [clip, 1 - clip] after every step, so its curvature does not count.
    """
    mult = cfg.mult
    curv = max(mult["old"], mult["new"]) / cfg.sigma**2
    if cfg.weight == "logit":
        curv = max(curv, mult["weight"] / 4.0)
    lr_mult = dict(mult) if cfg.weight == "logit" else {**mult, "weight": 0.0}
    if any(v > 0 for v in lr_mult.values()):
        c = contraction_factor(cfg.delta, cfg.beta_star, 1.0, cfg.weight, min(cfg.dim, 2), lr_mult, cfg.sigma)
        curv = max(curv, c["lambda_max"])
    return 2.0 / curv if curv > 0 else math.inf


def all_predictions(cfg: TheoryConfig | None = None) -> list[Prediction]:
    """Every claim's prediction for cfg (default TheoryConfig())."""
    cfg = cfg or TheoryConfig()
    return [fn(cfg) for fn in CLAIMS.values()]


def _json_number(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)


def predictions_to_json(preds: list[Prediction]) -> dict[str, Any]:
    """JSON-serialisable dict keyed by claim id (non-finite numbers become strings)."""
    out: dict[str, Any] = {}
    for p in preds:
        d = asdict(p)
        d["quantities"] = [{"name": n, "value": _json_number(v), "unit": u, "note": nt}
                           for n, v, u, nt in p.quantities]
        out[p.claim] = d
    json.dumps(out)  # fail early if anything is not serialisable
    return out


def format_predictions(preds: list[Prediction]) -> str:
    """Plain-text table: one block per claim with its law and quantities."""
    lines: list[str] = []
    for p in preds:
        lines.append(f"{p.claim:<4} {p.title}  [{p.tag}]")
        lines.append(f"     law: {p.law}")
        for n, v, u, nt in p.quantities:
            lines.append(f"     {n:<40} {v:>14.6g} {u:<14} {nt}")
    return "\n".join(lines)
