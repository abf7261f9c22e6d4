"""PostTrainModule: a generator, an objective and a task, trained step by step with on-the-fly sampling.

The "dataset" is a step counter: every step the objective draws the samples it needs. Forgetting metrics are
measured every ``eval_every`` steps (the only host syncs), recorded as a trajectory and tracked by torchmetrics.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor

from ptforget.errors import check, check_choice
from ptforget.generators.base import Generator
from ptforget.metrics import forgetting_metrics, measure
from ptforget.objectives.base import Objective
from ptforget.tasks import TwoModeTask

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")


def build_optimizer(params: list[dict[str, Any]], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam or SGD over the generator's parameter groups (their learning-rate multipliers are kept)."""
    name = cfg.get("name", "adam")
    check_choice(name, "optimizer.name", OPTIMIZERS)
    if name == "adam":
        return torch.optim.Adam(params, betas=tuple(cfg.get("betas", (0.9, 0.999))),
                                weight_decay=float(cfg.get("weight_decay", 0.0)))
    return torch.optim.SGD(params, momentum=float(cfg.get("momentum", 0.0)),
                           weight_decay=float(cfg.get("weight_decay", 0.0)))


def validate_optimizer(cfg: dict[str, Any]) -> None:
    check_choice(cfg.get("name", "adam"), "optimizer.name", OPTIMIZERS)
    lr = cfg.get("lr")
    check(isinstance(lr, int | float) and math.isfinite(lr) and lr > 0, "optimizer.lr", lr, "a finite number > 0")
    check_choice(cfg.get("schedule", "constant"), "optimizer.schedule", SCHEDULES)
    mom = cfg.get("momentum", 0.0)
    check(isinstance(mom, int | float) and 0 <= mom < 1, "optimizer.momentum", mom, "a number in [0, 1)")


class PostTrainModule(L.LightningModule):
    """Lightning wrapper: one objective step per training step, metrics every ``eval_every`` steps."""

    def __init__(
        self,
        generator: Generator,
        objective: Objective,
        task: TwoModeTask,
        optimizer: dict[str, Any],
        eval_every: int = 50,
        n_eval: int = 4096,
        max_steps: int | None = None,
    ) -> None:
        super().__init__()
        check(isinstance(eval_every, int) and eval_every >= 1, "eval_every", eval_every, "an integer >= 1")
        check(isinstance(n_eval, int) and n_eval >= 16, "n_eval", n_eval, "an integer >= 16")
        validate_optimizer(optimizer)
        self.generator = generator
        self.objective = objective
        self.task = task
        self.optimizer_cfg = dict(optimizer)
        self.eval_every, self.n_eval, self.max_steps = eval_every, n_eval, max_steps
        self.metrics = forgetting_metrics()
        self.history: list[dict[str, float]] = []
        self.status = "running"
        self.diverged_step: int | None = None
        self.reason = ""
        self._last_loss: Tensor | None = None
        self._last_logs: dict[str, Tensor] = {}
        # first step whose loss was not finite, tracked on the device (-1 = none) so no step syncs
        self.register_buffer("_bad_step", torch.tensor(-1), persistent=False)
        objective.validate(generator, task)

    # ------------------------------------------------------------------ lightning hooks
    def configure_optimizers(self) -> Any:
        opt = build_optimizer(self.generator.param_groups(float(self.optimizer_cfg["lr"])), self.optimizer_cfg)
        if self.optimizer_cfg.get("schedule", "constant") == "cosine" and self.max_steps:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt

    def on_fit_start(self) -> None:
        self.task.to(self.device)
        self.objective.setup(self.generator, self.task)

    def on_train_start(self) -> None:
        if not self.history:
            self.evaluate(0)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        step = self.global_step
        loss, logs = self.objective.loss(self.generator, step)
        bad = ~torch.isfinite(loss.detach())
        self._bad_step = torch.where(bad & (self._bad_step < 0), torch.as_tensor(step, device=self.device),
                                     self._bad_step)
        self._last_loss, self._last_logs = loss.detach(), logs
        if self._trainer is not None and self.trainer.logger is not None:
            self.log("train/loss", loss.detach(), on_step=True, prog_bar=False, logger=True, batch_size=1)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.global_step  # already incremented: number of optimizer steps taken
        self.generator.project_()
        self.objective.on_step_end(self.generator, step)
        if step % self.eval_every == 0 or (self.max_steps is not None and step >= self.max_steps):
            self.evaluate(step)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, step: int) -> dict[str, float]:
        """Measure, update the metrics, append a trajectory row and check for divergence (one host sync)."""
        m = measure(self.generator, self.task, self.n_eval)
        self.metrics.update(m)
        row: dict[str, float] = {"step": float(step)}
        if self._last_loss is not None:
            row["loss"] = self._last_loss
            for k, v in self._last_logs.items():
                row[f"obj_{k}"] = v
        row.update(m)
        params_ok = torch.stack([torch.isfinite(p).all() for p in self.generator.parameters()]).all()
        vals = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=self.device).reshape(())
                            for v in row.values()] + [self._bad_step.float(), params_ok.float()]).cpu().tolist()
        params_finite = bool(vals.pop())
        bad_step = int(vals.pop())
        row = dict(zip(row.keys(), vals, strict=True))
        row["step"] = int(row["step"])
        self.history.append(row)
        if self.logger is not None and step > 0:
            self.log_dict({f"eval/{k}": v for k, v in row.items() if k != "step"}, on_step=True, batch_size=1)
        self._check_divergence(step, bad_step, params_finite)
        return row

    def _check_divergence(self, step: int, bad_step: int, params_finite: bool) -> None:
        reason = ""
        if bad_step >= 0:
            step, reason = bad_step, "non-finite loss"
        elif not params_finite:
            reason = "non-finite parameter"
        if reason:
            self.status, self.diverged_step, self.reason = "diverged", step, reason
            if self._trainer is not None:
                self.trainer.should_stop = True

    def summary_metrics(self) -> dict[str, dict[str, float]]:
        """first/last/min/max of every tracked metric that was measured."""
        out = {}
        for name, metric in self.metrics.items():
            if int(metric.count) > 0:
                out[name] = {k: float(v) for k, v in metric.compute().items()}
        return out
