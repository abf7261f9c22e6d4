"""Post-training objectives."""

from ptforget.objectives.base import Objective
from ptforget.objectives.divergence import ForwardKL, ReverseKL
from ptforget.objectives.oapl import OAPL
from ptforget.objectives.replay import ForwardKLReplay, ReverseKLReplay
from ptforget.objectives.sdft import SDFT
from ptforget.objectives.ttt_discover import TTTDiscover

__all__ = ["OAPL", "SDFT", "ForwardKL", "ForwardKLReplay", "Objective", "ReverseKL", "ReverseKLReplay", "TTTDiscover"]
