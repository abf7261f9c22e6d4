"""What a claim sees while it declares runs and judges them: the profile, the families, composed configs, the
theory config of a run, and where figures go."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

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
        self._configs: dict[tuple[RunSpec, int | None], DictConfig] = {}

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

    # ------------------------------------------------------------------ configs
    def compose(self, overrides: list[str]) -> DictConfig:
        """A training config composed from ``overrides`` (nothing of the check's own settings added)."""
        return self._compose(list(overrides))

    def overrides(self, spec: RunSpec, seed: int = 0, seeds: int = 1) -> list[str]:
        o = [*self.base_overrides(spec.family), *spec.overrides, f"seed={int(seed)}"]
        return o + ([f"seeds={int(seeds)}"] if seeds > 1 else [])

    def config(self, spec: RunSpec, seed: int = 0, seeds: int = 1) -> DictConfig:
        """The composed training config of ``spec`` (seed ``seed``; ``seeds`` > 1: a batched run)."""
        key = (spec, seed, seeds)
        if key not in self._configs:
            self._configs[key] = self._compose(self.overrides(spec, seed, seeds))
        return self._configs[key]

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


def families_of(specs: Sequence[RunSpec]) -> list[str]:
    return list(dict.fromkeys(s.family for s in specs))
