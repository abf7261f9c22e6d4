"""Map a composed training config onto the theory engine's TheoryConfig (same conf/ groups as training)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptforget.build import target_class
from ptforget.errors import ConfigError
from ptforget.theory.config import TheoryConfig


def theory_config(cfg: DictConfig, **extra: Any) -> TheoryConfig:
    """TheoryConfig for the task, GMM parametrisation, optimizer and objective of ``cfg``.

    The theory describes plain gradient descent on the two-component equal-covariance family, so the step is
    the optimizer's lr (a learned run is directly comparable with ``optimizer=sgd`` and a full-batch-like
    estimator). ``cfg.theory`` (if present) and ``extra`` override any TheoryConfig field.
    """
    task = cfg.task
    gen = cfg.generator
    obj = cfg.objective
    lr = cfg.optimizer.get("lr") or gen.get("default_lr", 0.05)
    d: dict[str, Any] = {
        "dim": task.dim, "delta": float(task.delta), "sigma": float(task.sigma), "beta_star": float(task.beta_star),
        "beta0": None if task.beta0 is None else float(task.beta0), "new_offset": float(task.new_offset),
        "lr": float(lr), "steps": int(cfg.trainer.max_steps), "batch": int(obj.get("batch", 16)),
        "replay": 0.0,  # no replay unless the objective says so (its theory_fields)
    }
    if "weight" in gen:
        d["weight"] = gen.weight
    if gen.get("lr_mult") is not None:
        d["lr_mult"] = OmegaConf.to_container(gen.lr_mult, resolve=True)
    if "train_means" in gen:
        d["train_means"] = bool(gen.train_means)
    objective_class = target_class(obj)
    if objective_class is not None and hasattr(objective_class, "theory_fields"):
        d.update(objective_class.theory_fields(OmegaConf.to_container(obj, resolve=True), int(cfg.trainer.max_steps)))
    if cfg.get("theory"):
        d.update(OmegaConf.to_container(cfg.theory, resolve=True))
    d.update(extra)
    try:
        return TheoryConfig.from_mapping(d, ignore_unknown=False)
    except ValueError as err:
        raise ConfigError("theory", d, str(err)) from None
