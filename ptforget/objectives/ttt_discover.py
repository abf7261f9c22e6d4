"""TTT-Discover (Yuksekgonul et al. 2026) in R^d: the entropic objective log E_q[exp(beta r)] (paper R12).

Every step draws ``groups`` groups of ``group_size`` (K) detached samples from q_theta, scores them with the task's
reward and computes, per group, the leave-one-out entropic advantages of the official code:

    e_i = exp(beta (r_i - max_j r_j)),   Z_{-i} = sum_{j != i} e_j / (K - 1),   A_i = e_i / (Z_{-i} + 1e-12) - 1.

Groups whose rewards are all equal (max - min < 1e-12) get A = 0. ``beta`` is a fixed number or ``adaptive``: per
group, the beta with KL(softmax(beta r) || uniform_K) = ``kl_budget`` (ln 2 by default), found as in the code:
hi = 1, doubled while KL(hi) < budget (cap 1e6; a group that never reaches the budget, e.g. K = 2, gets the cap),
then 60 bisection steps on [0, hi] (float64, vectorised over groups, no host sync).

Optional KL penalty to q0 (the generator at setup) inside the advantage, as ``incorporate_kl_penalty`` does:
``A_i += lam * (mean(d) - d_i)`` with ``d = sg[log q_theta - log q0]`` and the mean over the whole batch.

Loss (score function; one optimizer step per fresh batch, so the code's importance ratio is 1):
``-mean(sg[A] * log q_theta(x))``.

State reuse (``reuse.enabled``, off by default): an archive of (state, reward) pairs seeded with
``reuse.seed_states`` samples of q_theta at setup. ``reuse.groups`` of the groups start from archive states picked
by PUCT, score = Q + c * scale * P * sqrt(1 + T) / (1 + n) (Q = best child reward, or R if never expanded;
P proportional to N - rank; scale = max R - min R; T = total expansions; n = expansions of the state; as in the
code's ``PUCTSampler`` with G = 1), and propose x' = s + ``reuse.step`` * N(0, I). The best 2 children of every
expanded group enter the archive (replacing the lowest-reward non-seed states when full). Choices that simplify the
code: picks are the top-scoring *distinct* states (no lineage blocking) and n is incremented for the parent only
(not its ancestors). The Gaussian step kernel has no parameters, so reuse groups train q_theta through the same
surrogate -A log q_theta(x') at off-policy points (a weighted-likelihood step toward the tilted proposals, R12's
forward-KL view of the entropic gradient).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ptforget.errors import check, check_choice
from ptforget.generators.base import Generator
from ptforget.objectives.base import Objective, frozen_copy
from ptforget.tasks import REGION_REWARDS, REWARDS, TwoModeTask

BETA_MAX = 1e6
N_BISECT = 60
EPS = 1e-12
REUSE_DEFAULTS: dict[str, Any] = {"enabled": False, "groups": 2, "capacity": 256, "seed_states": 32, "step": 0.5,
                                  "c": 1.0}


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def kl_to_uniform(beta: Tensor, r: Tensor) -> Tensor:
    """KL(softmax(beta_g r_g) || uniform) per group; beta (G,), r (G, K)."""
    logits = beta.unsqueeze(-1) * (r - r.max(-1, keepdim=True).values)
    log_q = torch.log_softmax(logits, -1)
    return (log_q.exp() * log_q).sum(-1) + math.log(r.shape[-1])


def adaptive_beta(r: Tensor, kl_budget: float = math.log(2), beta_max: float = BETA_MAX,
                  n_bisect: int = N_BISECT) -> Tensor:
    """Per-group beta with KL(softmax(beta r) || uniform) = kl_budget (float64; 0 for constant groups); r (..., G, K)
    -> (..., G)."""
    r = r.double()
    hi = torch.ones(r.shape[:-1], dtype=r.dtype, device=r.device)
    for _ in range(math.ceil(math.log2(beta_max)) + 1):
        grow = (kl_to_uniform(hi, r) < kl_budget) & (hi < beta_max)
        hi = torch.where(grow, (2 * hi).clamp(max=beta_max), hi)
    saturated = kl_to_uniform(hi, r) < kl_budget
    capped = hi.clone()
    lo = torch.zeros_like(hi)
    for _ in range(n_bisect):
        mid = 0.5 * (lo + hi)
        below = kl_to_uniform(mid, r) < kl_budget
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    beta = torch.where(saturated, capped, hi)
    const = (r.max(-1).values - r.min(-1).values) < EPS
    return torch.where(const, torch.zeros_like(beta), beta)


def entropic_advantages(r: Tensor, beta: Tensor) -> Tensor:
    """Leave-one-out entropic advantages A_i = e_i / Z_{-i} - 1 per group; r (G, K), beta (G,) -> (G, K)."""
    K = r.shape[-1]
    r64 = r.double()
    e = torch.exp(beta.double().unsqueeze(-1) * (r64 - r64.max(-1, keepdim=True).values))
    z_loo = (e.sum(-1, keepdim=True) - e) / (K - 1)
    adv = e / (z_loo + EPS) - 1
    const = (r64.max(-1).values - r64.min(-1).values) < EPS
    return torch.where(const.unsqueeze(-1), torch.zeros_like(adv), adv).to(r.dtype)


class PUCTArchive:
    """Fixed-capacity archive of (state, reward) on the device with PUCT selection (no host syncs)."""

    def __init__(self, capacity: int, dim: int, device: torch.device, c: float = 1.0) -> None:
        self.capacity, self.c = capacity, c
        self.states = torch.zeros(capacity, dim, device=device)
        self.reward = torch.zeros(capacity, device=device)
        self.q = torch.zeros(capacity, device=device)
        self.visits = torch.zeros(capacity, device=device)
        self.valid = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.seed_mask = torch.zeros(capacity, dtype=torch.bool, device=device)
        self.total = torch.zeros((), device=device)

    def seed(self, x: Tensor, r: Tensor) -> None:
        n = x.shape[0]
        self.states[:n], self.reward[:n], self.q[:n] = x, r, r
        self.valid[:n] = True
        self.seed_mask[:n] = True

    def scores(self) -> Tensor:
        R = torch.where(self.valid, self.reward, torch.full_like(self.reward, -math.inf))
        rank = torch.argsort(torch.argsort(R, descending=True))  # 0 = best
        n_valid = self.valid.sum()
        prior = torch.where(self.valid, (n_valid - rank).to(R.dtype), torch.zeros_like(R))
        prior = prior / prior.sum().clamp_min(1.0)
        r_valid_max = torch.where(self.valid, self.reward, torch.full_like(R, -math.inf)).max()
        r_valid_min = torch.where(self.valid, self.reward, torch.full_like(R, math.inf)).min()
        scale = r_valid_max - r_valid_min
        s = self.q + self.c * scale * prior * torch.sqrt(1 + self.total) / (1 + self.visits)
        return torch.where(self.valid, s, torch.full_like(s, -math.inf))

    def select(self, k: int) -> Tensor:
        """Indices of the k top-scoring distinct states."""
        return torch.topk(self.scores(), k).indices

    def update(self, parents: Tensor, children: Tensor, rewards: Tensor) -> None:
        """parents (k,), children (k, K, d), rewards (k, K): count visits, update Q, insert the top-2 children."""
        self.visits.index_add_(0, parents, torch.ones_like(parents, dtype=self.visits.dtype))
        self.q.scatter_reduce_(0, parents, rewards.max(-1).values, reduce="amax")
        self.total = self.total + parents.shape[0]
        top = torch.topk(rewards, min(2, rewards.shape[-1]), -1)
        cand_r = top.values.reshape(-1)
        cand_x = torch.gather(children, 1, top.indices.unsqueeze(-1).expand(-1, -1, children.shape[-1]))
        cand_x = cand_x.reshape(-1, children.shape[-1])
        order = torch.argsort(cand_r, descending=True)
        cand_r, cand_x = cand_r[order], cand_x[order]
        key = torch.where(self.valid, self.reward, torch.full_like(self.reward, -math.inf))
        key = torch.where(self.seed_mask, torch.full_like(key, math.inf), key)
        slots = torch.topk(key, cand_r.shape[0], largest=False).indices  # lowest first
        put = cand_r > key[slots]
        self.states[slots] = torch.where(put.unsqueeze(-1), cand_x, self.states[slots])
        self.reward[slots] = torch.where(put, cand_r, self.reward[slots])
        self.q[slots] = torch.where(put, cand_r, self.q[slots])
        self.visits[slots] = torch.where(put, torch.zeros_like(cand_r), self.visits[slots])
        self.valid[slots] = self.valid[slots] | put

    def best(self) -> Tensor:
        return torch.where(self.valid, self.reward, torch.full_like(self.reward, -math.inf)).max()


class TTTDiscover(Objective):
    """Entropic LOO policy gradient with adaptive beta and an optional KL penalty to q0 (module docstring).

    Args:
        groups: G groups per step.
        group_size: K samples per group (K >= 2: the advantage is leave-one-out).
        reward: task reward kind (new_bump | both_bumps | log_p_star | log_p_new).
        beta: ``adaptive`` or a fixed number > 0.
        kl_budget: adaptive-beta target KL(softmax(beta r) || uniform); null = ln 2.
        lam: KL-penalty coefficient to q0 in the advantage, >= 0 (0 = off, the code's default).
        reuse: state-reuse options (enabled, groups, capacity, seed_states, step, c); off by default.
    """

    name = "ttt_discover"

    @property
    def batchable(self) -> bool:  # type: ignore[override]
        """q0 is a copy of the (batched) generator, one per member; the PUCT archive is one run's state."""
        return not self.reuse["enabled"]

    def __init__(self, groups: int = 4, group_size: int = 64, reward: str = "new_bump", beta: str | float = "adaptive",
                 kl_budget: float | None = None, lam: float = 0.0, reuse: dict[str, Any] | None = None) -> None:
        check(_int(groups, 1), "objective.groups", groups, "an integer >= 1")
        check(_int(group_size, 2), "objective.group_size", group_size,
              "an integer >= 2 (K >= 2 for the leave-one-out advantage)")
        super().__init__(groups * group_size)
        check_choice(reward, "objective.reward", REWARDS)
        check(beta == "adaptive" or (_num(beta) and beta > 0), "objective.beta", beta,
              "'adaptive' or a finite number > 0")
        kl_budget = math.log(2) if kl_budget is None else kl_budget
        check(_num(kl_budget) and 0 < kl_budget < math.log(group_size), "objective.kl_budget", kl_budget,
              f"null (ln 2) or a number in (0, ln(objective.group_size) = {math.log(group_size):.4g})")
        check(_num(lam) and lam >= 0, "objective.lam", lam, "a finite number >= 0")
        opts = dict(REUSE_DEFAULTS)
        for k, v in dict(reuse or {}).items():
            check_choice(k, "objective.reuse", tuple(REUSE_DEFAULTS))
            opts[k] = v
        check(isinstance(opts["enabled"], bool), "objective.reuse.enabled", opts["enabled"], "true or false")
        if opts["enabled"]:
            check(_int(opts["groups"], 1) and opts["groups"] <= groups, "objective.reuse.groups", opts["groups"],
                  f"an integer in [1, objective.groups = {groups}]")
            check(_int(opts["seed_states"], opts["groups"]), "objective.reuse.seed_states", opts["seed_states"],
                  f"an integer >= reuse.groups = {opts['groups']}")
            need = opts["seed_states"] + 2 * opts["groups"]
            check(_int(opts["capacity"], need), "objective.reuse.capacity", opts["capacity"],
                  f"an integer >= reuse.seed_states + 2 * reuse.groups = {need}")
            check(_num(opts["step"]) and opts["step"] > 0, "objective.reuse.step", opts["step"],
                  "a finite number > 0")
            check(_num(opts["c"]) and opts["c"] >= 0, "objective.reuse.c", opts["c"], "a finite number >= 0")
        self.groups, self.group_size, self.reward = groups, group_size, reward
        self.beta = beta if beta == "adaptive" else float(beta)
        self.kl_budget, self.lam, self.reuse = float(kl_budget), float(lam), opts
        self.archive: PUCTArchive | None = None

    theory_keys: ClassVar[dict[str, str]] = {"lam": "objective.lam", "gamma": "objective.beta"}

    @classmethod
    def theory_fields(cls, spec: dict[str, Any], steps: int) -> dict[str, Any]:
        out: dict[str, Any] = {"lam": float(spec.get("lam", 0.0))}
        out.update(REGION_REWARDS.get(spec.get("reward", ""), {}))
        if not isinstance(spec.get("beta", "adaptive"), str):
            out["gamma"] = float(spec["beta"])
        return out

    def setup(self, generator: Generator, task: TwoModeTask) -> None:
        super().setup(generator, task)
        self.q0 = frozen_copy(generator)
        if self.reuse["enabled"]:
            self.archive = PUCTArchive(int(self.reuse["capacity"]), task.dim, generator.device,
                                       float(self.reuse["c"]))
            x = generator.sample(int(self.reuse["seed_states"]))
            self.archive.seed(x, task.reward(x, self.reward))

    _ARCHIVE_STATE = ("states", "reward", "q", "visits", "valid", "seed_mask", "total")

    def state_dict(self) -> dict[str, Any]:
        """The reference model q0 and the archive (both would otherwise be rebuilt from the resumed model)."""
        arch = {k: getattr(self.archive, k) for k in self._ARCHIVE_STATE} if self.archive is not None else None
        return {"q0": self.q0.state_dict(), "archive": arch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q0.load_state_dict(state["q0"])
        if self.archive is not None and state.get("archive") is not None:
            for k in self._ARCHIVE_STATE:
                setattr(self.archive, k, state["archive"][k].to(getattr(self.archive, k).device))

    def advantages(self, r: Tensor) -> tuple[Tensor, Tensor]:
        """(A (G, K), beta (G,)) from grouped rewards."""
        if self.beta == "adaptive":
            beta = adaptive_beta(r, self.kl_budget)
        else:
            beta = torch.full(r.shape[:-1], float(self.beta), dtype=torch.float64, device=r.device)
        return entropic_advantages(r, beta), beta

    def loss(self, generator: Generator, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        assert self.task is not None
        G, K = self.groups, self.group_size
        logs: dict[str, Tensor] = {}
        if self.archive is not None:
            g_re = int(self.reuse["groups"])
            parents = self.archive.select(g_re)
            starts = self.archive.states[parents]
            prop = starts.unsqueeze(1) + float(self.reuse["step"]) * torch.randn(g_re, K, starts.shape[-1],
                                                                               device=starts.device)
            own = generator.sample((G - g_re) * K).reshape(G - g_re, K, -1)
            x = torch.cat([prop, own], 0).reshape(G * K, -1)
        else:
            x = generator.sample(G * K)
        B = generator.batch_shape
        r = self.task.reward(x, self.reward).reshape(*B, G, K)
        adv, beta = self.advantages(r)
        adv = adv.reshape(*B, -1)
        log_q = generator.log_prob(x)
        d = (log_q.detach() - self.q0.log_prob(x)).detach()
        if self.lam > 0:
            adv = adv + self.lam * (d.mean(-1, keepdim=True) - d)
        loss = -(adv.detach() * log_q).mean(-1)
        if self.archive is not None:
            self.archive.update(parents, prop, r[:g_re])
            logs["archive_best"] = self.archive.best()
        logs.update({"reward_mean": r.mean((-2, -1)), "reward_max": r.amax((-2, -1)),
                     "beta": beta.mean(-1).float(), "adv_max": adv.amax(-1), "kl_q0": d.mean(-1)})
        return loss, logs
