"""Hydra config package (package data). Importing it only quiets one known Hydra warning.

The launcher configs in ``hydra/launcher/`` (joblib, submitit_local, submitit_slurm) share their names with the
plugins' structured configs, so Hydra validates each file against the plugin's schema: a misspelt key fails at
composition, not at launch. Hydra 1.3 flags that name matching as deprecated on every composition (once per
job in a sweep); it is intended here, so that one warning is filtered. Hydra imports this package before it
reads any config from it, in the launching process and in joblib/submitit workers alike.
"""

import warnings

warnings.filterwarnings(
    "ignore",
    message=r"\s*'hydra/launcher/(joblib|submitit_local|submitit_slurm)' is validated against ConfigStore schema",
    category=UserWarning,
)
