"""zuko coupling flows evaluated with a member dimension: zuko's own modules and parameters, run as batched matmuls
and a batched rational-quadratic spline, with no transform or distribution objects built per call.

A flow's parameters may carry leading member dimensions (``Generator.stack``: weights (S, out, in), spline
parameters (S, d, K)); inputs then carry them too (x (S, n, d)). The arithmetic is zuko's, line for line
(``MonotonicRQSTransform``, ``MonotonicAffineTransform``, ``AutoregressiveTransform``'s fixed-point inverse,
``CouplingTransform``), so the densities and samples equal zuko's to float tolerance (tests/test_flow_native.py).

Covered: masked autoregressive transforms (NSF / MAF, any ``passes``: coupling at passes=2), element-wise transforms
(zuko's form of a 1-D NSF), general coupling transforms (RealNVP / NICE), with a rational-quadratic spline (any bins,
bound, slope) or a monotonic affine univariate; hidden layers of any widths, parameter-free activations, residual
blocks; a diagonal-normal base. ``prepare(flow)`` names anything else, and such a flow goes through ``vmap``
(``ptforget.ensemble.SeedEnsemble``).
"""

from __future__ import annotations

import functools
import math

import torch
import zuko
from torch import Tensor, nn
from torch.nn import functional as F
from zuko.flows.autoregressive import MaskedAutoregressiveTransform
from zuko.flows.coupling import GeneralCouplingTransform
from zuko.flows.gaussianization import ElementWiseTransform
from zuko.transforms import MonotonicAffineTransform, MonotonicRQSTransform
from zuko.utils import unpack

_LINEAR = (nn.Linear, zuko.nn.Linear)
_UNIVARIATE_KEYS = {MonotonicRQSTransform: {"bound", "slope"}, MonotonicAffineTransform: {"slope"}}
_DEFAULTS = {MonotonicRQSTransform: {"bound": 5.0, "slope": 1e-3}, MonotonicAffineTransform: {"slope": 1e-3}}


def _univariate(t: nn.Module) -> tuple[type, dict[str, float]] | str:
    u = t.univariate
    fn, args, kw = (u.func, u.args, dict(u.keywords)) if isinstance(u, functools.partial) else (u, (), {})
    if fn not in _UNIVARIATE_KEYS:
        return f"univariate transform {getattr(fn, '__name__', fn)!r} (spline or affine only)"
    if args or set(kw) - _UNIVARIATE_KEYS[fn]:
        return f"univariate arguments {args or sorted(set(kw) - _UNIVARIATE_KEYS[fn])} of {fn.__name__}"
    return fn, {**_DEFAULTS[fn], **kw}


def _mlp_unsupported(net: nn.Module) -> str | None:
    for layer in net:
        if isinstance(layer, zuko.nn.Residual):
            reason = _mlp_unsupported(layer)
        elif isinstance(layer, _LINEAR):
            reason = None if layer.weight.dim() == 2 else "a stacked linear layer"
        elif isinstance(layer, zuko.nn.LayerNorm):
            reason = None if layer.dim == -1 else f"LayerNorm over dim {layer.dim}"
        elif any(True for _ in layer.parameters()):
            reason = f"layer {type(layer).__name__} with parameters"
        else:
            reason = None
        if reason:
            return reason
    return None


def prepare(flow: nn.Module) -> str | None:
    """Why ``flow`` (a zuko ``Flow``) cannot run here, or None when it can (its transforms then keep their univariate
    and coupling split as plain attributes: Python constants for the hot path and for ``torch.compile``)."""
    if not isinstance(flow, zuko.lazy.Flow) or not isinstance(flow.transform, zuko.lazy.LazyComposedTransform):
        return f"{type(flow).__name__} is not a zuko flow with composed transforms"
    base = flow.base
    if not (isinstance(base, zuko.lazy.UnconditionalDistribution) and base.f is zuko.distributions.DiagNormal
            and base._nargs == 0 and sorted(base._keys) == ["loc", "scale"]
            and not any(True for _ in base.parameters())):
        return "the base is not a fixed DiagNormal(loc, scale)"
    for t in flow.transform.transforms:
        if isinstance(t, ElementWiseTransform):
            if not hasattr(t, "phi"):
                return "a contextual element-wise transform"
        elif isinstance(t, MaskedAutoregressiveTransform | GeneralCouplingTransform):
            reason = _mlp_unsupported(t.hyper)
            if reason:
                return reason
        else:
            return f"transform {type(t).__name__}"
        u = _univariate(t)
        if isinstance(u, str):
            return u
        t._ptforget_univariate = u
        if isinstance(t, GeneralCouplingTransform):
            a, b = t.mask.nonzero().squeeze(-1).tolist(), (~t.mask).nonzero().squeeze(-1).tolist()
            t._ptforget_split = (a, b, torch.argsort(torch.tensor(a + b)).tolist())
    return None


# ---------------------------------------------------------------------------------------------- networks
def _linear(h: Tensor, layer: nn.Module) -> Tensor:
    w, b = layer.weight, layer.bias
    if isinstance(layer, zuko.nn.MaskedLinear):
        w = layer.mask * w
    if w.dim() == 2:
        return F.linear(h, w, b)
    if b is None:
        return torch.matmul(h, w.mT)
    if h.dim() == 3 and w.dim() == 3:  # (S, n, in) x (S, out, in)
        return torch.baddbmm(b.unsqueeze(-2), h, w.mT)
    return torch.matmul(h, w.mT) + b.unsqueeze(-2)


def _mlp(net: nn.Module, h: Tensor) -> Tensor:
    for layer in net:
        if isinstance(layer, zuko.nn.Residual):
            h = h + _mlp(layer, h)
        elif isinstance(layer, _LINEAR):
            h = _linear(h, layer)
        else:
            h = layer(h)
    return h


def _phi(t: nn.Module, x: Tensor) -> list[Tensor]:
    """The univariate parameters of transform ``t`` at x (*B, n, d) (or at x_a for a coupling), each (*B, n, d', *s)."""
    if isinstance(t, ElementWiseTransform):  # free parameters (*B, d, *s): one per feature, the same for every x
        return [p.unsqueeze(p.dim() - len(s) - 1) for p, s in zip(t.phi, t.shapes, strict=True)]
    phi = _mlp(t.hyper, x).unflatten(-1, (-1, t.total))
    return list(unpack(phi, t.shapes))


# ---------------------------------------------------------------------------------------------- univariates
#: up to this many bins, reductions over the bins of per-sample spline parameters are written as elementwise ops
#: (PyTorch's CPU softmax / sum over a short inner axis of a large tensor is 5-10x slower; see ptforget.gaussian)
SHORT_BINS = 16
#: ... on tensors of at least this many elements (below it, one native op beats a dozen elementwise ones)
SMALL = 4096


def _short(t: Tensor) -> bool:
    return t.shape[-1] <= SHORT_BINS and (t.numel() >= SMALL or torch.compiler.is_compiling())


def _softmax_last(t: Tensor) -> Tensor:
    """``F.softmax(t, -1)``; on a short axis as elementwise max / exp / adds over the slices (same value)."""
    if not _short(t):
        return F.softmax(t, dim=-1)
    parts = t.unbind(-1)
    m = parts[0]
    for p in parts[1:]:
        m = torch.maximum(m, p)
    m = m.detach().unsqueeze(-1)  # its gradient cancels
    e = torch.exp(t - m)
    z = parts[0].new_zeros(())
    for p in e.unbind(-1):
        z = z + p
    return e / z.unsqueeze(-1)


def _count_below(seq: Tensor, v: Tensor) -> Tensor:
    """``torch.sum(seq < v[..., None], -1)`` (zuko's searchsorted), as elementwise compares on a short axis."""
    if not _short(seq) and not _short(v.unsqueeze(-1).expand(*v.shape, seq.shape[-1])):
        return torch.sum(seq < v[..., None], dim=-1)
    parts = seq.unbind(-1)
    k = (parts[0] < v).long()
    for p in parts[1:]:
        k = k + (p < v).long()
    return k


def _rqs_knots(phi: list[Tensor], bound: float, slope: float) -> tuple[Tensor, Tensor, Tensor]:
    widths, heights, derivatives = phi
    widths = widths / (1 + abs(2 * widths / math.log(slope)))
    heights = heights / (1 + abs(2 * heights / math.log(slope)))
    derivatives = derivatives / (1 + abs(derivatives / math.log(slope)))
    widths = F.pad(_softmax_last(widths), (1, 0), value=0)
    heights = F.pad(_softmax_last(heights), (1, 0), value=0)
    derivatives = F.pad(derivatives, (1, 1), value=0)
    return (bound * (2 * torch.cumsum(widths, dim=-1) - 1), bound * (2 * torch.cumsum(heights, dim=-1) - 1),
            torch.exp(derivatives))


def _rqs_bin(knots: tuple[Tensor, Tensor, Tensor], seq: Tensor, v: Tensor) -> tuple[Tensor, ...]:
    """zuko's ``MonotonicRQSTransform.bin`` at the bin of v in ``seq`` (the knots broadcast against v)."""
    hs, vs, ds = knots
    bins = hs.shape[-1] - 1
    k = _count_below(seq, v) - 1
    mask = torch.logical_and(0 <= k, k < bins)
    k = k % bins
    idx = torch.stack((k, k + 1), dim=-1)
    shape = (*torch.broadcast_shapes(idx.shape[:-1], hs.shape[:-1]), bins + 1)
    idx = idx.expand(*shape[:-1], 2)
    x0, x1 = hs.expand(shape).gather(-1, idx).unbind(-1)
    y0, y1 = vs.expand(shape).gather(-1, idx).unbind(-1)
    d0, d1 = ds.expand(shape).gather(-1, idx).unbind(-1)
    return mask, x0, x1, y0, y1, d0, d1, (y1 - y0) / (x1 - x0)


def _rqs_call_and_ladj(knots: tuple[Tensor, Tensor, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    mask, x0, x1, y0, y1, d0, d1, s = _rqs_bin(knots, knots[0], x)
    z = mask * (x - x0) / (x1 - x0)
    y = y0 + (y1 - y0) * (s * z**2 + d0 * z * (1 - z)) / (s + (d0 + d1 - 2 * s) * z * (1 - z))
    jacobian = (s**2 * (2 * s * z * (1 - z) + d0 * (1 - z) ** 2 + d1 * z**2)
                / (s + (d0 + d1 - 2 * s) * z * (1 - z)) ** 2)
    return torch.where(mask, y, x), mask * jacobian.log()


def _rqs_inverse(knots: tuple[Tensor, Tensor, Tensor], y: Tensor) -> Tensor:
    mask, x0, x1, y0, y1, d0, d1, s = _rqs_bin(knots, knots[1], y)
    y_ = mask * (y - y0)
    a = (y1 - y0) * (s - d0) + y_ * (d0 + d1 - 2 * s)
    b = (y1 - y0) * d0 - y_ * (d0 + d1 - 2 * s)
    c = -s * y_
    z = 2 * c / (-b - (b**2 - 4 * a * c).sqrt())
    return torch.where(mask, x0 + z * (x1 - x0), y)


def _affine_log_scale(phi: list[Tensor], slope: float) -> tuple[Tensor, Tensor]:
    shift, scale = phi
    return shift, scale / (1 + abs(scale / math.log(slope)))


def _call_and_ladj(t: nn.Module, phi: list[Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """The univariate transform of ``t`` with parameters phi at x; ladj summed over the features."""
    fn, kw = t._ptforget_univariate
    if fn is MonotonicRQSTransform:
        y, ladj = _rqs_call_and_ladj(_rqs_knots(phi, kw["bound"], kw["slope"]), x)
        return y, ladj.sum(-1)
    shift, log_scale = _affine_log_scale(phi, kw["slope"])
    return x * log_scale.exp() + shift, log_scale.expand(torch.broadcast_shapes(x.shape, log_scale.shape)).sum(-1)


def _inverse(t: nn.Module, phi: list[Tensor], y: Tensor) -> Tensor:
    fn, kw = t._ptforget_univariate
    if fn is MonotonicRQSTransform:
        return _rqs_inverse(_rqs_knots(phi, kw["bound"], kw["slope"]), y)
    shift, log_scale = _affine_log_scale(phi, kw["slope"])
    return (y - shift) / log_scale.exp()


# ---------------------------------------------------------------------------------------------- transforms
def _split(t: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    a, b, _ = t._ptforget_split
    return x[..., a], x[..., b]


def _merge(t: nn.Module, a: Tensor, b: Tensor) -> Tensor:
    return torch.cat((a, b), -1)[..., t._ptforget_split[2]]


def _forward(t: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Transform ``t`` at x (data towards base): (y, ladj (*B, n))."""
    if isinstance(t, GeneralCouplingTransform):
        xa, xb = _split(t, x)
        yb, ladj = _call_and_ladj(t, _phi(t, xa), xb)
        return _merge(t, xa, yb), ladj
    return _call_and_ladj(t, _phi(t, x), x)


def _backward(t: nn.Module, y: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse of ``t`` at y: (x, the forward ladj at x) — zuko's fixed-point passes for autoregressive
    transforms; the parameters of the last pass are those at x (masked dependencies), so the ladj reuses them."""
    if isinstance(t, GeneralCouplingTransform):
        ya, yb = _split(t, y)
        phi = _phi(t, ya)
        xb = _inverse(t, phi, yb)
        return _merge(t, ya, xb), _call_and_ladj(t, phi, xb)[1]
    if isinstance(t, ElementWiseTransform):
        phi = _phi(t, y)
        x = _inverse(t, phi, y)
        return x, _call_and_ladj(t, phi, x)[1]
    x = torch.zeros_like(y)
    for _ in range(t.passes):
        phi = _phi(t, x)
        x = _inverse(t, phi, y)
    return x, _call_and_ladj(t, phi, x)[1]


def _base_log_prob(flow: nn.Module, z: Tensor) -> Tensor:
    loc, scale = flow.base.loc, flow.base.scale
    u = (z - loc) / scale
    return (-0.5 * u * u - torch.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def log_prob(flow: nn.Module, x: Tensor) -> Tensor:
    """log q(x) for x (*B, n, d) (or (n, d) with unbatched parameters): zuko's ``flow().log_prob(x)``."""
    ladj = torch.zeros((), dtype=x.dtype, device=x.device)
    for t in flow.transform.transforms:
        x, l_t = _forward(t, x)
        ladj = ladj + l_t
    return _base_log_prob(flow, x) + ladj


def sample_and_log_prob(flow: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    """x = T^-1(z) for base draws z (*B, n, d) and log q(x): zuko's ``transform.inv.call_and_ladj`` (pathwise)."""
    lp = _base_log_prob(flow, z)
    x = z
    for t in reversed(flow.transform.transforms):
        x, l_t = _backward(t, x)
        lp = lp + l_t
    return x, lp
