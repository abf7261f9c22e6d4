"""The flow peer of ``scripts/bench.py --peer flowjax``: ptforget's flow run written in JAX with flowjax, the fastest
way we know (``jit`` over a ``lax.scan`` chunk of ``eval_every`` steps, ``vmap`` over members).

Same task (ptforget's ``TwoModeTask``: p* read from the task object), same model (a neural spline flow with
``transforms`` layers of ``bins`` bins on [-bound, bound], the conditioner MLP of ``hidden`` widths when dim >= 2; in
1-D, as zuko's 1-D NSF, element-wise splines with free parameters), the same fixed standardisation (q0's mean and
scale), the same estimator (reverse KL to p*, pathwise: ``sample_and_log_prob`` of ``batch`` draws), Adam with
torch's update rule, and the same cadence (a host sync after each chunk, where the region mass is read by quadrature
on the task's grid in 1-D, by Monte Carlo otherwise, and both KL estimates use ``n_eval`` samples).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np


def make_flow_peer(task: Any, shift: np.ndarray, scale: np.ndarray, transforms: int = 2,
                   hidden: tuple[int, ...] = (32, 32), bins: int = 8, bound: float = 5.0, batch: int = 256,
                   lr: float = 2e-3, eval_every: int = 50, n_eval: int = 4096):
    """(init(S, seed) -> state, chunk(state) -> (state, losses), evaluate(state) -> metrics), all jitted."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from flowjax.bijections import Chain, RationalQuadraticSpline
    from flowjax.distributions import StandardNormal, Transformed
    from flowjax.flows import coupling_flow
    from jax.scipy.special import logsumexp

    d = task.dim
    mu = jnp.asarray(np.stack([task.mu_old.numpy(), task.mu_new.numpy()]))
    L = jnp.asarray(task.scale_tril.numpy())
    Linv = jnp.linalg.inv(L)
    logw = jnp.log(jnp.asarray([task.beta_star, 1 - task.beta_star], dtype=jnp.float32))
    const = -0.5 * d * math.log(2 * math.pi) - jnp.log(jnp.diag(L)).sum()
    shift_, scale_ = jnp.asarray(shift), jnp.asarray(scale)
    log_scale = jnp.log(scale_).sum()
    a, b = (np.asarray(t.numpy()) for t in task.old_region_halfspace())
    a, b = jnp.asarray(a), jnp.asarray(b)
    grid = task.grid()
    gx, gv = (jnp.asarray(grid[0].numpy()), jnp.asarray(grid[1].numpy())) if grid is not None else (None, None)
    b1, b2, eps_adam = 0.9, 0.999, 1e-8

    def log_star(x):  # (n, d)
        z = (x[:, None, :] - mu[None]) @ Linv.T
        return logsumexp(-0.5 * (z**2).sum(-1) + const + logw, -1)

    def make(key):
        spline = RationalQuadraticSpline(knots=bins - 1, interval=bound)
        if d == 1:  # zuko's 1-D NSF: element-wise splines with free parameters
            return Transformed(StandardNormal(()), Chain([spline] * transforms))
        return coupling_flow(key, base_dist=StandardNormal((d,)), transformer=spline, flow_layers=transforms,
                             nn_width=hidden[0], nn_depth=len(hidden), invert=False)

    _, static = eqx.partition(make(jax.random.key(0)), eqx.is_inexact_array)

    def sample_and_log_prob(params, key, n):
        flow = eqx.combine(params, static)
        y, lp = flow.sample_and_log_prob(key, (n,))
        y = y.reshape(n, d)
        return shift_ + scale_ * y, lp - log_scale

    def log_prob(params, x):
        flow = eqx.combine(params, static)
        y = (x - shift_) / scale_
        return flow.log_prob(y.reshape(-1) if d == 1 else y) - log_scale

    def loss(params, key):
        x, lp = sample_and_log_prob(params, key, batch)
        return (lp - log_star(x)).mean()

    grad = jax.value_and_grad(loss)

    def step(state, _):
        p, m, v, k, key = state
        key, sub = jax.random.split(key)
        val, g = grad(p, sub)
        k = k + 1
        m = jax.tree.map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
        v = jax.tree.map(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
        c1, c2 = 1 - b1**k, 1 - b2**k
        p = jax.tree.map(lambda p_, m_, v_: p_ - lr / c1 * m_ / (jnp.sqrt(v_ / c2) + eps_adam), p, m, v)
        return (p, m, v, k, key), val

    def chunk_one(state):
        return jax.lax.scan(step, state, None, length=eval_every)

    def evaluate_one(state):
        p, key = state[0], state[4]
        k1, k2, k3 = jax.random.split(jax.random.fold_in(key, 7), 3)
        x, lp = sample_and_log_prob(p, k1, n_eval)
        kl_q = (lp - log_star(x)).mean()
        comp = jax.random.categorical(k2, logw, shape=(n_eval,))
        y = mu[comp] + jax.random.normal(k3, (n_eval, d)) @ L.T
        kl_p = (log_star(y) - log_prob(p, y)).mean()
        if gx is not None:  # quadrature on the task's grid, as Generator.region_view in 1-D
            q = gv * jnp.exp(log_prob(p, gx))
            mass = (q * ((gx @ a) > b)).sum() / q.sum()
        else:
            mass = ((x @ a) > b).mean()
        return {"old_mass": mass, "kl_q_pstar": kl_q, "kl_pstar_q": kl_p}

    def init(seeds: int, seed: int = 0):
        keys = jax.random.split(jax.random.key(seed), 2 * seeds)
        params = jax.vmap(lambda k: eqx.partition(make(k), eqx.is_inexact_array)[0])(keys[:seeds])
        zeros = jax.tree.map(jnp.zeros_like, params)
        return (params, zeros, zeros, jnp.zeros(seeds, jnp.int32), keys[seeds:])

    return jax.jit(init, static_argnums=(0, 1)), jax.jit(jax.vmap(chunk_one)), jax.jit(jax.vmap(evaluate_one))


class FlowPeer:
    """The peer for one member count: ``run()`` is one whole run (init, chunks, evaluations) -> (wall, final old
    masses (S,)); the first call also compiles (``cold_s`` keeps its wall, so compilation is reported apart)."""

    def __init__(self, task: Any, shift: np.ndarray, scale: np.ndarray, seeds: int, steps: int, **kw: Any) -> None:
        self.fns = make_flow_peer(task, shift, scale, **kw)
        self.seeds, self.steps, self.eval_every = seeds, steps, kw.get("eval_every", 50)
        self.cold_s: float | None = None

    def run(self) -> tuple[float, np.ndarray]:
        import jax

        init, chunk, evaluate = self.fns
        t0 = time.perf_counter()
        state = init(self.seeds, 0)
        m = jax.device_get(evaluate(state))
        for _ in range(math.ceil(self.steps / self.eval_every)):
            state, _ = chunk(state)
            m = jax.device_get(evaluate(state))  # one host sync per chunk, as ptforget
        wall = time.perf_counter() - t0
        if self.cold_s is None:
            self.cold_s = wall
        return wall, np.asarray(m["old_mass"])
