"""The built-in claims, one module per family of claims; importing a module registers its claims."""

from ptforget.check.claims import chen, figures, forward_kl, methods, overlap, replay, reverse_kl

__all__ = ["chen", "figures", "forward_kl", "methods", "overlap", "replay", "reverse_kl"]
