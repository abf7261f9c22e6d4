"""Exact theory engine for the two-mode forgetting model (docs/theory.md): overlaps, population flows, local
geometry and the closed forms of the near-on-policy methods. Imports only torch, numpy and ptforget.errors.

The claims P1-P17 themselves (what each predicts for a config, and how it is checked against trained models) are
declared in ``ptforget.check.claims``; ``ptforget-theory`` prints their predictions.
"""

from .config import Prediction, TheoryConfig, format_predictions, predictions_to_json
from .methods import (
    logit,
    oapl_weight,
    sdft_anchored_weight,
    sdft_weight_after_refreshes,
    sigmoid,
    starvation_probability,
    ttt_fixed_point,
    ttt_lower_bound,
)
from .overlap import (
    bhattacharyya,
    bhattacharyya_distance,
    bhattacharyya_gaussians,
    bhattacharyya_quadrature,
    chi2_overlap,
    hellinger_squared,
    misassignment,
    misassignment_bound,
    misassignment_general,
)
from .population import (
    PopulationSpec,
    contraction_factor,
    fisher_condition_number,
    fisher_eigenvalues,
    fisher_information,
    hessian_at_optimum,
    population_flow,
    population_gradient,
    population_loss,
    replay_importance_stats,
    theta_star,
)

__all__ = [
    "PopulationSpec",
    "Prediction",
    "TheoryConfig",
    "bhattacharyya",
    "bhattacharyya_distance",
    "bhattacharyya_gaussians",
    "bhattacharyya_quadrature",
    "chi2_overlap",
    "contraction_factor",
    "fisher_condition_number",
    "fisher_eigenvalues",
    "fisher_information",
    "format_predictions",
    "hellinger_squared",
    "hessian_at_optimum",
    "logit",
    "misassignment",
    "misassignment_bound",
    "misassignment_general",
    "oapl_weight",
    "population_flow",
    "population_gradient",
    "population_loss",
    "predictions_to_json",
    "replay_importance_stats",
    "sdft_anchored_weight",
    "sdft_weight_after_refreshes",
    "sigmoid",
    "starvation_probability",
    "theta_star",
    "ttt_fixed_point",
    "ttt_lower_bound",
]
