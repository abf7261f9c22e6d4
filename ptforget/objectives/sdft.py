"""SDFT (Shenfeld et al. 2026) in R^d: distillation toward an EMA self-teacher (R11 in docs/theory.md).

Teacher: a frozen copy phi of the student, updated after every optimizer step as an EMA,
``phi <- (1 - alpha_ema) phi + alpha_ema theta`` (the official code: rate 0.01, synced every step). The teacher
stands in for "the same model conditioned on a demonstration"; without prompts that conditioning must be designed:

* ``anchor``: ``q_T = (1 - lam) q_phi + lam a`` (arithmetic mixture, computed with logsumexp), anchor
  ``a = p_star`` ("accurate demonstrations": fixed point q = p*, old mass kept) or ``a = p_new`` (new-task
  demonstrations only: fixed point q = p_new, slow mass forgetting at a rate ~ lam * alpha_ema).
* ``icl`` (mixture families only): the EMA teacher with its new component(s) updated by conjugate Bayesian
  conditioning on ``m`` demonstrations from p_new with pseudo-count ``kappa``:
  ``mu_k <- (kappa mu_k + sum_{j in k} d_j) / (kappa + m_k)``; each demonstration is assigned to the *new*
  component (index >= 1) with the largest responsibility (K = 2: always component 1); covariances, the weights and
  the old component are copied from the EMA (the demonstration conditions only the mode it explains).
  Demonstrations come from a fixed pool of ``demo_pool`` samples of p_new drawn at setup (null: fresh each step).

Direction:

* ``reverse`` (the paper's theory; on-policy): KL(q_theta || q_T) = E_{q_theta}[log q_theta - log q_T]. Estimator
  ``enumerate`` (mixtures: exact weight gradient, pathwise per component), ``pathwise`` (flows) or ``score``
  (any family: score function with a LOO baseline on the cost log q_theta - log q_T, i.e. on-policy RL with the
  implicit reward log q_T - log q_theta). On the pathwise/enumerate paths the teacher's *parameters* are frozen
  but its log-density stays on the autograd graph through x (never under no_grad), so grad_x log q_T is kept.
* ``forward`` (what the SDFT authors ran: per-token forward KL on student prefixes): with one "token" x that has
  no prefixes, the per-token forward KL degenerates to KL(q_T || q_theta) = E_{x ~ q_T}[log q_T - log q_theta],
  i.e. **off-policy distillation from teacher samples** (SFT toward a moving teacher; nothing on-policy is left).
  Its gradient is the NLL of detached teacher samples; no estimator choice (``estimator`` must stay ``auto``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ptforget.errors import check, check_choice
from ptforget.gaussian import gaussian_log_prob
from ptforget.generators.base import Generator
from ptforget.generators.mdn import MixtureDensityNetwork
from ptforget.generators.mixture import GaussianMixture
from ptforget.objectives.base import Objective, ema_update_, frozen_copy, resolve_estimator, score_surrogate
from ptforget.tasks import TwoModeTask

TEACHERS = ("anchor", "icl")
ANCHORS = ("star", "new")
DIRECTIONS = ("reverse", "forward")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def mixture_parts(generator: Generator) -> tuple[Tensor, Tensor, Tensor]:
    """(log weights (*B, K), means (*B, K, d), Cholesky factors ((*B,) K, d, d)) of a mixture-family generator."""
    if isinstance(generator, GaussianMixture):
        return generator.log_weights(), generator.means(), generator.scale_trils()
    if isinstance(generator, MixtureDensityNetwork):
        log_w, mu, s = generator.params()
        return log_w, mu, torch.diag_embed(s)
    raise TypeError(f"{type(generator).__name__} is not a Gaussian mixture family")


def mixture_log_prob(x: Tensor, log_w: Tensor, mu: Tensor, L: Tensor) -> Tensor:
    """log sum_k w_k N(x; mu_k, L_k L_k') (differentiable in x; leading member dimensions broadcast)."""
    eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device).expand_as(L)
    Linv = torch.linalg.solve_triangular(L, eye, upper=False)
    log_det = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return torch.logsumexp(gaussian_log_prob(x, mu, Linv, log_det) + log_w.unsqueeze(-2), -1)


def icl_condition(log_w: Tensor, mu: Tensor, L: Tensor, demos: Tensor, kappa: float) -> Tensor:
    """Means after conjugate conditioning of the new components (index >= 1) on ``demos`` (*B, m, d); mu_0
    unchanged. Leading member dimensions *B: each member is conditioned on its own demonstrations."""
    eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device).expand_as(L)
    Linv = torch.linalg.solve_triangular(L, eye, upper=False)
    log_det = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    resp = gaussian_log_prob(demos, mu, Linv, log_det) + log_w.unsqueeze(-2)  # (*B, m, K)
    k = resp[..., 1:].argmax(-1) + 1
    onehot = torch.nn.functional.one_hot(k, mu.shape[-2]).to(mu.dtype)  # (*B, m, K)
    counts = onehot.sum(-2)  # (*B, K)
    sums = onehot.transpose(-1, -2) @ demos  # (*B, K, d)
    post = (kappa * mu + sums) / (kappa + counts).unsqueeze(-1)
    return torch.cat([mu[..., :1, :], post[..., 1:, :]], -2)


def mixture_sample(log_w: Tensor, mu: Tensor, L: Tensor, n: int) -> Tensor:
    """n draws (*B, n, d) from the Gaussian mixture (log_w (*B, K), mu (*B, K, d), L ((*B,) K, d, d))."""
    B, (K, d) = mu.shape[:-2], mu.shape[-2:]
    k = torch.multinomial(log_w.exp().reshape(-1, K), n, replacement=True).reshape(*B, n)
    mu_k = torch.take_along_dim(mu, k.unsqueeze(-1), dim=-2)
    L_k = torch.take_along_dim(L.expand(*B, K, d, d), k[..., None, None], dim=-3)
    eps = torch.randn(*B, n, d, 1, device=mu.device, dtype=mu.dtype)
    return mu_k + (L_k @ eps).squeeze(-1)


class SDFT(Objective):
    """Self-distillation toward an EMA teacher (see the module docstring for every choice).

    Args:
        batch: student samples per step (reverse) or teacher samples per step (forward).
        teacher: ``anchor`` or ``icl`` (mixture families only).
        anchor: ``star`` (a = p*) or ``new`` (a = p_new); ``anchor`` teacher only.
        lam: anchor strength in [0, 1] (0: pure EMA self-teacher, no signal; 1: the teacher is the anchor).
        alpha_ema: EMA rate in (0, 1] (1: the teacher is the student after the last step).
        direction: ``reverse`` (on-policy) or ``forward`` (off-policy from teacher samples).
        estimator: reverse only: ``auto`` | ``enumerate`` | ``pathwise`` | ``score``.
        demos: demonstrations m per step (``icl``).
        kappa: pseudo-count of the EMA's new component (``icl``), > 0.
        demo_pool: fixed pool of p_new demonstrations drawn at setup (null: fresh every step).
    """

    name = "sdft"
    estimators = ("pathwise", "enumerate", "score")

    def __init__(self, batch: int = 256, teacher: str = "anchor", anchor: str = "star", lam: float = 0.1,
                 alpha_ema: float = 0.01, direction: str = "reverse", estimator: str = "auto", demos: int = 8,
                 kappa: float = 10.0, demo_pool: int | None = 256) -> None:
        super().__init__(batch)
        check_choice(teacher, "objective.teacher", TEACHERS)
        check_choice(anchor, "objective.anchor", ANCHORS)
        check(_num(lam) and 0 <= lam <= 1, "objective.lam", lam, "a number in [0, 1]")
        check(_num(alpha_ema) and 0 < alpha_ema <= 1, "objective.alpha_ema", alpha_ema, "a number in (0, 1]")
        check_choice(direction, "objective.direction", DIRECTIONS)
        check_choice(estimator, "objective.estimator", ("auto", *self.estimators))
        check(direction == "reverse" or estimator == "auto", "objective.estimator", estimator,
              "'auto' when objective.direction='forward' (forward KL is the NLL of teacher samples)")
        check(isinstance(demos, int) and not isinstance(demos, bool) and demos >= 1, "objective.demos", demos,
              "an integer >= 1")
        check(_num(kappa) and kappa > 0, "objective.kappa", kappa, "a finite number > 0")
        check(demo_pool is None or (isinstance(demo_pool, int) and demo_pool >= 1), "objective.demo_pool",
              demo_pool, "null or an integer >= 1")
        self.teacher, self.anchor, self.lam, self.alpha_ema = teacher, anchor, float(lam), float(alpha_ema)
        self.direction, self.estimator = direction, estimator
        self.demos, self.kappa, self.demo_pool = demos, float(kappa), demo_pool
        self.n_syncs = 0

    @property
    def batchable(self) -> bool:  # type: ignore[override]
        """Both teachers carry the member dimension: the EMA copy is batched, and the icl teacher keeps one
        demonstration pool per member and conditions each member on its own demonstrations."""
        return True

    theory_keys: ClassVar[dict[str, str]] = {"sdft_lam": "objective.lam", "sdft_anchor": "objective.anchor"}

    @classmethod
    def theory_fields(cls, spec: dict[str, Any], steps: int) -> dict[str, Any]:
        if spec.get("teacher", "anchor") != "anchor":
            return {}
        return {"sdft_lam": float(spec.get("lam", 0.1)),
                "sdft_anchor": {"star": "p_star", "new": "p_new"}[spec.get("anchor", "star")]}

    # ------------------------------------------------------------------ set-up
    def validate(self, generator: Generator, task: TwoModeTask) -> None:
        family = type(generator).__name__
        check(self.teacher != "icl" or isinstance(generator, GaussianMixture | MixtureDensityNetwork),
              "objective.teacher", self.teacher,
              f"'anchor' for generator {family} (the icl teacher conditions mixture components; "
              "GaussianMixture or MixtureDensityNetwork only)")
        if self.direction == "reverse":
            self.estimator = resolve_estimator(self.estimator, generator, self.estimators, "objective.estimator")

    def setup(self, generator: Generator, task: TwoModeTask) -> None:
        super().setup(generator, task)
        self.validate(generator, task)
        self.ema = frozen_copy(generator)
        self._a = task.p_star if self.anchor == "star" else task.p_new
        self._a_weight = task.beta_star if self.anchor == "star" else 0.0
        self._B = tuple(generator.batch_shape)
        self._pool = task.p_new.sample((*self._B, self.demo_pool)) if self.demo_pool is not None else None
        self._syncs = torch.zeros((), device=generator.device)

    def on_step_end(self, generator: Generator, step: int) -> None:
        ema_update_(self.ema, generator, self.alpha_ema)
        self.n_syncs += 1
        self._syncs = self._syncs + 1

    # ------------------------------------------------------------------ teacher
    def _demos(self) -> Tensor:
        assert self.task is not None
        if self._pool is None:
            return self.task.p_new.sample((*self._B, self.demos))
        idx = torch.randint(self._pool.shape[-2], (*self._B, self.demos), device=self._pool.device)
        return torch.take_along_dim(self._pool, idx.unsqueeze(-1), dim=-2)

    def teacher_dist(self) -> tuple[Callable[[Tensor], Tensor], Callable[[int], Tensor], Tensor | None]:
        """(log q_T, sampler of q_T, teacher old weight or None) for this step's teacher."""
        if self.teacher == "icl":
            with torch.no_grad():
                log_w, mu, L = mixture_parts(self.ema)
                mu_t = icl_condition(log_w, mu, L, self._demos(), self.kappa)

            def log_t(x: Tensor) -> Tensor:
                return mixture_log_prob(x, log_w, mu_t, L)

            def sample_t(n: int) -> Tensor:
                return mixture_sample(log_w, mu_t, L, n)

            return log_t, sample_t, log_w[..., 0].exp()

        lam, ema, a = self.lam, self.ema, self._a

        def log_t(x: Tensor) -> Tensor:
            if lam == 0:
                return ema.log_prob(x)
            if lam == 1:
                return a.log_prob(x)
            return torch.logaddexp(math.log1p(-lam) + ema.log_prob(x), math.log(lam) + a.log_prob(x))

        B = ema.batch_shape

        def sample_t(n: int) -> Tensor:
            if lam == 0:
                return ema.sample(n)
            xa = a.sample((*B, n))
            if lam == 1:
                return xa
            mask = torch.rand(*B, n, device=xa.device) < lam
            return torch.where(mask.unsqueeze(-1), xa, ema.sample(n))

        w = None
        if ema.has_components:
            with torch.no_grad():
                w = (1 - lam) * mixture_parts(ema)[0][..., 0].exp() + lam * self._a_weight
        return log_t, sample_t, w

    # ------------------------------------------------------------------ loss
    def loss(self, generator: Generator, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        log_t, sample_t, w_t = self.teacher_dist()
        logs: dict[str, Tensor] = {"ema_syncs": self._syncs}
        if w_t is not None:
            logs["teacher_weight"] = w_t
        if self.direction == "forward":
            x = sample_t(self.batch).detach()
            log_q = generator.log_prob(x)
            loss = -log_q.mean(-1)
            logs["kl"] = (log_t(x) - log_q).mean(-1).detach()
            return loss, logs
        if self.estimator == "score":
            x = generator.sample(self.batch)
            log_q = generator.log_prob(x)
            cost = log_q.detach() - log_t(x)
            logs["kl"] = cost.mean(-1).detach()
            return score_surrogate(log_q, cost), logs
        if self.estimator == "pathwise":
            x, log_q = generator.rsample_and_log_prob(self.batch)
            kl = (log_q - log_t(x)).mean(-1)
        else:
            kl = generator.expectation(lambda x: generator.log_prob(x) - log_t(x), self.batch)
        logs["kl"] = kl.detach()
        return kl, logs

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict(), "n_syncs": self.n_syncs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["ema"])
        self.n_syncs = state["n_syncs"]
        self._syncs = torch.full((), float(self.n_syncs), device=self._syncs.device)
