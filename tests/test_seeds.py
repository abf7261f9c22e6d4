"""Batched seeds: a generator with batched members (natively stacked GMM, MDN and flow) computes exactly what
separate generators compute, members are independent, and a multi-seed run writes one trajectory and summary per
seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptforget.ensemble import SeedEnsemble, batched
from ptforget.generators import GaussianMixture
from ptforget.generators.flow import Flow
from ptforget.generators.mdn import MixtureDensityNetwork
from ptforget.io import read_json
from ptforget.tasks import TwoModeTask
from ptforget.train import run_training
from tests.conftest import compose_cfg


def _family(name: str, task: TwoModeTask):
    if name == "gmm":
        return GaussianMixture(task)
    if name == "mdn":
        return MixtureDensityNetwork(task, pretrain={"steps": 0})
    return Flow(task, transforms=2, hidden=[16], pretrain={"steps": 0})


def _solo_copy(family: str, task: TwoModeTask, gen, members, k: int):
    """A standalone generator holding member k's parameters."""
    solo = _family(family, task)
    solo.load_state_dict(gen.state_dict())  # buffers too (a flow's standardisation is drawn at init)
    with torch.no_grad():
        for p, stacked in zip(solo.parameters(), members.parameters(), strict=True):
            p.copy_(stacked[k])
    return solo


def _perturbed_members(family: str, size: int = 3):
    torch.manual_seed(0)
    task = TwoModeTask(dim=2, delta=4.0)
    gen = _family(family, task)
    members = batched(gen, size)
    assert members.batch_shape == (size,)
    assert not isinstance(members, SeedEnsemble)  # GMM, MDN and (covered) flows are stacked natively
    with torch.no_grad():
        for p in members.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return task, gen, members


@pytest.mark.parametrize("family", ["gmm", "mdn", "flow"])
def test_member_log_prob_and_gradient_equal_a_separate_generator(family):
    """Perturb each member differently; the batched loss and its gradient equal those of standalone copies, each
    member evaluated on its own data."""
    task, gen, members = _perturbed_members(family)
    x = task.sample("star", 64, (3,))
    losses = -members.log_prob(x).mean(-1)
    assert losses.shape == (3,)
    losses.sum().backward()
    for k in range(3):
        solo = _solo_copy(family, task, gen, members, k)
        loss = -solo.log_prob(x[k]).mean()
        loss.backward()
        assert torch.allclose(losses[k], loss, atol=1e-5)
        for p, stacked in zip(solo.parameters(), members.parameters(), strict=True):
            assert torch.allclose(stacked.grad[k], p.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["gmm", "mdn"])
def test_member_enumerated_reverse_kl_gradient_equals_the_exact_one(family):
    """Reverse KL with the enumerated estimator on batched members: every member's gradient, averaged over many
    draws, equals the exact gradient of KL(q_k || p*) of a standalone copy (by quadrature on a grid), and a batched
    member's readout equals the copy's."""
    from ptforget.metrics import measure
    from ptforget.objectives import ReverseKL

    task, gen, members = _perturbed_members(family)
    obj = ReverseKL(batch=4096)
    obj.setup(members, task)
    reps = 8
    for _ in range(reps):
        losses, _ = obj.loss(members, 0)
        (losses.sum() / reps).backward()
    g = torch.linspace(-9, 9, 361)
    grid = torch.cartesian_prod(g, g)
    cell = float((g[1] - g[0]) ** 2)
    torch.manual_seed(3)
    m = measure(members, task, 64)
    for k in range(3):
        solo = _solo_copy(family, task, gen, members, k)
        lq = solo.log_prob(grid)
        exact = (lq.exp() * (lq - task.log_prob("star", grid))).sum() * cell
        exact.backward()
        for p, stacked in zip(solo.parameters(), members.parameters(), strict=True):
            assert torch.allclose(stacked.grad[k], p.grad, atol=0.02, rtol=0.05), (k, stacked.grad[k], p.grad)
        ms = measure(solo, task, 64)
        for key in ("old_mass", "weight", "comp_drift", "comp_bc", "region_drift"):
            assert torch.allclose(m[key][k], ms[key], atol=1e-5), key


@pytest.mark.parametrize("family", ["gmm", "mdn", "flow"])
def test_members_draw_independent_samples(family):
    task, _, members = _perturbed_members(family, 4)
    with torch.no_grad():
        members.zero_grad()
        for p in members.parameters():  # identical members: any difference comes from the draws
            p.copy_(p[:1].expand_as(p))
    x = members.sample(256)
    y = task.sample("new", 256, members.batch_shape)
    assert x.shape == (4, 256, 2) and y.shape == (4, 256, 2)
    for k in range(1, 4):
        assert not torch.equal(x[0], x[k]) and not torch.equal(y[0], y[k])
    # and each member's draws follow its own distribution: the mean of many draws is the member's mean
    big = members.sample(20_000)
    solo_mean = _solo_copy(family, task, _family(family, task), members, 0).sample(20_000).mean(0)
    assert torch.allclose(big.mean(1), solo_mean.expand(4, -1), atol=0.1)


def test_task_sample_matches_its_distributions():
    """The vmap-safe sampler draws from p* / q0 / p_new: mean, covariance and mixture weight by Monte Carlo."""
    torch.manual_seed(1)
    task = TwoModeTask(dim=2, delta=4.0, beta_star=0.3)
    for which, dist in (("star", task.p_star), ("q0", task.q0), ("new", task.p_new), ("old", task.p_old)):
        x = task.sample(which, 200_000)
        assert torch.allclose(x.mean(0), dist.mean, atol=0.03), which
        assert torch.allclose(torch.cov(x.T), dist.variance.diag() if x.shape[1] == 1 else torch.cov(
            dist.sample((200_000,)).T), atol=0.06), which
    assert abs(float(task.old_region(task.sample("star", 200_000)).float().mean()) - 0.3) < 0.01


def test_batched_run_writes_every_member_and_is_skipped_when_rerun(tmp_path):
    cfg = compose_cfg("objective=rkl", "seeds=3", "seed=5", "trainer.max_steps=60", "eval_every=20")
    s = run_training(cfg, tmp_path)
    assert s["status"] == "complete" and s["batched"] and s["seeds"] == [5, 6, 7]
    ens = read_json(tmp_path / "ensemble.json")
    assert ens["runs"] == {"seed5": "complete", "seed6": "complete", "seed7": "complete"}
    finals = []
    for k, m in zip((5, 6, 7), s["members"], strict=True):
        summary = read_json(tmp_path / f"seed{k}" / "summary.json")
        assert summary["seed"] == k and summary["ensemble"]["member"] == k - 5 and summary["steps"] == 60
        rows = (tmp_path / f"seed{k}" / "trajectory.csv").read_text().splitlines()
        assert len(rows) == 1 + 4  # header + steps 0, 20, 40, 60
        finals.append(summary["final"]["kl_q_pstar"])
        assert m["config_hash"] == summary["config_hash"]
    assert len(set(finals)) == 3  # independent members
    assert not (tmp_path / "last.ckpt").exists()
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = run_training(cfg, tmp_path)
    assert [m["final"] for m in again["members"]] == [m["final"] for m in s["members"]]
    assert stamp == {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}


def test_stateful_objective_runs_seeds_one_after_another(tmp_path):
    """TTT-Discover with its PUCT archive is not batchable: its members are plain runs, byte-identical to separate
    seeds."""
    obj = ("objective=ttt_discover", "objective.reuse.enabled=true")
    cfg = compose_cfg(*obj, "seeds=2", "trainer.max_steps=40", "eval_every=20")
    s = run_training(cfg, tmp_path / "ens")
    assert s["batched"] is False and s["seeds"] == [0, 1]
    solo = run_training(compose_cfg(*obj, "seed=1", "trainer.max_steps=40", "eval_every=20"), tmp_path / "solo")
    assert (tmp_path / "ens" / "seed1" / "trajectory.csv").read_bytes() == (tmp_path / "solo" /
                                                                            "trajectory.csv").read_bytes()
    assert solo["config_hash"] == s["members"][1]["config_hash"]


def test_batched_seeds_match_sequential_runs_in_distribution(tmp_path):
    """Forward KL on the GMM: the old weight after 150 Adam steps has the same mean batched and sequential."""
    common = ("objective=fkl", "objective.batch=32", "trainer.max_steps=150", "eval_every=150")
    batched = run_training(compose_cfg(*common, "seeds=8"), tmp_path / "b")
    b = np.array([m["final"]["weight"] for m in batched["members"]])
    seq = np.array([run_training(compose_cfg(*common, f"seed={k}"), tmp_path / f"s{k}")["final"]["weight"]
                    for k in range(8)])
    se = math.sqrt(b.var(ddof=1) / 8 + seq.var(ddof=1) / 8)
    assert abs(b.mean() - seq.mean()) < 4 * se + 1e-4
    assert b.std() > 0 and 0.5 * seq.std() < b.std() < 2 * seq.std()


STATEFUL = {
    "oapl": ("objective=oapl", "objective.lag=30", "objective.groups=4", "objective.group_size=8"),
    "sdft": ("objective=sdft", "objective.alpha_ema=0.05", "objective.batch=32"),
    "sdft_icl": ("objective=sdft", "objective.teacher=icl", "objective.alpha_ema=0.05", "objective.batch=32"),
    "rkl_replay_q0_buffer": ("objective=rkl_replay", "objective.source=q0", "objective.buffer=64", "objective.lam=0.3",
                             "objective.batch=32"),
    "fkl_replay_slots": ("objective=fkl_replay", "objective.mode=fixed_slots", "objective.lam=0.3",
                         "objective.batch=32"),
    "ttt_discover_kl": ("objective=ttt_discover", "objective.lam=1.0", "objective.groups=2", "objective.group_size=16",
                        "trainer.max_steps=60"),
}


SLOW_STATEFUL = ("fkl_replay_slots", "ttt_discover_kl")  # the suite's time budget: run with -m slow


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_STATEFUL else c
                                  for c in STATEFUL])
def test_batched_stateful_objectives_match_sequential_runs_in_distribution(tmp_path, case):
    """Replay, SDFT (both teachers), OAPL and TTT-Discover batch their seeds (frozen copies, EMA teachers,
    demonstration pools, buffers and counters carry the member dimension): the final old weight over 6 batched
    members has the mean and spread of 6 separate runs."""
    common = ("trainer.max_steps=100", "eval_every=100", *STATEFUL[case])
    batched_run = run_training(compose_cfg(*common, "seeds=6"), tmp_path / "b")
    assert batched_run["batched"] is True
    b = np.array([m["final"]["weight"] for m in batched_run["members"]])
    seq = np.array([run_training(compose_cfg(*common, f"seed={k}"), tmp_path / f"s{k}")["final"]["weight"]
                    for k in range(6)])
    se = math.sqrt(b.var(ddof=1) / 6 + seq.var(ddof=1) / 6)
    assert abs(b.mean() - seq.mean()) < 4 * se + 1e-4, (b, seq)
    assert len(set(b.tolist())) == 6 and 0.25 * seq.std() < b.std() < 4 * seq.std(), (b, seq)


def test_a_diverging_member_stops_alone(tmp_path):
    """A member whose parameters go non-finite is marked diverged at that step; the others finish untouched."""
    from ptforget.module import PostTrainModule

    cfg = compose_cfg("objective=rkl", "seeds=3", "trainer.max_steps=40", "eval_every=10")
    orig = PostTrainModule._optimizer_step

    def poisoned(self):
        orig(self)
        if self.step == 15:
            with torch.no_grad():
                next(self.generator.parameters())[1].fill_(float("nan"))

    PostTrainModule._optimizer_step = poisoned
    try:
        s = run_training(cfg, tmp_path, reuse=False)
    finally:
        PostTrainModule._optimizer_step = orig
    status = {m["seed"]: (m["status"], m["diverged_step"]) for m in s["members"]}
    assert status == {0: ("complete", None), 1: ("diverged", 15), 2: ("complete", None)}
    assert s["status"] == "complete"  # every member finished (one of them by diverging)
    rows = {k: len((tmp_path / f"seed{k}" / "trajectory.csv").read_text().splitlines()) for k in range(3)}
    assert rows == {0: 6, 1: 3, 2: 6}  # steps 0..40 by 10; the diverged member stops after step 10
    for k in (0, 2):
        assert math.isfinite(s["members"][k]["final"]["kl_q_pstar"])


@pytest.mark.parametrize("which", ["old", "new", "star", "q0"])
def test_task_log_prob_matches_torch_distributions(which):
    task = TwoModeTask(dim=3, delta=3.0, beta_star=0.2, beta0=0.6)
    dist = {"old": task.p_old, "new": task.p_new, "star": task.p_star, "q0": task.q0}[which]
    x = 3 * torch.randn(500, 3)
    assert torch.allclose(task.log_prob(which, x), dist.log_prob(x), atol=1e-4)


def test_batched_members_are_projected_like_solo_runs(tmp_path):
    """Direct weights under SFT (means fixed) hit the clip: every member ends at weight_clip, as a solo run does."""
    common = ("generator.weight=direct", "generator.train_means=false", "optimizer=sgd", "optimizer.lr=0.05",
              "objective=fkl", "trainer.max_steps=300", "eval_every=100")
    batched = run_training(compose_cfg(*common, "seeds=3"), tmp_path / "b")
    solo = run_training(compose_cfg(*common), tmp_path / "s")
    clip = compose_cfg(*common).generator.weight_clip
    assert solo["final"]["weight"] == pytest.approx(clip, abs=1e-6)
    assert [m["final"]["weight"] for m in batched["members"]] == pytest.approx([clip] * 3, abs=1e-6)


@pytest.mark.parametrize("family", ["gmm", "mdn"])
def test_ensemble_follows_its_module_when_moved(family):
    """Moving the module (a dtype move here, standing in for a device move) replaces the template's buffers;
    the vmapped calls must use the moved ones (review finding: a stale CPU copy would break every GPU run)."""
    from ptforget.build import build, optimizer_config
    from ptforget.module import PostTrainModule

    extra = ("generator.pretrain.steps=0",) if family == "mdn" else ()
    cfg = compose_cfg(f"generator={family}", "objective=fkl", "seeds=2", *extra)
    task, gen, obj = build(cfg)
    module = PostTrainModule(gen, obj, task, optimizer_config(cfg), seeds=2)
    module.to(torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64)
    assert module.generator.log_prob(x.expand(2, -1, -1)).dtype == torch.float64


def test_member_hashes_name_their_ensemble(tmp_path):
    """Seed 1 of (seed=0, seeds=3) and of (seed=1, seeds=3) are different runs: different hashes, and neither
    is the hash of a solo seed=1 run (review finding)."""
    common = ("objective=rkl", "trainer.max_steps=20", "eval_every=10")
    a = run_training(compose_cfg(*common, "seed=0", "seeds=3"), tmp_path / "a")["members"][1]
    b = run_training(compose_cfg(*common, "seed=1", "seeds=3"), tmp_path / "b")["members"][0]
    solo = run_training(compose_cfg(*common, "seed=1"), tmp_path / "s")
    assert a["seed"] == b["seed"] == solo["seed"] == 1
    assert len({a["config_hash"], b["config_hash"], solo["config_hash"]}) == 3


def test_batched_gradient_clipping_is_per_member():
    """Each member's gradient is clipped by its own norm, exactly as clip_grad_norm_ clips a solo run's."""
    from ptforget.build import build, optimizer_config
    from ptforget.module import PostTrainModule

    cfg = compose_cfg("objective=fkl", "seeds=3")
    task, gen, obj = build(cfg)
    module = PostTrainModule(gen, obj, task, optimizer_config(cfg), seeds=3, grad_clip=(0.5, "norm"))
    module._opt = torch.optim.SGD(module.generator.param_groups(0.1))
    torch.manual_seed(0)
    scales = torch.tensor([0.01, 1.0, 100.0])  # one member under the limit, two above
    for p in module.generator.parameters():
        p.grad = torch.randn_like(p) * scales.view(-1, *([1] * (p.dim() - 1)))
    expected = []
    for k in range(3):
        solo = [p.grad[k].clone() for p in module.generator.parameters()]
        holders = [torch.nn.Parameter(torch.zeros_like(g)) for g in solo]
        for h, g in zip(holders, solo, strict=True):
            h.grad = g
        torch.nn.utils.clip_grad_norm_(holders, 0.5)
        expected.append([h.grad for h in holders])
    module._clip_gradients(0.5, "norm")
    for k in range(3):
        for p, e in zip(module.generator.parameters(), expected[k], strict=True):
            assert torch.allclose(p.grad[k], e, atol=1e-6)


def test_short_axis_kernels_equal_torch_ops():
    """The elementwise forms used on large batched tensors equal torch's reductions, matmul and sampler."""
    from ptforget.gaussian import categorical, logsumexp_last, small_matmul_t, sum_last

    torch.manual_seed(0)
    t = torch.randn(64, 2048, 2, requires_grad=True)
    w = torch.randn(4, 2)
    assert torch.allclose(sum_last(t), t.sum(-1), atol=1e-6)
    assert torch.allclose(small_matmul_t(t, w), t @ w.T, atol=1e-5)
    lse = logsumexp_last(t)
    ref = torch.logsumexp(t, -1)
    assert torch.allclose(lse, ref, atol=1e-5)
    (g,) = torch.autograd.grad(lse.sum(), t)
    (g_ref,) = torch.autograd.grad(ref.sum(), t)
    assert torch.allclose(g, g_ref, atol=1e-6)
    assert torch.equal(logsumexp_last(torch.full((70000, 2), -math.inf)), torch.full((70000,), -math.inf))
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    k = categorical(probs, 200_000)
    freq = torch.stack([(k == j).float().mean(-1) for j in range(3)], -1)
    assert k.shape == (2, 200_000) and torch.allclose(freq, probs, atol=0.005)


# ---------------------------------------------------------------------------------------------- per-seed pretraining
#: a neural family with a short pretraining (the flow as in the quick check, fewer steps)
PRETRAINED = {"mdn": ("generator=mdn", "generator.pretrain.steps=30"),
              "flow": ("generator=flow", "task.dim=1", "generator.transforms=2", "generator.hidden=[16]",
                       "generator.pretrain.steps=30")}


def _params(gen) -> list[torch.Tensor]:
    return [p.detach().clone() for p in gen.parameters()]


@pytest.mark.parametrize("family", ["mdn", "flow"])
def test_pretraining_follows_the_run_seed(family):
    """generator.pretrain.seed: null (the default) pretrains each seed on its own: two seeds' starts differ (their
    densities too); a pinned seed gives every run seed the same start."""
    from ptforget.build import build

    def start(*extra: str):
        task, gen, _ = build(compose_cfg(*PRETRAINED[family], "objective=fkl", *extra))
        return gen, task

    (a, task), (b, _) = start("seed=0"), start("seed=1")
    assert a.pretrain_stats["pretrain_nll"] != b.pretrain_stats["pretrain_nll"]
    x = task.sample("q0", 64)
    assert not torch.allclose(a.log_prob(x), b.log_prob(x))
    (c, _), (d, _) = start("seed=0", "generator.pretrain.seed=7"), start("seed=1", "generator.pretrain.seed=7")
    assert all(torch.equal(p, q) for p, q in zip(_params(c), _params(d), strict=True))


@pytest.mark.parametrize("family", ["mdn", "flow"])
def test_batched_member_starts_where_its_solo_run_starts(family):
    """Member k of (seed=3, seeds=3) starts at the pretrained weights of the solo run with seed 3 + k: the same
    parameters and the same density; with a pinned pretraining seed every member starts at the template."""
    from ptforget.build import build, member_starts, optimizer_config
    from ptforget.module import PostTrainModule

    cfg = compose_cfg(*PRETRAINED[family], "objective=fkl", "seed=3", "seeds=3")
    task, gen, obj = build(cfg)
    module = PostTrainModule(gen, obj, task, optimizer_config(cfg), seeds=3,
                             starts=member_starts(cfg, task, gen))
    x = task.sample("q0", 64)
    lp = module.generator.log_prob(x.expand(3, -1, -1))
    for k in range(3):
        _, solo, _ = build(compose_cfg(*PRETRAINED[family], "objective=fkl", f"seed={3 + k}"))
        for p, stacked in zip(_params(solo), module.generator.parameters(), strict=True):
            assert torch.equal(p, stacked[k].detach())
        torch.testing.assert_close(lp[k], solo.log_prob(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(lp[0], lp[1])
    pinned = compose_cfg(*PRETRAINED[family], "objective=fkl", "seed=3", "seeds=3", "generator.pretrain.seed=3")
    assert member_starts(pinned, task, gen) is None


def test_batched_run_members_start_apart(tmp_path):
    """A batched multi-seed run of a pretrained family: its members' first readouts differ (their own starts)."""
    cfg = compose_cfg(*PRETRAINED["mdn"], "objective=fkl", "seeds=2", "trainer.max_steps=10", "eval_every=10")
    members = run_training(cfg, tmp_path / "run")["members"]
    first = [m["extremes"]["old_mass"]["first"] for m in members]
    assert first[0] != first[1]


def test_member_starts_must_match_the_template():
    """Starts of another architecture, or with other buffers (shared by the members), are refused."""
    task = TwoModeTask(dim=1, delta=4.0)
    gen = Flow(task, transforms=2, hidden=[16], pretrain={"steps": 0})
    with pytest.raises(ValueError, match="architecture"):
        batched(gen, 2, [gen, Flow(task, transforms=2, bins=4, hidden=[16], pretrain={"steps": 0})])
    other = Flow(TwoModeTask(dim=1, delta=5.0), transforms=2, hidden=[16], pretrain={"steps": 0})
    with pytest.raises(ValueError, match="buffers"):
        batched(gen, 2, [gen, other])
    with pytest.raises(ValueError, match="2 member starts for 3"):
        batched(gen, 3, [gen, gen])


def test_pretrain_cache_keys_on_the_seed(tmp_path):
    """Two pretraining seeds are two cache files; each is read back as exactly the weights its seed trains."""
    task = TwoModeTask(dim=1, delta=4.0)
    kw = {"hidden": [8], "cache_dir": str(tmp_path)}
    a0, b0 = (MixtureDensityNetwork(task, pretrain={"steps": 20, "seed": s}, **kw) for s in (0, 1))
    assert len(list(tmp_path.glob("mdn-*.pt"))) == 2
    a1, b1 = (MixtureDensityNetwork(task, pretrain={"steps": 20, "seed": s}, **kw) for s in (0, 1))
    assert a1.pretrain_stats["pretrain_cached"] == b1.pretrain_stats["pretrain_cached"] == 1.0
    for fresh, cached in ((a0, a1), (b0, b1)):
        assert all(torch.equal(p, q) for p, q in zip(_params(fresh), _params(cached), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(_params(a1), _params(b1), strict=True))
