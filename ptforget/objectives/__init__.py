"""Post-training objectives."""

from ptforget.objectives.base import Objective
from ptforget.objectives.divergence import ForwardKL, ReverseKL

__all__ = ["ForwardKL", "Objective", "ReverseKL"]
