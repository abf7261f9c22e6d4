"""Terminal output shared by the command-line tools: tables that fit the terminal, whole lines when piped.

On an interactive terminal a table is laid out to the terminal's width (``shutil.get_terminal_size``: cells wrap
inside their columns, never across the screen). When the output goes to a file or a pipe nothing is wrapped: a
line (a run's path, a table row) is written whole, so it can be copied, grepped or pasted as it is.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Sequence
from typing import IO, Any

from rich.console import Console
from rich.table import Table


def is_tty(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default: stdout) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def width(stream: IO[str] | None = None) -> int | None:
    """The terminal's width in columns, or None when ``stream`` is not a terminal (nothing should wrap)."""
    return shutil.get_terminal_size((100, 24)).columns if is_tty(stream) else None


def progress_wanted(quiet: bool = False, stream: IO[str] | None = None) -> bool:
    """Whether a progress bar belongs on ``stream`` (default: stderr): an interactive terminal, not under CI,
    not quiet."""
    return not quiet and not os.environ.get("CI") and is_tty(sys.stderr if stream is None else stream)


def console(stream: IO[str] | None = None, natural: int = 80) -> Console:
    """A rich console for ``stream``: the terminal's width on a terminal; otherwise wide enough for ``natural``
    columns and never soft-wrapping, without colour codes."""
    stream = sys.stdout if stream is None else stream
    if is_tty(stream):
        return Console(file=stream, highlight=False)
    return Console(file=stream, highlight=False, width=max(natural, 40), soft_wrap=True, color_system=None,
                   force_terminal=False)


def print_rich_table(table: Table, stream: IO[str] | None = None) -> None:
    """Print a rich table: fitted to a terminal, at its natural width (unwrapped) when piped."""
    stream = sys.stdout if stream is None else stream
    if is_tty(stream):
        console(stream).print(table)
        return
    with open(os.devnull, "w") as sink:
        natural = Console(width=10_000, file=sink).measure(table).maximum
    console(stream, natural).print(table)


def line(text: str, stream: IO[str] | None = None) -> None:
    """Print one line as it is (a terminal wraps it at its edge; a pipe gets it whole)."""
    print(text, file=sys.stdout if stream is None else stream, flush=True)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}g}"
    return str(v)


def row_cells(a: dict[str, Any], by: Sequence[str], metrics: Sequence[str]) -> list[str]:
    """One aggregated group as table cells: its ``by`` values, n (with the bad runs), ``mean ± ci`` per metric
    (just the mean when there is no interval, "–" when there is no value)."""
    cells = [_fmt(a.get(k)) for k in by]
    cells.append(str(a["n"]) if not a.get("n_bad") else f"{a['n']} (+{a['n_bad']} bad)")
    for m in metrics:
        mean, ci = a.get(f"{m}_mean", math.nan), a.get(f"{m}_ci", math.nan)
        if isinstance(mean, float) and math.isnan(mean):
            cells.append("–")
        elif isinstance(ci, float) and math.isnan(ci):
            cells.append(_fmt(mean) + _fewer(a, m))
        else:
            cells.append(f"{_fmt(mean)} ± {_fmt(ci, 2)}" + _fewer(a, m))
    return cells


def _fewer(a: dict[str, Any], m: str) -> str:
    """' (n=k)' when metric ``m`` is averaged over fewer runs than the group's n (a value NaN or unreadable in
    some summaries), so the table never shows a mean over fewer runs than its n column says."""
    k, n = a.get(f"{m}_n"), a.get("n")
    return f" (n={k})" if isinstance(k, int) and isinstance(n, int) and k < n else ""


def aggregate_table(agg: Sequence[dict[str, Any]], by: Sequence[str], metrics: Sequence[str],
                    title: str | None = None) -> Table:
    """A rich table of aggregated groups: the group values, n, and ``mean ± ci`` per metric."""
    from ptforget.labels import label_of

    table = Table(title=title, show_lines=False)
    for k in by:
        table.add_column(k, overflow="fold")
    table.add_column("n", justify="right")
    for m in metrics:
        table.add_column(label_of(m) if len(label_of(m)) <= 28 else m, justify="right", overflow="fold")
    for a in agg:
        table.add_row(*row_cells(a, by, metrics))
    return table


def print_table(agg: Sequence[dict[str, Any]], by: Sequence[str], metrics: Sequence[str],
                stream: IO[str] | None = None) -> None:
    """The report's table: on a terminal fitted to its width; piped, the markdown table, whole lines."""
    stream = sys.stdout if stream is None else stream
    if is_tty(stream):
        print_rich_table(aggregate_table(agg, by, metrics), stream)
        return
    from ptforget.report import markdown_table

    print(markdown_table(agg, by, metrics), end="", file=stream)
