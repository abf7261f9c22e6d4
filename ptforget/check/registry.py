"""The claim registry: the one source of claim ids and titles for the check, its report, ``ptforget-theory`` and
the tests.

A claim is declared once, in one place: a ``Claim`` subclass decorated with ``@register`` (or a plain function
decorated with ``@claim(...)``) that says

* ``runs(ctx)``: the training runs it needs (``RunSpec``: family, overrides, seeds);
* ``rows(ctx, got)``: its verdict rows (``Row``), computed from the results of those runs, with the prediction
  computed by ``ptforget.theory`` from the same composed config (``ctx.theory(spec)``) and a ``Rule``; it may
  also yield ``Section`` items (figures and text for the claim's report section);
* optionally ``predict(theory_config)``: its predictions for ``ptforget-theory`` (no training).

The engine plans every selected claim's runs first (deduplicated by config hash), executes them, then judges and
renders. A user's claim in their own module registers the same way (see ``docs/extending.md``); built-in claims
live in ``ptforget.check.claims``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ptforget.check.rules import Rule

if TYPE_CHECKING:
    from ptforget.check.context import Context
    from ptforget.check.runs import Result, RunSpec
    from ptforget.theory import Prediction, TheoryConfig

#: row kinds: a prediction of the theory against a trained model (against a named rival); a trained run against the
#: engine's exact computation for the same family and algorithm (an implementation check); a mathematical identity
#: or proven inequality on samples; a published simulation re-run (Chen et al.)
KINDS = ("theory", "consistency", "identity", "replication")


@dataclass
class Explanation:
    """Control runs that explain a theory row that does not hold, trained only when it does not: ``describe``
    turns their results into the row's control text (what they measured)."""

    runs: Sequence[RunSpec]
    describe: Callable[[dict[RunSpec, Result]], str]
    #: a longer run that continues a run of the row (same constant learning rate, more steps): when the row had not
    #: converged, the claim is judged again on the continuations (run spec -> its continuation)
    continues: dict[RunSpec, RunSpec] = field(default_factory=dict)


@dataclass
class Row:
    """One verdict row: a statistic measured on runs (one value per seed) under a rule.

    ``family`` is the generator family (gmm, mdn, flow, realnvp) or the simulation the values come from;
    ``control`` names the control run behind a tolerance or an explanation and what it measured. With ``versus``
    the statistic is mean(values) - mean(versus) of two independent groups, judged on Welch's interval.
    ``extra`` carries tags for tables of a section (e.g. a method's condition and side).

    Gates (theory rows): ``gate`` names the premise of the prediction the runs do not meet (their start is not q0,
    the family cannot represent the target, the method did not learn the new mode): the row is *untestable*;
    ``converged`` False (with ``convergence`` saying why) makes it *not converged*.
    """

    title: str
    family: str
    kind: str
    scope: str
    statistic: str
    values: Sequence[float]
    rule: Rule
    note: str = ""
    control: str = ""
    figure: str | None = None
    claim: str = ""
    versus: Sequence[float] | None = None
    extra: dict = field(default_factory=dict)
    explain: Explanation | None = None
    gate: str | None = None
    converged: bool | None = None
    convergence: str = ""
    #: per seed: did this seed collapse (a discrete failure, e.g. the old mode lost where the theory predicts a
    #: retaining fixed point)? Collapsed seeds are reported as a rate with a binomial interval and the statistic is
    #: judged on the others (a bimodal outcome is not resolved by more seeds of a mean)
    collapsed: Sequence[bool] | None = None
    #: the results the row was computed from (default: all of the claim's results of the row's family), whose starts
    #: the engine's start gate reads
    sources: Sequence[Any] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"row kind must be one of {KINDS}, got {self.kind!r}")
        self.values = [float(v) for v in self.values]
        if self.versus is not None:
            self.versus = [float(v) for v in self.versus]


@dataclass
class Section:
    """What a claim adds to its report section besides its rows: figures (paths) and markdown text."""

    figures: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


class Claim:
    """Base class of a declared claim (see the module docstring)."""

    id: str = ""
    title: str = ""
    #: report order (built-ins: the claim number; extensions default after them)
    order: float = 1000.0

    def runs(self, ctx: Context) -> Iterable[RunSpec]:
        return ()

    def rows(self, ctx: Context, got: dict[RunSpec, Result]) -> Iterable[Row | Section]:
        return ()

    def predict(self, tc: TheoryConfig) -> Prediction | None:
        return None


REGISTRY: dict[str, Claim] = {}


def register(cls: type[Claim]) -> type[Claim]:
    """Class decorator: add a claim to the registry under its id (an id may be registered once)."""
    inst = cls()
    if not inst.id or not inst.title:
        raise ValueError(f"{cls.__name__}: a claim needs an id and a title")
    if inst.id in REGISTRY and type(REGISTRY[inst.id]).__qualname__ != cls.__qualname__:
        raise ValueError(f"claim id {inst.id!r} is already registered by {type(REGISTRY[inst.id]).__name__}")
    REGISTRY[inst.id] = inst
    return cls


def claim(id: str, title: str, runs: Callable[[Context], Iterable[RunSpec]] | Iterable[RunSpec] = (),
          order: float = 1000.0) -> Callable[[Callable[..., Iterable[Row]]], Callable[..., Iterable[Row]]]:
    """Function decorator: ``@claim("X1", "title", runs=[RunSpec(...)])`` over ``def rows(ctx, got)``."""

    def wrap(fn: Callable[..., Iterable[Row]]) -> Callable[..., Iterable[Row]]:
        specs = runs

        def _runs(self: Claim, ctx: Context) -> Iterable[RunSpec]:
            return specs(ctx) if callable(specs) else list(specs)

        def _rows(self: Claim, ctx: Context, got: dict[RunSpec, Result]) -> Iterable[Row]:
            return fn(ctx, got)

        cls = type(fn.__name__, (Claim,), {"id": id, "title": title, "order": order, "runs": _runs, "rows": _rows,
                                          "__doc__": fn.__doc__, "__qualname__": fn.__qualname__})
        register(cls)
        return fn

    return wrap


def load_builtin() -> None:
    """Import the built-in claim modules (each registers its claims on import)."""
    import ptforget.check.claims  # noqa: F401


def ordered(ids: Iterable[str] | None = None) -> list[Claim]:
    """Registered claims in report order (all of them, or those with the given ids)."""
    load_builtin()
    claims = sorted(REGISTRY.values(), key=lambda c: (c.order, c.id))
    if ids is None:
        return claims
    wanted = set(ids)
    return [c for c in claims if c.id in wanted]


def predictions(tc: TheoryConfig, ids: Iterable[str] | None = None) -> list[Prediction]:
    """Every registered claim's theory prediction for ``tc`` (claims without one are skipped)."""
    out = []
    for c in ordered(ids):
        p = c.predict(tc)
        if p is not None:
            p.title = c.title  # the registry's title is the one shown everywhere
            out.append(p)
    return out
