"""How much memory a training run will need, estimated from its config before anything is built.

The estimate is the peak of one optimizer step (the objective's samples through the generator, with autograd's
saved tensors), one evaluation (``n_eval`` samples), what the run keeps (parameters with Adam's moments, replay
buffers and archives, the trajectory in memory and in each checkpoint) and the task's d x d matrices, times the
number of batched seeds. It errs on the large side (float32 tensors, a factor for temporaries); every term is
tagged with the config key that drives it, so a refusal names the key to change.
"""

from __future__ import annotations

import itertools
import math
import os
from typing import Any

#: bytes of a float32
F32 = 4
#: temporaries and autograd's saved tensors per tensor a forward pass creates (a generous factor)
AUTOGRAD = 4
#: bytes of one trajectory row kept in memory (a dict of ~20 floats) and pickled into every checkpoint
ROW_BYTES = 2048


def memory_limit_bytes(limit_gb: Any) -> float:
    """The memory a run may use: ``limits.memory_gb``, or half of this machine's memory (its cgroup limit when
    lower) when that is null."""
    if limit_gb is not None:
        return float(limit_gb) * 1e9
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return 0.5 * total


def _int(v: Any, default: int = 0) -> int:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else default


def _ints(v: Any) -> list[int]:
    return [int(x) for x in v if isinstance(x, int) and not isinstance(x, bool) and x > 0] if isinstance(
        v, list | tuple) else []


def per_sample_bytes(generator: dict[str, Any], dim: int) -> tuple[float, dict[str, float]]:
    """Bytes one sample costs in a forward + backward pass of the generator, and how far each key that drives it
    is above its default (the ratio), to name the one a refusal should point at."""
    target = str(generator.get("_target_", ""))
    comps = _int(generator.get("components"), 2)
    ratios = {"task.dim": dim / 2}
    if "Flow" in target:
        hidden = sum(_ints(generator.get("hidden"))) or 128
        transforms, bins = _int(generator.get("transforms"), 4), _int(generator.get("bins"), 8)
        per = transforms * (2 * hidden + 3 * bins * dim + 4 * dim)  # coupling nets (2 passes) and spline params
        ratios.update({"generator.hidden": hidden / 128, "generator.transforms": transforms / 4,
                       "generator.bins": bins / 8})
    elif "Mixture" in target:  # GaussianMixture and MixtureDensityNetwork: (samples, K, d) tensors
        cov = dim if generator.get("covariance") == "full" else 1
        per = comps * dim * (2 + cov) + comps * 4
        ratios["generator.components"] = comps / 2
        hidden = _ints(generator.get("hidden"))
        if hidden:  # the MDN's network: its parameters (and their Adam moments) grow with the widths
            ratios["generator.hidden"] = max(hidden) / 32
    else:
        per = 64 * dim
    return float(per * F32 * AUTOGRAD), ratios


def _blame(count_key: str, count: int, typical: int, ratios: dict[str, float]) -> str:
    """The key to name for ``count`` samples of a per-sample cost: the one furthest above its default."""
    return max({count_key: count / typical, **ratios}.items(), key=lambda kv: kv[1])[0]


def run_memory(c: dict[str, Any]) -> list[tuple[str, float]]:
    """(config key, bytes) terms of a run's peak memory; ``c`` is the resolved train config."""
    task, gen, obj = c.get("task") or {}, c.get("generator") or {}, c.get("objective") or {}
    dim = _int(task.get("dim"), 1)
    seeds = _int(c.get("seeds"), 1)
    per, ratios = per_sample_bytes(gen, dim)
    ratios["seeds"] = float(seeds)  # every term is per seed: many seeds are the cause, not the default n_eval
    terms: list[tuple[str, float]] = []
    groups, size = _int(obj.get("groups")), _int(obj.get("group_size"))
    if groups and size:
        key = "objective.groups" if groups >= size else "objective.group_size"
        terms.append((_blame(key, groups * size, 256, ratios), groups * size * per * seeds))
    batch = _int(obj.get("batch"))
    if batch:  # the data's pass and a frozen copy's (teacher, reference)
        terms.append((_blame("objective.batch", batch, 256, ratios), batch * per * seeds * 2))
    for key in ("buffer", "demo_pool", "demos"):
        n = _int(obj.get(key))
        if n:
            terms.append((f"objective.{key}", n * dim * F32 * 2 * seeds))
    terms += _reuse_terms(obj, dim, per, seeds)
    terms += _pretrain_terms(gen, per)
    n_eval = _int(c.get("n_eval"), 4096)  # no autograd at evaluation, but samples of q and of p*
    terms.append((_blame("n_eval", n_eval, 4096, ratios), n_eval * (per / AUTOGRAD * 2 + 10 * dim * F32) * seeds))
    comps = _int(gen.get("components"), 2)
    params = comps * dim * (2 + (dim if gen.get("covariance") == "full" else 1))
    hidden = _ints(gen.get("hidden"))
    if hidden:
        widths = [_int(gen.get("context_dim"), 1) or dim, *hidden, comps * (1 + 2 * dim)]
        layers = sum(a * b for a, b in itertools.pairwise(widths))
        params += layers * (_int(gen.get("transforms"), 1) if "Flow" in str(gen.get("_target_", "")) else 1)
    # parameters, gradients, Adam's two moments, frozen copies
    terms.append((max(ratios, key=ratios.get), params * F32 * 6 * seeds))
    steps, every = _int((c.get("trainer") or {}).get("max_steps"), 1), _int(c.get("eval_every"), 50)
    terms.append(("trainer.max_steps", (steps // every + 2) * ROW_BYTES * seeds * 3))  # histories, pickled twice
    terms.append(("task.dim", 12 * dim * dim * 8.0))  # covariance, Cholesky factors and inverses (float64 and 32)
    return terms


def _reuse_terms(obj: dict[str, Any], dim: int, per: float, seeds: int) -> list[tuple[str, float]]:
    """TTT-Discover's reuse archive: its ``capacity`` rows (state, reward, Q, visits, masks) and the PUCT scores
    over all of them every step, and the ``seed_states`` samples of q drawn through the generator at setup."""
    reuse = obj.get("reuse") if isinstance(obj.get("reuse"), dict) else {}
    if not reuse.get("enabled"):
        return []
    capacity, seed_states = _int(reuse.get("capacity")), _int(reuse.get("seed_states"))
    return [("objective.reuse.capacity", capacity * (dim + 6) * F32 * AUTOGRAD * seeds),
            ("objective.reuse.seed_states", seed_states * (per + 2 * dim * F32) * seeds)]


def _pretrain_terms(gen: dict[str, Any], per: float) -> list[tuple[str, float]]:
    """Pretraining by maximum likelihood: one batch of q0's samples through the generator per step (one model,
    before the seeds are batched)."""
    pre = gen.get("pretrain") if isinstance(gen.get("pretrain"), dict) else {}
    if not pre or _int(pre.get("steps"), 0) == 0:
        return []
    return [("generator.pretrain.batch", _int(pre.get("batch"), 512) * per)]


def chen_memory(seeds: int, samples: int, grid: int, iterations: int) -> list[tuple[str, float]]:
    """Chen et al.'s simulation (``ptforget.chen``), all seeds at once in float64: (seeds, samples) draws with
    autograd's copies, the accuracy grid per seed, and the gain / drop histories."""
    per_seed = 8.0 * (samples * 3 * AUTOGRAD + grid * 6 + iterations * 4)
    return [("profile.chen_seeds", seeds * per_seed)]


def dominant(terms: list[tuple[str, float]]) -> tuple[str, float, float]:
    """(key of the largest term, its bytes, the total)."""
    key, big = max(terms, key=lambda t: t[1])
    return key, big, math.fsum(b for _, b in terms)
