"""SIGTERM and SIGINT end a run cleanly and non-zero.

While a run trains (``deferred``), a signal only marks the run: the training loop stops at the next optimizer step
boundary, ``ptforget.train`` saves ``last.ckpt`` there and raises RunInterrupted, and the entry point exits with
128 + the signal number. Rerunning the same command resumes (a SLURM requeue does the same). Anywhere else (and
on a second signal) RunInterrupted is raised at once. A scheduler therefore never records an interrupted run as a
success.
"""

from __future__ import annotations

import signal
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


@contextmanager
def handling() -> Iterator[None]:
    """Install the SIGTERM/SIGINT handlers for the block (re-entrant; only the main thread can own signals)."""
    own = _state["depth"] == 0 and threading.current_thread() is threading.main_thread()
    if own:
        _state["pending"] = None
        _state["previous"] = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
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
