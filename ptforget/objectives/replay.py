"""Replay for forward KL (data mixing) and reverse KL (importance-weighted proposal mixing), paper R9 / R10.

Forward KL (``ForwardKLReplay``): the training data are ``lam * replay source + (1 - lam) * p_target``. Replay
changes the training distribution and with it the population optimum: with source ``p_old`` the old weight
converges to ``lam`` (R9), whatever Delta and beta0.

Reverse KL (``ReverseKLReplay``): the population objective KL(q_theta || p_target) is unchanged; replay only
changes the *sampling* of its gradient estimator. A batch is drawn from the proposal
``rho = lam * replay source + (1 - lam) * q_theta`` and every sample carries the importance weight
``omega = q_theta / rho <= 1 / (1 - lam)`` (bounded, unlike naive IS from the replay source alone). The gradient is
the score-function form ``E_rho[omega (c - b) grad log q_theta]`` with the cost ``c = log q_theta - log p_target``,
samples, weights and cost detached; ``b`` is a leave-one-out self-normalised baseline
``b_i = sum_{j != i} omega_j c_j / sum_{j != i} omega_j`` (a function of the other samples only, so the estimator
stays unbiased). With ``lam = 0`` the batch is drawn on-policy, omega = 1 and the estimator is exactly the
on-policy score-function reverse KL of ``ReverseKL(estimator='score')``.

Replay sources: ``p_old`` (the task's old mode) or ``q0`` (samples of the model as it was at ``setup``: a frozen
copy of the generator, i.e. the pretrained/initial model). ``buffer: N`` draws N samples from the source once at
setup and replays uniformly (with replacement) from them; the IS weights keep using the source's density, so with a
finite buffer the estimator is unbiased on average over buffer draws but not conditionally on one buffer.

Both objectives log the running fraction of batches with no old-mode sample (``starved_frac``; an old-mode sample
is one in ``task.old_region``); the reverse-KL one also logs the largest importance weight seen
(``max_is_weight``). Running values are device tensors (no host sync).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ptforget.errors import check, check_choice
from ptforget.generators.base import Generator
from ptforget.objectives.base import frozen_copy, resolve_estimator
from ptforget.objectives.divergence import ForwardKL, ReverseKL
from ptforget.tasks import TwoModeTask

SOURCES = ("p_old", "q0")
MODES = ("mixture", "fixed_slots")


def _check_lam(lam: Any) -> float:
    check(isinstance(lam, int | float) and not isinstance(lam, bool) and math.isfinite(lam) and 0 <= lam < 1,
          "objective.lam", lam, "a number in [0, 1)")
    return float(lam)


def replay_slots(lam: float, batch: int) -> int:
    """Number of replay samples per batch in ``fixed_slots`` mode: ceil(lam * batch)."""
    return math.ceil(lam * batch - 1e-12)


class _Replay:
    """Replay source, buffer and the starvation counters shared by the two replay objectives."""

    batchable = True  # buffers, counters and the q0 copy carry the generator's member dimension
    lam: float
    source: str
    buffer: int | None
    mode: str
    batch: int
    task: TwoModeTask | None

    theory_keys: ClassVar[dict[str, str]] = {"replay": "objective.lam", "replay_source": "objective.source"}

    @classmethod
    def theory_fields(cls, spec: dict[str, Any], steps: int) -> dict[str, Any]:
        return {"replay": float(spec.get("lam", 0.1)), "replay_source": spec.get("source", "p_old")}

    def _init_replay(self, lam: float, source: str, buffer: int | None, mode: str) -> None:
        self.lam = _check_lam(lam)
        check_choice(source, "objective.source", SOURCES)
        check(buffer is None or (isinstance(buffer, int) and not isinstance(buffer, bool) and buffer >= 1),
              "objective.buffer", buffer, "null (fresh samples every step) or an integer >= 1")
        check_choice(mode, "objective.mode", MODES)
        if mode == "fixed_slots":
            k = replay_slots(self.lam, self.batch)
            check(k < self.batch, "objective.lam", lam,
                  f"a value with ceil(lam * objective.batch) < objective.batch = {self.batch} in fixed_slots mode")
        self.source, self.buffer, self.mode = source, buffer, mode
        self._q0: Generator | None = None
        self._buf: Tensor | None = None

    def _setup_replay(self, generator: Generator, task: TwoModeTask) -> None:
        dev = generator.device
        self._shape = generator.batch_shape  # one buffer, counter and q0 per member
        if self.source == "q0":
            self._q0 = frozen_copy(generator)
        if self.buffer is not None:
            self._buf = self._source_sample(self.buffer, fresh=True)
        self._n_batches = torch.zeros((), device=dev)
        self._n_starved = torch.zeros(self._shape, device=dev)

    def _source_sample(self, n: int, fresh: bool = False) -> Tensor:
        """(*members, n, d) samples of the replay source (from the buffer, if there is one and ``fresh`` is False)."""
        B = self._shape
        if self._buf is not None and not fresh:
            idx = torch.randint(self._buf.shape[-2], (*B, n), device=self._buf.device)
            return torch.gather(self._buf, -2, idx.unsqueeze(-1).expand(*B, n, self._buf.shape[-1]))
        if self.source == "q0":
            assert self._q0 is not None
            return self._q0.sample(n)
        assert self.task is not None
        return self.task.p_old.sample((*B, n))

    def _source_log_prob(self, x: Tensor) -> Tensor:
        if self.source == "q0":
            assert self._q0 is not None
            return self._q0.log_prob(x)
        assert self.task is not None
        return self.task.p_old.log_prob(x)

    def _starvation(self, x: Tensor) -> Tensor:
        """Update the running counters with this batch; return the running starved fraction (per member)."""
        assert self.task is not None
        starved = (~self.task.old_region(x).any(-1)).to(self._n_starved.dtype)
        self._n_starved = self._n_starved + starved
        self._n_batches = self._n_batches + 1
        return self._n_starved / self._n_batches

    def _replay_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_batches": self._n_batches, "n_starved": self._n_starved}
        if self._buf is not None:
            out["buffer"] = self._buf
        if self._q0 is not None:
            out["q0"] = self._q0.state_dict()
        return out

    def _load_replay_state(self, state: dict[str, Any]) -> None:
        self._n_batches, self._n_starved = state["n_batches"], state["n_starved"]
        if "buffer" in state:
            self._buf = state["buffer"]
        if "q0" in state and self._q0 is not None:
            self._q0.load_state_dict(state["q0"])


class ForwardKLReplay(_Replay, ForwardKL):
    """SFT with replay: NLL of data from ``lam * replay source + (1 - lam) * p_target`` (R9).

    Args:
        batch: samples per step.
        target: the new-data distribution (``new`` by default).
        lam: replay fraction in [0, 1).
        source: ``p_old`` or ``q0`` (frozen copy of the generator at setup).
        buffer: null (fresh source samples every step) or N samples drawn once at setup.
        mode: ``mixture`` (each sample is a replay sample with probability lam) or ``fixed_slots``
            (exactly ceil(lam * batch) replay samples per batch).
    """

    name = "fkl_replay"

    def __init__(self, batch: int = 256, target: str = "new", lam: float = 0.1, source: str = "p_old",
                 buffer: int | None = None, mode: str = "mixture") -> None:
        super().__init__(batch, target)
        self._init_replay(lam, source, buffer, mode)

    def setup(self, generator: Generator, task: TwoModeTask) -> None:
        super().setup(generator, task)
        self._setup_replay(generator, task)

    def data(self, step: int, shape: tuple[int, ...] = ()) -> Tensor:
        new = super().data(step, shape)
        if self.lam == 0:
            return new
        if self.mode == "fixed_slots":
            k = replay_slots(self.lam, self.batch)
            return torch.cat([self._source_sample(k), new[..., k:, :]], -2)
        rep = self._source_sample(self.batch)
        mask = torch.rand(*shape, self.batch, device=new.device) < self.lam
        return torch.where(mask.unsqueeze(-1), rep, new)

    def loss(self, generator: Generator, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        x = self.data(step, generator.batch_shape)
        nll = -generator.log_prob(x).mean(-1)
        return nll, {"nll": nll.detach(), "starved_frac": self._starvation(x)}

    def state_dict(self) -> dict[str, Any]:
        return self._replay_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_replay_state(state)


class ReverseKLReplay(_Replay, ReverseKL):
    """Reverse KL to p_target with replay in the *estimator*: IS-weighted score function from rho (R10).

    Sampling: ``mixture`` draws every sample from rho = lam * source + (1 - lam) * q_theta; ``fixed_slots`` puts
    k = ceil(lam * batch) source samples and batch - k model samples in every batch, a stratified draw from
    rho' = (k / batch) source + (1 - k / batch) q_theta, so the weights use lam' = k / batch (bound
    1 / (1 - lam')) and the estimator stays unbiased. Estimator: ``score`` only (see the module docstring).

    Args:
        batch: samples per step.
        estimator: ``auto`` or ``score`` (both mean the IS-weighted score function).
        target: the divergence target (``star`` by default).
        lam: replay fraction in [0, 1); 0 is exactly on-policy.
        source: ``p_old`` or ``q0``.
        buffer: null or N samples drawn once at setup.
        mode: ``mixture`` or ``fixed_slots``.
    """

    name = "rkl_replay"
    estimators = ("score",)

    def __init__(self, batch: int = 256, estimator: str = "score", target: str = "star", lam: float = 0.1,
                 source: str = "p_old", buffer: int | None = None, mode: str = "mixture") -> None:
        super().__init__(batch, estimator, target)
        self._init_replay(lam, source, buffer, mode)

    def validate(self, generator: Generator, task: TwoModeTask) -> None:
        self.estimator = resolve_estimator(self.estimator, generator, self.estimators, "objective.estimator")

    def setup(self, generator: Generator, task: TwoModeTask) -> None:
        super().setup(generator, task)
        self._setup_replay(generator, task)
        self._max_w = torch.zeros(generator.batch_shape, device=generator.device)

    @property
    def lam_effective(self) -> float:
        """The proposal's replay weight: lam (mixture) or ceil(lam * batch) / batch (fixed slots)."""
        return replay_slots(self.lam, self.batch) / self.batch if self.mode == "fixed_slots" else self.lam

    def proposal_sample(self, generator: Generator) -> Tensor:
        """A detached batch from rho (on-policy when lam = 0)."""
        if self.lam == 0:
            return generator.sample(self.batch)
        if self.mode == "fixed_slots":
            k = replay_slots(self.lam, self.batch)
            return torch.cat([self._source_sample(k), generator.sample(self.batch - k)], -2)
        own = generator.sample(self.batch)
        rep = self._source_sample(self.batch)
        mask = torch.rand(*generator.batch_shape, self.batch, device=own.device) < self.lam
        return torch.where(mask.unsqueeze(-1), rep, own)

    def log_weights(self, log_q: Tensor, x: Tensor) -> Tensor:
        """log omega = log q - log rho, rho = lam' source + (1 - lam') q (logsumexp); 0 when lam = 0."""
        lam = self.lam_effective
        if lam == 0:
            return torch.zeros_like(log_q)
        log_rho = torch.logaddexp(math.log(lam) + self._source_log_prob(x), math.log1p(-lam) + log_q)
        return log_q - log_rho

    def loss(self, generator: Generator, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        x = self.proposal_sample(generator)
        log_q = generator.log_prob(x)
        cost = (log_q - self._log_p(x)).detach()
        w = self.log_weights(log_q.detach(), x).exp()
        sw, swc = w.sum(-1, keepdim=True), (w * cost).sum(-1, keepdim=True)
        n = x.shape[-2]
        if n > 1:
            base = (swc - w * cost) / (sw - w).clamp_min(1e-30)
        else:
            base = torch.zeros_like(cost)
        surrogate = (w * (cost - base) * log_q).mean(-1)
        w_max = w.amax(-1)
        self._max_w = torch.maximum(self._max_w, w_max)
        sw, swc = sw.squeeze(-1), swc.squeeze(-1)
        logs = {"kl": swc / sw, "max_is_weight": self._max_w, "is_weight_max": w_max,
                "ess_frac": sw**2 / (w**2).sum(-1) / n, "starved_frac": self._starvation(x)}
        return surrogate, logs

    def state_dict(self) -> dict[str, Any]:
        return {**self._replay_state(), "max_w": self._max_w}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_replay_state(state)
        self._max_w = state["max_w"]
