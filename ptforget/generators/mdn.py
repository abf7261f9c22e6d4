"""Mixture-density network: an MLP from a context (a constant by default) to mixture logits, means and scales.

It is the mixture family with shared, over-parametrised weights: the same component view as the GMM, but
every component moves when the trunk moves. The output bias starts at q0 (component 0 = old) and the network is
then pretrained by maximum likelihood on q0 samples (cached), so post-training starts from a fitted model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ptforget.errors import check
from ptforget.gaussian import categorical, logsumexp_last, sum_last
from ptforget.generators.base import Generator, StepCost, region_stats
from ptforget.generators.mixture import mixture_component_view
from ptforget.generators.pretrain import pretrain_mle, pretrain_settings
from ptforget.tasks import TwoModeTask


class MixtureDensityNetwork(Generator):
    """MLP(context) -> (logits (K), means (K, d), log-scales (K, d)); diagonal Gaussian components.

    Args:
        task: the two-mode task (q0 to pretrain to).
        components: K >= 2.
        hidden: hidden layer widths.
        context_dim: size of the constant context vector (ones).
        pretrain: dict with steps, batch, lr, seed, schedule, objective, refine (see ``pretrain_settings``; no
            steps and no refine skip it).
        cache_dir: where pretrained weights are cached (None disables the cache).
    """

    has_components = True
    natively_batched = True
    #: calibrated by scripts/calibrate_costs.py, 2026-12-07, on the project's 2-core box under a load average of ~10
    step_cost = StepCost(fixed_ms=23.5, per_sample_us=6.66, eval_ms=104.0)

    def __init__(
        self,
        task: TwoModeTask,
        components: int = 2,
        hidden: tuple[int, ...] | list[int] = (32, 32),
        context_dim: int = 1,
        pretrain: dict | None = None,
        cache_dir: str | None = None,
        min_log_scale: float = -5.0,
        max_log_scale: float = 3.0,
    ) -> None:
        super().__init__()
        check(isinstance(components, int) and components >= 2, "generator.components", components,
              "an integer >= 2")
        check(isinstance(context_dim, int) and context_dim >= 1, "generator.context_dim", context_dim,
              "an integer >= 1")
        hidden = [int(h) for h in hidden]
        check(all(h >= 1 for h in hidden), "generator.hidden", hidden, "a list of positive integers")
        self.K, self.dim = components, task.dim
        self.min_log_scale, self.max_log_scale = min_log_scale, max_log_scale
        pre = pretrain_settings(pretrain, task, steps=300)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(pre["seed"]))
            layers: list[nn.Module] = []
            width = context_dim
            for h in hidden:
                layers += [nn.Linear(width, h), nn.Tanh()]
                width = h
            self.trunk = nn.Sequential(*layers)
            self.head = nn.Linear(width, components * (1 + 2 * task.dim))
            nn.init.normal_(self.head.weight, std=1e-2)
        self.register_buffer("context", torch.ones(1, context_dim))
        self._init_bias(task)
        arch = {"K": components, "hidden": hidden, "context_dim": context_dim, "dim": task.dim}
        self.pretrain_stats = (
            pretrain_mle(self, task, kind="mdn", arch=arch, cache_dir=cache_dir, **pre)
            if pre["steps"] or pre["refine"] else {}
        )

    @torch.no_grad()
    def _init_bias(self, task: TwoModeTask) -> None:
        q0 = task.q0_params()
        w_old = float(q0["weight_old"])
        w = torch.tensor([w_old] + [(1 - w_old) / (self.K - 1)] * (self.K - 1))
        means = [q0["mu_old"].cpu()] + [q0["mu_new"].cpu()] * (self.K - 1)
        log_s = torch.log(torch.diagonal(q0["scale_tril"].cpu()))
        bias = torch.cat([torch.log(w), torch.stack(means).reshape(-1), log_s.repeat(self.K)])
        self.head.bias.copy_(bias)

    def _network(self) -> Tensor:
        """The head's output (*B, K (1 + 2 d)): one batched matmul per layer when the members are stacked."""
        h = self.context
        layers = [*self.trunk, self.head]
        for layer in layers:
            if isinstance(layer, nn.Linear):
                w, b = layer.weight, layer.bias
                h = F.linear(h, w, b) if w.dim() == 2 else torch.baddbmm(b.unsqueeze(-2), h.expand(
                    w.shape[0], *h.shape[-2:]), w.mT)
            else:
                h = layer(h)
        return h[..., 0, :]

    def params(self) -> tuple[Tensor, Tensor, Tensor]:
        """(log_weights (*B, K), means (*B, K, d), scales (*B, K, d))."""
        out = self._network()
        K, d, B = self.K, self.dim, out.shape[:-1]
        logits, mu, log_s = out[..., :K], out[..., K:K + K * d].reshape(*B, K, d), out[..., K + K * d:].reshape(
            *B, K, d)
        log_s = log_s.clamp(self.min_log_scale, self.max_log_scale)
        return torch.log_softmax(logits, -1), mu, log_s.exp()

    def _component_log_prob(self, x: Tensor, mu: Tensor, s: Tensor) -> Tensor:
        """(*B, n, K) for x (*B, n, d)."""
        z = (x.unsqueeze(-2) - mu.unsqueeze(-3)) / s.unsqueeze(-3)
        return -0.5 * sum_last(z * z) - torch.log(s).sum(-1).unsqueeze(-2) - 0.5 * self.dim * math.log(2 * math.pi)

    def log_prob(self, x: Tensor) -> Tensor:
        log_w, mu, s = self.params()
        return logsumexp_last(self._component_log_prob(x, mu, s) + log_w.unsqueeze(-2))

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        log_w, mu, s = self.params()
        B, d = self.batch_shape, self.dim
        k = categorical(log_w.exp(), n).unsqueeze(-1).expand(*B, n, d)
        return torch.gather(mu, -2, k) + torch.gather(s, -2, k) * torch.randn(*B, n, d, device=mu.device)

    def expectation(self, f: Callable[[Tensor], Tensor], n: int) -> Tensor:
        """Enumerate the components: exact weight gradient, pathwise within each component; (*B,)."""
        log_w, mu, s = self.params()
        B, K, d = self.batch_shape, self.K, self.dim
        per = max(1, math.ceil(n / K))
        x = mu.unsqueeze(-2) + s.unsqueeze(-2) * torch.randn(*B, K, per, d, device=mu.device)
        vals = f(x.reshape(*B, K * per, d)).reshape(*B, K, per)
        return (log_w.exp() * vals.mean(-1)).sum(-1)

    @torch.no_grad()
    def region_view(self, task: TwoModeTask, n: int) -> dict[str, Tensor]:
        log_w, mu, s = self.params()
        return region_stats(log_w.exp(), mu, torch.diag_embed(s**2), task)

    @torch.no_grad()
    def component_view(self) -> dict[str, Tensor]:
        log_w, mu, s = self.params()
        return mixture_component_view(log_w.exp(), mu, torch.diag_embed(s))
