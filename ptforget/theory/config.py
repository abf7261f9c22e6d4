"""The theory engine's configuration (``TheoryConfig``) and the record of a claim's prediction (``Prediction``).

A TheoryConfig is derived from a composed training config by ``ptforget.bridge.theory_config``, so the
predictions of ``ptforget-theory`` and of the check come from the same config as the runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ptforget.errors import check_choice

from .population import (
    REPLAY_SOURCES,
    WEIGHTS,
    check_delta,
    check_dim,
    check_open_unit,
    check_positive,
    check_replay,
    lr_multipliers,
    population_flow,
)

SDFT_ANCHORS = ("p_star", "p_new")
#: the largest separation the predictions are computed for: chi^2 = e^(delta^2) - 1 (P2) overflows a float64
#: beyond 26.6, where the modes no longer overlap at all (BC = e^(-delta^2 / 8) < 1e-36)
MAX_DELTA = 26.0
Quantity = tuple[str, float, str, str]


def _is_real(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class TheoryConfig:
    """Parameters of the default theory task (whitened units; see population.py for conventions)."""

    dim: int = 2
    delta: float = 4.0
    sigma: float = 1.0
    #: the task's full shared covariance (data units), or None for sigma^2 I (see ``units``)
    covariance: tuple[tuple[float, ...], ...] | None = None
    beta_star: float = 0.5
    beta0: float | None = None
    new_offset: float = 1.0
    weight: str = "logit"
    lr: float = 0.05
    steps: int = 2000
    replay: float = 0.1
    replay_source: str = "p_old"
    batch: int = 16
    lr_mult: dict[str, float] | None = None
    train_means: bool = True
    clip: float = 1e-3
    delta_grid: tuple[float, ...] = (4.0, 5.0, 6.0, 7.0, 8.0)
    beta_star_grid: tuple[float, ...] = (0.05, 0.2, 0.5)
    # SDFT (R11): teacher old odds times kappa per refresh; anchored EMA teacher (1-lam) q_ema + lam a.
    kappa: float = 0.9
    sdft_lam: float = 0.1
    sdft_anchor: str = "p_star"
    refreshes: int = 10
    # TTT-Discover (R12): entropic tilt gamma, KL strength lam to a reference with old weight beta_ref.
    gamma: float = 1.0
    lam: float = 0.5
    beta_ref: float | None = None
    reward_old: float = 0.0
    reward_new: float = 1.0
    # OAPL (R13): temperature tau, ``refreshes`` lag refreshes.
    tau: float = 5.0

    def __post_init__(self) -> None:
        check_dim(self.dim)
        check_delta(self.delta)
        if self.delta > MAX_DELTA:
            raise ValueError(f"delta must be at most {MAX_DELTA:g} (chi^2 = e^(delta^2) - 1 overflows beyond; "
                             f"BC < 1e-36 there), got {self.delta!r}")
        check_positive(self.sigma, "sigma")
        if self.covariance is not None:
            self.sigma = self._set_covariance(self.covariance)
        check_open_unit(self.beta_star, "beta_star")
        if self.beta0 is None:
            self.beta0 = self.beta_star
        check_open_unit(self.beta0, "beta0")
        if not math.isfinite(float(self.new_offset)):
            raise ValueError(f"new_offset must be a finite number, got {self.new_offset!r}")
        check_choice(self.weight, "weight", WEIGHTS)
        check_positive(self.lr, "lr")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        check_replay(self.replay)
        check_choice(self.replay_source, "replay_source", REPLAY_SOURCES)
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {self.batch!r}")
        lr_multipliers(self.lr_mult, self.train_means)
        if not 0.0 < float(self.clip) < 0.5:
            raise ValueError(f"clip must lie in (0, 0.5), got {self.clip!r}")
        for d in self.delta_grid:
            if not _is_real(d) or not 0 <= float(d) <= MAX_DELTA:
                raise ValueError(f"delta_grid entries must be numbers in [0, {MAX_DELTA:g}], got {d!r}")
        self.delta_grid = tuple(float(d) for d in self.delta_grid)
        self.beta_star_grid = tuple(check_open_unit(b, "beta_star_grid entry") for b in self.beta_star_grid)
        if len(self.delta_grid) < 2:
            raise ValueError(f"delta_grid must hold at least two values, got {list(self.delta_grid)}")
        if len(self.beta_star_grid) < 2:
            raise ValueError(f"beta_star_grid must hold at least two values, got {list(self.beta_star_grid)}")
        check_positive(self.kappa, "kappa")
        if not 0.0 <= float(self.sdft_lam) <= 1.0:
            raise ValueError(f"sdft_lam must lie in [0, 1], got {self.sdft_lam!r}")
        check_choice(self.sdft_anchor, "sdft_anchor", SDFT_ANCHORS)
        if isinstance(self.refreshes, bool) or not isinstance(self.refreshes, int) or self.refreshes < 0:
            raise ValueError(f"refreshes must be an integer >= 0, got {self.refreshes!r}")
        if not math.isfinite(self.gamma) or self.gamma < 0:
            raise ValueError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        if not math.isfinite(self.lam) or self.lam < 0:
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam!r}")
        if self.beta_ref is None:
            self.beta_ref = self.beta0
        check_open_unit(self.beta_ref, "beta_ref")
        for name in ("reward_old", "reward_new"):
            if not math.isfinite(float(getattr(self, name))):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        check_positive(self.tau, "tau")

    def _set_covariance(self, rows: Any) -> float:
        """Check the covariance, keep it as a tuple of tuples and return the sigma the engine computes with: the
        whitened step of data-space gradient descent along the mode axis is lr / Sigma_11, i.e. that of sigma^2 =
        Sigma_11 (for Sigma = s^2 I, sigma = s exactly)."""
        d = self.dim
        ok = isinstance(rows, list | tuple) and len(rows) == d and all(
            isinstance(r, list | tuple) and len(r) == d and all(_is_real(v) for v in r) for r in rows)
        if not ok:
            raise ValueError(f"covariance must be a {d}x{d} matrix of finite numbers, got {rows!r}")
        cov = np.asarray(rows, dtype=np.float64)
        if not np.allclose(cov, cov.T, rtol=0, atol=1e-12 * np.abs(cov).max()):
            raise ValueError(f"covariance must be a symmetric matrix, got {rows!r}")
        if np.linalg.eigvalsh(cov).min() <= 0:
            raise ValueError(f"covariance must be a positive definite matrix, got {rows!r}")
        self.covariance = tuple(tuple(float(v) for v in r) for r in cov)
        return math.sqrt(float(cov[0, 0]))

    @property
    def whitened(self) -> bool:
        """The task's covariance is not sigma^2 I: the predictions are computed in whitened coordinates."""
        if self.covariance is None:
            return False
        cov = np.asarray(self.covariance)
        return not np.allclose(cov, cov[0, 0] * np.eye(self.dim), rtol=1e-12, atol=0)

    @property
    def axis_length(self) -> float:
        """Data-space length of one Mahalanobis unit along the mode axis (the task puts the modes along L e1,
        Sigma = L L^T): a whitened drift or mean error along the axis is this many data units. sigma for sigma^2 I."""
        if self.covariance is None:
            return float(self.sigma)
        return float(np.linalg.norm(np.linalg.cholesky(np.asarray(self.covariance))[:, 0]))

    @property
    def axis_exact(self) -> bool:
        """Data-space gradient descent keeps the means on the mode axis (the axis is an eigenvector of Sigma), so
        the two-mode reduction of its dynamics is exact; otherwise only its step along the axis is."""
        if self.covariance is None:
            return True
        cov = np.asarray(self.covariance)
        v = np.linalg.cholesky(cov)[:, 0]
        w = cov @ v
        return bool(np.linalg.norm(w - (w @ v) / (v @ v) * v) <= 1e-9 * np.linalg.norm(w))

    def units(self) -> dict[str, Any]:
        """How the predictions' numbers relate to the task's data space (recorded with every prediction file)."""
        if not self.whitened:
            return {"coordinates": "data", "covariance": "sigma^2 I", "sigma": float(self.sigma),
                    "data_units": "sigma x whitened (Mahalanobis) units", "exact": True}
        return {"coordinates": "whitened", "covariance": [list(r) for r in self.covariance or ()],
                "mahalanobis_delta": float(self.delta), "axis_length": self.axis_length,
                "step_along_axis": f"lr / Sigma_11 = lr / {self.sigma**2:g}",
                "data_units": f"a length along the mode axis: whitened x {self.axis_length:.6g}",
                "exact": self.axis_exact}

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any], ignore_unknown: bool = False) -> TheoryConfig:
        """Build from a dict (e.g. a Hydra section); unknown keys raise unless ignore_unknown=True."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown and not ignore_unknown:
            raise ValueError(f"unknown TheoryConfig keys {unknown}; allowed keys are {sorted(names)}")
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("delta_grid", "beta_star_grid"):
            if k in kw:
                if not isinstance(kw[k], list | tuple):
                    raise ValueError(f"{k} must be a list of numbers, got {kw[k]!r}")
                kw[k] = tuple(kw[k])
        if kw.get("lr_mult") is not None:
            kw["lr_mult"] = dict(kw["lr_mult"])
        if kw.get("covariance") is not None and isinstance(kw["covariance"], list | tuple):
            kw["covariance"] = tuple(tuple(r) if isinstance(r, list | tuple) else r for r in kw["covariance"])
        return cls(**kw)

    @property
    def mult(self) -> dict[str, float]:
        """Effective per-group multipliers (train_means=False zeroes the mean groups)."""
        return lr_multipliers(self.lr_mult, self.train_means)

    def flow(self, objective: str, **overrides: Any) -> dict[str, np.ndarray]:
        """population_flow with this config's arguments, optionally overridden."""
        kw: dict[str, Any] = dict(
            delta=self.delta, beta_star=self.beta_star, beta0=self.beta0, new_offset=self.new_offset,
            lr=self.lr, steps=self.steps, weight=self.weight, replay=self.replay, dim=self.dim,
            replay_source=self.replay_source, lr_mult=self.lr_mult, sigma=self.sigma,
            train_means=self.train_means, clip=self.clip,
        )
        kw.update(overrides)
        return population_flow(objective, **kw)


@dataclass
class Prediction:
    """A claim's prediction: quantities are (name, value, unit, note) tuples."""

    claim: str
    title: str
    law: str
    tag: str
    quantities: list[Quantity] = field(default_factory=list)

    def value(self, name: str) -> float:
        """Look up a quantity by name."""
        for n, v, _, _ in self.quantities:
            if n == name:
                return v
        raise KeyError(f"{self.claim} has no quantity {name!r}")

    def add(self, name: str, value: float, unit: str = "", note: str = "") -> None:
        """Append a quantity (stored as a float)."""
        self.quantities.append((name, float(value), unit, note))


def _json_number(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)


#: a quantity's unit -> the power of a data-space length it carries
LENGTH_UNITS = {"data units": 1, "1/data unit": -1}


def in_data_units(preds: list[Prediction], tc: TheoryConfig | None) -> list[Prediction]:
    """The predictions with their data-unit quantities mapped out of the whitened coordinates they were computed
    in (a full covariance: whitened x ``axis_length`` along the mode axis, the Mahalanobis value kept in the note);
    unchanged for sigma^2 I, where the engine's data units are already sigma x whitened."""
    if tc is None or not tc.whitened:
        return preds
    out = []
    for p in preds:
        q = Prediction(p.claim, p.title, p.law, p.tag)
        for n, v, u, note in p.quantities:
            power = LENGTH_UNITS.get(u)
            if power is None:
                q.quantities.append((n, v, u, note))
                continue
            whitened = v / tc.sigma**power  # the engine's data units are sigma x whitened
            text = f"{whitened:.6g} {'Mahalanobis' if power == 1 else '1/Mahalanobis'}"
            q.quantities.append((n, whitened * tc.axis_length**power, u + " (axis)",
                                 f"{note}; {text}" if note else text))
        out.append(q)
    return out


def units_text(tc: TheoryConfig) -> list[str]:
    """The lines that say which coordinates the predictions are in (printed above the table)."""
    if not tc.whitened:
        return [f"units: data units = sigma x whitened (Mahalanobis) units, sigma = {tc.sigma:g}; "
                f"Delta = {tc.delta:g} is Mahalanobis"]
    cov = "[" + ", ".join("[" + ", ".join(f"{v:g}" for v in r) + "]" for r in tc.covariance or ()) + "]"
    lines = [f"units: task.covariance = {cov} is not sigma^2 I. Computed in whitened coordinates x_w = L^-1 x "
             "(Sigma = L L^T), where the task is the unit-covariance one at the same Mahalanobis Delta = "
             f"{tc.delta:g}; "
             f"reported in data units: a length along the mode axis is whitened x {tc.axis_length:.6g} (the "
             "Mahalanobis value is in each note); the step along the axis is lr / Sigma_11 = "
             f"lr / {tc.sigma**2:g}."]
    if not tc.axis_exact:
        lines.append("note: the mode axis is not an eigenvector of Sigma, so data-space gradient descent also moves "
                     "the means off the axis; the step-dependent predictions (the exact flows, rates, drifts) are "
                     "those of steps along the axis, exact for whitened (Sigma-preconditioned) gradient descent.")
    return lines


def predictions_to_json(preds: list[Prediction], tc: TheoryConfig | None = None,
                        config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """JSON-serialisable predictions keyed by claim id (non-finite numbers become strings), in data units.

    With ``tc`` the file is ``{"config": <the composed config, resolved>, "theory_config": <tc's fields>,
    "units": tc.units(), "predictions": {claim id: ...}}`` (``config`` given or not); without it, the bare mapping.
    """
    out: dict[str, Any] = {}
    for p in in_data_units(preds, tc):
        d = asdict(p)
        d["quantities"] = [{"name": n, "value": _json_number(v), "unit": u, "note": nt}
                           for n, v, u, nt in p.quantities]
        out[p.claim] = d
    if tc is not None:
        fields_ = json.loads(json.dumps(asdict(tc), default=str))  # tuples as lists
        out = {"config": dict(config) if config is not None else None, "theory_config": fields_,
               "units": tc.units(), "predictions": out}
    json.dumps(out)  # fail early if anything is not serialisable
    return out


def format_predictions(preds: list[Prediction], tc: TheoryConfig | None = None, width: int | None = None) -> str:
    """Plain-text table: the units (with ``tc``), then one block per claim with its law and quantities, in data
    units. ``width``: the terminal's columns (notes wrap under their column); None writes every line whole."""
    import textwrap

    lines: list[str] = units_text(tc) if tc is not None else []
    if width is not None:
        lines = [w for ln in lines for w in textwrap.wrap(ln, width, subsequent_indent="  ") or [""]]
    if lines:
        lines.append("")
    for p in in_data_units(preds, tc):
        lines.append(f"{p.claim:<4} {p.title}  [{p.tag}]")
        lines.append(f"     law: {p.law}")
        for n, v, u, nt in p.quantities:
            head = f"     {n:<40} {v:>14.6g} {u:<17} "
            if width is None or len(head) + len(nt) <= width or width - len(head) < 20:
                lines.append(head + nt)
                continue
            wrapped = textwrap.wrap(nt, width - len(head)) or [""]
            lines.append(head + wrapped[0])
            lines += [" " * len(head) + w for w in wrapped[1:]]
    return "\n".join(lines)
