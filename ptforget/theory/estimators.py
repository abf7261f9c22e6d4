"""Predictions of the trained estimators themselves, where the population laws (R3, R6, R12, R13) leave out what
the code's estimators add: SGD noise (the sup of a noisy drift), finite groups (TTT-Discover's leave-one-out
normaliser, OAPL's baseline computed on the sample's own group), EMA teachers (SDFT), and the Hessian of the
actual training loss. Each docstring states its derivation and assumptions; tests/theory/test_estimators.py checks
each against an independent computation (brute-force simulation, quadrature or Monte Carlo).

Whitened 1-D units: mu_o* = 0, mu_n* = delta, Sigma = 1, logit weight eta (beta = sigmoid(eta)), as in
``ptforget.theory.population``.

P10  ``rkl_enumerate_grad_cov``, ``rkl_sgd_drift``, ``rkl_noise_floor_sd``: the SGD noise of the reverse-KL
     enumerate estimator and the distribution of the learned sup drift (exact flow + linear-noise approximation).
P11  ``quasi_static_drift``: the equilibrium old-mean drift with beta and mu_n frozen.
P15  ``ttt_expected_gradient``, ``ttt_stationary_point``: the fixed point of the *expected* TTT-Discover update.
P16  ``oapl_group_targets``, ``oapl_sync_map``, ``oapl_weights``: OAPL's per-sync map with a finite group.
P14  ``sdft_icl_ratchet_rate``, ``sdft_icl_weight``, ``sdft_new_anchor_weight``, ``sdft_icl_population_flow``.
P2   ``logit_collapse_law``, ``fitted_exponent``. P8 ``rkl_estimator_hessian``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ptforget.stats import t_quantile
from ptforget.theory.methods import bisect_root

from ._quadrature import LOG_SQRT_2PI, composite_gauss_legendre, gauss_hermite_normal

SQRT2PI = math.sqrt(2.0 * math.pi)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p):
    return math.log(p / (1.0 - p))


def _gl_grid(lo: float, hi: float, panel: float = 0.25, order: int = 16) -> tuple[np.ndarray, np.ndarray]:
    return composite_gauss_legendre(lo, hi, panel, order)


def t975(df: int) -> float:
    """Student-t 97.5% quantile."""
    return t_quantile(0.975, df)


# =============================================================================================== P10
def _rkl_per_sample(delta: float, beta_star: float, eta: float, mo: float, mn: float, x: np.ndarray, k: int
                    ) -> np.ndarray:
    """Per-sample gradient v_k(x) of w_k f(x), f = log q - log p*, x = mu_k + eps reparameterised (3, n).

    Rows: d/d eta, d/d mu_o, d/d mu_n. The enumerate estimator is sum_k mean_i v_k(mu_k + eps_ki).
    """
    b = float(_sigmoid(eta))
    la, lb = math.log(b), math.log1p(-b)
    a = la - 0.5 * (x - mo) ** 2
    c = lb - 0.5 * (x - mn) ** 2
    lq = np.logaddexp(a, c) - LOG_SQRT_2PI
    wo = np.exp(a - LOG_SQRT_2PI - lq)
    wn = 1.0 - wo
    ps_o = math.log(beta_star) - 0.5 * x**2
    ps_n = math.log1p(-beta_star) - 0.5 * (x - delta) ** 2
    lp = np.logaddexp(ps_o, ps_n) - LOG_SQRT_2PI
    so = np.exp(ps_o - LOG_SQRT_2PI - lp)
    f = lq - lp
    dlogq_dx = -(wo * (x - mo) + wn * (x - mn))
    dlogp_dx = -(so * x + (1.0 - so) * (x - delta))
    fx = dlogq_dx - dlogp_dx
    wk = b if k == 0 else 1.0 - b
    dwk = b * (1.0 - b) * (1.0 if k == 0 else -1.0)
    g_eta = dwk * f + wk * (wo - b)
    g_mo = wk * (wo * (x - mo) + (fx if k == 0 else 0.0))
    g_mn = wk * (wn * (x - mn) + (fx if k == 1 else 0.0))
    return np.stack([g_eta, g_mo, g_mn])


_EPS_GRID: tuple[np.ndarray, np.ndarray] | None = None


def _eps_grid() -> tuple[np.ndarray, np.ndarray]:
    """Nodes/probability weights for E over eps ~ N(0, 1): composite Gauss-Legendre on [-13, 13] times phi."""
    global _EPS_GRID
    if _EPS_GRID is None:
        z, v = _gl_grid(-13.0, 13.0, panel=0.5, order=12)
        _EPS_GRID = (z, v * np.exp(-0.5 * z * z) / SQRT2PI)
    return _EPS_GRID


def rkl_enumerate_grad_cov(delta: float, beta_star: float, eta: float, mo: float, mn: float, batch: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Mean (3,) and covariance (3, 3) of the GMM ``enumerate`` reverse-KL gradient estimator at (eta, mo, mn).

    The estimator (``GaussianMixture.expectation``) draws n = ceil(batch / 2) reparameterised samples
    x = mu_k + eps per component k and averages sum_k w_k f(x); its gradient is sum_k mean_i v_k(eps_ki) with
    v_k the per-sample gradient of w_k f(mu_k + eps). The components' samples are independent, so
    Cov = sum_k Cov_eps[v_k] / n. Expectations over eps ~ N(0, 1) by composite Gauss-Legendre on [-13, 13]
    (the integrands have logistic kinks of width ~1/delta that a single Gauss-Hermite rule resolves poorly).
    The mean equals the exact population gradient (the estimator is unbiased).
    Near theta* with separated modes v_mu_o ~ beta * eps, so sd(grad mu_o) ~ beta / sqrt(n).
    """
    z, w = _eps_grid()
    n = math.ceil(batch / 2)
    mean = np.zeros(3)
    cov = np.zeros((3, 3))
    for k, mu in ((0, mo), (1, mn)):
        v = _rkl_per_sample(delta, beta_star, eta, mo, mn, mu + z, k)
        m = v @ w
        mean += m
        d = v - m[:, None]
        cov += (d * w) @ d.T / n
    return mean, cov


def _rkl_grad(delta: float, beta_star: float, eta: float, mo: float, mn: float) -> np.ndarray:
    return rkl_enumerate_grad_cov(delta, beta_star, eta, mo, mn, 2)[0]


@dataclass
class DriftPrediction:
    flow_sup: float            # sup_t |mu_o(t)| of the exact (noise-free) flow at the evaluation steps
    flow_argmax: int           # the evaluation step where the flow's drift peaks
    mean_sup: float            # E sup_t |mu_o(t) + eps(t)| over the evaluation steps (flow + estimator noise)
    sd_sup: float              # its per-seed standard deviation
    sd_at_argmax: float        # sd of eps at flow_argmax (noise of the drift read at the flow's peak step)
    stationary_sd: float       # sd of eps at the last step (~ the floor: sqrt(h beta / (2 n)) near theta*)
    mc_se_mean_sup: float      # Monte-Carlo standard error of mean_sup
    steps: np.ndarray          # evaluation steps
    flow_drift: np.ndarray     # signed flow drift mu_o(t) at the evaluation steps
    sd_drift: np.ndarray       # sd of eps(t) at the evaluation steps
    plateau_mean: float        # flow's mean signed drift over evaluation steps >= plateau_from
    plateau_sd: float          # per-seed sd of the learned plateau mean (time average of mu_o + eps)


def rkl_sgd_drift(delta: float, beta_star: float = 0.5, new_offset: float = 1.0, lr: float = 0.2,
                  steps: int = 400, batch: int = 16384, eval_every: int = 2, beta0: float | None = None,
                  n_mc: int = 4000, seed: int = 0, lr_mult: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  plateau_from: int | None = None) -> DriftPrediction:
    """Distribution of the learned sup old-mean drift under SGD with the enumerate reverse-KL estimator.

    Model (linear-noise approximation, LNA): theta_t = theta_flow(t) + e_t, where theta_flow is full-batch GD
    on the exact population KL(q || p*) and the deviation obeys the linearised SGD recursion

        e_{t+1} = (I - h H_t) e_t - h xi_t,   xi_t ~ N(0, C_t),   e_0 = 0,

    H_t = Hessian of the population loss at theta_flow(t) (central differences of the exact gradient) and C_t
    = covariance of the estimator's gradient at theta_flow(t) (``rkl_enumerate_grad_cov``). Assumptions: the
    deviations (~1e-3) are small against the scale on which H and C vary (O(1)), so the linearisation is exact to
    O(|e|^2); xi_t are independent across steps (fresh samples every step) and Gaussian (sums of 8192 iid
    terms). Near theta* with separated modes this is an AR(1) for mu_o with rate h beta and innovation sd
    h beta / sqrt(n), whose stationary sd is sqrt(h beta / (2 n)) (n = batch / 2): 0.0025 for h = 0.2,
    beta = 0.5, batch = 16384, i.e. the floor scales like 1 / sqrt(batch).

    The check's statistic sup_t |mu_o(t) - mu_o*| over evaluation steps is then sup_t |d(t) + e_mu_o(t)|; its
    mean and sd are computed by Monte Carlo over e (n_mc paths; the MC standard error is returned). Where the
    flow drift d(t) is below a few sd of e (Delta >= 7 at these settings) the sup is set by the noise alone
    (~2.9 sd over 200 evaluations); where d >> sd it exceeds the flow's sup by about +1 sd (the sup picks the
    upward noise near the flat peak).

    ``lr_mult`` = (weight, old, new) step multipliers (0 freezes a group: e.g. (0, 1, 0) is the quasi-static
    regime of P11, where the update is e_{t+1} = (I - h M H) e - h M xi). ``plateau_from``: also return the
    mean and per-seed sd of the time-averaged signed drift over evaluation steps >= plateau_from (default
    steps / 2), the unbiased statistic for an equilibrium drift.
    """
    b0 = beta_star if beta0 is None else beta0
    eta, mo, mn = _logit(b0), 0.0, delta - new_offset
    rng = np.random.default_rng(seed)
    e = np.zeros((n_mc, 3))
    cov_e = np.zeros((3, 3))
    rec_t, rec_d, rec_sd, paths = [], [], [], []
    fd = 1e-5
    for t in range(steps + 1):
        if t % eval_every == 0 or t == steps:
            rec_t.append(t)
            rec_d.append(mo)
            rec_sd.append(math.sqrt(cov_e[1, 1]))
            paths.append(mo + e[:, 1])
        if t == steps:
            break
        th = np.array([eta, mo, mn])
        g, C = rkl_enumerate_grad_cov(delta, beta_star, eta, mo, mn, batch)
        H = np.zeros((3, 3))
        for j in range(3):
            dp = th.copy()
            dm = th.copy()
            dp[j] += fd
            dm[j] -= fd
            H[:, j] = (_rkl_grad(delta, beta_star, *dp) - _rkl_grad(delta, beta_star, *dm)) / (2 * fd)
        H = 0.5 * (H + H.T)
        M = np.diag(np.asarray(lr_mult, float))
        A = np.eye(3) - lr * M @ H
        L = M @ np.linalg.cholesky(C + 1e-30 * np.eye(3))
        e = e @ A.T - lr * rng.standard_normal((n_mc, 3)) @ L.T
        cov_e = A @ cov_e @ A.T + lr**2 * M @ C @ M
        eta, mo, mn = th - lr * M @ g
    P = np.stack(paths, 1)
    sup = np.abs(P).max(1)
    d = np.abs(np.array(rec_d))
    j = int(np.argmax(d))
    ts = np.array(rec_t)
    keep = ts >= (steps // 2 if plateau_from is None else plateau_from)
    plat = P[:, keep].mean(1)
    return DriftPrediction(float(d.max()), int(rec_t[j]), float(sup.mean()), float(sup.std(ddof=1)),
                           float(rec_sd[j]), float(rec_sd[-1]), float(sup.std(ddof=1) / math.sqrt(n_mc)),
                           ts, np.array(rec_d), np.array(rec_sd), float(np.mean(np.array(rec_d)[keep])),
                           float(plat.std(ddof=1)))


def rkl_noise_floor_sd(beta: float, lr: float, batch: int) -> float:
    """Closed-form stationary sd of mu_o around theta* (separated modes): sqrt(h beta / (2 n)), n = batch / 2.

    AR(1): e_{t+1} = (1 - h beta) e_t - h xi_t, sd(xi) = beta / sqrt(n) => Var = h^2 beta^2 / n / (1 - (1 - h
    beta)^2) = h beta / (n (2 - h beta)). Returned exactly (with the (2 - h beta) factor).
    """
    n = math.ceil(batch / 2)
    return math.sqrt(lr * beta / (n * (2.0 - lr * beta)))


# =============================================================================================== P11
def quasi_static_drift(delta: float, beta: float, new_offset: float = 1.0) -> float:
    """Equilibrium signed old-mean drift when beta (= beta*) and mu_n = delta - new_offset are frozen (P11).

    Solves d/d mu_o KL(q || p*) = 0 for mu_o with eta = logit(beta*) and mu_n frozen (R6: restoring term
    beta mu_o + cross-mode term; the root is the fixed point SGD converges to when only mu_o is trained) by
    bracketing + bisection on the exact quadrature gradient. Returned in whitened units, sign convention
    positive = towards the new mode (reverse KL pushes the old mean *away*, so values are negative).
    Asymptotics: for large delta the cross-mode term is dominated by the region beyond the responsibility
    boundary x_b = Don/2 + log((1-beta)/beta)/Don, whose Gaussian tail carries e^{-x_b^2/2}
    = e^{-Don^2/8} sqrt((1-beta)/beta) e^{-log^2((1-beta)/beta)/(2 Don^2)}: the paper's sqrt((1-b)/b) law is
    the Don -> inf limit, approached slowly (factor e^{-log^2 r / (2 Don^2)} times polynomial corrections).
    """
    eta = _logit(beta)
    mn = delta - new_offset

    def g(mo: float) -> float:
        return float(rkl_enumerate_grad_cov(delta, beta, eta, mo, mn, 2)[0][1])

    lo, hi = -0.5, 0.5
    while g(lo) > 0:
        lo *= 2
    while g(hi) < 0:
        hi *= 2
    return bisect_root(g, lo, hi, 80)


# =============================================================================================== P15
def loo_inverse_mean(p: float, K: int, gamma: float) -> float:
    """E[1 / Z_{-i}] for Z_{-i} = mean of K-1 iid e_j = e^{gamma r_j}, r_j ~ Bernoulli(p) (exact binomial sum)."""
    from math import comb
    n = K - 1
    eg = math.exp(gamma)
    return float(sum(comb(n, b) * p**b * (1 - p) ** (n - b) / (1.0 + (eg - 1.0) * b / n) for b in range(n + 1)))


def ttt_two_atom_fixed_point(gamma: float, lam: float, beta_ref: float, K: int | None = None,
                             n_batch: int | None = None) -> float:
    """Stationary old weight of the *expected* TTT-Discover update in the two-atom abstraction (r_o=0, r_n=1).

    The code's advantage is A_i = e_i / Z_{-i} - 1 + lam (dbar - d_i) with the leave-one-out normaliser over the
    K-1 other samples of the group and dbar the mean of d = log q/q0 over the whole batch of N = G K samples.
    Because Z_{-i} is independent of x_i, E[(e_i/Z_{-i}) s_i] = E[1/Z_{-i}] grad E_q[e^{gamma r}], and because
    dbar contains d_i with weight 1/N, E[(dbar - d_i) s_i] = -(1 - 1/N) grad KL(q||q0). Setting the expected
    update to zero in the two-atom family (d/d eta of both terms carries the common factor beta (1 - beta)):

        logit b = logit b_ref + E[1/Z_{-}] (1 - e^gamma) / (lam (1 - 1/N)),

    which is R12's formula with 1/Z replaced by E[1/Z_{-}] >= 1/E[Z] (Jensen) and lam by lam (1 - 1/N).
    K = n_batch = None gives the population formula (``ptforget.theory.ttt_fixed_point``). Solved by bisection.
    """
    lref = _logit(beta_ref)
    eg = math.exp(gamma)
    shrink = 1.0 if n_batch is None else 1.0 - 1.0 / n_batch

    def resid(ell: float) -> float:
        b = float(_sigmoid(ell))
        inv = 1.0 / (b + (1 - b) * eg) if K is None else loo_inverse_mean(1 - b, K, gamma)
        return ell - lref - inv * (1 - eg) / (lam * shrink)

    lo, hi = lref - 20.0, lref
    return float(_sigmoid(bisect_root(resid, lo, hi)))


def _mix_axis(x, eta, mo, mn):
    b = float(_sigmoid(eta))
    a = math.log(b) - 0.5 * (x - mo) ** 2
    c = math.log1p(-b) - 0.5 * (x - mn) ** 2
    lq = np.logaddexp(a, c)
    wo = np.exp(a - lq)
    return lq - LOG_SQRT_2PI, wo, b


def ttt_expected_gradient(theta: np.ndarray, gamma: float, lam: float, delta: float, beta_star: float = 0.5,
                          beta0: float = 0.5, new_offset: float = 1.0, K: int | None = 64,
                          n_batch: int | None = 256) -> np.ndarray:
    """Expected ascent direction E[A s] of TTT-Discover in the 1-D GMM family, theta = (eta, mu_o, mu_n).

    Reward ``new_region``: r = 1 outside the old Bayes region of p*, i.e. for x > x_b with
    x_b = delta/2 + log(b*/(1-b*))/delta (where b* phi_o = (1-b*) phi_n), and r = 0 inside; q0 =
    beta0 N(0,1) + (1-beta0) N(delta - new_offset, 1), the generator at setup (the KL reference).
    E[A s] = E[1/Z_{-}] grad E_q[e^{gamma r}] - lam (1 - 1/N) grad KL(q || q0) (see ``ttt_two_atom_fixed_point``),
    with p = P_q(r = 1) = b Phi(mu_o - x_b) + (1-b) Phi(mu_n - x_b) in closed form and the KL gradient
    E_q[(log q - log q0) s] by Gauss-Legendre quadrature. K = None: population objective (1/Z, lam).
    The perpendicular coordinates of a d-dimensional task are identical N(0, I) in q and q0 and drop out.
    """
    from math import erf
    eta, mo, mn = (float(v) for v in theta)
    xb = 0.5 * delta + math.log(beta_star / (1 - beta_star)) / delta if delta > 0 else 0.0
    b = float(_sigmoid(eta))
    Phi = lambda z: 0.5 * (1.0 + erf(z / math.sqrt(2.0)))  # noqa: E731
    phi = lambda z: math.exp(-0.5 * z * z) / SQRT2PI  # noqa: E731
    p = b * Phi(mo - xb) + (1 - b) * Phi(mn - xb)
    dp = np.array([b * (1 - b) * (Phi(mo - xb) - Phi(mn - xb)), b * phi(mo - xb), (1 - b) * phi(mn - xb)])
    eg = math.exp(gamma)
    inv = 1.0 / (1.0 + (eg - 1.0) * p) if K is None else loo_inverse_mean(p, K, gamma)
    g_ent = inv * (eg - 1.0) * dp
    x, v = _gl_grid(min(mo, mn, 0.0) - 12.0, max(mo, mn, delta) + 12.0)
    lq, wo, _ = _mix_axis(x, eta, mo, mn)
    lq0, _, _ = _mix_axis(x, _logit(beta0), 0.0, delta - new_offset)
    qv = v * np.exp(lq) * (lq - lq0)
    s = np.stack([wo - b, wo * (x - mo), (1 - wo) * (x - mn)])
    g_kl = s @ qv
    shrink = 1.0 if n_batch is None else 1.0 - 1.0 / n_batch
    return g_ent - lam * shrink * g_kl


def ttt_stationary_point(gamma: float, lam: float, delta: float, beta_star: float = 0.5, beta0: float = 0.5,
                         new_offset: float = 1.0, K: int | None = 64, n_batch: int | None = 256,
                         train_means: bool = True, tol: float = 1e-12) -> dict[str, float]:
    """Zero of ``ttt_expected_gradient`` (Newton with a finite-difference Jacobian, from q0).

    This is the point Adam (or SGD) fluctuates around when its stationary mean zeroes the expected update --
    the GMM-family prediction of the learned old weight, including overlap (old tail rewarded, new tail in the
    old region unrewarded, means free to move) and the finite-K estimator. Returns weight, mu_o, mu_n (axis
    coordinates relative to mu_o* = 0) and the two-atom values for comparison.
    """
    th = np.array([_logit(beta0), 0.0, delta - new_offset])
    idx = [0, 1, 2] if train_means else [0]

    def G(t):
        return ttt_expected_gradient(t, gamma, lam, delta, beta_star, beta0, new_offset, K, n_batch)[idx]

    for _ in range(100):
        g = G(th)
        J = np.zeros((len(idx), len(idx)))
        for a, j in enumerate(idx):
            dt = np.zeros(3)
            dt[j] = 1e-6
            J[:, a] = (G(th + dt) - G(th - dt)) / 2e-6
        step = np.linalg.solve(J, g)
        th[idx] -= np.clip(step, -1.0, 1.0)
        if np.max(np.abs(step)) < tol:
            break
    return {"weight": float(_sigmoid(th[0])), "mu_o": float(th[1]), "mu_n": float(th[2]),
            "two_atom_population": ttt_two_atom_fixed_point(gamma, lam, beta0),
            "two_atom_finite_K": ttt_two_atom_fixed_point(gamma, lam, beta0, K, n_batch)}


# =============================================================================================== P16
def oapl_group_targets(p: float, G: int, tau: float) -> tuple[float, float]:
    """(v(0), v(1)): E[V-hat | own reward r_i = 0 or 1] for V-hat = tau (logsumexp_j(r_j / tau) - log G).

    The group holds the sample itself and G-1 iid others with P(r = 1) = p (p = the lag policy's new-region
    mass). With B ~ Bin(G-1, p) others rewarded, V-hat = tau log((e^{r_i/tau} + (G-1) + (e^{1/tau}-1) B) / G).
    Exact binomial sums. For G -> inf both tend to V* = tau log E_lag e^{r/tau}.
    """
    from math import comb
    n = G - 1
    e1 = math.exp(1.0 / tau)
    v = [0.0, 0.0]
    for b in range(n + 1):
        pb = comb(n, b) * p**b * (1 - p) ** (n - b)
        rest = n + (e1 - 1.0) * b
        v[0] += pb * tau * math.log((1.0 + rest) / G)
        v[1] += pb * tau * math.log((e1 + rest) / G)
    return v[0], v[1]


def oapl_two_atom_shift(beta_lag: float, tau: float, G: int | None = 16, r_o: float = 0.0, r_n: float = 1.0
                        ) -> float:
    """Per-sync old log-odds shift of OAPL's regression minimiser in the two-atom (categorical) family.

    Derivation. The loss is E[(tau g(x_i) - r_i + V_b)^2] with x_i ~ q_lag, g = log q_theta / q_lag and V_b the
    group's V-hat, which *contains x_i's own reward*. Its gradient is 2 tau E[(tau g - r + V_b) grad g(x_i)] and
    E[V_b grad g(x_i)] = E[grad g(x_i) v(r_i)] with v(r) = E[V_b | r_i = r], so the expected loss has the same
    stationary points as the deterministic weighted least squares E_lag[(tau g - t(r))^2], t(r) = r - v(r).
    In the two-atom family g_o = log(b'/b), g_n = log((1-b')/(1-b)); the minimiser over b' is found by
    bisection on the derivative. With exact V* (G = None) t_n - t_o = r_n - r_o and the residuals vanish:
    shift = -(r_n - r_o)/tau (R13). With finite G, v(1) - v(0) > 0 (a rewarded sample raises its own group's
    V-hat), so the effective gap is r_n - r_o - (v(1) - v(0)), about (r_n - r_o)(1 - O(1/G)), and the shift is
    smaller in magnitude than 1/tau. (Only mode-wise rewards 0/1 are supported with finite G.)
    """
    b = beta_lag
    if G is None:
        V = tau * math.log(b * math.exp(r_o / tau) + (1 - b) * math.exp(r_n / tau))
        t_o, t_n = r_o - V, r_n - V
    else:
        assert (r_o, r_n) == (0.0, 1.0), "finite-G targets implemented for r_o = 0, r_n = 1"
        v0, v1 = oapl_group_targets(1 - b, G, tau)
        t_o, t_n = -v0, 1.0 - v1

    def dloss(ell: float) -> float:  # d/d ell' of b (tau g_o - t_o)^2 + (1-b)(tau g_n - t_n)^2
        bp = float(_sigmoid(ell))
        go, gn = math.log(bp / b), math.log((1 - bp) / (1 - b))
        return 2 * tau * (b * (tau * go - t_o) * (1 - bp) - (1 - b) * (tau * gn - t_n) * bp)

    lo, hi = _logit(b) - 10 * (abs(r_n - r_o) / tau + 1), _logit(b) + 10 * (abs(r_n - r_o) / tau + 1)
    return bisect_root(dloss, lo, hi) - _logit(b)


def oapl_sync_map(theta_lag: np.ndarray, tau: float, delta: float, G: int | None = 16, beta_star: float = 0.5,
                  train_means: bool = True, iters: int = 60) -> np.ndarray:
    """One OAPL lag period in the 1-D GMM family: argmin_theta E_{q_lag}[(tau log(q_theta/q_lag) - t(x))^2].

    theta = (eta, mu_o, mu_n) with mu_o* = 0, mu_n* = delta; reward ``new_region`` r(x) = 1{x > x_b} (the old
    Bayes boundary of p*), t(x) = r(x) - v(r(x)) with v from ``oapl_group_targets`` at p = P_lag(x > x_b)
    (G = None: v = V* exactly). The expected loss has this weighted least squares' stationary points (see
    ``oapl_two_atom_shift``); it is minimised by Gauss-Newton with exact quadrature (Gauss-Legendre on a grid
    that resolves the reward's jump at x_b: a node boundary is placed at x_b). Assumes the period is long
    enough for the optimiser to reach the minimiser (checked by the L = 150 vs 600 control runs). Overlap
    enters exactly: the old component's tail beyond x_b is rewarded, the new component's tail before x_b is
    not, and the means may move to fit the tilted target, which the Gaussian family cannot represent exactly.
    """
    from math import erf
    eta_l, mo_l, mn_l = (float(v) for v in theta_lag)
    xb = 0.5 * delta + math.log(beta_star / (1 - beta_star)) / delta
    xl, vl = _gl_grid(min(mo_l, mn_l) - 12.0, xb)
    xr, vr = _gl_grid(xb, max(mo_l, mn_l, delta) + 12.0)
    x, v = np.concatenate([xl, xr]), np.concatenate([vl, vr])
    r = (x > xb).astype(float)
    lql, _, bl = _mix_axis(x, eta_l, mo_l, mn_l)
    p = bl * 0.5 * (1 + erf((mo_l - xb) / math.sqrt(2))) + (1 - bl) * 0.5 * (1 + erf((mn_l - xb) / math.sqrt(2)))
    if G is None:
        V = tau * math.log((1 - p) + p * math.exp(1.0 / tau))
        t = r - V
    else:
        v0, v1 = oapl_group_targets(p, G, tau)
        t = r - np.where(r > 0, v1, v0)
    wq = v * np.exp(lql)
    th = np.array([eta_l, mo_l, mn_l])
    idx = [0, 1, 2] if train_means else [0]
    for _ in range(iters):
        lq, wo, b = _mix_axis(x, *th)
        res = tau * (lq - lql) - t
        J = tau * np.stack([wo - b, wo * (x - th[1]), (1 - wo) * (x - th[2])])[idx]
        A = (J * wq) @ J.T
        gvec = (J * wq) @ res
        step = np.linalg.solve(A, gvec)
        th[idx] -= step
        if np.max(np.abs(step)) < 1e-13:
            break
    return th


def oapl_weights(beta0: float, syncs: int, tau: float, delta: float, new_offset: float = 1.0, G: int | None = 16,
                 family: str = "gmm", train_means: bool = True) -> dict[str, np.ndarray]:
    """Old weight and per-sync logit shifts after k = 1..syncs lag periods (P16 prediction).

    family ``gmm``: iterate ``oapl_sync_map`` from q0 = (logit beta0, 0, delta - new_offset); ``two_atom``:
    iterate ``oapl_two_atom_shift`` (no overlap, no means). G = None: exact V* (R13's -1/tau per sync for the
    two-atom family).
    """
    th = np.array([_logit(beta0), 0.0, delta - new_offset])
    w, shifts, mo, mn = [], [], [], []
    for _ in range(syncs):
        if family == "gmm":
            new = oapl_sync_map(th, tau, delta, G, train_means=train_means)
        else:
            new = th.copy()
            new[0] += oapl_two_atom_shift(float(_sigmoid(th[0])), tau, G)
        shifts.append(new[0] - th[0])
        th = new
        w.append(float(_sigmoid(th[0])))
        mo.append(th[1])
        mn.append(th[2])
    return {"weight": np.array(w), "shift": np.array(shifts), "mu_o": np.array(mo), "mu_n": np.array(mn)}


# =============================================================================================== P14
def sdft_icl_jitter(kappa: float, demos: int, dim: int, sigma: float = 1.0, demo_pool: int | None = 256) -> float:
    """E|eps|^2 of the ICL teacher's new-mean jitter eps = f (dbar - pool mean), f = m / (kappa + m).

    dbar is the mean of m demonstrations drawn with replacement from a fixed pool of P samples of p_new
    (Var = s_P^2 / m per coordinate, E s_P^2 = sigma^2 (1 - 1/P) for the pool's empirical variance) or fresh from
    p_new (demo_pool None: sigma^2 / m).
    """
    f = demos / (kappa + demos)
    var = sigma**2 * (1.0 - 1.0 / demo_pool) if demo_pool is not None else sigma**2
    return f * f * dim * var / demos


def sdft_icl_ratchet_rate(alpha_ema: float, kappa: float, demos: int, dim: int, sigma: float = 1.0,
                          demo_pool: int | None = 256, adam_lr: float | None = None,
                          batch: int | None = None) -> float:
    """Per-step growth of the old log-odds under SDFT with the ICL teacher (reverse KL, EMA self-teacher).

    Assumptions. (A1) separated modes: KL(q || T) = KL(Cat b || Cat b_T) + b |mu_o - mu_o^T|^2 / 2
    + (1 - b) |mu_n - mu_n^T|^2 / 2 (Sigma = sigma^2 I, whitened; error O(BC)). (A2) the student's weight is
    quasi-static: it sits where the expected logit gradient vanishes. d/d eta of the KL is
    (b - b_T) - b (1 - b) (|delta_n|^2 - |delta_o|^2) / 2, so to first order eta - eta_T = c := E(|delta_n|^2 -
    |delta_o|^2) / 2, delta_n = mu_n - mu_n^T, delta_o = mu_o - mu_o^T. (A3) the teacher's weight and old
    component are the EMA's (eta_T = eta_phi) and the EMA acts on the parameters, eta_phi <- eta_phi + alpha
    (eta - eta_phi): eta_phi rises by alpha c per step, with no restoring force (the teacher's weight follows the
    student's), so the offset is integrated: a ratchet. (A4) in the stationary regime (EMA new mean at the pool
    mean) delta_n = (mu_n - mu_phi) - eps_t with the fresh jitter eps_t independent of the student:
    E|delta_n|^2 = E|eps|^2 (``sdft_icl_jitter``) + E|mu_n - mu_phi|^2.

    Leading order (adam_lr None): rate = alpha E|eps|^2 / 2 = alpha d sigma^2 m (1 - 1/P) / (2 (kappa + m)^2).

    With adam_lr and batch (n = batch / 2 samples per component) two Adam corrections are added (sigma = 1).
    (i) The student's own jitter: per coordinate a mean whose gradient is c (x - noise) fluctuates under Adam
    with Var ~ (lr / 2) rms(noise) (small-lr AR(1) limit of the rms-normalised step); the new mean's noise has
    rms sqrt(s_eps^2 + 1/n) (teacher jitter + the enumerate estimator's score noise), the old mean's sqrt(1/n),
    and they enter c with opposite signs: c = d [s_eps^2 + (lr/2)(sqrt(s_eps^2 + 1/n) - sqrt(1/n))] / 2.
    (ii) Tracking lag: the student's logit follows its target at the rms-normalised rate a = lr / r_eta with
    r_eta^2 = Var(|delta_n|^2 / 2) + (E|delta_o|^2 + E|delta_n|^2) / n (the fluctuation of the target and the
    estimator's noise on mean log q/T, both per unit b (1 - b)); with eta_{t+1} = eta_t - a (eta_t - eta_phi - c)
    and the EMA step, the stationary offset gives rate = alpha c a / (a + alpha (1 - a)) (a capped at 1).
    """
    e2 = sdft_icl_jitter(kappa, demos, dim, sigma, demo_pool)
    if adam_lr is None or batch is None:
        return 0.5 * alpha_ema * e2
    n = math.ceil(batch / 2)
    s2 = e2 / dim / sigma**2
    dn2 = e2 + dim * sigma**2 * 0.5 * adam_lr * math.sqrt(s2 + 1.0 / n)      # E|delta_n|^2
    do2 = dim * sigma**2 * 0.5 * adam_lr * math.sqrt(1.0 / n)                 # E|delta_o|^2
    c = 0.5 * (dn2 - do2)
    sn2 = dn2 / dim
    r_eta = math.sqrt(dim * sn2**2 / 2.0 + (dn2 + do2) / n)
    a = min(1.0, adam_lr / r_eta)
    return alpha_ema * c * a / (a + alpha_ema * (1.0 - a))


def sdft_icl_weight(steps: int, beta0: float, alpha_ema: float, kappa: float, demos: int, dim: int,
                    sigma: float = 1.0, demo_pool: int | None = 256, adam_lr: float | None = None,
                    batch: int | None = None) -> float:
    """Student's old weight after ``steps`` steps of SDFT-ICL started with the new mean at the truth (offset 0).

    From ``sdft_icl_ratchet_rate``: the EMA logit rises linearly, eta_phi(T) = logit b0 + rate T, and the
    student sits (1 - alpha) rate / alpha above it (its stationary offset; reached within ~1 / (Adam lr) steps):
    weight = sigmoid(logit b0 + rate (T + (1 - alpha) / alpha)). With new_offset > 0 an overlap transient precedes the
    stationary regime (measured, not predicted here): compare slopes, not final weights, in that case.
    """
    r = sdft_icl_ratchet_rate(alpha_ema, kappa, demos, dim, sigma, demo_pool, adam_lr, batch)
    return float(_sigmoid(_logit(beta0) + r * (steps + (1.0 - alpha_ema) / alpha_ema)))


def sdft_anchor_weight(steps: int, beta0: float, lam: float, alpha_ema: float, anchor_weight: float = 0.0,
                       adam_lr: float | None = None, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
                       ) -> np.ndarray:
    """Student's old weight under SDFT with an anchored teacher T = (1 - lam) q_phi + lam a, steps 0..T; the
    anchor's old weight is ``anchor_weight`` (p_new: 0, p*: beta*), its target b_T = (1 - lam) b_phi + lam w_a.

    Written out below for the p_new anchor (w_a = 0); with w_a > 0 the same recursion holds with b_T as above.

    Assumptions: the EMA's new component sits at p_new (new_offset = 0), so T is exactly the two-Gaussian
    mixture with old weight (1 - lam) b_phi and the student's reverse-KL optimum is b_T = (1 - lam) b_phi
    (exact even with overlap, because T lies in the student's family); the EMA acts on the logit parameter,
    eta_phi <- (1 - alpha) eta_phi + alpha eta_student, after every student step.
    adam_lr None: exact tracking, eta_student = logit b_T at every step (closed recursion
    eta_phi <- eta_phi + alpha (logit((1 - lam) sigmoid(eta_phi)) - eta_phi)). For small b the logit then falls by
    alpha log(1/(1 - lam)) per step, i.e. b_t ~ b0 (1 - lam) e^{-alpha lam' t}, lam' = -log(1 - lam).
    adam_lr given: the student's logit is driven by torch-equivalent Adam (bias-corrected, betas, eps) on the
    exact two-atom gradient d KL(Cat b || Cat b_T) / d eta = b - b_T, which it tracks with a lag: Adam's
    second moment remembers the large early gradients, so later steps are small and the student trails its
    moving target; the EMA integrates the student's (smaller) offset, so the decay is slower than exact
    tracking. The weight gradient of the GMM's enumerate estimator is noise-free at q = T, so the two-atom
    deterministic gradient is the right model in this case. Returns the student's weight for t = 0..steps.
    """
    eta_phi = _logit(beta0)
    if adam_lr is None:
        out = [beta0]
        for _ in range(steps):
            target = _logit((1.0 - lam) * float(_sigmoid(eta_phi)) + lam * anchor_weight)
            eta_phi = (1.0 - alpha_ema) * eta_phi + alpha_ema * target
            out.append((1.0 - lam) * float(_sigmoid(eta_phi)) + lam * anchor_weight)
        return np.array(out)
    eta = eta_phi
    m = v = 0.0
    b1, b2 = betas
    out = [beta0]
    for t in range(1, steps + 1):
        g = float(_sigmoid(eta)) - (1.0 - lam) * float(_sigmoid(eta_phi)) - lam * anchor_weight
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        eta -= adam_lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        eta_phi = (1.0 - alpha_ema) * eta_phi + alpha_ema * eta
        out.append(float(_sigmoid(eta)))
    return np.array(out)


# =============================================================================================== P2
def logit_collapse_law(beta0: float, lr: float, steps: int, form: str = "map") -> np.ndarray:
    """Old weight under SFT (forward KL on p_new), logit weight, means frozen, well separated (R3), t = 0..steps.

    In logit coordinates d L_F / d eta = beta - m_{n->o} (R2); well separated, m_{n->o} ~ 0, so GD is the map
    eta_{k+1} = eta_k - h sigmoid(eta_k) (``map``, the exact discrete R3 dynamics without overlap). Its
    continuum limit is d beta / dt = -h beta^2 (1 - beta) (``ode``, solved implicitly:
    1/beta + log((1-beta)/beta) = 1/beta0 + log((1-beta0)/beta0) + h t), and dropping (1 - beta) gives the
    paper's 1/t law beta0 / (1 + beta0 h t) (``one_over_t``).
    """
    t = np.arange(steps + 1)
    if form == "one_over_t":
        return beta0 / (1.0 + beta0 * lr * t)
    if form == "map":
        eta = _logit(beta0)
        out = [beta0]
        for _ in range(steps):
            eta -= lr * float(_sigmoid(eta))
            out.append(float(_sigmoid(eta)))
        return np.array(out)
    if form == "ode":
        c = 1.0 / beta0 + math.log((1 - beta0) / beta0)
        out = []
        for tt in t:
            target = c + lr * tt
            lo, hi = 1e-12, 1 - 1e-12  # 1/b + log((1-b)/b) is decreasing in b
            for _ in range(100):
                mid = 0.5 * (lo + hi)
                if 1.0 / mid + math.log((1 - mid) / mid) > target:
                    lo = mid
                else:
                    hi = mid
            out.append(0.5 * (lo + hi))
        return np.array(out)
    raise ValueError(form)


def fitted_exponent(t: np.ndarray, beta: np.ndarray, t_min: float, t_max: float) -> float:
    """Least-squares slope a of log beta vs log t over t_min <= t <= t_max (beta_t ~ t^a)."""
    t = np.asarray(t, float)
    beta = np.asarray(beta, float)
    m = (t >= t_min) & (t <= t_max) & (t > 0)
    return float(np.polyfit(np.log(t[m]), np.log(beta[m]), 1)[0])


# =============================================================================================== P8
def rkl_estimator_hessian(delta: float, beta_star: float, eta: float, mo: float, mn: float, n_per: int,
                          seed: int = 0) -> np.ndarray:
    """Hessian (3 x 3, [eta, mu_o, mu_n]) of the GMM enumerate reverse-KL *training loss* at fixed noise.

    The loss the trainer differentiates is sum_k w_k mean_i [log q_theta - log p*](mu_k + eps_ki) with eps
    fixed (n_per draws per component); its Hessian at the learned parameters is computed by torch autograd in
    float64 (the estimator's own curvature, not the closed-form Fisher). E over eps equals the population
    Hessian; at theta* that is the Fisher information (R8), so kappa of this matrix estimates kappa(F(theta*))
    with Monte-Carlo error ~ 1/sqrt(n_per) (estimate it from independent seeds).
    """
    import torch
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(2, n_per, generator=g, dtype=torch.float64)
    lps = torch.tensor([math.log(beta_star), math.log1p(-beta_star)], dtype=torch.float64)
    cps = torch.tensor([0.0, float(delta)], dtype=torch.float64)

    def loss(th):
        b_log = torch.stack([-torch.nn.functional.softplus(-th[0]), -torch.nn.functional.softplus(th[0])])
        mu = th[1:]
        x = mu[:, None] + eps  # (2, n)
        lq = torch.logsumexp(b_log[:, None, None] - 0.5 * (x[None] - mu[:, None, None]) ** 2, 0)
        lp = torch.logsumexp(lps[:, None, None] - 0.5 * (x[None] - cps[:, None, None]) ** 2, 0)
        return (b_log.exp() * (lq - lp).mean(1)).sum()

    th0 = torch.tensor([eta, mo, mn], dtype=torch.float64)
    return torch.autograd.functional.hessian(loss, th0).numpy()


def condition_number(H: np.ndarray) -> float:
    ev = np.linalg.eigvalsh(0.5 * (H + H.T))
    return float(ev[-1] / ev[0])


def sdft_icl_population_flow(delta: float, new_offset: float, lr: float, steps: int, alpha_ema: float = 0.01,
                             kappa: float = 10.0, demos: int = 8, beta0: float = 0.5, demo_pool: int | None = 256,
                             n_eps: int = 24, record_every: int = 1) -> dict[str, np.ndarray]:
    """Expected-update flow of SDFT with the ICL teacher, 1-D, plain SGD (the abstraction of P14(a, c)).

    Student theta = (eta, mu_o, mu_n); EMA phi of the same parameters; teacher
    T = b_phi N(mu_o^phi, 1) + (1 - b_phi) N(mu_n^phi + eps, 1) with the conditioning shift
    eps ~ N(f (dbar_pool - mu_n^phi), f^2 s_P^2 / m), f = m / (kappa + m), pool mean at mu_n* (its expectation)
    and E s_P^2 = 1 - 1/P. Each step the student moves by -lr E_eps[grad KL(q_theta || T_eps)] (the expected
    update over the teacher's demonstration draw; Gauss-Hermite over eps with n_eps nodes; the reverse-KL gradient
    E_q[(log q - log T) grad log q] by Gauss-Legendre quadrature in x), then phi <- (1 - alpha) phi + alpha
    theta. Averaging over eps keeps the second-order effects of the jitter: the weight ratchet
    (``sdft_icl_ratchet_rate``, here with the finite SGD tracking rate) and a small repulsion of the old mean.
    There is no term pulling mu_o toward mu_o*: the teacher's old component is the EMA's, so the overlap-driven
    drift of the transient is only partly undone (the student relaxes onto the lagging EMA, which never returns).
    Estimator noise is not modelled (use batch >= 16384 for comparison). Coordinates: mu_o* = 0, mu_n* = delta.
    Returns step, weight, old_mean (signed drift, positive towards the new mode), new_mean.
    """
    f = demos / (kappa + demos)
    var_pool = (1.0 - 1.0 / demo_pool) if demo_pool is not None else 1.0
    s_eps = f * math.sqrt(var_pool / demos)
    ze, we = gauss_hermite_normal(n_eps)
    th = np.array([_logit(beta0), 0.0, delta - new_offset])
    ph = th.copy()
    rec = {"step": [], "weight": [], "old_mean": [], "new_mean": []}
    for t in range(steps + 1):
        if t % record_every == 0 or t == steps:
            rec["step"].append(t)
            rec["weight"].append(float(_sigmoid(th[0])))
            rec["old_mean"].append(th[1])
            rec["new_mean"].append(th[2])
        if t == steps:
            break
        x, v = _gl_grid(min(th[1], ph[1]) - 12.0, max(th[2], ph[2], delta) + 12.0, panel=0.5, order=12)
        lq, wo, b = _mix_axis(x, *th)
        s = np.stack([wo - b, wo * (x - th[1]), (1 - wo) * (x - th[2])])
        qv = v * np.exp(lq)
        bt = float(_sigmoid(ph[0]))
        mean_eps = f * (delta - ph[2])
        lt_o = math.log(bt) - 0.5 * (x - ph[1]) ** 2
        g = np.zeros(3)
        for z, wz in zip(ze, we, strict=True):
            mu_t = ph[2] + mean_eps + s_eps * z
            lt = np.logaddexp(lt_o, math.log1p(-bt) - 0.5 * (x - mu_t) ** 2) - LOG_SQRT_2PI
            g += wz * (s @ (qv * (lq - lt)))
        th = th - lr * g
        ph = (1.0 - alpha_ema) * ph + alpha_ema * th
    return {k: np.asarray(val) for k, val in rec.items()}
