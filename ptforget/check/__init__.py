from ptforget.check._legacy import *  # noqa: F403  (temporary)
from ptforget.check._legacy import interval, judge, print_verdicts, run_check, selected_claims  # noqa: F401


def validate_check_config(cfg):
    from ptforget.errors import check

    for key in ("seeds", "flow_seeds", "steps", "flow_steps", "flow_pretrain_steps", "exact_batch"):
        if key in cfg.profile:
            v = cfg.profile[key]
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"profile.{key}", v, "an integer >= 1")
    selected_claims(cfg)
