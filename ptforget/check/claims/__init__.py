"""The built-in claims, one module per family of claims; importing a module registers its claims."""

from ptforget.check.claims import (
    chen,
    figures,
    forward_kl,
    mechanism,
    methods,
    overlap,
    rate,
    replay,
    reverse_kl,
    starvation,
)

__all__ = ["chen", "figures", "forward_kl", "mechanism", "methods", "overlap", "rate", "replay", "reverse_kl",
           "starvation"]
