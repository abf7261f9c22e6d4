"""ptforget: a PyTorch post-training testbed for studying forgetting against the two-mode theory."""

__version__ = "0.1.0"
