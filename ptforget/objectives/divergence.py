"""Forward KL (SFT on new data) and reverse KL (on-policy, to p*).

Both are written on the trailing (sample, coordinate) axes, so a generator with batched members gets one loss per
member (``(S,)``) from the same code.
"""

from __future__ import annotations

import functools

from torch import Tensor

from ptforget.errors import check_choice
from ptforget.generators.base import Generator
from ptforget.objectives.base import Objective, resolve_estimator, score_surrogate
from ptforget.tasks import TwoModeTask

TARGETS = ("new", "star", "old")


class ForwardKL(Objective):
    """SFT: negative log-likelihood of samples from the target (p_new by default), i.e. KL(p_target || q) + c."""

    name = "fkl"
    batchable = True

    def __init__(self, batch: int = 256, target: str = "new") -> None:
        super().__init__(batch)
        check_choice(target, "objective.target", TARGETS)
        self.target = target

    def data(self, step: int, shape: tuple[int, ...] = ()) -> Tensor:
        """A batch of training data (off-policy, from the task), (*shape, batch, d): one per member."""
        assert self.task is not None
        return self.task.sample(self.target, self.batch, shape)

    def loss(self, generator: Generator, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        nll = -generator.log_prob(self.data(step, generator.batch_shape)).mean(-1)
        return nll, {"nll": nll.detach()}


class ReverseKL(Objective):
    """KL(q_theta || p_target) on the model's own samples (p* by default).

    Estimators: ``pathwise`` (reparameterised samples, flows), ``enumerate`` (mixtures: exact weight gradient,
    pathwise per component), ``score`` (score function with a leave-one-out batch baseline, any family),
    ``auto`` (enumerate for mixtures, pathwise for flows).
    """

    name = "rkl"
    batchable = True
    estimators = ("pathwise", "enumerate", "score")

    def __init__(self, batch: int = 256, estimator: str = "auto", target: str = "star") -> None:
        super().__init__(batch)
        check_choice(estimator, "objective.estimator", ("auto", *self.estimators))
        check_choice(target, "objective.target", TARGETS)
        self.estimator, self.target = estimator, target

    def validate(self, generator: Generator, task: TwoModeTask) -> None:
        self.estimator = resolve_estimator(self.estimator, generator, self.estimators, "objective.estimator")

    def setup(self, generator: Generator, task: TwoModeTask) -> None:
        super().setup(generator, task)
        self.validate(generator, task)
        self._log_p = functools.partial(task.log_prob, self.target)  # closed form: no distribution objects

    def loss(self, generator: Generator, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        log_p = self._log_p
        if self.estimator == "score":
            x = generator.sample(self.batch)
            log_q = generator.log_prob(x)
            ell = log_q.detach() - log_p(x)
            return score_surrogate(log_q, ell), {"kl": ell.mean(-1)}
        if self.estimator == "pathwise":
            x, log_q = generator.rsample_and_log_prob(self.batch)
            kl = (log_q - log_p(x)).mean(-1)
            return kl, {"kl": kl.detach()}
        kl = generator.expectation(lambda x: generator.log_prob(x) - log_p(x), self.batch)
        return kl, {"kl": kl.detach()}
