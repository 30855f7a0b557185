"""Bandit tasks (EVOLvE / BanditBench), batched in torch, behind the VecEnv protocol.

Three layers, so that classical agents, LLM agents and recurrent PPO share one set of tasks:

- `BanditSpec` and `BANDIT_SPECS`: every task as frozen data (its id names its family, arm count
  and difficulty), and `BANDIT_SUITES` ("core", "hard-core", "full").
- `BatchedBandit`: B independent instances of one spec stepped together in torch, on cpu or cuda,
  with no Python loop over instances. Agents (agents/bandits.py) talk to this directly.
- `BanditEnv` (one instance, `gymnasium.Env`) and `BanditVecEnv` (`envs.core.VecEnv`, numpy I/O,
  NEXT_STEP autoreset): one episode = `horizon` pulls of one instance, then a new instance. The
  observation carries the previous action (one-hot), the previous reward and the context, which
  is what a recurrent policy needs to learn to explore in context (meta-RL).

The families and the choices that are ours (the reference fixes the multi-armed presets; it uses
MovieLens-1M for the contextual task, which is downloaded at run time, so a synthetic model of the
same shape stands in here):

- Bernoulli: K - 1 arms with mean 0.5 - delta / 2 and one best arm with 0.5 + delta / 2 (hard:
  delta 0.2, means 0.4 / 0.6; easy: delta 0.5, means 0.25 / 0.75). Rewards are 0 or 1.
- Gaussian: arm means ~ N(0, sigma^2), sigma 3 (hard) or 1 (easy), and reward noise N(0, sigma^2)
  too, i.e. `noise == sigma`. This follows the reference's code (its high/low-variance Gaussian
  bandits pass the same sigma as the mean spread and as the reward std). Unit noise was the
  alternative; it would make "hard" (sigma 3) the *easier* task, because every gap would grow
  3x against the same noise. With noise == sigma the two differ by scale (regret is 3x larger
  in absolute terms) and by horizon (1000 vs 300), not by the gap-to-noise ratio.
- LowRank (MovieLens' shape: K in {10, 30}, horizon 200, rank 20): per instance a fixed population
  of `num_users` users and K items in a rank-20 factorization. A user's feature vector (the
  context) is 19 taste coordinates (N(0, 1/19) each, so its norm is about 1) followed by a
  constant 1; an item is 19 taste coordinates (N(0, 1)) followed by its bias (popularity,
  N(0, 0.5^2)). The score user . item is then min-max normalized per instance over the whole
  population x items matrix to [0, 1], like a 1-5 rating rescaled. The normalization is affine,
  and the constant coordinate absorbs its offset into the items, so the expected reward stays
  *exactly* linear in the context: E[r | user x, arm a] = x . arm_params[a] (with the normalized
  item vectors as `arm_params`). Disjoint LinUCB is therefore well specified. Each round a user is
  drawn uniformly from the population; the reward is the expected reward plus N(0, 0.1^2) noise.
- Linear: a shared context x ~ uniform on the unit sphere in R^5, fresh each round, and per-arm
  parameters theta_a ~ uniform on the unit sphere (per instance), so E[r] = x . theta_a in
  [-1, 1], plus N(0, 0.1^2) noise: the disjoint linear model LinUCB assumes.

Randomness: each bandit holds two torch.Generators on its device, derived from `seed`: one draws
instances (at construction and at `resample_instances`), the other contexts and rewards. Each
step draws a reward for *every* arm of every instance and returns the chosen ones, so the reward
that arm a gives at round t does not depend on the policy: two agents run on bandits built from
the same seed see the same instances, contexts and reward draws (common random numbers), and
`reset()` rewinds the context/reward stream to replay them. Draws on cuda differ from those on cpu
(different generators) but are as reproducible.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from envs.core import InProcessVecEnv, check_actions
from explore.errors import ConfigError, UnknownEnvError

Family = Literal["bernoulli", "gaussian", "lowrank", "linear"]
Difficulty = Literal["easy", "hard"]

EXTRA = "bandits"  # the pip extra of the suite; it needs nothing beyond the core dependencies
ID_PATTERN = re.compile(r"^Bandit-")
NAMESPACE_PREFIX = "Explore/"

# Multi-armed presets (the reference's): gap / spread, and horizon, per difficulty.
BERNOULLI_DELTA: dict[str, float] = {"hard": 0.2, "easy": 0.5}
GAUSSIAN_SIGMA: dict[str, float] = {"hard": 3.0, "easy": 1.0}
MAB_HORIZON: dict[str, int] = {"hard": 1000, "easy": 300}
MAB_ARMS: tuple[int, ...] = (5, 20)

# Contextual presets: MovieLens' shape for both families.
CONTEXTUAL_ARMS: tuple[int, ...] = (10, 30)
CONTEXTUAL_HORIZON = 200
LOWRANK_RANK = 20
LOWRANK_USERS = 100  # the fixed user population of one instance
LOWRANK_ITEM_BIAS_STD = 0.5  # item popularity, smaller than the taste term so the user matters
LINEAR_DIM = 5
CONTEXTUAL_NOISE = 0.1


@dataclass(frozen=True)
class BanditSpec:
    """One bandit task. Fields a family does not use stay at 0 (or None for `difficulty`).

    - `delta`: Bernoulli gap between the best arm and the others.
    - `sigma`: Gaussian standard deviation of the arm means.
    - `rank`: LowRank factorization rank (the context is the user's rank-dim feature vector).
    - `context_dim`: the context's size (rank for LowRank, 0 for multi-armed tasks).
    - `noise`: standard deviation of the Gaussian reward noise (0 for Bernoulli, whose noise is
      the coin flip itself); Thompson sampling with a Gaussian likelihood should use it.
    - `num_users`: LowRank user population per instance.
    """

    id: str
    family: Family
    num_arms: int
    horizon: int
    difficulty: Difficulty | None = None
    delta: float = 0.0
    sigma: float = 0.0
    rank: int = 0
    context_dim: int = 0
    noise: float = 0.0
    num_users: int = 0

    def __post_init__(self) -> None:
        """A task that cannot be drawn (no arms, a negative spread, a contextual task without a
        context) is refused here, naming the field, before any tensor of the wrong shape is built."""

        def fail(name: str, valid: str) -> None:
            raise ConfigError(f"bandit {self.id!r}: {name}={getattr(self, name)!r} is invalid: {valid}")

        if self.family not in get_args(Family):
            fail("family", f"choose one of {', '.join(get_args(Family))}")
        for name in ("num_arms", "horizon"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                fail(name, "it must be an integer >= 1")
        for name in ("sigma", "noise"):
            if not getattr(self, name) >= 0:
                fail(name, "it must be >= 0")
        if not 0.0 <= self.delta <= 1.0:
            fail("delta", "a gap between Bernoulli means lies in [0, 1]")
        if self.family == "gaussian" and not self.sigma > 0:
            fail("sigma", "Gaussian arm means need a spread > 0")
        if self.family in ("lowrank", "linear") and self.context_dim < 1:
            fail("context_dim", f"a {self.family} task needs a context of size >= 1")
        if self.family == "lowrank":
            if self.rank < 2 or self.context_dim != self.rank:
                fail("rank", f"a lowrank task needs rank >= 2 equal to context_dim ({self.context_dim})")
            if self.num_users < 1:
                fail("num_users", "a lowrank task needs at least one user")

    @property
    def contextual(self) -> bool:
        return self.context_dim > 0


def _build_specs() -> dict[str, BanditSpec]:
    specs: list[BanditSpec] = []
    for num_arms in MAB_ARMS:
        for difficulty in ("easy", "hard"):
            specs.append(
                BanditSpec(
                    id=f"Bandit-Bernoulli-K{num_arms}-{difficulty.capitalize()}-v0",
                    family="bernoulli",
                    num_arms=num_arms,
                    horizon=MAB_HORIZON[difficulty],
                    difficulty=difficulty,
                    delta=BERNOULLI_DELTA[difficulty],
                )
            )
    for num_arms in MAB_ARMS:
        for difficulty in ("easy", "hard"):
            sigma = GAUSSIAN_SIGMA[difficulty]
            specs.append(
                BanditSpec(
                    id=f"Bandit-Gaussian-K{num_arms}-{difficulty.capitalize()}-v0",
                    family="gaussian",
                    num_arms=num_arms,
                    horizon=MAB_HORIZON[difficulty],
                    difficulty=difficulty,
                    sigma=sigma,
                    noise=sigma,  # the reference's choice; see the module docstring
                )
            )
    for num_arms in CONTEXTUAL_ARMS:
        specs.append(
            BanditSpec(
                id=f"Bandit-LowRank-K{num_arms}-v0",
                family="lowrank",
                num_arms=num_arms,
                horizon=CONTEXTUAL_HORIZON,
                rank=LOWRANK_RANK,
                context_dim=LOWRANK_RANK,
                noise=CONTEXTUAL_NOISE,
                num_users=LOWRANK_USERS,
            )
        )
    for num_arms in CONTEXTUAL_ARMS:
        specs.append(
            BanditSpec(
                id=f"Bandit-Linear-K{num_arms}-v0",
                family="linear",
                num_arms=num_arms,
                horizon=CONTEXTUAL_HORIZON,
                context_dim=LINEAR_DIM,
                noise=CONTEXTUAL_NOISE,
            )
        )
    return {spec.id: spec for spec in specs}


BANDIT_SPECS: dict[str, BanditSpec] = _build_specs()

# The reference's presets: "hard-core" is its HardCore benchmark (Bernoulli, K = 20, delta 0.2,
# horizon 1000); "core" is the small-K member of every family and difficulty (one table that
# covers each at modest cost); "full" is every task.
BANDIT_SUITES: dict[str, list[str]] = {
    "core": [
        "Bandit-Bernoulli-K5-Easy-v0",
        "Bandit-Bernoulli-K5-Hard-v0",
        "Bandit-Gaussian-K5-Easy-v0",
        "Bandit-Gaussian-K5-Hard-v0",
        "Bandit-LowRank-K10-v0",
        "Bandit-Linear-K10-v0",
    ],
    "hard-core": ["Bandit-Bernoulli-K20-Hard-v0"],
    "full": list(BANDIT_SPECS),
}


def bandit_ids() -> list[str]:
    """Every bandit id (bare, without the `Explore/` namespace)."""
    return list(BANDIT_SPECS)


def get_spec(env_id: str) -> BanditSpec:
    """The spec of a bare or `Explore/`-namespaced id; an unknown id lists close matches."""
    bare = env_id[len(NAMESPACE_PREFIX) :] if env_id.startswith(NAMESPACE_PREFIX) else env_id
    try:
        return BANDIT_SPECS[bare]
    except KeyError:
        raise UnknownEnvError(env_id, BANDIT_SPECS) from None


def _derived_seeds(seed: int) -> tuple[int, int]:
    """Two independent 64-bit seeds (instances, stream) from one user seed."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    state = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return int(state[0]), int(state[1])


def _unit_rows(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


class BatchedBandit:
    """`num_instances` independent instances of one `BanditSpec`, stepped together in torch.

    Instances are drawn at construction from `seed` and kept until `resample_instances`;
    `reset()` starts round 0 and rewinds the context/reward stream, so every reset replays the
    same contexts and reward draws (see the module docstring). `step` may run past `horizon`
    (the horizon is the episode length the suite and the metrics use, not a hard stop).
    """

    def __init__(
        self,
        spec: BanditSpec | str,
        num_instances: int,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        if isinstance(spec, str):
            spec = get_spec(spec)
        if num_instances < 1:
            raise ValueError(f"num_instances must be >= 1, got {num_instances}")
        self.spec = spec
        self.num_instances = int(num_instances)
        self.num_arms = spec.num_arms
        self.horizon = spec.horizon
        self.context_dim = spec.context_dim
        self.device = torch.device(device)
        self.seed = int(seed)
        self.round = 0
        instance_seed, self._stream_seed = _derived_seeds(self.seed)
        self._instance_gen = torch.Generator(device=self.device)
        self._instance_gen.manual_seed(instance_seed)
        self._stream_gen = torch.Generator(device=self.device)
        self._rows = torch.arange(self.num_instances, device=self.device)
        self._params: dict[str, Tensor] = self._draw_instances()
        self._context: Tensor | None = None
        self._user_index: Tensor | None = None
        self.reset()

    # --- instances ----------------------------------------------------------------------------

    def _draw_instances(self) -> dict[str, Tensor]:
        """Fresh parameters for all B instances from the instance generator."""
        spec, n, k, g, dev = self.spec, self.num_instances, self.num_arms, self._instance_gen, self.device
        if spec.family == "bernoulli":
            # the best arm's position is random per instance; the values are the preset's exactly
            best = torch.randint(k, (n,), generator=g, device=dev)
            means = torch.full((n, k), 0.5 - spec.delta / 2, device=dev)
            means[self._rows, best] = 0.5 + spec.delta / 2
            return {"means": means}
        if spec.family == "gaussian":
            return {"means": spec.sigma * torch.randn((n, k), generator=g, device=dev)}
        if spec.family == "lowrank":
            taste_dim = spec.rank - 1
            taste = torch.randn((n, spec.num_users, taste_dim), generator=g, device=dev)
            taste = taste / math.sqrt(taste_dim)  # a user's taste vector has norm about 1
            items = torch.randn((n, k, taste_dim), generator=g, device=dev)
            bias = LOWRANK_ITEM_BIAS_STD * torch.randn((n, k), generator=g, device=dev)
            scores = taste @ items.transpose(1, 2) + bias[:, None, :]  # (n, users, K)
            low = scores.amin(dim=(1, 2))
            scale = scores.amax(dim=(1, 2)) - low
            # (score - low) / scale = [taste, 1] . [items / scale, (bias - low) / scale]: affine
            # normalization folded into the items, so the reward stays linear in the context
            arm_params = torch.cat(
                [items / scale[:, None, None], ((bias - low[:, None]) / scale[:, None])[..., None]], dim=-1
            )
            users = torch.cat([taste, torch.ones((n, spec.num_users, 1), device=dev)], dim=-1)
            return {"users": users, "arm_params": arm_params}
        if spec.family == "linear":
            theta = _unit_rows(torch.randn((n, k, spec.context_dim), generator=g, device=dev))
            return {"arm_params": theta}
        raise ValueError(f"unknown bandit family {spec.family!r}")

    def resample_instances(self, mask: Tensor | None = None) -> Tensor | None:
        """New instances for the rows in `mask` (all rows when None), with a fresh context each.

        Returns the current context. All B instances are drawn and the masked rows kept, one
        vectorized op per parameter (used by the VecEnv for a new instance per episode).
        """
        new = self._draw_instances()
        if mask is None:
            self._params = new
        else:
            mask = mask.to(self.device, torch.bool)
            for name, value in new.items():
                rows = mask.view(-1, *([1] * (value.dim() - 1)))
                self._params[name] = torch.where(rows, value, self._params[name])
        self._advance_context(mask)
        return self._context

    # --- contexts and rewards -----------------------------------------------------------------

    def _advance_context(self, mask: Tensor | None = None) -> None:
        """Draw the next context of every instance (kept only for the rows in `mask`)."""
        spec, n = self.spec, self.num_instances
        index: Tensor | None = None
        if spec.family == "lowrank":
            index = torch.randint(spec.num_users, (n,), generator=self._stream_gen, device=self.device)
            context = self._params["users"][self._rows, index]
        elif spec.family == "linear":
            context = _unit_rows(
                torch.randn((n, spec.context_dim), generator=self._stream_gen, device=self.device)
            )
        else:
            return  # multi-armed: no context
        if mask is not None and self._context is not None:
            context = torch.where(mask[:, None], context, self._context)
            if index is not None and self._user_index is not None:
                index = torch.where(mask, index, self._user_index)
        self._context, self._user_index = context, index

    def reset(self) -> Tensor | None:
        """Round 0 of the current instances: rewinds the context/reward stream (the same draws
        after every reset) and returns the first context (B, context_dim), or None (multi-armed)."""
        self._stream_gen.manual_seed(self._stream_seed)
        self.round = 0
        self._context = None
        self._advance_context()
        return self._context

    def _check_arms(self, arms: Tensor) -> Tensor:
        arms = torch.as_tensor(arms, device=self.device)
        if arms.shape != (self.num_instances,) or arms.dtype.is_floating_point or arms.dtype == torch.bool:
            raise ValueError(
                f"arms must be an integer tensor of shape ({self.num_instances},), "
                f"got {tuple(arms.shape)} {arms.dtype}"
            )
        # checking the range on cuda would synchronize every step; there, gather's own check fires
        if self.device.type == "cpu" and bool(((arms < 0) | (arms >= self.num_arms)).any()):
            raise ValueError(f"arms must lie in [0, {self.num_arms}), got {arms.tolist()}")
        return arms.long()

    def step(self, arms: Tensor, active: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Pull `arms` (B,) in every instance: rewards (B,) float32 and the next context (or None).

        A reward is drawn for every arm (see the module docstring) and the chosen ones returned.
        `active` (B,) bool, for the VecEnv: only those rows move to a new context; the others
        keep theirs (their rewards are returned but meaningless).
        """
        arms = self._check_arms(arms)
        expected = self.expected_rewards()
        shape = (self.num_instances, self.num_arms)
        if self.spec.family == "bernoulli":
            table = (torch.rand(shape, generator=self._stream_gen, device=self.device) < expected).float()
        else:
            noise = torch.randn(shape, generator=self._stream_gen, device=self.device)
            table = expected + self.spec.noise * noise
        rewards = table.gather(1, arms[:, None]).squeeze(1)
        self._advance_context(None if active is None else active.to(self.device, torch.bool))
        self.round += 1
        return rewards, self._context

    # --- ground truth for regret --------------------------------------------------------------

    def expected_rewards(self) -> Tensor:
        """Each arm's expected reward in the current round (B, K), given the current context.

        For multi-armed bandits this is the bandit's own `means` tensor: read it, don't write it.
        """
        if self._context is None:
            return self._params["means"]
        return (self._params["arm_params"] @ self._context[:, :, None]).squeeze(-1)

    def best_expected(self) -> Tensor:
        """The best arm's expected reward in the current round (B,)."""
        return self.expected_rewards().amax(dim=1)

    @property
    def means(self) -> Tensor:
        """Arm means (B, K) of a multi-armed bandit (AttributeError for contextual ones)."""
        if "means" not in self._params:
            raise AttributeError(f"{self.spec.id} is contextual: use expected_rewards()")
        return self._params["means"]

    @property
    def context(self) -> Tensor | None:
        """The current context (B, context_dim), the one the next `step` is rewarded on."""
        return self._context

    @property
    def arm_params(self) -> Tensor:
        """Contextual bandits: (B, K, context_dim) with E[reward] = context . arm_params[arm]."""
        if "arm_params" not in self._params:
            raise AttributeError(f"{self.spec.id} is multi-armed: use means")
        return self._params["arm_params"]

    @property
    def users(self) -> Tensor:
        """LowRank: every instance's user population (B, num_users, rank); the context is a row."""
        if "users" not in self._params:
            raise AttributeError(f"{self.spec.id} has no user population")
        return self._params["users"]

    @property
    def user_index(self) -> Tensor | None:
        """LowRank: which user of the population the current context is (B,), else None."""
        return self._user_index


# --- gymnasium: the VecEnv and the single env ------------------------------------------------------


class BanditVecEnv(InProcessVecEnv):
    """`num_envs` bandit instances of one id as a VecEnv (numpy I/O, NEXT_STEP autoreset).

    Observation (float32, K + 1 + context_dim): the previous action one-hot, the previous reward,
    the current context; zeros for the first two at the start of an episode. An episode is
    `horizon` pulls of one instance: the last is `truncated` (never `terminated`, so it
    bootstraps), and the next step of that env is the dummy (action ignored, reward 0, a new
    instance, `elapsed_step` 0). An unseeded `reset` draws new instances; `reset(seed=s)` always
    starts the same ones. Info: env_id, elapsed_step, expected_reward (of the pulled arm) and
    regret (best minus pulled expected reward), both 0 on the reset/dummy step.
    """

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, device: str | torch.device = "cpu"):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.bandit_spec = get_spec(env_id)
        self.env_id = self.bandit_spec.id
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.max_episode_steps = self.bandit_spec.horizon
        k, d = self.bandit_spec.num_arms, self.bandit_spec.context_dim
        low = np.concatenate([np.zeros(k), np.full(1 + d, -np.inf)]).astype(np.float32)
        high = np.concatenate([np.ones(k), np.full(1 + d, np.inf)]).astype(np.float32)
        self.single_observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(k)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._build(seed)
        super().__init__()  # the queue of computed results

    def _build(self, seed: int) -> None:
        self.seed = seed
        self.bandit = BatchedBandit(self.bandit_spec, self.num_envs, seed=seed, device=self.device)
        self._fresh = True  # the first unseeded reset keeps the seed's instances
        self._elapsed = np.zeros(self.num_envs, dtype=np.int32)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)

    def _observe(self, arms: Tensor, rewards: Tensor, pulled: Tensor) -> np.ndarray:
        """Observations (B, K + 1 + d): one-hot of `arms` and `rewards` where `pulled`, and the context."""
        k = self.bandit_spec.num_arms
        onehot = torch.nn.functional.one_hot(arms, k).float() * pulled[:, None]
        parts = [onehot, (rewards * pulled)[:, None]]
        if self.bandit.context is not None:
            parts.append(self.bandit.context)
        return torch.cat(parts, dim=1).cpu().numpy().astype(np.float32, copy=False)

    def async_reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._build(seed)
        elif not self._fresh:
            self.bandit.resample_instances()
        self._fresh = False
        self._elapsed[:] = 0
        self._needs_reset[:] = False
        n = self.num_envs
        zeros = torch.zeros(n, device=self.device)
        obs = self._observe(torch.zeros(n, dtype=torch.long, device=self.device), zeros, zeros.bool())
        info = {
            "env_id": np.arange(n, dtype=np.int32),
            "elapsed_step": self._elapsed.copy(),
            "expected_reward": np.zeros(n, dtype=np.float32),
            "regret": np.zeros(n, dtype=np.float32),
        }
        self._pending = [(obs, np.zeros(n, dtype=np.float32), np.zeros(n, bool), np.zeros(n, bool), info)]

    def send(self, actions: np.ndarray, env_ids: np.ndarray | None = None) -> None:
        actions, env_ids = check_actions(actions, self.bandit.num_arms, self.num_envs, env_ids)
        ids = np.arange(self.num_envs) if env_ids is None else env_ids
        dummy = self._needs_reset[ids]
        live = actions[~dummy]
        pulled = np.zeros(self.num_envs, dtype=bool)
        pulled[ids[~dummy]] = True
        restart = np.zeros(self.num_envs, dtype=bool)
        restart[ids[dummy]] = True
        arms = np.zeros(self.num_envs, dtype=np.int64)
        arms[ids[~dummy]] = live

        arms_t = torch.as_tensor(arms, device=self.device)
        pulled_t = torch.as_tensor(pulled, device=self.device)
        expected = self.bandit.expected_rewards()
        chosen = expected.gather(1, arms_t[:, None]).squeeze(1) * pulled_t
        regret = (expected.amax(dim=1) - expected.gather(1, arms_t[:, None]).squeeze(1)) * pulled_t
        if pulled.any():
            rewards, _ = self.bandit.step(arms_t, active=pulled_t)
        else:
            rewards = torch.zeros(self.num_envs, device=self.device)
        if restart.any():
            self.bandit.resample_instances(torch.as_tensor(restart, device=self.device))
        obs = self._observe(arms_t, rewards, pulled_t)

        self._elapsed[pulled] += 1
        self._elapsed[restart] = 0
        truncated = pulled & (self._elapsed >= self.bandit_spec.horizon)
        self._needs_reset = (self._needs_reset & ~restart) | truncated
        reward = (rewards * pulled_t).cpu().numpy().astype(np.float32, copy=False)
        info = {
            "env_id": ids.astype(np.int32),
            "elapsed_step": self._elapsed[ids].copy(),
            "expected_reward": chosen.cpu().numpy().astype(np.float32, copy=False)[ids],
            "regret": regret.cpu().numpy().astype(np.float32, copy=False)[ids],
        }
        self._pending.append(
            (obs[ids], reward[ids], np.zeros(ids.shape[0], dtype=bool), truncated[ids].copy(), info)
        )


class BanditEnv(gym.Env):
    """One bandit instance with gymnasium's Env API (what gymnasium.make("Explore/Bandit-...") gives).

    Same observation, episodes and info as BanditVecEnv with one env; `reset()` without a seed
    draws a new instance, `reset(seed=s)` always the same one. Stepping past the horizon without
    a reset is an error (gymnasium's envs must be reset after truncation).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_id: str, seed: int = 0, device: str | torch.device = "cpu"):
        self._vec = BanditVecEnv(env_id, num_envs=1, seed=seed, device=device)
        self.bandit_spec = self._vec.bandit_spec
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space
        self._done = True

    @property
    def bandit(self) -> BatchedBandit:
        return self._vec.bandit

    @staticmethod
    def _row(info: dict[str, np.ndarray]) -> dict[str, Any]:
        return {key: value[0] for key, value in info.items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs, info = self._vec.reset(seed=seed)
        self._done = False
        return obs[0], self._row(info)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError(f"{self.bandit_spec.id}: call reset() before step() (after the horizon too)")
        obs, reward, terminated, truncated, info = self._vec.step(np.array([action]))  # checked there
        self._done = bool(truncated[0] or terminated[0])
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), self._row(info)

    def close(self) -> None:
        self._vec.close()


def suite():
    """The bandit suite for envs.registration (no optional dependency: torch and gymnasium only)."""
    from envs.registration import EnvSuite

    return EnvSuite(
        name="bandits",
        extra=EXTRA,
        id_pattern=ID_PATTERN,
        list_ids=bandit_ids,
        make_vec=BanditVecEnv,
        make_single=BanditEnv,
        observation_kind="vector",
    )


__all__ = [
    "BANDIT_SPECS",
    "BANDIT_SUITES",
    "BanditEnv",
    "BanditSpec",
    "BanditVecEnv",
    "BatchedBandit",
    "bandit_ids",
    "get_spec",
    "suite",
]
