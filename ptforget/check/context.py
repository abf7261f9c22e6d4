"""What a claim sees while it declares runs and judges them: the profile, the families, composed configs, the
theory config of a run, and where figures go."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptforget.check.gates import thresholds
from ptforget.check.runs import RunSpec

FAMILIES = ("gmm", "mdn", "flow", "realnvp")
#: normalizing-flow families
FLOWS = ("flow", "realnvp")


class Context:
    """The check's configuration seen by claims.

    Args:
        cfg: the composed check config (``conf/check.yaml``).
        out: the check's output folder.
        compose: training-config composer, ``compose(overrides) -> DictConfig`` (Hydra's compose API).
    """

    def __init__(self, cfg: DictConfig, out: Path, compose: Callable[[list[str]], DictConfig]) -> None:
        self.cfg = cfg
        self.profile = cfg.profile
        self.out = Path(out)
        self._compose = compose
        self._configs: dict[tuple, DictConfig] = {}
        #: start-gate records of the results judged (``gates.start_record``), by (family, config label)
        self.fidelity: dict[tuple[str, str], dict[str, Any]] = {}

    # ------------------------------------------------------------------ profile
    @property
    def families(self) -> list[str]:
        """The generator families that claims applying to every family run on (``generators`` in the config)."""
        return [str(g) for g in self.cfg.generators]

    def family(self, family: str) -> DictConfig:
        """The profile's settings of a family: seeds, steps, overrides."""
        return self.profile.families[family]

    def seeds(self, family: str) -> int:
        """Seeds of a family's runs in this profile."""
        return int(self.family(family).seeds)

    def steps(self, family: str) -> int:
        return int(self.family(family).steps)

    def control_steps(self, steps: int) -> int:
        """Length of a longer-run control: ``profile.control_factor`` x the run's own steps (did the gap close
        with more training, or does the run settle elsewhere?)."""
        return round(float(self.profile.get("control_factor", 3)) * steps)

    def sgd(self, family: str, batch: bool = True) -> list[str]:
        """Overrides for plain SGD at the family's profile settings (the theory's dynamics: gradient descent);
        ``batch`` False for objectives whose batch is groups x group size."""
        s = self.family(family).sgd
        out = ["optimizer=sgd", f"optimizer.lr={float(s.lr)}", "optimizer.schedule=constant",
               f"trainer.max_steps={int(s.steps)}"]
        return out + ([f"objective.batch={int(s.batch)}"] if batch else [])

    def seeds_of(self, spec: RunSpec) -> int:
        return int(spec.seeds) if spec.seeds is not None else self.seeds(spec.family)

    def base_overrides(self, family: str) -> list[str]:
        """Settings every training run of the check shares, then the profile's settings for the family."""
        fam = self.family(family)
        return ["logger=none", "quiet=true", f"threads={int(self.cfg.threads)}", f"study={self.cfg.study}",
                f"generator={family}", f"trainer.max_steps={int(fam.steps)}",
                f"eval_every={int(self.profile.get('eval_every', 50))}", *[str(x) for x in fam.get("overrides", [])],
                *[str(x) for x in self.cfg.get("train_overrides", [])]]

    def gates(self) -> dict[str, float]:
        """The profile's gate thresholds (``profile.gates``, defaults in ``ptforget.check.gates``)."""
        return thresholds(self.profile)

    def fidelity_rows(self) -> list[dict[str, Any]]:
        return [self.fidelity[k] for k in sorted(self.fidelity)]

    # ------------------------------------------------------------------ configs
    def compose(self, overrides: list[str]) -> DictConfig:
        """A training config composed from ``overrides`` (nothing of the check's own settings added)."""
        return self._compose(list(overrides))

    def overrides(self, spec: RunSpec, seed: int = 0, seeds: int = 1) -> list[str]:
        o = [*self.base_overrides(spec.family), *spec.overrides, f"seed={int(seed)}"]
        return o + ([f"seeds={int(seeds)}"] if seeds > 1 else [])

    def config(self, spec: RunSpec, seed: int = 0, seeds: int = 1) -> DictConfig:
        """The composed training config of ``spec`` (seed ``seed``; ``seeds`` > 1: a batched run).

        Hydra composes each distinct list of overrides once (~0.1 s a call: the check's planning and judging
        would otherwise spend most of their time composing); another seed or member count is the same config
        with ``seed`` / ``seeds`` set, which is exactly what composing with those overrides gives (no other key
        interpolates them; a test compares the two).
        """
        base = tuple(self.overrides(spec))
        if base not in self._configs:
            self._configs[base] = self._compose_fast(list(base))
        key = (base, int(seed), int(seeds))
        if key not in self._configs:
            cfg = self._configs[base]
            if (seed, seeds) != (0, 1):
                cfg = cfg.copy()
                cfg.seed, cfg.seeds = int(seed), int(seeds)
            self._configs[key] = cfg
        return self._configs[key]

    def _compose_fast(self, overrides: list[str]) -> DictConfig:
        """Hydra's composition, with its expensive part done once per set of config-group choices: the groups
        (``objective=sdft``, ...) are composed by Hydra, then the value overrides are applied the way Hydra
        applies them (parsed by its override parser, ``OmegaConf.update(..., merge=True)`` in order on the
        struct config). Anything else (``+key``, ``~key``, a package) goes through Hydra whole."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        groups = _config_groups()
        parsed = OverridesParser.create().parse_overrides(overrides)
        if any(o.is_add() or o.is_force_add() or o.is_delete() or o.package is not None
               or o.key_or_group.split(".")[0] == "hydra" for o in parsed):
            return self._compose(overrides)
        choice = tuple(o.input_line for o in parsed if o.key_or_group in groups)
        key = ("groups", choice)
        if key not in self._configs:
            self._configs[key] = self._compose(list(choice))
        cfg = self._configs[key].copy()
        for o in parsed:
            if o.key_or_group not in groups:
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
        return cfg

    def theory(self, spec: RunSpec, **extra: Any):
        """The theory engine's TheoryConfig for the run of ``spec`` (``extra`` overrides fields)."""
        from ptforget.bridge import theory_config

        return theory_config(self.config(spec), **extra)

    def value(self, spec: RunSpec, key: str) -> Any:
        """A value of the spec's composed config, e.g. ``ctx.value(spec, "task.delta")``."""
        return OmegaConf.select(self.config(spec), key, throw_on_missing=True)

    # ------------------------------------------------------------------ figures
    def figure_path(self, name: str) -> Path:
        path = self.out / "figures" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def rel(self, path: str | Path) -> str:
        return Path(path).relative_to(self.out).as_posix()

    @property
    def plots(self) -> Any:
        from ptforget import plots

        return plots


@functools.cache
def _config_groups() -> frozenset[str]:
    """The training config's groups (folders of ``ptforget.conf``)."""
    from importlib import resources

    return frozenset(p.name for p in resources.files("ptforget.conf").iterdir() if p.is_dir() and p.name != "hydra"
                     and not p.name.startswith("_"))


def families_of(specs: Sequence[RunSpec]) -> list[str]:
    return list(dict.fromkeys(s.family for s in specs))
