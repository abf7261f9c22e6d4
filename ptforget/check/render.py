"""Rendering the judged rows: verdicts.json, report.md, the terminal table and the README's verdict block.

Rows are reported by kind: *theory* rows (a prediction of the theory against a trained model) make the headline;
*consistency* rows (trained runs against the engine's exact population dynamics) get their own table;
*identity* rows (identities and proven inequalities evaluated on samples) are a sanity section that is not
counted. "What does not hold" is generated from the failing rows and the control runs they name.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptforget.check.registry import KINDS, Row
from ptforget.check.rules import VERDICTS, fmt
from ptforget.io import read_json
from ptforget.stats import difference, summarize

README_START = "<!-- verdicts:start -->"
README_END = "<!-- verdicts:end -->"


@dataclass
class Verdict:
    """A judged row as stored in verdicts.json."""

    claim: str
    section: str
    title: str
    family: str
    kind: str
    scope: str
    statistic: str
    n: int
    mean: float
    lo: float | None
    hi: float | None
    values: list[float]
    predicted: float | None
    rule: str
    bounds: list[float]
    verdict: str
    note: str
    control: str
    figure: str | None
    versus: list[float] | None = None
    extra: dict | None = None

    def measured(self) -> str:
        """mean [lo, hi] (n), or the single value with n=1 and no interval."""
        if self.lo is None or self.hi is None:
            return f"{fmt(self.mean)} (n={self.n}, no interval)"
        return f"{fmt(self.mean)} [{fmt(self.lo)}, {fmt(self.hi)}] (n={self.n})"


def judge_row(row: Row, section: str) -> Verdict:
    s = summarize(row.values) if row.versus is None else difference(row.values, row.versus)
    return Verdict(row.claim, section, row.title, row.family, row.kind, row.scope, row.statistic, s.n, s.mean, s.lo,
                   s.hi, list(row.values), row.rule.predicted, row.rule.text(), [row.rule.lo, row.rule.hi],
                   row.rule.judge(s), row.note, row.control, row.figure,
                   list(row.versus) if row.versus is not None else None, dict(row.extra))


def verdict_from_json(d: dict[str, Any]) -> Verdict:
    def num(v: Any) -> float | None:
        return None if v is None else float(v)

    return Verdict(d["claim"], d.get("section", ""), d["title"], d["family"], d["kind"], d["scope"], d["statistic"],
                   int(d["n"]), float(d["mean"]) if d["mean"] is not None else math.nan, num(d["lo"]), num(d["hi"]),
                   [float(v) if v is not None else math.nan for v in d.get("values", [])], num(d.get("predicted")),
                   d["rule"], [float(b) for b in d.get("bounds", [-math.inf, math.inf])], d["verdict"],
                   d.get("note", ""), d.get("control", ""), d.get("figure"), d.get("versus"), d.get("extra") or {})


def counts(verdicts: Iterable[Verdict]) -> dict[str, dict[str, int]]:
    """Verdict counts per kind."""
    out = {k: dict.fromkeys(VERDICTS, 0) for k in KINDS}
    for v in verdicts:
        out[v.kind][v.verdict] += 1
    return out


def family_counts(verdicts: Iterable[Verdict], kind: str = "theory") -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for v in verdicts:
        if v.kind == kind:
            out.setdefault(v.family, dict.fromkeys(VERDICTS, 0))[v.verdict] += 1
    return out


def headline(c: dict[str, dict[str, int]]) -> str:
    t = c["theory"]
    cons = c["consistency"]
    return (f"theory: {t['holds']} hold, {t['fails']} fail, {t['inconclusive']} inconclusive; "
            f"consistency: {cons['holds']} hold, {cons['fails']} fail, {cons['inconclusive']} inconclusive")


# ---------------------------------------------------------------------------------------------- tables
HEADER = ["claim", "what", "family", "scope", "measured (95% CI)", "predicted", "rule", "verdict"]


def table_rows(verdicts: Sequence[Verdict]) -> list[list[str]]:
    return [[v.claim, v.title, v.family, v.scope, v.measured(), fmt(v.predicted) if v.predicted is not None else "–",
             v.rule, v.verdict] for v in verdicts]


def markdown_table(verdicts: Sequence[Verdict], bold_verdict: bool = True) -> list[str]:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in table_rows(verdicts):
        if bold_verdict:
            row[-1] = f"**{row[-1]}**"
        lines.append("| " + " | ".join(x.replace("|", "\\|").replace("\n", " ") for x in row) + " |")
    return lines


def not_holding(verdicts: Sequence[Verdict]) -> list[str]:
    """Markdown bullets for the theory rows that fail or are inconclusive, with their controls (measured)."""
    lines = []
    for v in verdicts:
        if v.kind != "theory" or v.verdict == "holds":
            continue
        ctrl = f" Control: {v.control}" if v.control else " No control run was declared for this row."
        note = f" {v.note}" if v.note else ""
        lines.append(f"- **{v.claim} {v.verdict}** ({v.family}, {v.scope}): {v.title}. {v.statistic} = "
                     f"{v.measured()}; rule: {v.rule}.{note}{ctrl}")
    return lines


def transfer_matrix(verdicts: Sequence[Verdict]) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """(claims, families, cell verdict) over theory rows: a cell holds only if all its rows hold, fails if any fails."""
    claims: list[str] = []
    fams: list[str] = []
    cells: dict[tuple[str, str], list[str]] = {}
    for v in verdicts:
        if v.kind != "theory":
            continue
        if v.claim not in claims:
            claims.append(v.claim)
        if v.family not in fams:
            fams.append(v.family)
        cells.setdefault((v.claim, v.family), []).append(v.verdict)
    out = {}
    for k, vs in cells.items():
        out[k] = "fails" if "fails" in vs else ("inconclusive" if "inconclusive" in vs else "holds")
    return claims, fams, out


# ---------------------------------------------------------------------------------------------- report.md
def render_report(payload: dict[str, Any], verdicts: Sequence[Verdict], sections: dict[str, dict[str, Any]]) -> str:
    c = counts(verdicts)
    theory = [v for v in verdicts if v.kind == "theory"]
    cons = [v for v in verdicts if v.kind == "consistency"]
    ident = [v for v in verdicts if v.kind == "identity"]
    lines = [
        "# ptforget check: the two-mode theory beside learned generators",
        "",
        f"Profile `{payload['profile']['name']}`, executor {payload.get('executor', 'inline')}: "
        f"{payload['runs_trained']} runs trained, {payload['runs_reused']} reused, {payload['wall_time_s']:.0f} s.",
        "",
        f"**{headline(c)}.**",
        "",
        "Verdicts: *holds* when the whole 95% t-interval over seeds satisfies the rule, *fails* when the whole "
        "interval violates it, *inconclusive* when it straddles a bound (or when a noisy statistic has a single "
        "value). Only *theory* rows, a prediction of the theory against a trained model, make the headline.",
    ]
    if payload.get("merged"):
        lines += ["", f"_{payload['merged']}_"]
    fc = family_counts(verdicts)
    if fc:
        lines += ["", "| family | holds | fails | inconclusive |", "|---|---|---|---|"]
        lines += [f"| {f} | {d['holds']} | {d['fails']} | {d['inconclusive']} |" for f, d in fc.items()]
    if payload.get("transfer_figure"):
        lines += ["", f"![where the theory carries over]({payload['transfer_figure']})"]
    lines += ["", "## Theory against trained models", "", *markdown_table(theory)]
    bad = not_holding(verdicts)
    lines += ["", "## What does not hold", ""] + (bad or all_hold_line(verdicts, payload.get("errors") or []))
    if cons:
        lines += ["", "## Consistency: trained runs against the exact population dynamics", "",
                  "An implementation check, not evidence for the theory: plain SGD runs of the GMM beside the engine's "
                  "own gradient-descent flow.", "", *markdown_table(cons)]
    if ident:
        lines += ["", "## Sanity (identities and proven inequalities; not counted)", "", *markdown_table(ident, False)]
    for sid, sec in sections.items():
        rows = [v for v in verdicts if v.claim == sid]
        if not rows and not sec.get("figures") and not sec.get("text"):
            continue
        lines += ["", f"## {sid}: {sec['title']}", ""]
        for v in rows:
            note = f" {v.note}" if v.note else ""
            ctrl = f" Control: {v.control}" if v.control else ""
            lines.append(f"- **{v.verdict}** [{v.kind}, {v.family}] {v.title} ({v.scope}): {v.statistic} = "
                         f"{v.measured()}; rule: {v.rule}.{note}{ctrl}")
        for t in sec.get("text", []):
            lines += ["", t]
        for f in sec.get("figures", []):
            lines += ["", f"![{sid}]({f})"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- README block
def readme_block(payload: dict[str, Any], figure_prefix: str = "") -> str:
    """The README's verdict block, generated from a verdicts.json payload (``ptforget-verdicts``)."""
    verdicts = [verdict_from_json(d) for d in payload["verdicts"]]
    c = counts(verdicts)
    fams = ", ".join(f"{f}: {d['holds']}/{d['fails']}/{d['inconclusive']}" for f, d in family_counts(verdicts).items())
    lines = [
        f"Quick profile, executor {payload.get('executor', 'inline')}: {payload['runs_trained']} runs trained in "
        f"{payload['wall_time_s']:.0f} s. **{headline(c)}.** Theory rows per family (holds/fails/inconclusive): "
        f"{fams}.",
        "",
        "<details><summary>Theory rows (quick profile)</summary>",
        "",
        *markdown_table([v for v in verdicts if v.kind == "theory"]),
        "",
        "</details>",
        "",
        "What does not hold (generated from the rows and their control runs):",
        "",
        *(not_holding(verdicts) or all_hold_line(verdicts, payload.get("errors") or [])),
    ]
    if payload.get("transfer_figure"):
        lines += ["", f"![where the theory carries over]({figure_prefix}{payload['transfer_figure']})"]
    return "\n".join(lines)


class ReadmeError(ValueError):
    """A README whose verdict block cannot be read or written: the message is the one line printed."""


def _readme_span(readme: Path) -> tuple[str, int, int]:
    """(the README's text, where its block starts, where it ends); ReadmeError unless the README is a readable text
    file holding each marker exactly once, the start before the end."""
    try:
        text = readme.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReadmeError(f"{readme}: no such file") from None
    except IsADirectoryError:
        raise ReadmeError(f"{readme}: a folder, not a README file") from None
    except UnicodeDecodeError as err:
        raise ReadmeError(f"{readme}: not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise ReadmeError(f"{readme}: cannot read it ({err.strerror or err})") from None
    found = {m: text.count(m) for m in (README_START, README_END)}
    if found != {README_START: 1, README_END: 1} or text.index(README_START) > text.index(README_END):
        raise ReadmeError(f"{readme}: needs the verdict markers once each, {README_START} before {README_END} "
                          f"(found {found[README_START]} start and {found[README_END]} end markers"
                          + (", in the wrong order" if all(found.values()) and text.index(README_START) >
                             text.index(README_END) else "") + ")")
    return text, text.index(README_START) + len(README_START), text.index(README_END)


def update_readme(readme: Path, block: str) -> bool:
    """Replace the text between the README's verdict markers (atomically); True if it changed."""
    from ptforget.io import atomic_write_text

    text, i, j = _readme_span(readme)
    new = text[:i] + "\n" + block + "\n" + text[j:]
    if new == text:
        return False
    if not os.access(readme, os.W_OK) or not readme.stat().st_mode & 0o222:  # root may write anything
        raise ReadmeError(f"{readme}: read-only (the block would change; make it writable)")
    try:
        atomic_write_text(readme.resolve(), new)
    except OSError as err:
        raise ReadmeError(f"{readme}: cannot write it ({err.strerror or err})") from None
    return True


def readme_current(readme: Path) -> str:
    text, i, j = _readme_span(readme)
    return text[i:j].strip("\n")


# ---------------------------------------------------------------------------------------------- terminal
def print_table(payload: dict[str, Any], file: Any = None) -> None:
    """The theory table on the terminal (fits its width), plain lines when piped (no wrapped paths)."""
    file = file or sys.stdout
    verdicts = [verdict_from_json(d) for d in payload["verdicts"]]
    c = counts(verdicts)
    title = f"ptforget check ({payload['profile']['name']}): {headline(c)}"
    shown = [v for v in verdicts if v.kind != "identity"]
    if not file.isatty():
        print(title, file=file)
        for row in table_rows(shown):
            print(" | ".join(row), file=file)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in HEADER:
        table.add_column(h, overflow="fold")
    styles = {"holds": "green", "fails": "red", "inconclusive": "yellow"}
    for row in table_rows(shown):
        table.add_row(*row[:-1], f"[{styles[row[-1]]}]{row[-1]}[/]")
    Console(file=file, width=shutil.get_terminal_size((120, 40)).columns).print(table)


def load_payload(path: Path) -> dict[str, Any] | None:
    """A check's verdicts.json, or None when it is missing or damaged (``payload_problem`` says which)."""
    return None if payload_problem(path) else read_json(path)


def payload_problem(path: Path) -> str | None:
    """Why ``path`` is not a check's verdicts.json (missing, not JSON, a row that lacks a field...), or None."""
    try:
        d = read_json(path)
    except FileNotFoundError:
        return "no such file"
    except IsADirectoryError:
        return "a folder, not a file"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    except (ValueError, UnicodeDecodeError) as err:
        return f"not JSON ({type(err).__name__}: {' '.join(str(err).split())[:120]})"
    if not isinstance(d, dict) or not isinstance(d.get("verdicts"), list):
        return "not a check's verdicts.json (no list of verdicts)"
    for i, row in enumerate(d["verdicts"]):
        try:
            verdict_from_json(row)
        except KeyError as err:
            return f"row {i} has no {err.args[0]!r}"
        except (TypeError, ValueError, AttributeError) as err:
            return f"row {i} is damaged ({type(err).__name__}: {err})"
    if not isinstance(d.get("errors", []), list):
        return "'errors' is not a list"
    return None


def all_hold_line(verdicts: Sequence[Verdict], errors: Sequence[str] = ()) -> list[str]:
    """What 'What does not hold' says when no judged theory row fails: never that every row holds when none was
    judged, nor without the claims that could not be judged."""
    judged = sum(v.kind == "theory" for v in verdicts)
    lines = [f"Every theory row judged ({judged}) holds." if judged else "No theory row was judged."]
    if errors:
        lines += ["", f"Not judged ({len(errors)} errors):", "", *[f"- {e}" for e in errors]]
    return lines
