"""Classical bandit agents, batched over B independent instances in torch, and `run`.

Every agent keeps its state as (B, K) tensors (LinUCB: (B, K, d, d)) and chooses all B arms in a
few tensor ops, with no Python loop over instances, on cpu or cuda. The protocol (shared with
envs/bandits.py's `BatchedBandit` and the LLM agents of agents/llm_bandit.py):

    agent.reset(num_instances, num_arms, device, context_dim=0)
    arms = agent.act(context)                  # LongTensor (B,); context (B, d) or None
    agent.update(arms, rewards, context)       # the context the arms were chosen on

Baselines (the reference's; see ../shared/reference/algorithms.md, "Bandits"):

- `UCB(alpha=0.5)`: mean_a + sqrt(alpha ln N / n_a), N the pulls so far; unpulled arms score
  +inf, so each arm is pulled once first (in random order).
- `ThompsonBeta`: Beta(1, 1) prior per arm, posterior Beta(1 + successes, 1 + failures). Rewards
  must lie in [0, 1]; a reward r counts as a success with probability r (exact for 0/1 rewards,
  the Agrawal-Goyal trick otherwise).
- `ThompsonGaussian(prior_mean, prior_std, noise_std)`: Gaussian arms with known noise; prior
  N(prior_mean, prior_std^2) per arm mean. `for_spec` takes prior_std = spec.sigma and
  noise_std = spec.noise, which is exactly the generative model of the Gaussian tasks.
- `EpsilonGreedy(epsilon=0.1)`, `Greedy` (epsilon 0): best empirical mean, each arm once first.
- `LinUCB(alpha=0.5)`: disjoint LinUCB (one ridge regression per arm, A = I + sum x x^T), with
  A^-1 kept per instance and arm as one (B, K, d, d) tensor and updated by Sherman-Morrison. On a
  multi-armed task the context is the constant 1.
- `Uniform`: a uniformly random arm.

Ties are broken uniformly at random by `random_argmax` (one 31-bit draw per instance per round
from the agent's own seeded generator), so no agent favours low arm indices and a run is
reproducible from its seed.

`ucb_bernoulli_straightforward` and `ucb_bernoulli_fused` are UCB on Bernoulli arms at scale (the
benchmark in benchmarks/bench_bandits.py): the same choices for the same seed on cpu, the second
as one compiled kernel per round with int32 state and the random bits drawn in bulk.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from envs.bandits import BanditSpec, BatchedBandit

Device = str | torch.device


# --- the protocol and shared helpers ---------------------------------------------------------------


@runtime_checkable
class BanditAgent(Protocol):
    """What `run` (and the suite report) needs from an agent."""

    def reset(self, num_instances: int, num_arms: int, device: Device, context_dim: int = 0) -> None: ...

    def act(self, context: Tensor | None) -> Tensor: ...

    def update(self, arms: Tensor, rewards: Tensor, context: Tensor | None = None) -> None: ...


def random_bits(num: int, generator: torch.Generator, device: Device) -> Tensor:
    """`num` int32 values uniform on [0, 2^31), from `generator` (cheaper than float draws on cpu)."""
    return torch.empty(num, dtype=torch.int32, device=device).random_(generator=generator)


def random_argmax(scores: Tensor, generator: torch.Generator) -> Tensor:
    """Row-wise argmax of (B, K) `scores`, ties broken uniformly at random: LongTensor (B,).

    With m tied maxima, the j-th of them (in arm order) is taken, j = floor(m * v / 2^24) for a
    24-bit uniform v; one draw per row, whether or not it has ties, so the random stream does not
    depend on the scores. Scores must not be NaN (+inf is fine: it is how unpulled arms go first).
    """
    best = scores.amax(dim=1, keepdim=True)
    tied = scores == best
    ties = tied.sum(dim=1)
    bits = random_bits(scores.shape[0], generator, scores.device)
    j = ((bits >> 7).long() * ties) >> 24
    rank = tied.cumsum(dim=1) - 1
    return (tied & (rank == j[:, None])).to(torch.uint8).argmax(dim=1)


def _generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


class _Agent:
    """Shared bookkeeping: the instance/arm sizes, the device and a generator reseeded on reset,
    so two runs of one agent object with the same seed make the same choices."""

    name: ClassVar[str] = "agent"
    # task families the agent is a sensible baseline for (None: every family)
    families: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.num_instances = 0
        self.num_arms = 0
        self.context_dim = 0
        self.device = torch.device("cpu")
        self.generator = _generator(self.device, self.seed)
        self.t = 0  # rounds seen by update()

    def reset(self, num_instances: int, num_arms: int, device: Device, context_dim: int = 0) -> None:
        if num_instances < 1 or num_arms < 1:
            raise ValueError(f"need num_instances >= 1 and num_arms >= 1, got {num_instances}, {num_arms}")
        self.num_instances, self.num_arms, self.context_dim = (
            int(num_instances),
            int(num_arms),
            int(context_dim),
        )
        self.device = torch.device(device)
        self.generator = _generator(self.device, self.seed)
        self.t = 0
        self._rows = torch.arange(self.num_instances, device=self.device)

    def _check_update(self, arms: Tensor, rewards: Tensor) -> tuple[Tensor, Tensor]:
        if arms.shape != (self.num_instances,) or rewards.shape != (self.num_instances,):
            raise ValueError(
                f"update needs arms and rewards of shape ({self.num_instances},), "
                f"got {tuple(arms.shape)} and {tuple(rewards.shape)}"
            )
        return arms.to(self.device, torch.long), rewards.to(self.device)

    @classmethod
    def supports(cls, spec: BanditSpec) -> bool:
        """Whether the agent is a baseline for this task (the suite report runs only those)."""
        return cls.families is None or spec.family in cls.families

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed})"


class _CountingAgent(_Agent):
    """Per-arm pull counts (int64) and reward sums (float32), the statistics of index policies."""

    def reset(self, num_instances: int, num_arms: int, device: Device, context_dim: int = 0) -> None:
        super().reset(num_instances, num_arms, device, context_dim)
        shape = (self.num_instances, self.num_arms)
        self.counts = torch.zeros(shape, dtype=torch.long, device=self.device)
        self.sums = torch.zeros(shape, dtype=torch.float32, device=self.device)

    def update(self, arms: Tensor, rewards: Tensor, context: Tensor | None = None) -> None:
        arms, rewards = self._check_update(arms, rewards)
        self.counts[self._rows, arms] += 1
        self.sums[self._rows, arms] += rewards.float()
        self.t += 1

    @property
    def means(self) -> Tensor:
        """Empirical mean reward per arm (B, K); NaN for arms not yet pulled."""
        return self.sums / self.counts


# --- index policies ----------------------------------------------------------------------------------


class UCB(_CountingAgent):
    """UCB with bonus sqrt(alpha ln N / n_a) (the reference's alpha = 0.5).

    N is the number of rounds so far, the same for every instance (one pull per round), so ln N
    is one scalar per round rather than a per-element log.
    """

    name = "ucb"

    def __init__(self, alpha: float = 0.5, seed: int = 0):
        super().__init__(seed)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)

    def scores(self) -> Tensor:
        """Per-arm UCB index (B, K); +inf for unpulled arms (so each is tried once first)."""
        c = self.alpha * math.log(max(self.t, 1))
        return torch.where(self.counts == 0, math.inf, self.sums / self.counts + torch.sqrt(c / self.counts))

    def act(self, context: Tensor | None = None) -> Tensor:
        return random_argmax(self.scores(), self.generator)

    def __repr__(self) -> str:
        return f"UCB(alpha={self.alpha}, seed={self.seed})"


class EpsilonGreedy(_CountingAgent):
    """With probability epsilon a uniform arm, otherwise the best empirical mean (ties at random).

    Unpulled arms count as +inf, so each arm is pulled once before the empirical means decide: the
    usual initialization, without which "best mean" is undefined.
    """

    name = "epsilon_greedy"

    def __init__(self, epsilon: float = 0.1, seed: int = 0):
        super().__init__(seed)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {epsilon}")
        self.epsilon = float(epsilon)

    def act(self, context: Tensor | None = None) -> Tensor:
        greedy = random_argmax(torch.where(self.counts == 0, math.inf, self.means), self.generator)
        if self.epsilon == 0.0:
            return greedy
        explore = torch.rand(self.num_instances, generator=self.generator, device=self.device) < self.epsilon
        uniform = torch.randint(
            self.num_arms, (self.num_instances,), generator=self.generator, device=self.device
        )
        return torch.where(explore, uniform, greedy)

    def __repr__(self) -> str:
        return f"EpsilonGreedy(epsilon={self.epsilon}, seed={self.seed})"


class Greedy(EpsilonGreedy):
    """Always the best empirical mean (after one pull of each arm): the no-exploration baseline."""

    name = "greedy"

    def __init__(self, seed: int = 0):
        super().__init__(epsilon=0.0, seed=seed)

    def __repr__(self) -> str:
        return f"Greedy(seed={self.seed})"


class Uniform(_Agent):
    """A uniformly random arm every round: the regret of not learning at all."""

    name = "uniform"

    def act(self, context: Tensor | None = None) -> Tensor:
        return torch.randint(
            self.num_arms, (self.num_instances,), generator=self.generator, device=self.device
        )

    def update(self, arms: Tensor, rewards: Tensor, context: Tensor | None = None) -> None:
        self._check_update(arms, rewards)
        self.t += 1


# --- Thompson sampling -------------------------------------------------------------------------------


def sample_gamma(shape: Tensor, generator: torch.Generator) -> Tensor:
    """Gamma(shape, 1) draws (same shape as `shape`) from `generator`.

    torch's own Gamma sampler takes no generator, which would tie Thompson sampling to the global
    RNG; this is Marsaglia and Tsang's method (2000) in tensor ops: propose for every element,
    keep the accepted ones, repeat for the rest (acceptance > 95% for shape >= 1, so a handful of
    passes). Shapes below 1 use Gamma(a) = Gamma(a + 1) * U^(1/a).
    """
    shape = shape.float()
    small = shape < 1
    a = torch.where(small, shape + 1, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.zeros_like(a)
    pending = torch.ones_like(a, dtype=torch.bool)
    while True:
        x = torch.randn(a.shape, generator=generator, device=a.device)
        u = torch.rand(a.shape, generator=generator, device=a.device)
        v = (1.0 + c * x) ** 3
        safe_v = v.clamp_min(1e-30)
        accept = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * safe_v + d * torch.log(safe_v))
        take = pending & accept
        out = torch.where(take, d * v, out)
        pending = pending & ~take
        if not bool(pending.any()):
            break
    if bool(small.any()):
        u = torch.rand(a.shape, generator=generator, device=a.device)
        out = torch.where(small, out * u.pow(1.0 / shape.clamp_min(1e-12)), out)
    return out


def sample_beta(alpha: Tensor, beta: Tensor, generator: torch.Generator) -> Tensor:
    """Beta(alpha, beta) draws as X / (X + Y), X ~ Gamma(alpha), Y ~ Gamma(beta)."""
    x = sample_gamma(alpha, generator)
    y = sample_gamma(beta, generator)
    return x / (x + y)


class ThompsonBeta(_Agent):
    """Thompson sampling for Bernoulli arms: Beta(1, 1) prior, Beta(1 + s_a, 1 + f_a) posterior.

    `alpha` and `beta` (B, K) are the posterior parameters. A reward r in [0, 1] is a success
    with probability r (a uniform draw u < r): exactly the reward for 0/1 rewards, and the
    Agrawal-Goyal reduction for fractional ones. Rewards outside [0, 1] are clipped.
    """

    name = "thompson_beta"
    families = ("bernoulli",)

    def reset(self, num_instances: int, num_arms: int, device: Device, context_dim: int = 0) -> None:
        super().reset(num_instances, num_arms, device, context_dim)
        self.alpha = torch.ones((self.num_instances, self.num_arms), device=self.device)
        self.beta = torch.ones((self.num_instances, self.num_arms), device=self.device)

    def act(self, context: Tensor | None = None) -> Tensor:
        return random_argmax(sample_beta(self.alpha, self.beta, self.generator), self.generator)

    def update(self, arms: Tensor, rewards: Tensor, context: Tensor | None = None) -> None:
        arms, rewards = self._check_update(arms, rewards)
        u = torch.rand(self.num_instances, generator=self.generator, device=self.device)
        success = (u < rewards.float().clamp(0.0, 1.0)).float()
        self.alpha[self._rows, arms] += success
        self.beta[self._rows, arms] += 1.0 - success
        self.t += 1


class ThompsonGaussian(_Agent):
    """Thompson sampling for Gaussian arms with known noise.

    Model: mean_a ~ N(prior_mean, prior_std^2), reward ~ N(mean_a, noise_std^2). After n pulls
    with reward sum S the posterior of mean_a is Gaussian with
        precision = 1 / prior_std^2 + n / noise_std^2,
        mean      = (prior_mean / prior_std^2 + S / noise_std^2) / precision.
    Statistics are float64 so the posterior is exact to rounding over long runs.
    """

    name = "thompson_gaussian"
    families = ("gaussian",)

    def __init__(
        self, prior_mean: float = 0.0, prior_std: float = 1.0, noise_std: float = 1.0, seed: int = 0
    ):
        super().__init__(seed)
        if prior_std <= 0 or noise_std <= 0:
            raise ValueError(f"prior_std and noise_std must be > 0, got {prior_std}, {noise_std}")
        self.prior_mean, self.prior_std, self.noise_std = (
            float(prior_mean),
            float(prior_std),
            float(noise_std),
        )

    @classmethod
    def for_spec(cls, spec: BanditSpec, seed: int = 0) -> ThompsonGaussian:
        """The task's own generative model: means ~ N(0, sigma^2), reward noise std `spec.noise`."""
        prior_std = spec.sigma if spec.sigma > 0 else 1.0
        noise_std = spec.noise if spec.noise > 0 else 1.0
        return cls(prior_mean=0.0, prior_std=prior_std, noise_std=noise_std, seed=seed)

    def reset(self, num_instances: int, num_arms: int, device: Device, context_dim: int = 0) -> None:
        super().reset(num_instances, num_arms, device, context_dim)
        shape = (self.num_instances, self.num_arms)
        self.counts = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.sums = torch.zeros(shape, dtype=torch.float64, device=self.device)

    @property
    def posterior_precision(self) -> Tensor:
        return 1.0 / self.prior_std**2 + self.counts / self.noise_std**2

    @property
    def posterior_mean(self) -> Tensor:
        """(B, K) float64."""
        return (
            self.prior_mean / self.prior_std**2 + self.sums / self.noise_std**2
        ) / self.posterior_precision

    @property
    def posterior_var(self) -> Tensor:
        """(B, K) float64."""
        return 1.0 / self.posterior_precision

    def act(self, context: Tensor | None = None) -> Tensor:
        noise = torch.randn(
            (self.num_instances, self.num_arms),
            generator=self.generator,
            device=self.device,
            dtype=torch.float64,
        )
        return random_argmax(self.posterior_mean + self.posterior_var.sqrt() * noise, self.generator)

    def update(self, arms: Tensor, rewards: Tensor, context: Tensor | None = None) -> None:
        arms, rewards = self._check_update(arms, rewards)
        self.counts[self._rows, arms] += 1.0
        self.sums[self._rows, arms] += rewards.double()
        self.t += 1

    def __repr__(self) -> str:
        return (
            f"ThompsonGaussian(prior_mean={self.prior_mean}, prior_std={self.prior_std}, "
            f"noise_std={self.noise_std}, seed={self.seed})"
        )


# --- LinUCB ------------------------------------------------------------------------------------------


class LinUCB(_Agent):
    """Disjoint LinUCB (Li et al. 2010): per arm a ridge regression theta_a = A_a^-1 b_a with
    A_a = reg * I + sum x x^T over the rounds the arm was pulled; score x . theta_a +
    alpha * sqrt(x^T A_a^-1 x).

    A^-1 is one (B, K, d, d) tensor. An update touches only the pulled arm of each instance, and
    Sherman-Morrison makes it O(d^2) instead of a d x d inverse:
        A^-1 <- A^-1 - (A^-1 x)(A^-1 x)^T / (1 + x^T A^-1 x).
    `update` uses its `context` argument when given (the context the arms were chosen on), else the
    one `act` last saw. With no context (multi-armed tasks) x is the constant 1.
    """

    name = "linucb"
    families = ("lowrank", "linear")

    def __init__(self, alpha: float = 0.5, reg: float = 1.0, seed: int = 0):
        super().__init__(seed)
        if alpha < 0 or reg <= 0:
            raise ValueError(f"need alpha >= 0 and reg > 0, got {alpha}, {reg}")
        self.alpha, self.reg = float(alpha), float(reg)

    def reset(self, num_instances: int, num_arms: int, device: Device, context_dim: int = 0) -> None:
        super().reset(num_instances, num_arms, device, context_dim)
        d = max(self.context_dim, 1)
        eye = torch.eye(d, device=self.device) / self.reg
        self.a_inv = eye.expand(self.num_instances, self.num_arms, d, d).clone()
        self.b = torch.zeros((self.num_instances, self.num_arms, d), device=self.device)
        self._last_context: Tensor | None = None

    def _features(self, context: Tensor | None) -> Tensor:
        if context is None:
            return torch.ones((self.num_instances, 1), device=self.device)
        x = context.to(self.device, torch.float32)
        if x.shape != (self.num_instances, max(self.context_dim, 1)):
            raise ValueError(
                f"context must have shape ({self.num_instances}, {self.context_dim}), got {tuple(x.shape)}"
            )
        return x

    @property
    def theta(self) -> Tensor:
        """Ridge estimates (B, K, d)."""
        return torch.einsum("bkij,bkj->bki", self.a_inv, self.b)

    def scores(self, context: Tensor | None) -> Tensor:
        """Per-arm LinUCB index (B, K) for this context."""
        x = self._features(context)
        a_inv_x = torch.einsum("bkij,bj->bki", self.a_inv, x)
        variance = torch.einsum("bki,bi->bk", a_inv_x, x).clamp_min(0.0)
        mean = torch.einsum("bki,bi->bk", self.theta, x)
        return mean + self.alpha * variance.sqrt()

    def act(self, context: Tensor | None = None) -> Tensor:
        self._last_context = context
        return random_argmax(self.scores(context), self.generator)

    def update(self, arms: Tensor, rewards: Tensor, context: Tensor | None = None) -> None:
        arms, rewards = self._check_update(arms, rewards)
        x = self._features(context if context is not None else self._last_context)
        a_inv = self.a_inv[self._rows, arms]  # (B, d, d), the pulled arm's
        u = torch.einsum("bij,bj->bi", a_inv, x)
        denom = 1.0 + (u * x).sum(dim=1)
        self.a_inv[self._rows, arms] = a_inv - u[:, :, None] * u[:, None, :] / denom[:, None, None]
        self.b[self._rows, arms] += rewards.float()[:, None] * x
        self.t += 1

    def __repr__(self) -> str:
        return f"LinUCB(alpha={self.alpha}, reg={self.reg}, seed={self.seed})"


# --- registry ----------------------------------------------------------------------------------------

AGENTS: dict[str, Callable[[], BanditAgent]] = {
    "ucb": UCB,
    "thompson_beta": ThompsonBeta,
    "thompson_gaussian": ThompsonGaussian,
    "epsilon_greedy": EpsilonGreedy,
    "greedy": Greedy,
    "linucb": LinUCB,
    "uniform": Uniform,
}


def agent_names_for(spec: BanditSpec, names: Sequence[str] | None = None) -> list[str]:
    """The baselines (of `names`, default all) that apply to this task: Beta-Thompson only on
    Bernoulli arms, Gaussian Thompson on Gaussian arms, LinUCB on contextual tasks; the others on
    every task (ignoring the context where there is one)."""
    chosen = list(AGENTS) if names is None else list(names)
    return [name for name in chosen if AGENTS[name].supports(spec)]  # type: ignore[attr-defined]


def make_agent(name: str, spec: BanditSpec | None = None, seed: int = 0) -> BanditAgent:
    """Agent `name` configured for `spec` (Gaussian Thompson takes the task's prior and noise)."""
    from explore.errors import ConfigError, close_matches

    if name not in AGENTS:
        hint = close_matches(name, AGENTS)
        raise ConfigError(
            f"unknown bandit agent {name!r}."
            + (f" Did you mean: {', '.join(hint)}?" if hint else "")
            + f" Valid agents: {', '.join(AGENTS)}"
        )
    if name == "thompson_gaussian" and spec is not None:
        return ThompsonGaussian.for_spec(spec, seed=seed)
    return AGENTS[name](seed=seed)  # type: ignore[call-arg]


# --- running an agent on a batched bandit ------------------------------------------------------------


@dataclass
class Trajectory:
    """One run of an agent on B instances for T rounds; every tensor is (T, B) on the bandit's device.

    `chosen_expected` and `best_expected` are the expected rewards of the pulled arm and of the
    best arm in that round (given that round's context), which is what regret is measured on.
    """

    arms: Tensor  # int64
    rewards: Tensor  # float32
    chosen_expected: Tensor  # float32
    best_expected: Tensor  # float32
    num_arms: int

    @property
    def horizon(self) -> int:
        return self.arms.shape[0]

    @property
    def num_instances(self) -> int:
        return self.arms.shape[1]

    @property
    def regret(self) -> Tensor:
        """Per-round (pseudo-)regret (T, B): best minus chosen expected reward."""
        return self.best_expected - self.chosen_expected

    def cpu(self) -> Trajectory:
        return Trajectory(
            self.arms.cpu(),
            self.rewards.cpu(),
            self.chosen_expected.cpu(),
            self.best_expected.cpu(),
            self.num_arms,
        )


@torch.no_grad()
def run(
    bandit: BatchedBandit,
    agent: BanditAgent,
    horizon: int | None = None,
    on_round: Callable[[int], object] | None = None,
) -> Trajectory:
    """Reset `bandit` and `agent`, play `horizon` rounds (default: the task's), record everything.

    The agent's `update` gets the context its arms were chosen on (not the next one). `on_round(1)`
    is called after each round (e.g. a progress bar's `update`).
    """
    horizon = bandit.horizon if horizon is None else int(horizon)
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    b, dev = bandit.num_instances, bandit.device
    context = bandit.reset()
    agent.reset(b, bandit.num_arms, dev, bandit.context_dim)
    arms_t = torch.empty((horizon, b), dtype=torch.long, device=dev)
    rewards_t = torch.empty((horizon, b), dtype=torch.float32, device=dev)
    chosen_t = torch.empty((horizon, b), dtype=torch.float32, device=dev)
    best_t = torch.empty((horizon, b), dtype=torch.float32, device=dev)
    for t in range(horizon):
        arms = agent.act(context).to(dev, torch.long)
        expected = bandit.expected_rewards()
        chosen_t[t] = expected.gather(1, arms[:, None]).squeeze(1)
        best_t[t] = expected.amax(dim=1)
        rewards, next_context = bandit.step(arms)
        agent.update(arms, rewards, context)
        arms_t[t] = arms
        rewards_t[t] = rewards
        context = next_context
        if on_round is not None:
            on_round(1)
    return Trajectory(arms_t, rewards_t, chosen_t, best_t, bandit.num_arms)


# --- UCB on Bernoulli arms at scale (benchmarks/bench_bandits.py) -------------------------------------

_BITS = 2**31  # random_bits draws uniformly from [0, 2^31)
_ENV_SEED_OFFSET = 1_000_003  # the reward stream's seed, distinct from the agent's


def bernoulli_thresholds(means: Tensor) -> Tensor:
    """int32 thresholds (B, K) such that a reward is 1 iff a 31-bit uniform draw is <= the threshold.

    P(reward = 1) = ceil(p 2^31) / 2^31, within 2^-31 of p. Integer compares are exact, so the
    straightforward and the fused paths agree bit for bit.
    """
    thr = torch.ceil(means.double() * _BITS) - 1
    return thr.clamp(-1, _BITS - 1).to(torch.int32)


def _check_means(means: Tensor, horizon: int) -> None:
    if means.dim() != 2 or means.shape[1] < 1:
        raise ValueError(f"means must be (B, K), got {tuple(means.shape)}")
    if horizon < 1 or horizon >= 2**24:
        raise ValueError(f"horizon must lie in [1, 2^24) (exact float32 counts), got {horizon}")
    if means.shape[1] > 127:
        raise ValueError(f"the fused tie-break needs K <= 127 arms, got {means.shape[1]}")


@torch.no_grad()
def ucb_bernoulli_straightforward(
    means: Tensor, horizon: int, seed: int = 0, alpha: float = 0.5, record: bool = True
) -> Tensor | None:
    """UCB on B Bernoulli instances with arm means `means` (B, K): the plain batched version.

    One `UCB.act` (int64 counts, float32 sums), one Bernoulli step (a 31-bit draw per instance
    compared with the pulled arm's threshold) and one `UCB.update` per round, uncompiled. Returns
    the (T, B) int64 arms when `record`, else None. The agent's generator is seeded with `seed`,
    the reward stream with `seed + 1_000_003`.
    """
    _check_means(means, horizon)
    b, k = means.shape
    dev = means.device
    thr = bernoulli_thresholds(means)
    agent = UCB(alpha=alpha, seed=seed)
    agent.reset(b, k, dev)
    env_gen = _generator(dev, seed + _ENV_SEED_OFFSET)
    out = torch.empty((horizon, b), dtype=torch.long, device=dev) if record else None
    for t in range(horizon):
        arms = agent.act(None)
        bits = random_bits(b, env_gen, dev)
        rewards = (bits <= thr.gather(1, arms[:, None]).squeeze(1)).float()
        agent.update(arms, rewards)
        if out is not None:
            out[t] = arms
    return out


def _ucb_round(
    counts: list[Tensor],
    sums: list[Tensor],
    thresholds: list[Tensor],
    c: Tensor,
    tie_bits: Tensor,
    reward_bits: Tensor,
    choice_out: Tensor,
) -> None:
    """One UCB round on K per-arm int32 columns (B,), in place; compiled into one loop over B.

    The arithmetic is `UCB.scores` and `random_argmax` op for op (s / n + sqrt(c / n) in float32,
    no multiply-add that a compiler could contract), so the choices are the same bit for bit.
    The arms are unrolled in Python: K columns instead of a (B, K) tensor keep every op pointwise
    in B, which is what lets Inductor fuse the whole round into a single vectorized kernel.
    """
    k = len(counts)
    scores = []
    for a in range(k):
        n = counts[a].float()
        scores.append(torch.where(counts[a] == 0, math.inf, sums[a].float() / n + torch.sqrt(c / n)))
    best = scores[0]
    for a in range(1, k):
        best = torch.maximum(best, scores[a])
    tied = [s == best for s in scores]
    ties = tied[0].int()
    for a in range(1, k):
        ties = ties + tied[a].int()
    j = ((tie_bits >> 7) * ties) >> 24  # < 2^24 * 127: fits int32
    seen = torch.zeros_like(ties)
    choice = torch.zeros_like(ties)
    for a in range(k):
        choice = torch.where(tied[a] & (seen == j), a, choice)
        seen = seen + tied[a].int()
    for a in range(k):
        hit = choice == a
        counts[a].add_(hit.int())
        sums[a].add_((hit & (reward_bits <= thresholds[a])).int())
    choice_out.copy_(choice)


_COMPILED_ROUND: Callable[..., None] | None = None


def _compiled_round() -> Callable[..., None]:
    """`_ucb_round` through torch.compile, built once (dynamic B, so sizes do not recompile)."""
    global _COMPILED_ROUND
    if _COMPILED_ROUND is None:
        _COMPILED_ROUND = torch.compile(_ucb_round, dynamic=True)
    return _COMPILED_ROUND


@torch.no_grad()
def ucb_bernoulli_fused(
    means: Tensor,
    horizon: int,
    seed: int = 0,
    alpha: float = 0.5,
    record: bool = True,
    compile: bool = True,
    block_rounds: int | None = None,
    cuda_graph: bool = True,
    prefetch: bool = True,
) -> Tensor | None:
    """UCB on Bernoulli arms, optimized: the same arms as `ucb_bernoulli_straightforward` (cpu).

    - State as K int32 count and K int32 reward-sum columns (B,) updated in place. Leaner types
      were tried (int16/uint8 counts, float16/bfloat16 sums, count and sum packed in one int32):
      Inductor's cpu code for them is not fully vectorized and the kernel was 1.2-7x slower.
    - One fused kernel per round (`_ucb_round` via torch.compile): scores, the random tie-break,
      the Bernoulli reward and the update in one pass over the state, against about 30 ops (each
      a pass and a temporary) in eager mode. Several rounds per kernel were tried too: Inductor
      then splits the graph into many loops and it was 2-6x slower per round.
    - ln N is one scalar per round (all instances are at the same round), precomputed.
    - The random bits of `block_rounds` rounds are drawn in one call per stream; on cpu torch's
      generator gives the same numbers in bulk as round by round, so the choices match. On cpu
      (`prefetch`) the next block is drawn on a second thread while this block's kernels run.
    - On cuda, the rounds of a block are captured once as a CUDA graph and replayed (Python and
      launch overhead gone); the bulk draws differ from per-round draws there (Philox offsets), so
      the match with the straightforward version is a cpu property.

    Returns the (T, B) int8 arms when `record`, else None.
    """
    _check_means(means, horizon)
    b, k = means.shape
    dev = means.device
    fn: Callable[..., None] = _compiled_round() if compile else _ucb_round
    state = torch.zeros((2, k, b), dtype=torch.int32, device=dev)
    counts, sums = list(state[0].unbind(0)), list(state[1].unbind(0))
    thresholds = list(bernoulli_thresholds(means).T.contiguous().unbind(0))
    agent_gen = _generator(dev, seed)
    env_gen = _generator(dev, seed + _ENV_SEED_OFFSET)
    if block_rounds is None:
        block_rounds = max(1, min(horizon, (1 << 20) // b))  # ~4 MB of random bits per stream
    tb = block_rounds
    c_all = torch.tensor([alpha * math.log(max(t, 1)) for t in range(horizon)], dtype=torch.float64)
    c_all = c_all.float().to(dev)
    out = torch.empty((horizon, b), dtype=torch.int8, device=dev) if record else None
    scratch = torch.empty((tb, b), dtype=torch.int8, device=dev)
    use_prefetch = prefetch and dev.type == "cpu" and horizon > tb
    buffers = [
        (
            torch.empty((tb, b), dtype=torch.int32, device=dev),
            torch.empty((tb, b), dtype=torch.int32, device=dev),
        )
        for _ in range(2 if use_prefetch else 1)
    ]

    def draw(buffer: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        buffer[0].random_(generator=agent_gen)
        buffer[1].random_(generator=env_gen)
        return buffer

    graph = None
    if dev.type == "cuda" and cuda_graph and horizon >= 2 * tb:
        graph, c_static = _capture_rounds(fn, counts, sums, thresholds, *buffers[0], scratch, tb)

    def play(t0: int, tie_bits: Tensor, reward_bits: Tensor) -> None:
        n = min(tb, horizon - t0)
        if graph is not None and n == tb:
            c_static.copy_(c_all[t0 : t0 + tb])
            graph.replay()
        else:
            for i in range(n):
                fn(counts, sums, thresholds, c_all[t0 + i], tie_bits[i], reward_bits[i], scratch[i])
        if out is not None:
            out[t0 : t0 + n] = scratch[:n]

    starts = range(0, horizon, tb)
    if use_prefetch:
        # the generator is serial, so the next block's bits are drawn on a second thread while
        # this block's kernels run (both release the GIL); the streams are consumed in the same
        # order, so the numbers are the same
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(draw, buffers[0])
            for j, t0 in enumerate(starts):
                bits = pending.result()
                if t0 + tb < horizon:
                    pending = pool.submit(draw, buffers[(j + 1) % 2])
                play(t0, *bits)
    else:
        for t0 in starts:
            play(t0, *draw(buffers[0]))
    # a partial last block drew a full block of bits: harmless, nothing reads the stream after
    return out


def _capture_rounds(
    fn: Callable[..., None],
    counts: list[Tensor],
    sums: list[Tensor],
    thresholds: list[Tensor],
    tie_bits: Tensor,
    reward_bits: Tensor,
    scratch: Tensor,
    rounds: int,
) -> tuple[torch.cuda.CUDAGraph | None, Tensor]:
    """Capture `rounds` calls of the round kernel on static buffers as one CUDA graph.

    Compilation and the warm-up run on copies of the state (the capture must not be the first
    call, and the warm-up must not advance the real state). Returns (None, ...) and warns if the
    capture fails, in which case the rounds run as ordinary launches.
    """
    c_static = torch.zeros(rounds, dtype=torch.float32, device=tie_bits.device)
    try:
        warm_counts = [x.clone() for x in counts]
        warm_sums = [x.clone() for x in sums]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                fn(warm_counts, warm_sums, thresholds, c_static[0], tie_bits[0], reward_bits[0], scratch[0])
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(rounds):
                fn(counts, sums, thresholds, c_static[i], tie_bits[i], reward_bits[i], scratch[i])
        return graph, c_static
    except Exception as exc:  # a capture failure should cost speed, not the run
        warnings.warn(
            f"CUDA graph capture of the UCB rounds failed ({exc}); running without it", stacklevel=3
        )
        return None, c_static


__all__ = [
    "AGENTS",
    "BanditAgent",
    "EpsilonGreedy",
    "Greedy",
    "LinUCB",
    "ThompsonBeta",
    "ThompsonGaussian",
    "Trajectory",
    "UCB",
    "Uniform",
    "agent_names_for",
    "bernoulli_thresholds",
    "make_agent",
    "random_argmax",
    "random_bits",
    "run",
    "sample_beta",
    "sample_gamma",
    "ucb_bernoulli_fused",
    "ucb_bernoulli_straightforward",
]
