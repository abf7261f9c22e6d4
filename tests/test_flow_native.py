"""The native flow path (ptforget.generators.flow_native) against zuko's own objects: for every flow configuration
it covers, log-densities, samples, sampling log-densities and gradients equal zuko's, one run and batched members
alike; a configuration it does not cover says why and its members go through vmap."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import zuko
from zuko.transforms import MonotonicRQSTransform

from ptforget.ensemble import SeedEnsemble, batched
from ptforget.generators import flow_native
from ptforget.generators.flow import Flow
from ptforget.tasks import TwoModeTask

#: (name, dim, constructor): NSF with various bins / transforms / hidden sizes / passes, a tail bound, a residual
#: masked MLP, another activation, fully autoregressive MAF, RealNVP
CONFIGS = [
    ("nsf-1d-8bins", 1, lambda: zuko.flows.NSF(1, bins=8, transforms=2, hidden_features=[32, 32], passes=2)),
    ("nsf-1d-3bins-4t", 1, lambda: zuko.flows.NSF(1, bins=3, transforms=4, passes=2)),
    ("nsf-2d", 2, lambda: zuko.flows.NSF(2, bins=8, transforms=2, hidden_features=[16, 16], passes=2)),
    ("nsf-3d-12bins-3t", 3, lambda: zuko.flows.NSF(3, bins=12, transforms=3, hidden_features=[8, 8, 8], passes=2)),
    ("nsf-3d-autoregressive", 3, lambda: zuko.flows.NSF(3, bins=5, transforms=2, hidden_features=[16])),
    ("nsf-2d-residual-elu", 2, lambda: zuko.flows.NSF(2, transforms=2, hidden_features=[16, 16], passes=2,
                                                      residual=True, activation=torch.nn.ELU)),
    ("maf-2d-bound3", 2, lambda: zuko.flows.MAF(2, transforms=2, hidden_features=[16], passes=2,
                                                univariate=partial(MonotonicRQSTransform, bound=3.0, slope=1e-2),
                                                shapes=[(6,), (6,), (5,)])),
    ("maf-affine-3d", 3, lambda: zuko.flows.MAF(3, transforms=2, hidden_features=[16])),
    ("realnvp-2d", 2, lambda: zuko.flows.RealNVP(2, transforms=3, hidden_features=[16, 16])),
    ("realnvp-3d", 3, lambda: zuko.flows.RealNVP(3, transforms=2, hidden_features=[8])),
]


def _close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    """Gradients agree to float tolerance: the difference is small against the gradient's norm (float32 sums of
    hundreds of terms reorder differently)."""
    return bool((a - b).norm() <= tol * b.norm() + 1e-6)


def _perturbed(make, size: int | None = None):
    torch.manual_seed(0)
    flow = make()
    assert flow_native.prepare(flow) is None
    with torch.no_grad():  # off zuko's near-identity init, so every bin and every weight matters
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return flow


def test_native_path_equals_zuko_for_every_covered_flow():
    """One looped property test: for each configuration, log_prob on points inside and outside the spline bound,
    the sample and its log-density from the same base draws, and the gradients of both, equal zuko's."""
    for name, dim, make in CONFIGS:
        flow = _perturbed(make)
        x = torch.randn(200, dim) * 3  # some beyond the tail bound: the identity tails
        ref = flow().log_prob(x)
        ref_grad = torch.autograd.grad(ref.sum(), list(flow.parameters()))
        nat = flow_native.log_prob(flow, x)
        nat_grad = torch.autograd.grad(nat.sum(), list(flow.parameters()))
        assert torch.allclose(nat, ref, atol=1e-5, rtol=1e-5), name
        for a, b in zip(nat_grad, ref_grad, strict=True):
            assert _close(a, b, 1e-4), name
        z = torch.randn(200, dim)
        dist = flow()
        y_ref, ladj = dist.transform.inv.call_and_ladj(z)
        lp_ref = dist.base.log_prob(z) - ladj
        y, lp = flow_native.sample_and_log_prob(flow, z)
        assert torch.allclose(y, y_ref, atol=1e-5, rtol=1e-5), name
        assert torch.allclose(lp, lp_ref, atol=1e-4, rtol=1e-4), name
        g_ref = torch.autograd.grad((y_ref.square().sum() + lp_ref.sum()), list(flow.parameters()))
        g = torch.autograd.grad((y.square().sum() + lp.sum()), list(flow.parameters()))
        for a, b in zip(g, g_ref, strict=True):
            assert _close(a, b, 1e-4), name


def test_batched_members_equal_zuko_member_by_member():
    """Stacked parameters (S, ...) through the native path give, for member k, what zuko gives with member k's
    parameters: log-densities and the sample from member k's base draws."""
    from ptforget.generators.base import Generator

    class Holder(Generator):
        natively_batched = True

        def __init__(self, flow):
            super().__init__()
            self.flow = flow

    S = 3
    for name, dim, make in CONFIGS:
        flow = _perturbed(make)
        stacked = Holder(flow).stack(S)
        with torch.no_grad():
            for p in stacked.parameters():
                p.add_(0.2 * torch.randn_like(p))
        x, z = torch.randn(S, 50, dim) * 2, torch.randn(S, 50, dim)
        lp = flow_native.log_prob(stacked.flow, x)
        y, lpy = flow_native.sample_and_log_prob(stacked.flow, z)
        assert lp.shape == (S, 50) and y.shape == (S, 50, dim)
        for k in range(S):
            solo = make()
            with torch.no_grad():
                for p, q in zip(solo.parameters(), stacked.parameters(), strict=True):
                    p.copy_(q[k])
            assert torch.allclose(lp[k], solo().log_prob(x[k]), atol=1e-5, rtol=1e-5), name
            y_ref, ladj = solo().transform.inv.call_and_ladj(z[k])
            assert torch.allclose(y[k], y_ref, atol=1e-5, rtol=1e-5), name
            assert torch.allclose(lpy[k], solo().base.log_prob(z[k]) - ladj, atol=1e-4, rtol=1e-4), name


def test_uncovered_flows_name_their_reason():
    assert "transform" in flow_native.prepare(zuko.flows.NAF(2, transforms=1))
    assert "univariate" in flow_native.prepare(zuko.flows.MAF(2, univariate=lambda s, t: None))
    base = zuko.flows.UnconditionalDistribution(zuko.distributions.DiagNormal, torch.zeros(2), torch.ones(2))
    assert "base" in flow_native.prepare(zuko.flows.Flow([zuko.flows.MaskedAutoregressiveTransform(2)], base))


def test_a_flow_the_native_path_does_not_cover_falls_back_to_vmap_with_the_same_results():
    """The same flow, native and forced through vmap (as an uncovered configuration would be), gives the same
    member log-densities; the fallback is a SeedEnsemble."""
    task = TwoModeTask(dim=2, delta=4.0)
    torch.manual_seed(0)
    gen = Flow(task, transforms=2, hidden=[16], pretrain={"steps": 0})
    assert gen.natively_batched and gen.native_reason is None
    native = batched(gen, 3)
    assert not isinstance(native, SeedEnsemble)
    gen.natively_batched, gen.native_reason = False, "forced for the test"
    vmapped = batched(gen, 3)
    assert isinstance(vmapped, SeedEnsemble)
    x = torch.randn(3, 40, 2)
    assert torch.allclose(native.log_prob(x), vmapped.log_prob(x), atol=1e-5)


@pytest.mark.parametrize("dim", [1, 2])
def test_flow_generator_sampling_density_matches_its_log_prob(dim):
    """Flow.rsample_and_log_prob (native) returns the density log_prob gives at the samples, batched or not."""
    task = TwoModeTask(dim=dim, delta=4.0)
    torch.manual_seed(1)
    gen = Flow(task, transforms=2, hidden=[16], pretrain={"steps": 0})
    for g in (gen, batched(gen, 4)):
        x, lp = g.rsample_and_log_prob(64)
        assert x.shape == (*g.batch_shape, 64, dim)
        assert torch.allclose(lp, g.log_prob(x), atol=1e-4)
