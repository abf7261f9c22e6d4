"""Map a composed training config onto the theory engine's TheoryConfig (same conf/ groups as training)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from ptforget.build import target_class
from ptforget.errors import ConfigError
from ptforget.theory.config import TheoryConfig


def theory_fields(cfg: DictConfig, **extra: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(TheoryConfig fields, the config key each field came from) for the task, GMM parametrisation, optimizer and
    objective of ``cfg``; ``cfg.theory`` (if present) and ``extra`` override any field."""
    task = cfg.task
    gen = cfg.generator
    obj = cfg.objective
    lr_key = "optimizer.lr" if cfg.optimizer.get("lr") else "generator.default_lr"
    lr = cfg.optimizer.get("lr") or gen.get("default_lr", 0.05)
    d: dict[str, Any] = {
        "dim": task.dim, "delta": _real(task.delta), "sigma": _real(task.sigma), "beta_star": _real(task.beta_star),
        "beta0": _real(task.beta0), "new_offset": _real(task.new_offset), "lr": _real(lr),
        "steps": cfg.trainer.max_steps, "batch": obj.get("batch", 16),
        "replay": 0.0,  # no replay unless the objective says so (its theory_fields)
    }
    if task.get("covariance") is not None:
        d["covariance"] = OmegaConf.to_container(task.covariance, resolve=True) if OmegaConf.is_config(
            task.covariance) else task.covariance
    keys = {k: f"task.{k}" for k in ("dim", "delta", "sigma", "covariance", "beta_star", "beta0", "new_offset")}
    keys.update(lr=lr_key, steps="trainer.max_steps", batch="objective.batch")
    for field in ("weight", "train_means"):
        if field in gen:
            d[field], keys[field] = gen[field], f"generator.{field}"
    if gen.get("lr_mult") is not None:
        d["lr_mult"], keys["lr_mult"] = OmegaConf.to_container(gen.lr_mult, resolve=True), "generator.lr_mult"
    objective_class = target_class(obj)
    if objective_class is not None and hasattr(objective_class, "theory_fields"):
        fields = objective_class.theory_fields(OmegaConf.to_container(obj, resolve=True), int(cfg.trainer.max_steps))
        d.update(fields)
        named = getattr(objective_class, "theory_keys", {})
        keys.update({k: named.get(k, "objective") for k in fields})
    if cfg.get("theory"):
        theory = OmegaConf.to_container(cfg.theory, resolve=True)
        d.update(theory)
        keys.update({k: f"theory.{k}" for k in theory})
    d.update(extra)
    keys.update({k: k for k in extra})
    return d, keys


def _real(v: Any) -> Any:
    """A number as a float (the theory's fields are floats); anything else unchanged, for TheoryConfig to refuse."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v


def theory_config(cfg: DictConfig, *, whitened: bool = False, **extra: Any) -> TheoryConfig:
    """TheoryConfig for the task, GMM parametrisation, optimizer and objective of ``cfg``.

    The theory describes plain gradient descent on the two-component equal-covariance family, so the step is
    the optimizer's lr (a learned run is directly comparable with ``optimizer=sgd`` and a full-batch-like
    estimator). ``cfg.theory`` (if present) and ``extra`` override any TheoryConfig field. A bad value raises a
    ConfigError naming the config key it came from.

    A ``task.covariance`` that is not sigma^2 I is computed in whitened coordinates (``TheoryConfig.units``); its
    data-unit numbers are mapped back by ``ptforget.theory.config.in_data_units``. Only callers that do so pass
    ``whitened=True`` (``ptforget-theory``); the others (the check, whose claims compare the engine's data units
    with trained runs) get a ConfigError naming the key instead of a silently isotropic answer.
    """
    d, keys = theory_fields(cfg, **extra)
    try:
        tc = TheoryConfig.from_mapping(d, ignore_unknown=False)
    except ConfigError as err:  # lr_multipliers names its own key ("lr_mult.<group>")
        base = keys.get("lr_mult", "theory.lr_mult")
        raise ConfigError(err.key.replace("lr_mult", base, 1), err.value, err.allowed) from None
    except ValueError as err:
        msg = str(err)
        field = msg.split(" ", 1)[0]
        if msg.startswith("unknown TheoryConfig keys"):
            unknown = [k for k in d if k not in {f.name for f in TheoryConfig.__dataclass_fields__.values()}]
            key = keys.get(unknown[0], f"theory.{unknown[0]}") if unknown else "theory"
            allowed = "a TheoryConfig field: " + ", ".join(sorted(TheoryConfig.__dataclass_fields__))
            raise ConfigError(key, d.get(unknown[0]) if unknown else None, allowed) from None
        if field in d:
            detail = msg.split(" must ", 1)[1].rsplit(", got", 1)[0] if " must " in msg else msg
            for verb, noun in (("be at most ", "a number <= "), ("be ", ""), ("lie in ", "a number in "),
                               ("hold ", "a list of ")):
                if detail.startswith(verb):
                    detail = noun + detail.removeprefix(verb)
                    break
            raise ConfigError(keys.get(field, f"theory.{field}"), d[field], detail) from None
        raise ConfigError("theory", OmegaConf.to_container(cfg.get("theory") or {}), msg) from None
    if tc.whitened and not whitened:
        raise ConfigError(keys["covariance"], d["covariance"], "null or an isotropic covariance (s^2 I) here: the "
                          "check's claims compare data-unit predictions with trained runs; ptforget-theory computes a "
                          "full covariance in whitened coordinates")
    return tc
