"""Rendering the judged rows: verdicts.json, report.md, the terminal table and the README's verdict block.

Rows are reported by kind: *theory* rows (a prediction of the theory against a trained model) make the headline;
*consistency* rows (trained runs against the engine's exact population dynamics) get their own table;
*identity* rows (identities and proven inequalities evaluated on samples) are a sanity section that is not
counted. "What does not hold" is generated from the failing rows and the control runs they name.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ptforget.check.judge import Verdict, counts, family_counts, verdict_from_json
from ptforget.check.rules import REPLICATION_VERDICTS, THEORY_VERDICTS, fmt
from ptforget.io import read_json

README_START = "<!-- verdicts:start -->"
README_END = "<!-- verdicts:end -->"


def headline(c: dict[str, dict[str, int]]) -> str:
    t, cons, rep = c["theory"], c["consistency"], c["replication"]
    out = ("theory: " + ", ".join(f"{t[k]} {k}" for k in THEORY_VERDICTS)
           + f"; consistency: {cons['holds']} hold, {cons['fails']} fail, {cons['inconclusive']} inconclusive")
    if sum(rep.values()):
        out += "; replication: " + ", ".join(f"{rep[k]} {k}" for k in REPLICATION_VERDICTS)
    return out


# ---------------------------------------------------------------------------------------------- tables
HEADER = ["claim", "what", "family", "scope", "measured (95% CI)", "predicted", "rule", "verdict"]
#: theory rows: the theory against its primary rival at the declared margin, with the pilot's power
THEORY_HEADER = ["claim", "what", "family", "scope", "measured (95% CI)", "theory", "rival", "margin", "power",
                 "verdict"]


def _power(v: Verdict) -> str:
    if v.power is None:
        return "–"
    return f"{v.power:.2f}" + (f" (n*={v.seeds_needed})" if v.seeds_needed else "")


def table_rows(verdicts: Sequence[Verdict]) -> list[list[str]]:
    rows = []
    for v in verdicts:
        pred = fmt(v.predicted) if v.predicted is not None else "–"
        if v.kind == "theory" and v.rival:
            verdict = v.verdict + (f" ({v.detail})" if v.detail and v.verdict != "supports theory" else "")
            rows.append([v.claim, v.title, v.family, v.scope, v.measured(), pred,
                         f"{v.rival['name']}: {fmt(v.rival['predicted'])}", fmt(v.margin), _power(v), verdict])
        else:
            rows.append([v.claim, v.title, v.family, v.scope, v.measured(), pred, v.rule, v.verdict])
    return rows


def markdown_table(verdicts: Sequence[Verdict], bold_verdict: bool = True) -> list[str]:
    head = THEORY_HEADER if verdicts and all(v.kind == "theory" for v in verdicts) else HEADER
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table_rows(verdicts):
        if bold_verdict:
            row[-1] = f"**{row[-1]}**"
        lines.append("| " + " | ".join(x.replace("|", "\\|").replace("\n", " ") for x in row) + " |")
    return lines


def not_holding(verdicts: Sequence[Verdict]) -> list[str]:
    """Markdown bullets for the theory rows that do not support the theory, with their controls (measured)."""
    lines = []
    for v in verdicts:
        if v.kind != "theory" or v.verdict == "supports theory":
            continue
        ctrl = f" Control: {v.control}" if v.control else " No control run was declared for this row."
        note = f" {v.note}" if v.note else ""
        detail = f" ({v.detail})" if v.detail else ""
        lines.append(f"- **{v.claim} {v.verdict}**{detail} ({v.family}, {v.scope}): {v.title}. {v.statistic} = "
                     f"{v.measured()}; {v.rule}.{note}{ctrl}")
    return lines


def transfer_matrix(verdicts: Sequence[Verdict]
                    ) -> tuple[list[str], list[str], dict[tuple[str, str], dict[str, int]]]:
    """(claims, families, cell counts) over theory rows: how many rows of each claim x family got each verdict."""
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
    return claims, fams, {k: {v: vs.count(v) for v in THEORY_VERDICTS} for k, vs in cells.items()}


# ---------------------------------------------------------------------------------------------- report.md
VOCABULARY = (
    "Theory rows are discriminations declared before any run: the theory's value of a statistic against a named "
    "rival's, each with a band of half-width *margin* (its reason is given: a fraction of the distance between "
    "them, a Monte-Carlo error, a definition; never the run's own spread). *supports theory*: the 90% interval over "
    "seeds lies inside the theory's band (two one-sided tests at 5%) and the 95% interval misses the rival's; "
    "*supports rival*: the reverse; *undecided*: neither (the row says which test lacked power); *untestable*: the "
    "runs do not meet the prediction's premises (the gate is named: a start that is not q0, a family that cannot "
    "represent the target, a method that did not learn the new mode); *not converged*: the statistic was still "
    "moving at the end. *power* is the probability of *supports theory* at this n if the theory is right, from a "
    "pilot's spread (n* the seeds that reach 0.8). Consistency and identity rows keep holds / fails / inconclusive "
    "on the 95% interval; replication rows say reproduced / not reproduced / undecided.")


def fidelity_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown: per family and config, the start's KL from q0 and old mass against q0's, and the gate's outcome."""
    out = ["| family | config | seeds | KL(q0 \\|\\| start) max | old mass (start / q0) | gate |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['family']} | {r['config']} | {r['n']} | {fmt(r['kl_max'])} ({r['method']}) | "
                   f"{fmt(r['old_mass'])} / {fmt(r['old_mass_q0'])} | {'passes' if r['passes'] else r['why']} |")
    return out


def render_report(payload: dict[str, Any], verdicts: Sequence[Verdict], sections: dict[str, dict[str, Any]]) -> str:
    c = counts(verdicts)
    theory = [v for v in verdicts if v.kind == "theory"]
    cons = [v for v in verdicts if v.kind == "consistency"]
    ident = [v for v in verdicts if v.kind == "identity"]
    repl = [v for v in verdicts if v.kind == "replication"]
    lines = [
        "# ptforget check: the two-mode theory beside learned generators",
        "",
        f"Profile `{payload['profile']['name']}`, executor {payload.get('executor', 'inline')}: "
        f"{payload['runs_trained']} runs trained, {payload['runs_reused']} reused, {payload['wall_time_s']:.0f} s.",
        "",
        f"**{headline(c)}.**",
        "",
        VOCABULARY,
    ]
    if payload.get("negative_control"):
        lines += ["", "**Negative control**: the theory's predictions were replaced by a deliberately wrong theory "
                  "(each row's `wrong` value); a check with power finds no support for it."]
    if payload.get("merged"):
        lines += ["", f"_{payload['merged']}_"]
    fc = family_counts(verdicts)
    if fc:
        lines += ["", "| family | " + " | ".join(THEORY_VERDICTS) + " |", "|---|" + "---|" * len(THEORY_VERDICTS)]
        lines += [f"| {f} | " + " | ".join(str(d[k]) for k in THEORY_VERDICTS) + " |" for f, d in fc.items()]
    if payload.get("fidelity"):
        lines += ["", "## Fidelity: did each family start at q0?", "", *fidelity_table(payload["fidelity"])]
    if payload.get("transfer_figure"):
        lines += ["", f"![where the theory carries over]({payload['transfer_figure']})"]
    lines += ["", "## Theory against trained models", "", *markdown_table(theory)]
    deferred = [v for v in theory if v.deferred]
    if deferred:
        lines += ["", "## Deferred to profile=full (underpowered at the quick profile's seeds)", ""]
        lines += [f"- {v.claim} ({v.family}, {v.scope}): {v.detail}" for v in deferred]
    bad = not_holding(verdicts)
    lines += ["", "## What does not support the theory", ""] + (bad or all_hold_line(verdicts, payload.get("errors")
                                                                                      or []))
    if cons:
        lines += ["", "## Consistency: trained runs against the exact population dynamics", "",
                  "An implementation check, not evidence for the theory: plain SGD runs of the GMM beside the engine's "
                  "own gradient-descent flow.", "", *markdown_table(cons)]
    if repl:
        lines += ["", "## Replication: Chen et al.'s simulation re-run", "", *markdown_table(repl)]
        lines += [f"- {v.claim} ({v.scope}) {v.title}: {v.detail}" for v in repl if v.detail]
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
            detail = f" ({v.detail})" if v.detail else ""
            lines.append(f"- **{v.verdict}**{detail} [{v.kind}, {v.family}] {v.title} ({v.scope}): {v.statistic} = "
                         f"{v.measured()}; {v.rule}.{note}{ctrl}")
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
    fams = "; ".join(f"{f}: " + ", ".join(f"{d[k]} {k}" for k in THEORY_VERDICTS if d[k])
                     for f, d in family_counts(verdicts).items())
    lines = [
        f"Quick profile, executor {payload.get('executor', 'inline')}: {payload['runs_trained']} runs trained in "
        f"{payload['wall_time_s']:.0f} s. **{headline(c)}.** Theory rows per family: {fams}.",
        "",
        "<details><summary>Theory rows (quick profile)</summary>",
        "",
        *markdown_table([v for v in verdicts if v.kind == "theory"]),
        "",
        "</details>",
        "",
        "What does not support the theory (generated from the rows and their control runs):",
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
    shown = [v for v in verdicts if v.kind == "theory"]
    if not file.isatty():
        print(title, file=file)
        for row in table_rows(shown):
            print(" | ".join(row), file=file)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for h in THEORY_HEADER:
        table.add_column(h, overflow="fold")
    styles = {"holds": "green", "fails": "red", "inconclusive": "yellow", "supports theory": "green",
              "supports rival": "red", "undecided": "yellow", "untestable": "bright_black", "not converged": "blue",
              "reproduced": "green", "not reproduced": "red"}
    for row in table_rows(shown):
        table.add_row(*row[:-1], f"[{styles.get(row[-1].split(' (')[0], 'white')}]{row[-1]}[/]")
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
    """What 'What does not support the theory' says when every judged theory row supports it: never that every row
    does when none was judged, nor without the claims that could not be judged."""
    judged = sum(v.kind == "theory" for v in verdicts)
    lines = [f"Every theory row judged ({judged}) supports the theory." if judged else "No theory row was judged."]
    if errors:
        lines += ["", f"Not judged ({len(errors)} errors):", "", *[f"- {e}" for e in errors]]
    return lines
