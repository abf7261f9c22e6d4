"""One exception type for bad input, so entry points can print one clear line and exit non-zero."""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid: names the key, the value and what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config: {key}={value!r}; allowed: {allowed}")

    def __reduce__(self) -> tuple:  # picklable with its fields (a process pool sends errors back)
        return type(self), (self.key, self.value, self.allowed)


def check(cond: bool, key: str, value: Any, allowed: str) -> None:
    """Raise ConfigError(key, value, allowed) unless ``cond`` holds."""
    if not cond:
        raise ConfigError(key, value, allowed)


def check_choice(value: Any, key: str, choices: tuple[str, ...] | list[str]) -> Any:
    """Return ``value`` if it is one of ``choices``; raise ConfigError otherwise."""
    check(isinstance(value, str | int | float | bool | None) and value in choices, key, value,
          "one of " + ", ".join(repr(c) for c in choices))
    return value


def is_int(value: Any, lo: int) -> bool:
    """An integer (not a bool) >= lo."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


#: what an allocation failure says when it is not a MemoryError (torch's CPU and CUDA allocators, numpy)
_NO_MEMORY = ("can't allocate memory", "Unable to allocate", "out of memory", "not enough memory",
              "std::bad_alloc")


def out_of_memory(err: BaseException | None) -> str | None:
    """One line saying what could not be allocated when ``err`` (or what caused it) is an allocation failure
    (a MemoryError, or torch's / numpy's allocators under ``ulimit -v`` or a cgroup limit), else None."""
    seen = 0
    while err is not None and seen < 10:
        text = " ".join(str(err).split())
        if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and any(s in text for s in _NO_MEMORY)):
            return f"out of memory ({type(err).__name__}: {text[:160] or 'an allocation failed'})"
        err = err.__cause__ or err.__context__
        seen += 1
    return None
