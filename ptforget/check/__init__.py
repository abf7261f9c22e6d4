"""ptforget-check: every claim of the two-mode theory beside what learned generators do.

The package shows the pipeline: ``claims/`` declares what each claim needs and how it is judged (``registry``,
``rules``), ``plan`` composes and deduplicates the runs, ``executors`` run them (inline, a process pool, submitit),
``gates`` and ``judge`` decide each row's verdict, ``engine`` runs the stages, ``render`` writes report.md,
verdicts.json and the README's verdict block.
"""

from ptforget.check.engine import run_check, selected_claims, validate_check_config
from ptforget.check.registry import REGISTRY, Claim, Row, Section, claim, ordered, predictions, register
from ptforget.check.render import print_table
from ptforget.check.rules import Rival, at_least, at_most, between, discriminate, near, relative
from ptforget.check.runs import Result, Run, RunSpec

__all__ = ["REGISTRY", "Claim", "Result", "Rival", "Row", "Run", "RunSpec", "Section", "at_least", "at_most", "between",
           "claim", "discriminate", "near", "ordered", "predictions", "print_table", "register", "relative",
           "run_check", "selected_claims", "validate_check_config"]
