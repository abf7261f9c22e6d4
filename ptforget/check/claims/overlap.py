"""Overlap claims: misassignment and the R0 bound P9, the Bhattacharyya coefficient P17 (paper D3, D4, R0)."""

from __future__ import annotations

import math

import torch

from ptforget.check import rules
from ptforget.check.claims.common import exact_spec, gmm_at
from ptforget.check.registry import Claim, Row, register
from ptforget.theory import (
    Prediction,
    TheoryConfig,
    bhattacharyya,
    bhattacharyya_distance,
    bhattacharyya_quadrature,
    hellinger_squared,
    misassignment,
    misassignment_bound,
    misassignment_general,
)


def p9_misassignment(cfg: TheoryConfig) -> Prediction:
    """P9: exact misassignment probabilities at the truth and their BC bounds (R0)."""
    p = Prediction("P9", "Misassignment", "m_o->n <= sqrt((1-b)/b) BC, m_n->o <= sqrt(b/(1-b)) BC", "V / R✓")
    d, b = cfg.delta, cfg.beta_star
    for direc, tag in (("old_to_new", "o_to_n"), ("new_to_old", "n_to_o")):
        p.add(f"m_{tag}", misassignment(d, b, direc), "", "soft (logistic-normal)")
        p.add(f"m_{tag}_hard", misassignment(d, b, direc, hard=True), "", "P(wrong resp > 1/2)")
        p.add(f"m_{tag}_bound", misassignment_bound(d, b, direc), "", "R0")
    return p


def p17_bc_closed_form(cfg: TheoryConfig) -> Prediction:
    """P17: BC of equal-covariance Gaussians = exp(-Delta^2/8)."""
    p = Prediction("P17", "Bhattacharyya coefficient", "int sqrt(phi1 phi2) = e^{-Delta^2/8}", "R✓")
    p.add("bc_closed_form", bhattacharyya(cfg.delta), "", "")
    p.add("bc_quadrature", bhattacharyya_quadrature(cfg.delta), "", "1-D Gauss-Legendre")
    p.add("bhattacharyya_distance", bhattacharyya_distance(cfg.delta), "", "Delta^2/8")
    p.add("hellinger_squared", hellinger_squared(cfg.delta), "", "2(1 - BC)")
    return p


@register
class Misassignment(Claim):
    """Misassignment of the learned model: MC vs the exact logistic-normal formula, and the R0 bound."""

    id, title, order = "P9", "Misassignment and the R0 bound", 9

    def spec(self, ctx):
        return exact_spec(ctx, "p9_misassign", 4.0, 0.5, 0.5, 300, 50)

    def runs(self, ctx):
        return [self.spec(ctx)]

    def rows(self, ctx, got):
        spec = self.spec(ctx)
        tc = ctx.theory(spec)
        errs, bound_ok = [], []
        for r in got[spec].runs:
            gen, task = gmm_at(r, tc.delta, tc.beta_star)
            torch.manual_seed(1)
            x = task.p_old.sample((200_000,))
            wn = gen.responsibilities(x)[:, 1].detach()
            mc, se = float(wn.mean()), float(wn.std() / math.sqrt(wn.numel()))
            exact = misassignment_general([float(gen.mu_old.detach())], [float(gen.mu_rest.detach()[0])],
                                          float(gen.weights().detach()[0]), [float(task.mu_old)], [float(task.mu_new)],
                                          "old_to_new")
            errs.append((mc - exact) / se)
            bound_ok.append(float(misassignment_bound(tc.delta, tc.beta_star, "old_to_new") - mc))
        yield Row("Misassignment m_o->n: exact formula", "gmm", "identity", f"learned theta, Delta={tc.delta:g}",
                  "(MC - exact) / standard error", errs, rules.near(0.0, 4.0, "4 standard errors"))
        yield Row("Misassignment below the R0 bound sqrt((1-b)/b) BC", "gmm", "identity", f"Delta={tc.delta:g}",
                  "bound - measured", bound_ok, rules.at_least(0.0, "a proven inequality"))

    predict = staticmethod(p9_misassignment)


@register
class BhattacharyyaCoefficient(Claim):
    """BC of equal-covariance Gaussians is exp(-Delta^2/8): the closed form against quadrature (an identity)."""

    id, title, order = "P17", "Bhattacharyya coefficient", 17

    def rows(self, ctx, got):
        for delta in (2.0, 4.0, 6.0):
            q = bhattacharyya_quadrature(delta)
            yield Row("BC = exp(-Delta^2/8)", "engine", "identity", f"Delta={delta:g}",
                      "1-D Gauss-Legendre quadrature of sqrt(phi_0 phi_Delta)", [q],
                      rules.relative(float(bhattacharyya(delta)), 1e-8, "quadrature error", exact=True))

    predict = staticmethod(p17_bc_closed_form)
