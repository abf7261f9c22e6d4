"""OAPL (Ritter et al. 2026) in R^d: optimal-advantage regression toward a lagged policy (paper R13).

A frozen copy q_lag of the generator is the sampler *and* the KL reference; it is overwritten with the current
parameters every ``lag`` optimizer steps (``lag: null`` or ``.inf``: never, i.e. A*-PO with the fixed reference
q0 = the generator at setup). Every step draws ``groups`` groups of ``group_size`` detached samples from q_lag,
rewards r from the task, and per group

    V* = beta1 * (logsumexp_i(r_i / beta1) - log G)     (a downward-biased estimate of beta1 log E_lag e^{r/beta1})

    loss = mean_{b,i} (beta2 * (log q_theta(x_bi) - sg log q_lag(x_bi)) - (r_bi - V*_b))^2.

The gradient is a regression gradient at fixed samples (no IS ratio, no REINFORCE over the sampler, no
reparameterisation), so every family works unchanged.

``beta2: null`` means beta2 = beta1 (the default, deliberately): the residuals can all vanish for a *normalised*
q_theta only when the two temperatures agree; the minimiser is then q_theta = q_lag exp((r - V*) / beta), the
closed-form solution of max E_q[r] - beta KL(q || q_lag). With beta1 != beta2 (the official code's 1.0 / 1e-3,
inherited from A*-PO and tuned for token-summed log-ratios) the constrained minimiser solves the non-affine
g + c exp(g / beta2) = r - V* for g = beta2 log(q / q_lag): allowed, as an ablation.

Prediction (R13): with rewards favouring the new mode, each lag period moves the old log-odds by about
-(r_n - r_o) / beta, so the old weight falls step-wise at each sync; with a fixed reference the shift is bounded.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from ptforget.errors import check, check_choice
from ptforget.generators.base import Generator
from ptforget.objectives.base import Objective, copy_params_, frozen_copy
from ptforget.tasks import REGION_REWARDS, REWARDS, TwoModeTask


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _pos_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def v_star(r: Tensor, beta1: float) -> Tensor:
    """Per-group V* = beta1 (logsumexp(r / beta1) - log G) over the last axis of r (groups, G)."""
    return beta1 * (torch.logsumexp(r / beta1, -1) - math.log(r.shape[-1]))


class OAPL(Objective):
    """Squared optimal-advantage regression on samples from a lagged copy (see the module docstring).

    Args:
        groups: number of groups per step (independent V* estimates; one "prompt").
        group_size: G samples per group (G >= 1; G controls the Jensen bias of V*).
        beta1: temperature of V*, > 0.
        beta2: KL coefficient of the log-ratio, > 0; null = beta1.
        lag: sync q_lag <- q_theta every ``lag`` steps (integer >= 1); null / inf = fixed reference q0.
        reward: reward kind of the task (new_bump | both_bumps | log_p_star | log_p_new).
    """

    name = "oapl"
    batchable = True  # q_lag is a copy of the (batched) generator: one lagged copy per member

    def __init__(self, groups: int = 16, group_size: int = 16, beta1: float = 1.0, beta2: float | None = None,
                 lag: int | float | None = 100, reward: str = "new_bump") -> None:
        check(_pos_int(groups), "objective.groups", groups, "an integer >= 1")
        check(_pos_int(group_size), "objective.group_size", group_size, "an integer >= 1 (G >= 1)")
        super().__init__(groups * group_size)
        check(_pos_num(beta1), "objective.beta1", beta1, "a finite number > 0")
        check(beta2 is None or _pos_num(beta2), "objective.beta2", beta2, "null (= beta1) or a finite number > 0")
        if (isinstance(lag, float) and math.isinf(lag) and lag > 0) or lag in ("inf", ".inf"):
            lag = None
        check(lag is None or _pos_int(lag), "objective.lag", lag,
              "an integer >= 1 (L >= 1), or null / inf for a fixed reference")
        check_choice(reward, "objective.reward", REWARDS)
        self.groups, self.group_size = groups, group_size
        self.beta1 = float(beta1)
        self.beta2 = float(beta1 if beta2 is None else beta2)
        self.lag, self.reward = lag, reward
        self.n_syncs = 0

    theory_keys: ClassVar[dict[str, str]] = {"tau": "objective.beta1", "refreshes": "objective.lag"}

    @classmethod
    def theory_fields(cls, spec: dict[str, Any], steps: int) -> dict[str, Any]:
        out: dict[str, Any] = {"tau": float(spec.get("beta1", 1.0))}
        out.update(REGION_REWARDS.get(spec.get("reward", ""), {}))
        lag = spec.get("lag", 100)
        if lag is not None and lag not in ("inf", ".inf") and not (isinstance(lag, float) and math.isinf(lag)):
            out["refreshes"] = int(steps) // int(lag)
        return out

    def setup(self, generator: Generator, task: TwoModeTask) -> None:
        super().setup(generator, task)
        self.q_lag = frozen_copy(generator)
        self._syncs = torch.zeros((), device=generator.device)

    def on_step_end(self, generator: Generator, step: int) -> None:
        if self.lag is not None and step % self.lag == 0:
            copy_params_(self.q_lag, generator)
            self.n_syncs += 1
            self._syncs = self._syncs + 1

    def loss(self, generator: Generator, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        assert self.task is not None
        B = generator.batch_shape
        with torch.no_grad():
            x = self.q_lag.sample(self.batch)
            log_lag = self.q_lag.log_prob(x)
            r = self.task.reward(x, self.reward).reshape(*B, self.groups, self.group_size)
            v = v_star(r, self.beta1)
            target = (r - v.unsqueeze(-1)).reshape(*B, -1)
        ratio = generator.log_prob(x) - log_lag
        res = self.beta2 * ratio - target
        loss = (res**2).mean(-1)
        return loss, {"residual_sq": loss.detach(), "v_star": v.mean(-1), "reward": r.mean((-2, -1)),
                      "log_ratio": ratio.detach().mean(-1), "lag_syncs": self._syncs}

    def state_dict(self) -> dict[str, Any]:
        return {"q_lag": self.q_lag.state_dict(), "n_syncs": self.n_syncs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_lag.load_state_dict(state["q_lag"])
        self.n_syncs = state["n_syncs"]
        self._syncs = torch.full((), float(self.n_syncs), device=self._syncs.device)
