"""``--help`` of ``ptforget-train`` and ``ptforget-theory``: this app's config groups and options, and every key of
the composed default config with its value and documentation (the YAML comment beside it, or ``DOCS``).

Hydra's own ``--help`` lists every group of the config package (``profile`` and ``executor`` belong to
``ptforget-check``, which ``ptforget-train`` rejects) and none of the documentation; this one reads the groups the
app's primary config composes, their options as Hydra finds them (user options on the search path included) and
the comments of the YAML files that set each key.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: documentation of keys whose YAML line has no comment
DOCS: dict[str, str] = {
    "task.dim": "data dimension d",
    "task.reward_kind": "default reward: new_bump | both_bumps | new_region | old_region | log_p_star | log_p_new",
    "task.reward_width": "width of the bump rewards (units of Sigma)",
    "generator.components": "mixture components (the old one first)",
    "generator.lr_mult.weight": "step multiplier of the mixture weights",
    "generator.lr_mult.old": "step multiplier of the old component (Chen et al.: 0.005)",
    "generator.lr_mult.new": "step multiplier of the new component",
    "seed": "the run's seed (with seeds = S: the first of S)",
    "generator.weight_clip": "direct weights are clipped to [clip, 1 - clip]",
    "generator.train_means": "false freezes the component means (weights only)",
    "generator.hidden": "hidden layer widths",
    "generator.context_dim": "size of the MDN's constant context input",
    "generator.kind": "nsf (neural spline coupling, passes=2) | realnvp (affine coupling)",
    "generator.transforms": "coupling transforms",
    "generator.bins": "spline bins (nsf)",
    "generator.bound": "the splines' domain [-bound, bound] in standardised units (nsf)",
    "generator.standardize": "data (scale by q0's sd) | mode (by a mode's sd: modes one unit wide)",
    "generator.pretrain.steps": "maximum-likelihood pretraining steps to q0 (0 = none)",
    "generator.pretrain.batch": "pretraining batch",
    "generator.pretrain.lr": "pretraining Adam step",
    "generator.pretrain.schedule": "cosine | constant (pretraining learning-rate schedule)",
    "generator.pretrain.objective": "samples (fresh q0 draws) | quadrature (exact, 1-D) | auto (quadrature in 1-D)",
    "generator.pretrain.refine": "L-BFGS iterations after the Adam steps (quadrature only)",
    "generator.pretrain.seed": "pretraining seed; null = the run's seed (each seed its own pretrained start)",
    "generator.cache_dir": "pretrained weights cache (null = none)",
    "objective.batch": "samples per optimizer step",
    "optimizer.name": "adam | sgd",
    "optimizer.betas": "Adam's betas",
    "optimizer.weight_decay": "L2 weight decay",
    "optimizer.momentum": "SGD momentum",
    "trainer.max_steps": "optimizer steps of the run",
    "trainer.devices": "devices (1: one GPU, or the CPU)",
    "trainer.deterministic": "torch's deterministic algorithms",
    "paths.output_dir": "where runs go (env PTFORGET_OUTPUT_DIR)",
    "paths.cache_dir": "pretrained-weights cache (env PTFORGET_CACHE_DIR)",
    "logger.kind": "csv | wandb | none",
}
#: the command-line flags shown
FLAGS = [
    ("-m, --multirun", "sweep: key=a,b,c runs one job per value (then ptforget-report <sweep dir> tables them)"),
    ("--cfg job", "print the composed config and exit"),
    ("--hydra-help", "Hydra's own options (hydra.run.dir=..., hydra.searchpath=[...], launchers)"),
]
USAGE = {"train": "ptforget-train [-m] [group=option ...] [key=value ...]",
         "theory": "ptforget-theory [group=option ...] [key=value ...]",
         "check": "ptforget-check [claims=[P1,P10]] [generators=[gmm,flow]] [profile=full] [key=value ...]"}


def claims_text(width: int | None) -> list[str]:
    """The claims ``ptforget-check claims=[...]`` takes: id and title of every registered claim (plugins' too)."""
    from ptforget.check.registry import ordered

    return ["", "claims (claims=[ID,...]; all by default; docs/theory.md states each one):",
            *_columns([(c.id, c.title) for c in ordered()], width)]


def yaml_docs(text: str, prefix: str = "") -> dict[str, str]:
    """``key -> comment`` for every ``key: value  # comment`` line of a YAML file (nested keys dotted, lists and
    the ``defaults`` / ``hydra`` blocks skipped)."""
    docs: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith(("#", "-")):
            continue
        m = re.match(r"^(\s*)([A-Za-z_][\w]*)\s*:(.*)$", raw)
        if not m:
            continue
        indent, name, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, name))
        path = [k for _, k in stack]
        if path[0] in ("defaults", "hydra"):
            continue
        comment = _comment(rest)
        if comment:
            docs[".".join([prefix, *path] if prefix else path)] = comment
    return docs


def _comment(rest: str) -> str:
    quote = None
    for i, ch in enumerate(rest):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1:].strip()
    return ""


def _conf_text(*parts: str) -> str | None:
    """The text of a config file: ptforget's own, else the first one on a plugin's or the command line's search
    path (``pkg://package.conf`` or ``file:///dir``; ``ptforget.plugins``), so a plugin's keys are documented too."""
    from ptforget import plugins

    roots: list[Any] = [resources.files("ptforget.conf")]
    for path in plugins._paths:
        scheme, _, where = path.partition("://")
        try:
            roots.append(resources.files(where) if scheme == "pkg" else Path(where if scheme else path))
        except (ModuleNotFoundError, TypeError, ValueError):
            continue
    for root in roots:
        try:
            return root.joinpath(*parts).read_text(encoding="utf-8")
        except (OSError, FileNotFoundError):
            continue
    return None


def _groups(primary: str) -> list[tuple[str, str | None]]:
    """(group, default option) of the primary config's defaults list, plus the optional groups it can take."""
    text = _conf_text(f"{primary}.yaml") or ""
    out: list[tuple[str, str | None]] = []
    in_defaults = False
    for raw in text.splitlines():
        if raw.startswith("defaults:"):
            in_defaults = True
            continue
        if in_defaults and not raw.startswith((" ", "-")):
            break
        m = re.match(r"^\s*-\s*(override\s+)?([\w/]+)\s*:\s*([\w.]+)", raw)
        if in_defaults and m and not m.group(1) and not m.group(2).startswith("hydra"):
            out.append((m.group(2), None if m.group(3) == "null" else m.group(3)))
    if primary == "train":
        out.append(("hydra/launcher", None))
    return out


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, node


def app_help(primary: str, cfg: DictConfig, options: dict[str, list[str]], width: int | None,
             chosen: dict[str, str] | None = None) -> str:
    """The help text of an app: what it does, usage, flags, groups with options (default starred), and every
    key of ``cfg`` (the composed default config, or with the ``chosen`` group options) with its value and
    documentation."""
    text = _conf_text(f"{primary}.yaml") or ""
    first = next((ln.lstrip("# ").strip() for ln in text.splitlines() if ln.startswith("#")), "")
    groups = _groups(primary)
    docs = yaml_docs(text)
    for group, default in groups:
        option = (chosen or {}).get(group, default)
        body = _conf_text(group, f"{option}.yaml") if option else None
        if body and "@package _global_" not in body:
            docs.update({k: v for k, v in yaml_docs(body, group.replace("/", ".")).items() if k not in docs})
    lines = [first, "", "usage: " + USAGE.get(primary, f"ptforget-{primary} [key=value ...]"), ""]
    lines += _columns([f for f in FLAGS if primary == "train" or not f[0].startswith("-m")], width)
    lines += ["", "config groups (group=option; * = the default):"]
    rows = []
    for group, default in groups:
        opts = options.get(group) or ([default] if default else [])
        shown = ", ".join(f"{o}*" if o == default else o for o in opts) or "(none)"
        rows.append((group, shown + ("" if default or group.startswith("hydra/") else "  (none by default)")))
    lines += _columns(rows, width)
    lines += ["", "keys (key=value; the default config's values):"]
    container = OmegaConf.to_container(cfg, resolve=False)
    keys = []
    for key, value in _leaves({k: v for k, v in container.items() if k != "hydra"}):
        if key.rsplit(".", 1)[-1] == "_target_":
            continue
        doc = docs.get(key) or DOCS.get(key, "")
        keys.append((f"{key}={_value(value)}", doc))
    lines += _columns(keys, width)
    return "\n".join(lines)


def _value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return str(v)


def _columns(rows: list[tuple[str, str]], width: int | None, cap: int = 44) -> list[str]:
    """Two columns: the left padded to the longest entry (at most ``cap``); the right wrapped under itself to
    ``width`` (None: every line whole)."""
    if not rows:
        return []
    left = min(max(len(a) for a, _ in rows), cap)
    out = []
    for a, b in rows:
        head = f"  {a:<{left}}  "
        if len(a) > left:
            out.append(f"  {a}")
            head = " " * (left + 4)
        if width is None or not b or len(head) + len(b) <= width or width - len(head) < 24:
            out.append((head + b).rstrip())
            continue
        wrapped = textwrap.wrap(b, width - len(head))
        out.append(head + wrapped[0])
        out += [" " * len(head) + w for w in wrapped[1:]]
    return out


def print_help(primary: str, argv: list[str]) -> None:
    """Compose the app's default config (with any group choices and search path on the command line) and print
    its help."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from ptforget.cli import CONFIG_MODULE
    from ptforget.terminal import width

    over = [a for a in argv if "=" in a and not a.startswith("-")]
    gh = GlobalHydra.instance()
    gh.clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            options = {g: sorted(loader.get_group_options(g)) for g, _ in _groups(primary)}
            try:
                cfg = compose(primary, overrides=over)
            except Exception:
                cfg = compose(primary)
    finally:
        gh.clear()
    chosen = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in over if a.split("=", 1)[0] in options}
    text = app_help(primary, cfg, options, width(), chosen)
    if primary == "check":
        text += "\n" + "\n".join(claims_text(width()))
    print(text)
