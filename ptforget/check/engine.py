"""The check as a pipeline: plan every run of the selected claims, execute the jobs, judge the rows, render.

``run_check(cfg, out_dir, compose)`` is the whole of ``ptforget-check``; each stage is a function of its own
(``make_plan``, ``execute``, ``judge``, ``render``) so that each can be tested alone.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptforget.build import instantiate_group
from ptforget.check import registry
from ptforget.check.context import FAMILIES, Context
from ptforget.check.executors import Executor, Inline, Outcome, Submitit
from ptforget.check.gates import start_gate
from ptforget.check.judge import (
    KIND_VERDICTS,
    PILOT_FILE,
    Settings,
    Verdict,
    counts,
    judge_row,
    load_pilot,
    verdict_from_json,
)
from ptforget.check.plan import Job, Plan, make_plan, pretrain_jobs
from ptforget.check.render import load_payload, payload_problem, render_report, transfer_matrix
from ptforget.check.runs import Result, RunSpec, load_runs
from ptforget.errors import ConfigError, check
from ptforget.io import LockBusy, atomic_write_text, file_lock, planted_link, write_json

log = logging.getLogger("ptforget.check")

#: rounds of resuming jobs whose run ended interrupted (preempted, cancelled with a signal) before anything is judged
RESUME_ROUNDS = 3
#: how an executor reports a job whose process ended without a result (submitit's error for a killed job)
DIED = "UncompletedJobError"


# ---------------------------------------------------------------------------------------------- selection
def claim_ids() -> list[str]:
    return [c.id for c in registry.ordered()]


def selected_claims(cfg: DictConfig) -> list[registry.Claim]:
    """The claims ``cfg.claims`` names (``all``: every registered claim), in report order."""
    ids = claim_ids()
    raw = cfg.get("claims", "all")
    if raw == "all" or raw is None:
        return registry.ordered()
    names = [c.strip() for c in raw.split(",")] if isinstance(raw, str) else [str(c) for c in raw]
    check(len(names) > 0, "claims", list(names), "'all' or a non-empty list of claim ids: " + ", ".join(ids))
    for n in names:
        check(n in ids, "claims", n, "'all' or claim ids among: " + ", ".join(ids))
    return registry.ordered(names)


def validate_check_config(cfg: DictConfig) -> None:
    """The check's own keys: its flags, the profile, the claims, the generator families and the executor."""
    from ptforget.validate import check_profile, generator_options

    for key in ("reuse", "strict", "batch_seeds", "negative_control"):
        check(isinstance(cfg.get(key, True), bool), key, cfg.get(key), "true or false")
    profile = OmegaConf.to_container(cfg.profile, resolve=True)
    check_profile(profile)
    claims = cfg.get("claims")
    check(claims == "all" or (OmegaConf.is_list(claims) and len(claims) > 0), "claims",
          OmegaConf.to_container(claims) if OmegaConf.is_list(claims) else claims,
          "'all' or a non-empty list of claim ids: " + ", ".join(claim_ids()))
    selected_claims(cfg)
    off = cfg.get("seed_offset", 0)
    check(isinstance(off, int) and not isinstance(off, bool) and 0 <= off <= 10**9, "seed_offset", off,
          "an integer in [0, 1e9]")
    pilot = cfg.get("pilot", "default")
    if pilot not in ("default", None):
        check(isinstance(pilot, str) and Path(pilot).is_file() and bool(load_pilot(pilot)), "pilot", pilot,
              "default, null, or a pilot file with rows (scripts/make_pilot.py writes one)")
    gens = OmegaConf.to_container(cfg.generators) if OmegaConf.is_list(cfg.get("generators")) else cfg.get("generators")
    options = [g for g in generator_options() if g in FAMILIES and g in profile["families"]]
    check(isinstance(gens, list) and len(gens) > 0, "generators", gens,
          "a non-empty list of generator families: " + ", ".join(map(repr, options)))
    for i, g in enumerate(gens):
        check(g in options, f"generators.{i}", g, "one of " + ", ".join(map(repr, options)))
    make_executor(cfg)


def make_executor(cfg: DictConfig) -> Executor:
    node = cfg.get("executor")
    if node is None:
        return Inline()
    return instantiate_group(node, "executor")


# ---------------------------------------------------------------------------------------------- progress
class Progress:
    """Planned / done / reused jobs with an ETA, one line per finished job (a bar on a terminal)."""

    def __init__(self, jobs: list[Job], reused: int, quiet: bool = False) -> None:
        self.total, self.reused, self.quiet = len(jobs), reused, quiet
        self.cost = sum(j.cost for j in jobs)
        self.done_cost = 0.0
        self.done = 0
        self.failed: list[tuple[Job, Outcome]] = []
        self.seeds_trained = 0
        self.t0 = time.perf_counter()

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def __call__(self, job: Job, out: Outcome) -> None:
        self.done += 1
        self.done_cost += job.cost
        if out.status == "failed":
            self.failed.append((job, out))
        elif job.kind == "train":
            self.seeds_trained += job.seeds
        el = time.perf_counter() - self.t0
        eta = el * (self.cost - self.done_cost) / max(self.done_cost, 1e-9)
        what = f"{job.family} {', '.join(job.labels)}" + (f" ({job.seeds} seeds)" if job.seeds > 1 else "")
        tail = f"FAILED: {out.error}" if out.status == "failed" else f"{out.status}, {out.wall:.1f} s"
        self.say(f"[{self.done}/{self.total}] {what}: {tail}; elapsed {el:.0f} s, ETA {eta:.0f} s")


# ---------------------------------------------------------------------------------------------- stages
def execute(plan: Plan, executor: Executor, reuse: bool, quiet: bool = False, what: str = "jobs") -> Progress:
    """Run the plan's unfinished jobs; finished ones (same config hash in their folder) are reused."""
    todo = [j for j in plan.jobs if not (reuse and j.finished())]
    reused = [j for j in plan.jobs if j not in todo]
    todo.sort(key=lambda j: -j.cost)  # the longest first: better packing over workers
    pre = pretrain_jobs(todo)
    prog = Progress(pre + todo, sum(j.seeds for j in reused), quiet)
    prog.say(f"ptforget-check: {len(plan.jobs)} {what} planned ({sum(j.seeds for j in plan.jobs)} runs), "
             f"{len(reused)} reused, {len(todo)} to train on {executor.describe()}"
             + (f" after pretraining {len(pre)} generators" if pre else ""))
    if pre:
        executor.run(pre, prog)
    if todo:
        executor.run(todo, prog)
        resume_interrupted(todo, executor, prog)
    return prog


def resume_interrupted(jobs: list[Job], executor: Executor, prog: Progress) -> None:
    """Run again the jobs whose run stopped on a signal (it resumes from its last.ckpt) or whose process died before
    its run began (a submitit job signalled during pretraining), so that a preempted job's half-trained run is never
    what a row judges; a job finished by a later round is no longer reported failed."""
    for _ in range(RESUME_ROUNDS):
        died = {j.key for j, o in prog.failed if o.error.startswith(DIED)}
        again = [j for j in jobs if j.interrupted() or (j.key in died and not j.finished())]
        if not again:
            return
        prog.say(f"ptforget-check: {len(again)} jobs ended interrupted (preempted or signalled): resuming them")
        prog.total += len(again)
        prog.cost += sum(j.cost for j in again)
        executor.run(again, prog)
        prog.failed = [(j, o) for j, o in prog.failed if not j.finished()]


def results(plan: Plan, specs: list[Any], configs: Context) -> dict[Any, Result]:
    """The results of the given specs, read from their folders (a spec whose runs are missing raises)."""
    got = {}
    for spec in specs:
        path, seeds, _ = plan.layout[spec]
        got[spec] = Result(spec, path, load_runs(path, seeds), config=configs.config(spec))
    return got


Pending = list[tuple[Verdict, registry.Explanation]]


def settings_of(cfg: DictConfig) -> Settings:
    """How rows are judged: the pilot's spreads (``pilot``: a file, default the packaged one; null: none), deferral
    of underpowered rows (``profile.defer_underpowered``) and the negative control (``negative_control``)."""
    path = cfg.get("pilot", "default")
    return Settings(pilot=load_pilot(PILOT_FILE if path == "default" else path),
                    defer=bool(cfg.profile.get("defer_underpowered", False)),
                    negative_control=bool(cfg.get("negative_control", False)))


def judge(ctx: Context, plan: Plan, claims: list[registry.Claim], settings: Settings | None = None
          ) -> tuple[list[Verdict], dict[str, Any], list[str], Pending]:
    """Every claim's rows and section; a claim that cannot be judged (missing runs, an error) is reported. Theory
    rows that do not support the theory and declare an explanation are returned as pending: their controls run
    next."""
    verdicts: list[Verdict] = []
    pending: Pending = []
    sections: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for c in claims:
        sec: dict[str, Any] = {"title": c.title, "figures": [], "text": []}
        sections[c.id] = sec
        try:
            got = results(plan, plan.claims[c.id], ctx)
            items = list(c.rows(ctx, got))
        except Exception as err:  # a failed run or a claim's bug: reported, the other claims go on
            log.exception("claim %s could not be judged", c.id)
            errors.append(f"{c.id}: {type(err).__name__}: {err}")
            sec["text"].append(f"**Not judged**: {type(err).__name__}: {err}")
            continue
        rows = [r for r in items if isinstance(r, registry.Row)]
        for extra in (s for s in items if isinstance(s, registry.Section)):
            sec["figures"] += [ctx.rel(f) if Path(f).is_absolute() else str(f) for f in extra.figures]
            sec["text"] += extra.text
        for r in rows:
            r.claim = r.claim or c.id
            if r.figure is None and sec["figures"]:
                r.figure = sec["figures"][0]
            if r.kind == "theory":
                start_gate_row(ctx, r, got)
            v = judge_row(r, c.title, settings)
            verdicts.append(v)
            explain = r.explain
            if v.verdict == "not converged" and not (explain and explain.continues):
                explain = continuation(ctx, r, explain)
            if v.kind == "theory" and v.verdict in ("supports rival", "undecided", "not converged") \
                    and not v.deferred and explain is not None:
                pending.append((v, explain))
    return verdicts, sections, errors, pending


def continuation(ctx: Context, row: registry.Row, explain: registry.Explanation | None
                 ) -> registry.Explanation | None:
    """A row that had not converged and declares no continuation gets one: each of its source runs continued to
    ``profile.control_factor`` x its steps (constant learning rates: the longer run is the same run, continued)."""
    swap = {}
    for res in row.sources:
        steps = int(OmegaConf.select(res.config, "trainer.max_steps")) if res.config is not None else 0
        if steps:
            longer = ctx.control_steps(steps)
            swap[res.spec] = RunSpec(f"{res.spec.label}_T{longer}", res.spec.family,
                                              (*res.spec.overrides, f"trainer.max_steps={longer}"), res.spec.seeds)
    if not swap:
        return explain
    base = explain or registry.Explanation([], lambda got: "")

    factor = float(ctx.profile.get("control_factor", 3))

    def describe(got: dict[Any, Result]) -> str:
        first = base.describe(got) if base.runs else ""
        return (f"{first} " if first else "") + (f"Continued to {factor:g} x its steps (the row is judged again on "
                                                 "the continuation).")

    return registry.Explanation([*base.runs, *swap.values()], describe, continues=swap)


def start_gate_row(ctx: Context, row: registry.Row, got: dict[Any, Result]) -> None:
    """Gate a theory row on its runs' starts (its ``sources``, else the claim's results of its family): a row whose
    runs did not start at q0 is untestable (``gates.start_gate``); the records go to the report's fidelity table."""
    sources = list(row.sources) or [res for spec, res in got.items() if spec.family == row.family]
    if not sources:
        return
    why, recs = start_gate(sources, ctx.gates())
    for rec in recs:
        ctx.fidelity[(rec["family"], rec["config"])] = rec
    if why and not row.gate:
        row.gate = why


class _Controls(registry.Claim):
    id, title = "controls", "control runs of rows that do not hold"

    def __init__(self, specs: list[Any] | None = None) -> None:
        self.specs = specs or []

    def runs(self, ctx: Context) -> list[Any]:
        return self.specs


def explain(ctx: Context, pending: Pending, executor: Executor, reuse: bool, quiet: bool
            ) -> tuple[Progress, list, Plan]:
    """Train the control runs of the pending rows, then write what each measured into its row's control text."""
    specs = list(dict.fromkeys(s for _, e in pending for s in e.runs))
    holder = _Controls(specs)
    plan = make_plan(ctx, [holder])
    write_json(ctx.out / "plan_controls.json", plan.to_json(ctx.out))
    prog = execute(plan, executor, reuse, quiet, what="control jobs for the rows that do not hold")
    errors = []
    for v, e in pending:
        try:
            text = e.describe(results(plan, list(e.runs), ctx))
        except Exception as err:  # a failed control: said in the row and as an error
            errors.append(f"control of {v.claim} ({v.family}): {type(err).__name__}: {err}")
            text = f"control failed ({type(err).__name__}: {err})"
        v.control = f"{v.control} {text}".strip()
    return prog, errors, plan


def continue_unconverged(ctx: Context, plan: Plan, cplan: Plan, claims: list[registry.Claim], pending: Pending,
                         verdicts: list[Verdict], settings: Settings) -> None:
    """Judge again, on their continuations, the rows that had not converged: the claim's rows are recomputed with
    each continued run in place of its shorter self (a constant learning rate: the longer run is the same run,
    continued), and a row still moving stays *not converged*, now at the longer length."""
    for c in claims:
        swap = {s: t for v, e in pending if v.claim == c.id and v.verdict == "not converged"
                for s, t in e.continues.items()}
        if not swap:
            continue
        try:
            got = results(plan, plan.claims[c.id], ctx)
            longer = results(cplan, list(swap.values()), ctx)
            got = {s: (longer[swap[s]] if s in swap else r) for s, r in got.items()}
            rows = [r for r in c.rows(ctx, got) if isinstance(r, registry.Row) and r.kind == "theory"]
        except Exception as err:  # the continuation could not be judged: the first verdict stands
            log.warning("claim %s: continuation not judged: %s", c.id, err)
            continue
        for i, v in enumerate(verdicts):
            if v.claim != c.id or v.verdict != "not converged":
                continue
            match = [r for r in rows if (r.title, r.family, r.statistic) == (v.title, v.family, v.statistic)]
            if not match:
                continue
            r = match[0]
            rows.remove(r)
            r.claim = c.id
            start_gate_row(ctx, r, got)
            nv = judge_row(r, v.section, settings)
            nv.control, nv.figure = v.control, v.figure
            nv.note = (f"{nv.note} " if nv.note else "") + ("Judged on its continuation (the first run had not "
                                                            f"converged: {v.convergence}).")
            verdicts[i] = nv


def merge_previous(out: Path, verdicts: list[Verdict], judged: list[str]) -> tuple[list[Verdict], str]:
    """Keep the rows of claims this launch did not judge (``judged``: the claims it judged without an error) from
    an earlier verdicts.json in the same folder: a claim that failed now keeps its earlier rows."""
    prev = load_payload(out / "verdicts.json")
    if prev is None:
        return verdicts, ""
    earlier = [verdict_from_json(d) for d in prev["verdicts"] if d.get("claim") not in judged]
    # rows in another verdict vocabulary (a check from before the discriminations) are not mixed in
    kept = [v for v in earlier if v.verdict in KIND_VERDICTS.get(v.kind, ())]
    old = sorted({v.claim for v in earlier if v not in kept})
    if not kept:
        return verdicts, (f"Not merged: the earlier rows of {', '.join(old)} in this folder use an older verdict "
                          "vocabulary; re-run those claims." if old else "")
    ids = sorted({v.claim for v in kept}, key=lambda s: (len(s), s))
    order = {cid: i for i, cid in enumerate(claim_ids())}
    merged = sorted(kept + verdicts, key=lambda v: order.get(v.claim, len(order)))
    return merged, (f"Merged: {len(kept)} rows of claims {', '.join(ids)} kept from the earlier report in this "
                    f"folder; {len(verdicts)} rows of {', '.join(judged)} judged now."
                    + (f" Not merged (an older verdict vocabulary): {', '.join(old)}." if old else ""))


#: the lock that keeps a second check out of a check folder (its verdicts.json is read, merged and replaced)
CHECK_LOCK = ".ptforget-check.lock"


@contextmanager
def check_folder(out: Path) -> Iterator[None]:
    """Hold ``out`` for one check: another check in it is refused at once (one line naming its process), never
    raced through the read-merge-replace of verdicts.json."""
    lock = file_lock(out / CHECK_LOCK, blocking=False)
    try:
        lock.__enter__()
    except LockBusy as err:
        raise ConfigError("hydra.run.dir", str(out), "a folder no other check is using (process "
                          f"{err.holder or '?'} is running a check in it)") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def earlier_report_problem(out: Path) -> str | None:
    """A damaged verdicts.json from an earlier check in ``out`` is moved aside (kept, named) before anything is
    replaced; the returned line says so (None when there is none, or it is sound)."""
    path = out / "verdicts.json"
    if not path.exists() and not path.is_symlink():
        return None
    problem = payload_problem(path)
    if problem is None:
        return None
    aside = path.with_name(f"verdicts.json.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(path, aside)
    return (f"the earlier {path} was damaged ({problem}): moved aside to {aside.name}, its rows are not merged "
            "into this report")


def run_check(cfg: DictConfig, out_dir: str | Path,
              compose: Callable[[list[str]], DictConfig]) -> dict[str, Any]:
    """Plan, execute, judge and render the selected claims; write report.md, verdicts.json, figures.

    The folder is held for the whole check (``check_folder``); verdicts.json and report.md are replaced atomically,
    at the end, keeping the earlier rows of every claim this check did not judge (or failed to judge).
    """
    validate_check_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    link = planted_link(out, depth=1)
    if link is not None:
        raise ConfigError("hydra.run.dir", str(out), f"a folder without symbolic links where ptforget writes ({link} "
                          "is one: files are never written through a link; remove it)")
    with check_folder(out):
        return _run_check(cfg, out, compose)


def _run_check(cfg: DictConfig, out: Path, compose: Callable[[list[str]], DictConfig]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(int(cfg.threads))
    t0 = time.perf_counter()
    ctx = Context(cfg, out, compose)
    claims = selected_claims(cfg)
    plan = make_plan(ctx, claims)
    write_json(out / "plan.json", plan.to_json(out))
    executor = make_executor(cfg)
    if isinstance(executor, Submitit):
        executor.out = out
    quiet = bool(cfg.get("quiet", False))
    prog = execute(plan, executor, bool(cfg.reuse), quiet=quiet)
    settings = settings_of(cfg)
    verdicts, sections, errors, pending = judge(ctx, plan, claims, settings)
    failed = list(prog.failed)
    trained, reused = prog.seeds_trained, prog.reused
    if pending:
        cprog, cerr, cplan = explain(ctx, pending, executor, bool(cfg.reuse), quiet)
        continue_unconverged(ctx, plan, cplan, claims, pending, verdicts, settings)
        errors += cerr
        failed += cprog.failed
        trained, reused = trained + cprog.seeds_trained, reused + cprog.reused
    errors += [f"job {', '.join(j.labels)} ({j.path}): {o.error}" for j, o in failed]
    damaged = earlier_report_problem(out)
    if damaged is not None:
        errors.append(damaged)
    judged_now = {v.claim for v in verdicts}  # a claim that could not be judged now keeps its earlier rows
    verdicts, merged = merge_previous(out, verdicts, [c.id for c in claims if c.id in judged_now])
    payload: dict[str, Any] = {
        "profile": OmegaConf.to_container(cfg.profile, resolve=True),
        "executor": executor.describe(),
        "wall_time_s": time.perf_counter() - t0,
        "runs_trained": trained,
        "runs_reused": reused,
        "jobs": len(plan.jobs),
        "claims": [c.id for c in claims],
        "counts": counts(verdicts),
        "errors": errors,
        "merged": merged,
        "negative_control": bool(cfg.get("negative_control", False)),
        "fidelity": ctx.fidelity_rows(),
        "verdicts": [v.__dict__ for v in verdicts],
    }
    payload["transfer_figure"] = _transfer_figure(ctx, verdicts)
    write_json(out / "verdicts.json", payload)
    atomic_write_text(out / "report.md", render_report(payload, verdicts, sections))
    if cfg.get("report_to", "none") == "wandb":
        log_to_wandb(cfg, out, payload)
    return payload


def _transfer_figure(ctx: Context, verdicts: list[Verdict]) -> str | None:
    claims, fams, cells = transfer_matrix(verdicts)
    if not cells:
        return None
    path = ctx.plots.plot_transfer(claims, fams, cells, ctx.figure_path("transfer.png"))
    return ctx.rel(path)


def log_to_wandb(cfg: DictConfig, out: Path, payload: dict[str, Any]) -> None:
    """Figures as images and the verdicts as a table; offline unless ``wandb_mode=online``."""
    import wandb

    from ptforget.check.render import HEADER, table_rows

    mode = cfg.get("wandb_mode", "offline")
    run = wandb.init(project=cfg.get("wandb_project", "ptforget"), group=cfg.get("study", "check"), job_type="check",
                     dir=str(out), mode=mode, config=OmegaConf.to_container(cfg, resolve=False))
    try:
        table = wandb.Table(columns=["kind", *HEADER],
                            data=[[v["kind"], *row] for v, row in zip(payload["verdicts"], table_rows(
                                [verdict_from_json(d) for d in payload["verdicts"]]), strict=True)])
        images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in sorted((out / "figures").glob("*.png"))}
        flat = {f"count/{k}/{v}": n for k, d in payload["counts"].items() for v, n in d.items()}
        run.log({"verdicts": table, **images, **flat})
    finally:
        wandb.finish()


__all__ = ["ConfigError", "run_check", "selected_claims", "validate_check_config"]
