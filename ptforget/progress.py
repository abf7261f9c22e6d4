"""Progress bars where a person waits: a run's optimizer steps and a neural generator's pretraining.

Bars go to stderr, only on an interactive terminal, not under CI and not with ``quiet=true``
(``terminal.progress_wanted``); ``run_training`` switches them on for the run it trains (``enabled``), so runs the
check trains in its workers, tests and library calls print nothing. A bar is transient: it disappears when done,
leaving the run's own summary.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Callable, Iterator
from typing import Any

_ENABLED: contextvars.ContextVar[bool] = contextvars.ContextVar("ptforget_progress", default=False)


@contextlib.contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Show bars (``on``) or none within the block."""
    token = _ENABLED.set(bool(on))
    try:
        yield
    finally:
        _ENABLED.reset(token)


def is_enabled() -> bool:
    return _ENABLED.get()


def _progress(*info_columns: Any) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), *info_columns, transient=True,
                    console=Console(file=sys.stderr), refresh_per_second=8)


@contextlib.contextmanager
def bar(description: str, total: int, every: int = 10) -> Iterator[Callable[[int], None]]:
    """A step bar when bars are enabled; yields ``advance(step)`` (steps done so far), a no-op otherwise."""
    if not is_enabled() or total <= 0:
        yield lambda step: None
        return
    prog = _progress()
    task = prog.add_task(description, total=total)

    def advance(step: int) -> None:
        if step % every == 0 or step >= total:
            prog.update(task, completed=step)

    with prog:
        yield advance


def step_progress(description: str = "training") -> Any:
    """A Lightning callback: a rich bar over a run's optimizer steps (``StepProgress``)."""
    from lightning.pytorch.callbacks import Callback

    cls = type("StepProgress", (_StepProgress, Callback), {"__doc__": _StepProgress.__doc__})
    return cls(description)


class _StepProgress:
    """A rich bar over a run's optimizer steps (a Lightning batch is a chunk of ``eval_every`` steps, so
    Lightning's own bar would count chunks), with the old-region mass of the last evaluation."""

    def __init__(self, description: str = "training") -> None:
        self.description = description
        self._prog: Any = None
        self._task: Any = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        from rich.progress import TextColumn

        self._prog = _progress(TextColumn("{task.fields[info]}"))
        self._task = self._prog.add_task(self.description, total=int(pl_module.max_steps),
                                         completed=int(pl_module.step), info="")
        self._prog.start()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._prog is None:
            return
        last = pl_module.histories[0][-1] if pl_module.histories and pl_module.histories[0] else {}
        info = f"old-region mass {last['old_mass']:.3f}" if "old_mass" in last else ""
        self._prog.update(self._task, completed=int(pl_module.step), info=info)

    def _stop(self) -> None:
        if self._prog is not None:
            self._prog.stop()
            self._prog = None

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._stop()
