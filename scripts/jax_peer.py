"""The JAX peer of ``scripts/bench.py --peer jax``: the benchmark's run written the fastest way we know.

Same task (ptforget's ``TwoModeTask`` defaults, read from the task object), same model (2-component GMM, logit
weight, fixed shared covariance, means trained), same estimator (reverse KL to p*, components enumerated: exact
weight gradient, ``ceil(batch / K)`` pathwise samples per component), same optimizer (Adam, lr 0.01, betas
(0.9, 0.999), eps 1e-8, bias-corrected as ``torch.optim.Adam``), same cadence (a host sync after every chunk of
``eval_every`` steps, where the forgetting metrics are measured with ``n_eval`` samples for each KL estimate).

One chunk is ``jit(lax.scan(step))``; seeds are ``vmap``-ed; evaluation is one jitted, vmapped function.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PeerResult:
    """One peer run: wall times (compile included / excluded) and the final metrics of every seed."""

    wall_s: float  # the whole run, jit compilation included
    compile_s: float  # time of the first chunk and first evaluation beyond a compiled call
    steady_s: float  # the same run again with everything compiled
    weight: np.ndarray  # (S,) final old-component weight
    old_mass: np.ndarray  # (S,) final old-region mass


def _task_arrays(task: Any) -> dict[str, np.ndarray]:
    a, b = task.old_region_halfspace()
    return {"mu_old": task.mu_old.numpy(), "mu_new": task.mu_new.numpy(), "mu_new0": task.mu_new_init.numpy(),
            "L": task.scale_tril.numpy(), "beta_star": np.float32(task.beta_star), "beta0": np.float32(task.beta0),
            "a": a.numpy(), "b": b.numpy()}


def make_peer(task: Any, batch: int = 256, lr: float = 0.01, eval_every: int = 50, n_eval: int = 4096):
    """(init(seeds, seed) -> state, chunk(state) -> state, evaluate(state) -> metrics), all jitted."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp, ndtr

    t = {k: jnp.asarray(v) for k, v in _task_arrays(task).items()}
    d = t["mu_old"].shape[0]
    L = t["L"]
    Linv = jnp.linalg.inv(L)
    log_det = jnp.log(jnp.diag(L)).sum()
    cov = L @ L.T
    const = -0.5 * d * math.log(2 * math.pi) - log_det
    K, per = 2, math.ceil(batch / 2)
    star_loc = jnp.stack([t["mu_old"], t["mu_new"]])
    star_logw = jnp.log(jnp.stack([t["beta_star"], 1 - t["beta_star"]]))
    b1, b2, eps_adam = 0.9, 0.999, 1e-8

    def comp_lp(x, loc):  # (n, d), (K, d) -> (n, K)
        z = (x[:, None, :] - loc[None]) @ Linv.T
        return -0.5 * (z**2).sum(-1) + const

    def log_weights(p):
        return jax.nn.log_softmax(jnp.concatenate([p["eta"], jnp.zeros(1)]))

    def means(p):
        return jnp.concatenate([p["mu_old"][None], p["mu_rest"]], 0)

    def log_q(p, x):
        return logsumexp(comp_lp(x, means(p)) + log_weights(p), -1)

    def log_star(x):
        return logsumexp(comp_lp(x, star_loc) + star_logw, -1)

    def loss(p, key):
        eps = jax.random.normal(key, (K, per, d))
        x = means(p)[:, None, :] + eps @ L.T
        vals = (log_q(p, x.reshape(-1, d)) - log_star(x.reshape(-1, d))).reshape(K, per)
        return (jnp.exp(log_weights(p)) * vals.mean(1)).sum()

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
        w = jnp.exp(log_weights(p))
        loc = means(p)
        s = jnp.sqrt(t["a"] @ cov @ t["a"])
        mass = (w * ndtr((loc @ t["a"] - t["b"]) / s)).sum()
        k1, k2, k3, k4 = jax.random.split(jax.random.fold_in(key, 7), 4)
        comp = jax.random.categorical(k1, log_weights(p), shape=(n_eval,))
        x = loc[comp] + jax.random.normal(k2, (n_eval, d)) @ L.T
        kl_q = (log_q(p, x) - log_star(x)).mean()
        old = jax.random.uniform(k3, (n_eval, 1)) < t["beta_star"]
        y = jnp.where(old, t["mu_old"], t["mu_new"]) + jax.random.normal(k4, (n_eval, d)) @ L.T
        kl_p = (log_star(y) - log_q(p, y)).mean()
        return {"weight": w[0], "old_mass": mass, "comp_drift": jnp.linalg.norm(p["mu_old"] - t["mu_old"]),
                "kl_q_pstar": kl_q, "kl_pstar_q": kl_p}

    def init(seeds: int, seed: int = 0):
        p = {"eta": jnp.log(t["beta0"] / (1 - t["beta0"]))[None], "mu_old": t["mu_old"], "mu_rest": t["mu_new0"][None]}
        p = jax.tree.map(lambda a: jnp.broadcast_to(a, (seeds, *a.shape)), p)
        zeros = jax.tree.map(jnp.zeros_like, p)
        keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
        return (p, zeros, zeros, jnp.zeros(seeds, jnp.int32), keys)

    chunk = jax.jit(jax.vmap(chunk_one))
    evaluate = jax.jit(jax.vmap(evaluate_one))
    return init, chunk, evaluate


def run_peer(task: Any, seeds: int, steps: int, batch: int = 256, lr: float = 0.01, eval_every: int = 50,
             n_eval: int = 4096, seed: int = 0) -> PeerResult:
    """Run the peer twice (cold: jit compile included; warm: compiled) and return both walls and the finals."""
    import jax

    def once(fns: Any) -> tuple[float, float, dict[str, np.ndarray]]:
        init, chunk, evaluate = fns
        t0 = time.perf_counter()
        state = init(seeds, seed)
        m = jax.device_get(evaluate(state))
        t_first = 0.0
        for c in range(math.ceil(steps / eval_every)):
            tc = time.perf_counter()
            state, losses = chunk(state)
            m = jax.device_get(evaluate(state))  # one host sync per chunk, as ptforget
            if c == 0:
                t_first = time.perf_counter() - tc
        return time.perf_counter() - t0, t_first, m

    fns = make_peer(task, batch, lr, eval_every, n_eval)
    wall, first, _ = once(fns)
    steady, first_warm, m = once(fns)
    return PeerResult(wall_s=wall, compile_s=max(first - first_warm, 0.0), steady_s=steady,
                      weight=np.asarray(m["weight"]), old_mass=np.asarray(m["old_mass"]))
