"""PostTrainModule: a generator, an objective and a task, trained step by step with on-the-fly sampling.

The lean path: Lightning drives the run (devices, loggers, progress bar, the fit loop), but one Lightning batch is a
*chunk* of ``eval_every`` optimizer steps run in a tight loop (manual optimization), so Lightning's per-batch hooks
cost once per chunk rather than once per step. Nothing inside a chunk syncs with the host; forgetting metrics are
measured at the end of each chunk (one host sync), recorded as a trajectory and tracked by torchmetrics; a
checkpoint (``last.ckpt``) is written atomically every ``checkpoint_every`` steps so an interrupted run resumes.

With ``seeds > 1`` and a batchable objective the generator carries a leading member dimension (``ptforget.ensemble``:
natively stacked tensors for GMM / MDN, vmap for flows): every member is trained, measured and judged for
divergence separately, in one batched step and one optimizer over the stacked parameters.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from ptforget import interrupt
from ptforget.build import build_optimizer
from ptforget.ensemble import batched, members_finite, reset_members_
from ptforget.errors import check
from ptforget.fused import FusedStep, FusedStepUnavailable, compiled_measure, fusable
from ptforget.generators.base import Generator
from ptforget.io import atomic_replace
from ptforget.metrics import forgetting_metrics, measure, start_fidelity, target_region_stats, with_drift
from ptforget.objectives.base import Objective
from ptforget.tasks import TwoModeTask
from ptforget.validate import validate_optimizer

log = logging.getLogger("ptforget")
_set = object.__setattr__


class PostTrainModule(L.LightningModule):
    """Lightning wrapper: one chunk of optimizer steps per Lightning batch, metrics at every chunk end.

    Args:
        generator, objective, task: what to train, how, and on what.
        optimizer: optimizer config (name, lr, schedule, betas, momentum, weight_decay).
        eval_every: steps per chunk; metrics are measured after each chunk and at the last step.
        n_eval: Monte-Carlo samples per evaluation.
        max_steps: total optimizer steps.
        seeds: number of batched seeds (members); 1 trains the generator itself, S > 1 a copy with S members.
        checkpoint_path: where ``last.ckpt`` goes (None: no checkpoints).
        checkpoint_every: steps between checkpoints (rounded up to a chunk end); 0 disables them.
        compile: run each step as one captured update (``ptforget.fused.FusedStep``: sampling, loss, gradient,
            optimizer and divergence bookkeeping through ``torch.compile``; CUDA graphs on a GPU).
        grad_clip: (max, 'norm' | 'value'): clip the gradient's norm (per member with batched seeds, so members
            stay independent) or its entries; max None disables it.
        starts: with S > 1, the generator each member starts from (``build.member_starts``: member k pretrained
            with its own seed); None starts every member at ``generator``.
    """

    def __init__(
        self,
        generator: Generator,
        objective: Objective,
        task: TwoModeTask,
        optimizer: dict[str, Any],
        eval_every: int = 50,
        n_eval: int = 4096,
        max_steps: int = 1000,
        seeds: int = 1,
        checkpoint_path: str | os.PathLike | None = None,
        checkpoint_every: int = 0,
        compile: bool = False,
        grad_clip: tuple[float | None, str] = (None, "norm"),
        starts: list[Generator] | None = None,
    ) -> None:
        super().__init__()
        check(isinstance(eval_every, int) and eval_every >= 1, "eval_every", eval_every, "an integer >= 1")
        check(isinstance(n_eval, int) and n_eval >= 16, "n_eval", n_eval, "an integer >= 16")
        check(isinstance(seeds, int) and seeds >= 1, "seeds", seeds, "an integer >= 1")
        validate_optimizer(optimizer)
        objective.validate(generator, task)
        self.automatic_optimization = False
        # the trained generator: the given one, or S members stacked from it (each starts at its parameters, or
        # member k at starts[k]'s: its own seed's pretrained start)
        self.generator = batched(generator, seeds, starts) if seeds > 1 else generator
        self.batched = seeds > 1
        if self.batched:  # where a diverged member is put back (keeps later batched sampling valid)
            for i, p in enumerate(self.generator.parameters()):
                self.register_buffer(f"_init_{i}", p.detach().clone(), persistent=False)
        self.objective = objective
        self.task = task
        self.optimizer_cfg = dict(optimizer)
        self.eval_every, self.n_eval, self.max_steps, self.S = eval_every, n_eval, max_steps, seeds
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.checkpoint_every = checkpoint_every
        self.compile = compile
        self.grad_clip = grad_clip
        self._fused: FusedStep | None = None
        self._chunk_losses: list[Tensor] = []  # one run's eager losses since the last chunk end
        self.checkpoint_meta: dict[str, Any] = {}  # stored with every checkpoint (the run's config hash)
        self.metrics = forgetting_metrics()
        self.histories: list[list[dict[str, float]]] = [[] for _ in range(seeds)]
        self.diverged: list[tuple[int, str] | None] = [None] * seeds
        self.step = 0  # optimizer steps taken
        #: the model's log-density on a display grid at a few steps (1-D and 2-D tasks): step -> (S, G) tensor
        self.density: dict[int, Tensor] = {}
        self.snapshot_steps = set(snapshot_steps(max_steps, eval_every))
        self._last_ckpt_step = 0
        self._resume: dict[str, Any] | None = None
        self.resumed_from: int | None = None  # step of the checkpoint this run resumed from
        #: per member: the start's distance from q0 (``metrics.start_fidelity``), measured before the first step
        self.start: list[dict[str, float]] | None = None
        self._last_loss: Tensor | None = None
        self._last_logs: dict[str, Tensor] = {}
        # first step whose loss (or, batched, parameters) was not finite, per member, on the device (-1 = none)
        self._bad_step = torch.full((seeds,), -1)
        self._params_bad_step = torch.full((seeds,), -1)

    # ------------------------------------------------------------------ single-run views
    @property
    def history(self) -> list[dict[str, float]]:
        return self.histories[0]

    @property
    def status(self) -> str:
        return "diverged" if self.diverged[0] else "running"

    @property
    def diverged_step(self) -> int | None:
        return self.diverged[0][0] if self.diverged[0] else None

    @property
    def reason(self) -> str:
        return self.diverged[0][1] if self.diverged[0] else ""

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.max_steps / self.eval_every)

    @property
    def start_chunk(self) -> int:
        return self.step // self.eval_every

    # ------------------------------------------------------------------ lightning hooks
    def configure_optimizers(self) -> Any:
        opt = build_optimizer(self.generator.param_groups(float(self.optimizer_cfg["lr"])), self.optimizer_cfg)
        if self.optimizer_cfg.get("schedule", "constant") == "cosine" and self.max_steps:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt

    def on_fit_start(self) -> None:
        self.task.to(self.device)
        self._bad_step = self._bad_step.to(self.device)
        self._params_bad_step = self._params_bad_step.to(self.device)
        if self.batched:
            target_region_stats(self.task)  # fill the task's caches outside vmap
            self.task.log_prob("star", self.task.mu_old.unsqueeze(0))
        self.objective.setup(self.generator, self.task)

    def on_train_start(self) -> None:
        opt = self.optimizers()
        self._opt = getattr(opt, "optimizer", opt)
        self._sched = self.lr_schedulers()
        if self._resume is not None:
            self._restore(self._resume)
            self._resume = None
        elif not self.history:
            self.start = start_fidelity(self.generator, self.task)
            self.evaluate(0)
        if self.compile and fusable(self._opt):  # after the restore: it reads the optimizer's state
            self._fused = FusedStep(self.generator, self.objective, self._opt, self.grad_clip,
                                    self._inits() if self.batched else None)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        chunk = int(batch)
        last = min((chunk + 1) * self.eval_every, self.max_steps)
        try:
            with self._fused.replaying() if self._fused is not None else contextlib.nullcontext():
                for _ in range(self.step, last):
                    if interrupt.pending() is not None:  # SIGTERM/SIGINT: stop at a step boundary; train.py saves
                        if self._trainer is not None:
                            self.trainer.should_stop = True
                        return
                    self._optimizer_step()
        except RuntimeError as err:  # e.g. sampling from NaN weights: a divergence, not a crash
            self._flush_losses()
            if self.batched or bool(self._params_finite()):
                raise
            self._stop_diverged(self.step, f"non-finite parameter ({str(err).splitlines()[0]})")
            return
        self._flush_losses()
        self.evaluate(self.step)
        if self.diverged[0] is not None and not self.batched:
            return
        if self.logger is not None:
            self.logger.log_metrics({"train/loss": float(self.histories[0][-1].get("loss", float("nan")))},
                                    step=self.step)
        if self.checkpoint_path is not None and self.checkpoint_every > 0 and self.step < self.max_steps \
                and self.step - self._last_ckpt_step >= self.checkpoint_every:
            self.save_resume_checkpoint()

    def _update(self, step: int, alive: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss, backward and optimizer step; returns per-member losses (detached) and the objective's logs."""
        losses, logs = self.objective.loss(self.generator, step)
        if self.batched:  # the sum: each member's gradient is its own loss's gradient
            loss = torch.where(alive, losses, torch.zeros_like(losses)).sum()
        else:
            loss = losses
        losses = losses.detach().reshape(self.S)
        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip[0] is not None:
            self._clip_gradients(*self.grad_clip)
        self._opt.step()
        return losses, logs

    @torch.no_grad()
    def _clip_gradients(self, limit: float, algorithm: str) -> None:
        """torch's clip_grad_norm_ / clip_grad_value_, with one norm per member when seeds are batched."""
        grads = [p.grad for g in self._opt.param_groups for p in g["params"] if p.grad is not None]
        if not grads:
            return
        if algorithm == "value":
            for gr in grads:
                gr.clamp_(-limit, limit)
            return
        if not self.batched:
            torch.nn.utils.clip_grad_norm_([p for g in self._opt.param_groups for p in g["params"]], limit)
            return
        norm = torch.stack([gr.reshape(self.S, -1).pow(2).sum(1) for gr in grads]).sum(0).sqrt()
        scale = (limit / (norm + 1e-6)).clamp(max=1.0)
        for gr in grads:
            gr.mul_(scale.view(-1, *([1] * (gr.dim() - 1))))

    def _inits(self) -> list[Tensor]:
        return [getattr(self, f"_init_{i}") for i in range(len(list(self.generator.parameters())))]

    def _optimizer_step(self) -> None:
        # per-step attributes are set with object.__setattr__: none is a parameter, buffer or submodule, and
        # nn.Module.__setattr__'s checks cost ~2 us each, a tenth of a compiled step
        step = self.step
        if self._fused is not None:
            try:
                losses, logs, bad, params_bad = self._fused(step, self._bad_step, self._params_bad_step)
            except FusedStepUnavailable as err:
                log.warning("compile=true: the step runs eagerly (%s)", err)
                self._fused = None
                return self._optimizer_step()
            if self._sched is not None:
                self._sched.step()
            _set(self, "step", step + 1)
            self.objective.on_step_end(self.generator, step + 1)
            _set(self, "_bad_step", bad)
            _set(self, "_params_bad_step", params_bad)
            _set(self, "_last_loss", losses)
            _set(self, "_last_logs", logs)
            return
        if not self.batched:  # one run: its losses are checked once per chunk (_flush_losses), not per step
            losses, logs = self._update(step, self._bad_step)
            self._chunk_losses.append(losses)
            if self._sched is not None:
                self._sched.step()
            _set(self, "step", step + 1)
            if self.generator.has_projection:
                self.generator.project_()
            self.objective.on_step_end(self.generator, step + 1)
            _set(self, "_last_loss", losses)
            _set(self, "_last_logs", logs)
            return
        losses, logs = self._update(step, self._bad_step < 0)
        if self._sched is not None:
            self._sched.step()
        self.step += 1
        bad = ~torch.isfinite(losses)
        self._bad_step = torch.where(bad & (self._bad_step < 0), step, self._bad_step)
        self._params_bad_step = torch.where(~members_finite(self.generator) & (self._params_bad_step < 0),
                                            self.step, self._params_bad_step)
        reset_members_(self.generator, (self._bad_step >= 0) | (self._params_bad_step >= 0), self._inits())
        if self.generator.has_projection:
            self.generator.project_()
        self.objective.on_step_end(self.generator, self.step)
        self._last_loss, self._last_logs = losses, logs

    def _flush_losses(self) -> None:
        """Record the first non-finite loss of the steps since the last flush (one run's eager path)."""
        if not self._chunk_losses:
            return
        start = self.step - len(self._chunk_losses)
        bad = ~torch.isfinite(torch.cat(self._chunk_losses))
        first = start + bad.to(torch.uint8).argmax()
        self._bad_step = torch.where(bad.any() & (self._bad_step < 0), first, self._bad_step)
        self._chunk_losses.clear()

    # ------------------------------------------------------------------ evaluation
    def _measure(self) -> dict[str, Tensor]:
        """Measured values with a leading member dimension."""
        m = (compiled_measure if self.compile else measure)(self.generator, self.task, self.n_eval)
        return m if self.batched else {k: v.unsqueeze(0) for k, v in m.items()}

    def _params_finite(self) -> Tensor:
        """0-d bool tensor on the device: every generator parameter is finite (no host sync)."""
        return torch.stack([torch.isfinite(p).all() for p in self.generator.parameters()]).all()

    def _stop_diverged(self, step: int, reason: str) -> None:
        self.diverged[0] = (step, reason)
        if self._trainer is not None:
            self.trainer.should_stop = True

    def evaluate(self, step: int) -> list[dict[str, float]]:
        """Measure every member, update the metrics, append trajectory rows, check divergence.

        One host sync per evaluation (two for a single run: its divergence check comes first, so a diverged
        generator is never sampled).
        """
        if not self.batched:
            alive = None
            bad, ok = torch.stack([self._bad_step[0].float(), self._params_finite().float()]).tolist()
            if bad >= 0 or not ok:
                self._stop_diverged(int(bad) if bad >= 0 else step, "non-finite loss" if bad >= 0
                                    else "non-finite parameter")
                return []
            params_bad = torch.full((1,), -1, device=self.device)
        else:
            alive = (self._bad_step < 0) & (self._params_bad_step < 0)
            params_bad = self._params_bad_step
        m = self._measure()
        core = self.metrics["core_pos"]  # its first value (kept in checkpoints) is the start drift is taken from
        m = with_drift(m, torch.where(core.count == 0, m["core_pos"], core.first))
        self.metrics.update(m, alive=alive)
        if step in self.snapshot_steps:
            self._snapshot(step)
        cols: dict[str, Tensor] = {}
        if self._last_loss is not None:
            cols["loss"] = self._last_loss.reshape(self.S)
            for k, v in self._last_logs.items():
                v = v.detach()
                cols[f"obj_{k}"] = v.expand(self.S) if v.numel() == 1 else v.reshape(self.S)  # shared counters
        cols.update(m)
        keys = list(cols)
        table = torch.stack([cols[k].to(torch.float32) for k in keys]
                            + [self._bad_step.float(), params_bad.float()], 1).cpu().tolist()
        rows = []
        for k, vals in enumerate(table):
            params_bad_k, bad_k = int(vals.pop()), int(vals.pop())
            if self.diverged[k] is not None:
                continue
            if bad_k >= 0:
                self.diverged[k] = (bad_k, "non-finite loss")
            elif params_bad_k >= 0:
                self.diverged[k] = (params_bad_k, "non-finite parameter")
            else:
                row = {"step": step, **dict(zip(keys, vals, strict=True))}
                self.histories[k].append(row)
                rows.append(row)
        if self.logger is not None and step > 0 and rows:
            means = {f"eval/{k}": sum(r[k] for r in rows) / len(rows) for k in keys}
            self.logger.log_metrics(means, step=step)
        if all(d is not None for d in self.diverged) and self._trainer is not None:
            self.trainer.should_stop = True
        return rows

    @torch.no_grad()
    def _snapshot(self, step: int) -> None:
        """Record the model's log-density on the task's display grid (every family: its exact ``log_prob``)."""
        grid = density_grid(self.task)
        if grid is None:
            return
        x = grid[0].to(self.device)
        lq = self.generator.log_prob(x.expand(*self.generator.batch_shape, *x.shape))
        self.density[int(step)] = lq.reshape(self.S, -1).float().cpu()

    def summary_metrics(self, member: int = 0) -> dict[str, dict[str, float]]:
        """first/last/min/max of every tracked metric that was measured, for one member."""
        out = {}
        for name, metric in self.metrics.items():
            if int(metric.count) > 0:
                out[name] = {k: float(v.reshape(-1)[member]) for k, v in metric.compute().items()}
        return out

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "weights": self.state_dict(),
            "optimizer": self._opt.state_dict(),
            "scheduler": self._sched.state_dict() if self._sched is not None else None,
            "objective": self.objective.state_dict(),
            "histories": self.histories,
            "diverged": self.diverged,
            "bad_step": self._bad_step,
            "params_bad_step": self._params_bad_step,
            "rng": torch.get_rng_state(),
            "density": self.density,
            "start": self.start,
        }
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def save_resume_checkpoint(self) -> None:
        """Write ``last.ckpt`` atomically (temporary file in the same folder, then rename)."""
        assert self.checkpoint_path is not None
        with atomic_replace(self.checkpoint_path) as tmp:
            torch.save({**self._state(), **self.checkpoint_meta}, tmp)
        self._last_ckpt_step = self.step

    def resume_from(self, state: dict[str, Any]) -> None:
        """Restore a ``last.ckpt`` state; weights now, optimizer / objective / RNG when training starts."""
        self.load_state_dict(state["weights"])
        self.step = self._last_ckpt_step = self.resumed_from = int(state["step"])
        self.histories = state["histories"]
        self.diverged = [tuple(d) if d else None for d in state["diverged"]]
        self.density = dict(state.get("density") or {})
        self.start = state.get("start")
        self._bad_step, self._params_bad_step = state["bad_step"], state["params_bad_step"]
        self._resume = state

    def _restore(self, state: dict[str, Any]) -> None:
        self._opt.load_state_dict(state["optimizer"])
        if self._sched is not None and state.get("scheduler") is not None:
            self._sched.load_state_dict(state["scheduler"])
        self.objective.load_state_dict(state["objective"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)


#: how many density snapshots a run records (first and last step included) and the display grid's resolution
SNAPSHOTS = 6
GRID_1D = 256
GRID_2D = 48


def snapshot_steps(max_steps: int, eval_every: int, k: int = SNAPSHOTS) -> list[int]:
    """The evaluation steps nearest to ``k`` evenly spaced steps from 0 to ``max_steps`` (both included)."""
    evals = sorted({*range(0, max_steps, eval_every), max_steps})
    want = [round(i * max_steps / (k - 1)) for i in range(k)] if k > 1 else [max_steps]
    return sorted({min(evals, key=lambda e, w=w: (abs(e - w), e)) for w in want})


def density_grid(task: TwoModeTask) -> tuple[Tensor, tuple[int, ...]] | None:
    """Display grid of the density snapshots: (points (G, d) float32, shape) covering both modes and q0's new
    mean with 4.5 standard deviations to spare, G = 256 points in 1-D, a 48 x 48 mesh in 2-D; None for d > 2."""
    if task.dim > 2:
        return None
    key = ("density_grid", task.dim)
    if key not in task._cache:
        centres = torch.stack([task._mu_old64, task._mu_new64, task._mu_new0_64])
        sd = task._cov64.diagonal().sqrt()
        lo, hi = centres.min(0).values - 4.5 * sd, centres.max(0).values + 4.5 * sd
        if task.dim == 1:
            pts, shape = torch.linspace(float(lo[0]), float(hi[0]), GRID_1D).unsqueeze(-1), (GRID_1D,)
        else:
            xs = torch.linspace(float(lo[0]), float(hi[0]), GRID_2D)
            ys = torch.linspace(float(lo[1]), float(hi[1]), GRID_2D)
            X, Y = torch.meshgrid(xs, ys, indexing="xy")
            pts, shape = torch.stack([X.reshape(-1), Y.reshape(-1)], -1), (GRID_2D, GRID_2D)
        task._cache[key] = (pts.to(torch.float32), shape)
    return task._cache[key]

