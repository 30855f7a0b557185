"""The batched bandit agents (agents/bandits.py): exact posteriors, regret behaviour, tie-breaking,
reproducibility, and the fused UCB kernel against the straightforward one.

Statistical checks use fixed seeds, so they are exact reruns, not flaky draws: a failure means
changed behaviour, not bad luck.
"""

from __future__ import annotations

import math

import pytest
import torch

from agents.bandits import (
    AGENTS,
    UCB,
    LinUCB,
    ThompsonBeta,
    ThompsonGaussian,
    Trajectory,
    Uniform,
    agent_names_for,
    bernoulli_thresholds,
    make_agent,
    random_argmax,
    run,
    sample_beta,
    sample_gamma,
    ucb_bernoulli_fused,
    ucb_bernoulli_straightforward,
)
from envs.bandits import BANDIT_SPECS, BatchedBandit, get_spec
from explore.bandit_metrics import cumulative_regret, total_regret
from explore.errors import ConfigError

HARD_BERNOULLI = "Bandit-Bernoulli-K5-Hard-v0"


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these tensors are small, and a second thread only adds contention
    (on a shared 2-core machine it made the tests several times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- tie-breaking ------------------------------------------------------------------------------------


def test_random_argmax_picks_only_maxima_uniformly() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]]).expand(30_000, 5)
    arms = random_argmax(scores, _gen())
    counts = torch.bincount(arms, minlength=5)
    assert counts[0] == counts[3] == 0
    # 10,000 expected per tied arm, std ~82: 5 std
    assert (counts[[1, 2, 4]] - 10_000).abs().max() < 410
    # +inf ties (unpulled arms) too, and a single maximum is always taken
    inf = torch.tensor([[math.inf, 0.0, math.inf], [0.0, 2.0, 1.0]])
    picks = torch.stack([random_argmax(inf, _gen(s)) for s in range(50)])
    assert set(picks[:, 0].tolist()) == {0, 2}
    assert (picks[:, 1] == 1).all()


def test_ucb_pulls_every_arm_once_first_in_random_order() -> None:
    bandit = BatchedBandit(HARD_BERNOULLI, 400, seed=1)
    traj = run(bandit, UCB(seed=3), horizon=5)
    for row in traj.arms.T:
        assert sorted(row.tolist()) == [0, 1, 2, 3, 4]
    first = torch.bincount(traj.arms[0], minlength=5)
    assert first.min() > 50  # uniform over 5 arms: 80 each


# --- Thompson posteriors -----------------------------------------------------------------------------


def test_thompson_beta_posterior_counts_exactly() -> None:
    agent = ThompsonBeta(seed=0)
    agent.reset(num_instances=2, num_arms=3, device="cpu")
    script = [  # (arms per instance, rewards per instance)
        ([0, 2], [1.0, 0.0]),
        ([0, 2], [0.0, 0.0]),
        ([1, 1], [1.0, 1.0]),
        ([0, 2], [1.0, 1.0]),
        ([2, 0], [0.0, 1.0]),
    ]
    for arms, rewards in script:
        agent.act(None)  # sampling must not disturb the posterior
        agent.update(torch.tensor(arms), torch.tensor(rewards))
    # instance 0: arm0 1,0,1 -> 2 successes 1 failure; arm1 1 success; arm2 1 failure
    # instance 1: arm2 0,0,1 -> 1 s 2 f; arm1 1 s; arm0 1 s
    assert torch.equal(agent.alpha, torch.tensor([[3.0, 2.0, 1.0], [2.0, 2.0, 2.0]]))
    assert torch.equal(agent.beta, torch.tensor([[2.0, 1.0, 2.0], [1.0, 1.0, 3.0]]))


def test_thompson_gaussian_posterior_mean_and_variance() -> None:
    agent = ThompsonGaussian(prior_mean=0.5, prior_std=2.0, noise_std=1.0, seed=0)
    agent.reset(num_instances=1, num_arms=2, device="cpu")
    for reward in (1.0, 3.0, -0.5):
        agent.act(None)
        agent.update(torch.tensor([0]), torch.tensor([reward]))
    # arm 0: precision 1/4 + 3/1 = 3.25; mean (0.5/4 + 3.5/1) / 3.25
    precision = 0.25 + 3.0
    expected_mean = (0.5 / 4.0 + 3.5) / precision
    assert agent.posterior_var[0, 0].item() == pytest.approx(1.0 / precision, rel=1e-15)
    assert agent.posterior_mean[0, 0].item() == pytest.approx(expected_mean, rel=1e-15)
    # arm 1 is untouched: the prior
    assert agent.posterior_mean[0, 1].item() == 0.5
    assert agent.posterior_var[0, 1].item() == 4.0


def test_thompson_gaussian_takes_the_task_model() -> None:
    spec = get_spec("Bandit-Gaussian-K5-Hard-v0")
    agent = make_agent("thompson_gaussian", spec)
    assert isinstance(agent, ThompsonGaussian)
    assert (agent.prior_std, agent.noise_std) == (spec.sigma, spec.noise)


def test_gamma_and_beta_samples_have_the_right_moments() -> None:
    shape = torch.full((200_000,), 2.5)
    g = sample_gamma(shape, _gen(0))
    assert g.mean().item() == pytest.approx(2.5, abs=0.02)
    assert g.var().item() == pytest.approx(2.5, abs=0.05)
    small = sample_gamma(torch.full((200_000,), 0.4), _gen(1))  # the shape < 1 boost
    assert small.mean().item() == pytest.approx(0.4, abs=0.01)
    a, b = torch.full((200_000,), 2.0), torch.full((200_000,), 5.0)
    x = sample_beta(a, b, _gen(2))
    assert x.mean().item() == pytest.approx(2 / 7, abs=0.003)
    assert x.var().item() == pytest.approx(10 / (49 * 8), abs=0.001)


# --- regret behaviour --------------------------------------------------------------------------------


def test_ucb_regret_is_sublinear_on_the_hard_bernoulli_task() -> None:
    """Fit mean regret(t) ~ c t^p over 1000 instances: UCB's p is well below 1 (Uniform's is 1)."""
    horizon = 3000
    bandit = BatchedBandit(HARD_BERNOULLI, 1000, seed=0)
    curve = cumulative_regret(run(bandit, UCB(seed=0), horizon=horizon)).mean(dim=1)
    ts = torch.unique(torch.logspace(math.log10(50), math.log10(horizon), 20).round().long())
    x, y = ts.double().log(), curve[ts - 1].log()
    slope = (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()
    assert slope < 0.8, slope
    per_round = curve[ts - 1] / ts
    assert per_round[-1] < 0.5 * per_round[0]  # regret per round falls
    uniform = cumulative_regret(run(bandit, Uniform(seed=0), horizon=horizon)).mean(dim=1)
    assert curve[-1] < 0.25 * uniform[-1]


def test_linucb_beats_uniform_on_the_linear_contextual_task() -> None:
    bandit = BatchedBandit("Bandit-Linear-K10-v0", 200, seed=0)
    linucb = total_regret(run(bandit, LinUCB(seed=0))).mean().item()
    uniform = total_regret(run(bandit, Uniform(seed=0))).mean().item()
    assert linucb < 0.4 * uniform, (linucb, uniform)


def test_linucb_sherman_morrison_equals_the_inverse() -> None:
    torch.manual_seed(0)
    b, k, d = 4, 3, 5
    agent = LinUCB(alpha=0.5, seed=0)
    agent.reset(b, k, "cpu", context_dim=d)
    gram = torch.eye(d, dtype=torch.float64).expand(b, k, d, d).clone()
    target = torch.zeros(b, k, d, dtype=torch.float64)
    for _ in range(30):
        x = torch.randn(b, d)
        arms = agent.act(x)
        r = torch.randn(b)
        agent.update(arms, r, x)
        for i in range(b):
            gram[i, arms[i]] += x[i].double().outer(x[i].double())
            target[i, arms[i]] += r[i].double() * x[i].double()
    torch.testing.assert_close(agent.a_inv.double(), torch.linalg.inv(gram), rtol=1e-4, atol=1e-5)
    theta = torch.linalg.solve(gram, target[..., None]).squeeze(-1)
    torch.testing.assert_close(agent.theta.double(), theta, rtol=1e-4, atol=1e-4)


# --- the protocol, run() and reproducibility ---------------------------------------------------------


class _Recorder:
    """Records what run() passes, to check the contexts line up."""

    def reset(self, num_instances: int, num_arms: int, device: torch.device, context_dim: int = 0) -> None:
        self.acted: list[torch.Tensor] = []
        self.updated: list[torch.Tensor] = []
        self.b = num_instances

    def act(self, context: torch.Tensor | None) -> torch.Tensor:
        assert context is not None
        self.acted.append(context.clone())
        return torch.zeros(self.b, dtype=torch.long)

    def update(self, arms: torch.Tensor, rewards: torch.Tensor, context: torch.Tensor | None = None) -> None:
        assert context is not None
        self.updated.append(context.clone())


def test_run_updates_on_the_context_the_arm_was_chosen_on() -> None:
    bandit = BatchedBandit("Bandit-Linear-K10-v0", 3, seed=0)
    agent = _Recorder()
    traj = run(bandit, agent, horizon=4)
    assert isinstance(traj, Trajectory) and traj.arms.shape == (4, 3)
    for acted, updated in zip(agent.acted, agent.updated, strict=True):
        assert torch.equal(acted, updated)
    assert not torch.equal(agent.acted[0], agent.acted[1])  # the context does move on


@pytest.mark.parametrize(
    "env_id", ["Bandit-Bernoulli-K5-Easy-v0", "Bandit-Gaussian-K5-Easy-v0", "Bandit-LowRank-K10-v0"]
)
def test_every_applicable_agent_runs_and_is_reproducible(env_id: str) -> None:
    spec = BANDIT_SPECS[env_id]
    bandit = BatchedBandit(spec, 16, seed=2)
    names = agent_names_for(spec)
    assert "uniform" in names and "ucb" in names
    assert ("thompson_beta" in names) == (spec.family == "bernoulli")
    assert ("linucb" in names) == spec.contextual
    for name in names:
        first = run(bandit, make_agent(name, spec, seed=5), horizon=12)
        again = run(bandit, make_agent(name, spec, seed=5), horizon=12)
        assert first.arms.dtype == torch.long and first.arms.shape == (12, 16)
        assert ((first.arms >= 0) & (first.arms < spec.num_arms)).all()
        assert torch.equal(first.arms, again.arms), name
        assert torch.equal(first.rewards, again.rewards), name
        assert (first.best_expected >= first.chosen_expected).all()


def test_unknown_agent_names_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="linucb"):
        make_agent("linucbb")
    assert set(AGENTS) == {
        "ucb",
        "thompson_beta",
        "thompson_gaussian",
        "epsilon_greedy",
        "greedy",
        "linucb",
        "uniform",
    }


# --- the fused UCB kernel ----------------------------------------------------------------------------


def _bernoulli_means(num_instances: int, seed: int = 0) -> torch.Tensor:
    return BatchedBandit(HARD_BERNOULLI, num_instances, seed=seed).means.clone()


def test_bernoulli_thresholds_give_the_means() -> None:
    thr = bernoulli_thresholds(torch.tensor([[0.0, 0.4, 0.6, 1.0]]))
    assert thr[0, 0] == -1 and thr[0, 3] == 2**31 - 1
    p = torch.tensor(0.4).item()  # the float32 mean, as the bandit holds it
    assert (thr[0, 1].item() + 1) / 2**31 == pytest.approx(p, abs=2**-31)


@pytest.mark.parametrize("block_rounds", [1, 7, None])
def test_fused_round_matches_straightforward_ucb(block_rounds: int | None) -> None:
    """Same arms for the same seed: int32 columns, bulk random bits, uncompiled kernel."""
    means = _bernoulli_means(300)
    reference = ucb_bernoulli_straightforward(means, 250, seed=4)
    fused = ucb_bernoulli_fused(means, 250, seed=4, compile=False, block_rounds=block_rounds)
    assert reference is not None and fused is not None
    assert torch.equal(reference, fused.long())


@pytest.mark.slow  # torch.compile's first compilation; the uncompiled fused kernel is tested above
def test_compiled_fused_ucb_matches_straightforward_ucb() -> None:
    """The torch.compile'd kernel too (bit-identical float32 arithmetic, no FMA contraction).

    The first compilation takes a few seconds (Inductor's cache makes reruns faster).
    """
    means = _bernoulli_means(256, seed=1)
    reference = ucb_bernoulli_straightforward(means, 200, seed=9)
    fused = ucb_bernoulli_fused(means, 200, seed=9, compile=True)
    assert reference is not None and fused is not None
    assert torch.equal(reference, fused.long())


def test_straightforward_ucb_is_the_library_agent_on_bernoulli_arms() -> None:
    """Its arms follow UCB: on an easy task most late pulls go to the best arm."""
    means = BatchedBandit("Bandit-Bernoulli-K5-Easy-v0", 200, seed=0).means.clone()
    arms = ucb_bernoulli_straightforward(means, 300, seed=0)
    assert arms is not None
    best = means.argmax(dim=1)
    assert (arms[-100:] == best).double().mean() > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_agents_and_fused_ucb_run_on_cuda() -> None:
    bandit = BatchedBandit("Bandit-Linear-K10-v0", 64, seed=0, device="cuda")
    for name in ("ucb", "linucb", "uniform", "greedy"):
        traj = run(bandit, make_agent(name, bandit.spec), horizon=20)
        assert traj.arms.device.type == "cuda"
    means = _bernoulli_means(4096).cuda()
    arms = ucb_bernoulli_fused(means, 64, seed=0)
    assert arms is not None and arms.device.type == "cuda"
    counts = torch.stack([(arms.long() == a).sum(0) for a in range(5)], dim=1)
    assert (counts.sum(1) == 64).all() and (counts >= 1).all()
