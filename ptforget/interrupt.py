"""SIGTERM and SIGINT end a run cleanly and non-zero.

While a run trains (``deferred``), a signal only marks the run: the training loop stops at the next optimizer step
boundary, ``ptforget.train`` saves ``last.ckpt`` there and raises RunInterrupted, and the entry point exits with
128 + the signal number. Rerunning the same command resumes (a SLURM requeue does the same). Anywhere else (and
on a second signal) RunInterrupted is raised at once. A scheduler therefore never records an interrupted run as a
success.

Inside a submitit job (``submitit_job()``) the same holds for submitit's preemption signal (USR2 before the time
limit): the run checkpoints at its step boundary first, and only then ``submitit_exit`` hands over to submitit's own
handler, which requeues the job; any other signal ends the job with 128 + N (submitit lets a BaseException through,
and Python would exit 1).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(BaseException):
    """A run stopped on a signal. A BaseException, so that ``except Exception`` (Hydra's job runner) lets it pass."""

    def __init__(self, signum: int, message: str = "") -> None:
        self.signum = int(signum)
        super().__init__(message or f"interrupted by {signal_name(signum)}")

    def __reduce__(self) -> tuple:  # picklable with its fields (a process pool sends it back)
        return type(self), (self.signum, str(self))

    @property
    def exit_code(self) -> int:
        """128 + the signal number, the shell's convention (143 for SIGTERM, 130 for SIGINT)."""
        return 128 + self.signum


_state: dict[str, Any] = {"pending": None, "depth": 0, "defer": 0, "previous": {}}


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def pending() -> int | None:
    """The signal that asked the current run to stop, or None."""
    return _state["pending"]


def _handle(signum: int, frame: Any) -> None:
    first = _state["pending"] is None
    _state["pending"] = signum
    if first and _state["defer"]:
        return  # the training loop polls pending() and stops at the next step boundary
    raise RunInterrupted(signum)


def submitit_job() -> bool:
    """True inside a submitit job (its runner sets SUBMITIT_FOLDER before calling the job's function)."""
    return bool(os.environ.get("SUBMITIT_FOLDER"))


def preemption_signal() -> signal.Signals:
    """The signal submitit requeues on (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return getattr(signal.Signals, f"SIG{name}", signal.SIGUSR2)


def _signals() -> tuple[int, ...]:
    return (*SIGNALS, preemption_signal()) if submitit_job() else SIGNALS


@contextmanager
def handling() -> Iterator[None]:
    """Install the SIGTERM/SIGINT handlers (and, in a submitit job, the preemption signal's) for the block
    (re-entrant; only the main thread can own signals)."""
    own = _state["depth"] == 0 and threading.current_thread() is threading.main_thread()
    if own:
        _state["pending"] = None
        _state["previous"] = {s: signal.getsignal(s) for s in _signals()}
        for s in _state["previous"]:
            signal.signal(s, _handle)
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if own:
            for s, h in _state["previous"].items():
                signal.signal(s, h if h is not None else signal.SIG_DFL)
            _state["previous"] = {}


@contextmanager
def deferred() -> Iterator[None]:
    """Inside the block a first signal only sets ``pending()`` (a training loop is polling it)."""
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1


@contextmanager
def submitit_exit() -> Iterator[None]:
    """Around a submitit job's function: a RunInterrupted (its checkpoint already saved) ends the job as documented.

    The preemption signal goes to submitit's own handler, which resubmits the same call and requeues the job (the
    requeued job resumes from ``last.ckpt``); any other signal exits with 128 + N, so SLURM records a failure.
    Outside a submitit job the exception passes unchanged.
    """
    try:
        yield
    except RunInterrupted as err:
        if not submitit_job():
            raise
        print(f"ptforget: {err}", file=sys.stderr, flush=True)
        handler = signal.getsignal(err.signum)
        if err.signum == preemption_signal() and callable(handler):
            handler(err.signum, None)  # submitit: checkpoint (resubmit this call), requeue, exit
        sys.exit(err.exit_code)
