"""A fused optimizer step for ``compile=true``: sampling, loss, gradient, clipping, optimizer update and the
per-member divergence bookkeeping of one step, written as one functional update and captured once by
``torch.compile`` (one graph, inductor: fused C++ loops on the CPU; on a GPU its CUDA-graph mode replays the whole
step as one graph launch), then replayed for every step of every chunk and of every later run of the same shapes
and settings in the process.

The update rule is the one of the eager path: the gradient is ``torch.autograd.grad`` of the summed member losses
(each member's gradient is its own loss's), Adam and SGD follow ``torch.optim.Adam`` / ``torch.optim.SGD`` (state
kept in the optimizer's own ``state`` so checkpoints and resume are unchanged), clipping is per member. Random
draws go through torch's own kernels (``fallback_random``) from torch's generator, so a resumed run replays the same
stream; floating-point results differ from eager mode's in the last bits (fused arithmetic).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from ptforget.generators.base import Generator
from ptforget.metrics import measure
from ptforget.objectives.base import Objective
from ptforget.tasks import TwoModeTask

log = logging.getLogger(__name__)


def fusable(optimizer: torch.optim.Optimizer) -> bool:
    """Adam (no amsgrad, no maximize) or SGD (no nesterov, no dampening, no maximize): the rules written here."""
    d = optimizer.defaults
    if isinstance(optimizer, torch.optim.Adam):
        return not d.get("amsgrad") and not d.get("maximize")
    if isinstance(optimizer, torch.optim.SGD):
        return not d.get("nesterov") and not d.get("dampening") and not d.get("maximize")
    return False


class FusedStepUnavailable(RuntimeError):
    """This generator / objective cannot be captured as one graph (the run goes on with the eager step)."""


class FusedStep:
    """``step(step, bad_step, params_bad_step) -> (losses, logs, bad_step, params_bad_step)``, compiled; the members
    alive are those without a bad step.

    The captured function is one module-level function whose inputs are the run's tensors and whose constants are
    its hyperparameters, so every run of the same shapes and settings in a process replays the same compiled code
    (the check's many short runs compile once).

    Args:
        generator: the trained generator (batch_shape () or (S,)).
        objective: its objective (set up).
        optimizer: the run's Adam or SGD over ``generator``'s parameters (its state is used and updated).
        grad_clip: (max or None, 'norm' | 'value'), per member as in the eager path.
        init: initial parameters, for putting diverged members back (batched members only).
    """

    def __init__(self, generator: Generator, objective: Objective, optimizer: torch.optim.Optimizer,
                 grad_clip: tuple[float | None, str], init: list[Tensor] | None = None) -> None:
        self.generator, self.objective, self.opt = generator, objective, optimizer
        self.init = init
        self.adam = isinstance(optimizer, torch.optim.Adam)
        self.params = [p for p in generator.parameters() if p.requires_grad]
        index = {id(p): i for i, p in enumerate(self.params)}
        self.group_of = [0] * len(self.params)
        for gi, g in enumerate(optimizer.param_groups):
            for p in g["params"]:
                self.group_of[index[id(p)]] = gi
        self._init_state()
        groups = optimizer.param_groups
        if self.adam:
            self.state = [[optimizer.state[p][k] for p in self.params] for k in ("step", "exp_avg", "exp_avg_sq")]
            hyper = tuple((*groups[g]["betas"], groups[g]["eps"], groups[g]["weight_decay"]) for g in self.group_of)
        else:
            self.state = [[optimizer.state[p]["momentum_buffer"] for p in self.params]]
            hyper = tuple((groups[g]["momentum"], groups[g]["weight_decay"]) for g in self.group_of)
        self.static = (self.adam, hyper, tuple(self.group_of), grad_clip, bool(generator.batch_shape))
        dev = self.params[0].device
        self._lr_values = [float(g["lr"]) for g in groups]
        self._lrs = [torch.tensor(v, device=dev) for v in self._lr_values]
        self._step = torch.zeros((), dtype=torch.long, device=dev)  # the step, counted inside the graph
        self._next = -1
        self._calls, self._skip = 0, True

    def _init_state(self) -> None:
        """The optimizer's per-parameter state in torch's own layout (so state_dict / load_state_dict work)."""
        for g in self.opt.param_groups:
            for p in g["params"]:
                st = self.opt.state[p]
                if self.adam and "exp_avg" not in st:
                    st["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif not self.adam and st.get("momentum_buffer") is None:
                    # torch starts the buffer at the first gradient: with dampening 0 that is momentum * 0 + g
                    st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def __call__(self, step: int, bad_step: Tensor, params_bad_step: Tensor
                 ) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
        if step != self._next:
            self._step.fill_(step)
        self._next = step + 1
        for i, g in enumerate(self.opt.param_groups):  # a schedule moves lr: a tensor input, no recompile
            if g["lr"] != self._lr_values[i]:
                self._lr_values[i] = float(g["lr"])
                self._lrs[i].fill_(self._lr_values[i])
        fn = _compiled(self._step.device.type)
        args = (self.generator, self.objective, self.params, self.state, self.init, self._lrs, self._step, bad_step,
                params_bad_step, self.static)
        if self._calls < 2:  # the first calls of a run check the guards (and compile if nothing matches)
            self._calls += 1
            kind = (type(self.generator).__name__, type(self.objective).__name__)
            if kind in _UNAVAILABLE:
                raise FusedStepUnavailable(_UNAVAILABLE[kind])
            try:
                return fn(*args)
            except torch._dynamo.exc.TorchDynamoException as err:  # raised while tracing: nothing of the step ran
                _UNAVAILABLE[kind] = f"{type(err).__name__}: {str(err).splitlines()[0]}"
                raise FusedStepUnavailable(_UNAVAILABLE[kind]) from err
        if self._skip:
            try:
                return fn(*args)
            except RuntimeError as err:  # raised at the frame's entry, before anything ran
                if "skip_guard_eval_unsafe" not in str(err):
                    raise
                self._skip = False
        with torch.compiler.set_stance("default", skip_guard_eval_unsafe=False):
            return fn(*args)

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Around a chunk of steps: once a run's first steps have checked the guards, later calls pass the same
        objects, tensors and constants, so the guards cannot fail and are not evaluated (~0.1 ms a step); should a
        recompilation still be needed, the guards are checked again from then on."""
        if self._calls >= 2 and self._skip:
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                yield
        else:
            yield


_COMPILED: dict[str, Any] = {}
#: (generator, objective) classes whose step could not be captured in this process, and why
_UNAVAILABLE: dict[tuple[str, str], str] = {}


def configure_dynamo() -> None:
    """Dynamo settings every captured step needs (idempotent)."""
    torch._dynamo.config.trace_autograd_ops = True  # the gradient inside the captured graph, not a graph break
    # one entry per distinct (shapes, settings) of a process's runs: a sweep has more than the default 8
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)


def _compiled(device_type: str) -> Any:
    """The one compiled step of the process (CUDA graphs on a GPU)."""
    if device_type not in _COMPILED:
        configure_dynamo()
        # fallback_random: random draws through torch's own kernels (vectorised on the CPU; the same stream as eager)
        # fullgraph: one frame, so nothing of a step runs before its guards are checked
        options = {"fallback_random": True} if device_type != "cuda" else {"fallback_random": True,
                                                                           "triton.cudagraphs": True}
        # the step's inputs are the same tensors on every call: inductor's per-call size / alignment asserts
        # (two dozen Python calls a step) check nothing new
        options.update({"size_asserts": False, "alignment_asserts": False})
        _COMPILED[device_type] = torch.compile(_step, dynamic=False, fullgraph=True, options=options)
    return _COMPILED[device_type]


def use_backend(device_type: str, backend: str) -> None:
    """Capture later steps on ``device_type`` with another dynamo backend (``eager``: the trace alone, for tests and
    ``scripts/compile_matrix.py``); forgets what was compiled and which pairs could not be."""
    configure_dynamo()
    _UNAVAILABLE.clear()
    _COMPILED[device_type] = torch.compile(_step, backend=backend, dynamic=False, fullgraph=True)


def compiled_measure(generator: Generator, task: TwoModeTask, n: int) -> dict[str, Tensor]:
    """``ptforget.metrics.measure`` as one compiled graph (shared by every run of the process); the eager function
    where it cannot be captured."""
    key = f"measure-{generator.device.type}-{type(generator).__name__}"
    if _COMPILED.get(key) is None:
        if key in _COMPILED:
            return measure(generator, task, n)
        _COMPILED[key] = torch.compile(measure, dynamic=False, fullgraph=True, options={"fallback_random": True})
    try:
        return _COMPILED[key](generator, task, n)
    except torch._dynamo.exc.TorchDynamoException as err:
        log.warning("evaluation runs eagerly: %s", str(err).splitlines()[0])
        _COMPILED[key] = None
        return measure(generator, task, n)


def _step(gen: Generator, obj: Objective, params: list[Tensor], state: list[list[Tensor]], init: list[Tensor] | None,
          lrs: list[Tensor], step: Tensor, bad_step: Tensor, params_bad_step: Tensor,
          static: tuple[Any, ...]) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor]:
    """The captured update: loss, gradient, clipping, optimizer, bookkeeping, projection."""
    adam, hyper, group_of, (clip, clip_algo), batched = static
    losses, logs = obj.loss(gen, step)
    loss = torch.where(bad_step < 0, losses, torch.zeros_like(losses)).sum() if batched else losses
    grads = _clipped(list(torch.autograd.grad(loss, params)), clip, clip_algo, batched)
    losses = losses.detach()
    with torch.no_grad():
        step.add_(1)
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            lr = lrs[group_of[i]]
            if adam:
                b1, b2, eps, wd = hyper[i]
                t, m, v = state[0][i], state[1][i], state[2][i]
                if wd:
                    g = g + wd * p
                t.add_(1)
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / torch.sqrt(1 - torch.pow(b2, t))).add_(eps)
                p.sub_(lr / (1 - torch.pow(b1, t)) * m / denom)
            else:
                momentum, wd = hyper[i]
                if wd:
                    g = g + wd * p
                if momentum:
                    g = state[0][i].mul_(momentum).add_(g)
                p.sub_(lr * g)
        bad = ~torch.isfinite(losses.reshape(-1))
        bad_step = torch.where(bad & (bad_step < 0), step - 1, bad_step)
        if init is not None:  # batched members: first non-finite parameter step, and dead members put back
            size = bad_step.shape[0]
            ok = torch.ones(size, dtype=torch.bool, device=losses.device)
            for p in params:
                ok = ok & torch.isfinite(p).reshape(size, -1).all(1)
            params_bad_step = torch.where(~ok & (params_bad_step < 0), step, params_bad_step)
            dead = (bad_step >= 0) | (params_bad_step >= 0)
            for p, p0 in zip(params, init, strict=True):
                p.copy_(torch.where(dead.view(-1, *([1] * (p.dim() - 1))), p0, p))
        if gen.has_projection:
            gen.project_()
    return losses.reshape(-1), logs, bad_step, params_bad_step


def _clipped(grads: list[Tensor], clip: float | None, algo: str, batched: bool) -> list[Tensor]:
    """The eager path's clipping: entries, or the norm (one per member when batched; clip_grad_norm_'s rule)."""
    if clip is None:
        return grads
    if algo == "value":
        return [g.clamp(-clip, clip) for g in grads]
    if batched:
        size = grads[0].shape[0]
        norm = torch.stack([g.reshape(size, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        scale = (clip / (norm + 1e-6)).clamp(max=1.0)
        return [g * scale.view(-1, *([1] * (g.dim() - 1))) for g in grads]
    norm = torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt()
    return [g * (clip / (norm + 1e-6)).clamp(max=1.0) for g in grads]
