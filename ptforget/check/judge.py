"""Judging a row: from its values (one per seed) and its rule to a verdict, the record stored in verdicts.json.

Theory rows are discriminations (``rules.Discrimination``): the theory against named rivals at a declared margin,
gated before they are judged (``untestable``: the run does not meet the prediction's premises; ``not converged``:
the statistic had not reached its plateau), with the power of the test computed from a pilot's spread (never from
the run's own). Consistency and identity rows keep holds / fails / inconclusive; replication rows (a published
simulation re-run) say reproduced / not reproduced / undecided.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ptforget.check.registry import KINDS, Row
from ptforget.check.rules import (
    REPLICATION_VERDICTS,
    TARGET_POWER,
    THEORY_VERDICTS,
    VERDICTS,
    Discrimination,
    fmt,
)
from ptforget.io import read_json
from ptforget.stats import Summary, difference, rank_test, summarize, wilson_interval

#: the verdicts each kind of row can get
KIND_VERDICTS = {"theory": THEORY_VERDICTS, "consistency": VERDICTS, "identity": VERDICTS,
                 "replication": REPLICATION_VERDICTS}
#: theory rows need at least this many seeds to count as evidence
MIN_SEEDS = 3
#: the pilot's spreads shipped with the package (an earlier quick check; ``scripts/make_pilot.py`` rebuilds it)
PILOT_FILE = Path(__file__).with_name("pilot.json")


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
    rival: dict | None = None
    rivals: list[dict] = field(default_factory=list)
    margin: float | None = None
    margin_why: str = ""
    power: float | None = None
    seeds_needed: int | None = None
    converged: bool | None = None
    convergence: str = ""
    gate: str | None = None
    detail: str = ""
    deferred: bool = False
    negative_control: bool = False

    def measured(self) -> str:
        """mean [lo, hi] (n), or the single value with n=1 and no interval."""
        if self.lo is None or self.hi is None:
            return f"{fmt(self.mean)} (n={self.n}, no interval)"
        return f"{fmt(self.mean)} [{fmt(self.lo)}, {fmt(self.hi)}] (n={self.n})"


@dataclass
class Settings:
    """How the engine judges: the pilot's spreads, whether underpowered rows are deferred, the negative control."""

    pilot: dict[str, dict[str, float]] = field(default_factory=dict)
    defer: bool = False
    negative_control: bool = False


def pilot_key(claim: str, family: str, title: str, scope: str, statistic: str) -> str:
    return f"{claim} | {family} | {title} | {scope} | {statistic}"


def load_pilot(path: str | Path | None) -> dict[str, dict[str, float]]:
    """The pilot's spreads (``{key: {"se": ..., "n": ...}}``); empty when there is no file."""
    if path is None:
        return {}
    try:
        d = read_json(Path(path))
    except (OSError, ValueError):
        return {}
    return d.get("rows", {}) if isinstance(d, dict) else {}


def pilot_of(payload: dict[str, Any]) -> dict[str, Any]:
    """A pilot file from a verdicts.json payload: each theory row's standard error at its n."""
    rows = {}
    for d in payload.get("verdicts", []):
        if d.get("kind") != "theory":
            continue
        v = verdict_from_json(d)
        s = _summary(v.values, v.versus, 0.95)
        if s.n >= 2 and s.std is not None and math.isfinite(s.std):
            se = s.std if v.versus is not None else s.std / math.sqrt(s.n)
            rows[pilot_key(v.claim, v.family, v.title, v.scope, v.statistic)] = {"se": se, "n": s.n}
    return {"source": payload.get("source", ""), "rows": rows}


def _summary(values: list[float], versus: list[float] | None, level: float) -> Summary:
    return summarize(values, level) if versus is None else difference(values, versus, level)


def judge_row(row: Row, section: str, settings: Settings | None = None) -> Verdict:
    """The row's verdict (see the module docstring)."""
    settings = settings or Settings()
    collapse = None
    values, note = list(row.values), row.note
    if row.collapsed is not None and row.versus is None and any(row.collapsed):
        k, n = sum(bool(c) for c in row.collapsed), len(row.collapsed)
        lo, hi = wilson_interval(k, n)
        collapse = {"collapsed": k, "seeds": n, "rate": k / n, "lo": lo, "hi": hi,
                    "values": [x for x, c in zip(values, row.collapsed, strict=True) if c]}
        values = [x for x, c in zip(values, row.collapsed, strict=True) if not c]
        note = (f"{note} " if note else "") + (
            f"{k} of {n} seeds collapsed (rate {k / n:.2f}, 95% Wilson interval [{lo:.2f}, {hi:.2f}]); the "
            "statistic is judged on the others.")
    s = _summary(values, row.versus, 0.95)
    rule = row.rule
    v = Verdict(row.claim, section, row.title, row.family, row.kind, row.scope, row.statistic, s.n, s.mean, s.lo,
                s.hi, values, rule.predicted, rule.text(), [rule.lo, rule.hi], "", note, row.control,
                row.figure, list(row.versus) if row.versus is not None else None, dict(row.extra),
                converged=row.converged, convergence=row.convergence, gate=row.gate)
    if collapse is not None:
        v.extra = {**(v.extra or {}), "collapse": collapse}
    if row.kind == "theory":
        _judge_theory(v, row, s, settings, values)
    elif row.kind == "replication":
        v.verdict = _judge_replication(v, row, s)
    else:
        v.verdict = rule.judge(s)
    return v


def _judge_theory(v: Verdict, row: Row, s: Summary, settings: Settings, values: list[float]) -> None:
    rule = row.rule
    if not isinstance(rule, Discrimination):
        raise TypeError(f"theory row {row.claim} ({row.family}, {row.scope}) needs a rules.discriminate(...) rule "
                        f"with a rival, got {type(rule).__name__}")
    if settings.negative_control:
        neg = rule.negative()
        v.negative_control = neg is not None
        rule = neg or rule
        v.predicted, v.rule, v.bounds = rule.predicted, rule.text(), [rule.lo, rule.hi]
    v.rival, v.rivals = rule.rival.to_json(), [r.to_json() for r in rule.rivals]
    v.margin, v.margin_why = rule.margin, rule.margin_why
    pil = settings.pilot.get(pilot_key(row.claim, row.family, row.title, row.scope, row.statistic))
    if pil and s.n >= 2:
        se = float(pil["se"]) * math.sqrt(float(pil["n"]) / s.n)
        v.power = rule.power(se, s.n)
        v.seeds_needed = rule.seeds_needed(float(pil["se"]) * math.sqrt(float(pil["n"])))
    if row.gate:
        v.verdict, v.detail = "untestable", f"gate failed: {row.gate}"
        return
    if row.converged is False:
        v.verdict, v.detail = "not converged", row.convergence
        return
    if s.n < MIN_SEEDS:
        v.verdict, v.detail = "undecided", f"n={s.n} < {MIN_SEEDS} seeds: not evidence"
        return
    if settings.defer and v.power is not None and v.power < TARGET_POWER:
        need = f"needs {v.seeds_needed} seeds" if v.seeds_needed else "not within 200 seeds"
        v.verdict, v.deferred = "undecided", True
        v.detail = (f"deferred: power {v.power:.2f} < {TARGET_POWER} at n={s.n} from the pilot's spread ({need}); "
                    "decided in profile=full")
        return
    s90 = _summary(values, row.versus, 0.90)
    v.verdict, v.detail = rule.decide(s90, s)


def _judge_replication(v: Verdict, row: Row, s: Summary) -> str:
    """Rank rows (``extra['test'] == 'rank'``): a one-sided Mann-Whitney test at 5% in the published direction
    (the rule's bound at 0 says which); other rows: the rule on the t-interval."""
    if row.extra.get("test") == "rank" and row.versus is not None:
        rt = rank_test(row.values, row.versus)
        greater = math.isfinite(row.rule.lo)
        p_yes, p_no = (rt["p_greater"], rt["p_less"]) if greater else (rt["p_less"], rt["p_greater"])
        v.extra = {**(v.extra or {}), "rank_test": rt}
        v.detail = (f"Mann-Whitney: one-sided p = {p_yes:.3g} in the published direction, {p_no:.3g} against; "
                    f"Hodges-Lehmann shift {rt['shift']:.3g} (n = {rt['n_a']} vs {rt['n_b']})")
        return "reproduced" if p_yes < 0.05 else "not reproduced" if p_no < 0.05 else "undecided"
    return {"holds": "reproduced", "fails": "not reproduced"}.get(row.rule.judge(s), "undecided")


def verdict_from_json(d: dict[str, Any]) -> Verdict:
    def num(v: Any) -> float | None:
        return None if v is None else float(v)

    v = Verdict(d["claim"], d.get("section", ""), d["title"], d["family"], d["kind"], d["scope"], d["statistic"],
                int(d["n"]), float(d["mean"]) if d["mean"] is not None else math.nan, num(d["lo"]), num(d["hi"]),
                [float(v) if v is not None else math.nan for v in d.get("values", [])], num(d.get("predicted")),
                d["rule"], [float(b) for b in d.get("bounds", [-math.inf, math.inf])], d["verdict"],
                d.get("note", ""), d.get("control", ""), d.get("figure"), d.get("versus"), d.get("extra") or {})
    for k in ("rival", "rivals", "margin", "margin_why", "power", "seeds_needed", "converged", "convergence", "gate",
              "detail", "deferred", "negative_control"):
        if k in d and d[k] is not None:
            setattr(v, k, d[k])
    return v


def counts(verdicts: Iterable[Verdict]) -> dict[str, dict[str, int]]:
    """Verdict counts per kind."""
    out = {k: dict.fromkeys(KIND_VERDICTS[k], 0) for k in KINDS}
    for v in verdicts:
        out[v.kind][v.verdict] = out[v.kind].get(v.verdict, 0) + 1
    return out


def family_counts(verdicts: Iterable[Verdict], kind: str = "theory") -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for v in verdicts:
        if v.kind == kind:
            d = out.setdefault(v.family, dict.fromkeys(KIND_VERDICTS[kind], 0))
            d[v.verdict] = d.get(v.verdict, 0) + 1
    return out
