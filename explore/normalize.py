"""Running statistics as modules with buffers, so that `state_dict()` saves and restores them.

Under torch.distributed (see explore/distributed.py):
- a `RunningMeanStd` marked with `sync_across_ranks = True` (`explore.distributed.mark_for_sync`)
  merges the batch moments of ALL ranks before it updates, so every rank holds the statistics of
  the union of their data; since every rank starts from the same statistics (initialized, loaded
  or warmed up the same way) and applies the same merged update, they stay identical;
- a `DiscountedReturnFilter` is rank-local (`rank_local = True`): its per-env carry belongs to
  this rank's environments and is never communicated. A checkpoint holds rank 0's carry only; it
  is re-initialized on resume with several ranks, and whenever the env count differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from explore.bonus import BonusConfig
from explore.checkpoint import PerEnvState
from explore.errors import ConfigError


class RunningMeanStd(nn.Module):
    """Mean and variance over every sample seen, merged batch by batch (Chan et al.'s parallel update).

    Samples are the leading dims of `x` in front of `shape`. An optional `mask` (the leading dims)
    leaves rows out without a boolean gather, so nothing waits on the device.

    With `sync_across_ranks` set and a process group running, `update` is a collective: every
    rank must call it, the same number of times (each may pass a different number of rows).
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4, sync_across_ranks: bool = False):
        super().__init__()
        self.shape = tuple(shape)
        self.sync_across_ranks = sync_across_ranks
        self.register_buffer("mean", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(epsilon, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor, mask: Tensor | None = None) -> None:
        x = x.reshape(-1, *self.shape).float()
        weights = torch.ones(x.shape[0], device=x.device) if mask is None else mask.reshape(-1).to(x.dtype)
        weights = weights.reshape(-1, *([1] * len(self.shape)))
        batch_count = weights.sum(0)
        safe_count = batch_count.clamp(min=1.0)
        batch_mean = (weights * x).sum(0) / safe_count
        batch_var = (weights * (x - batch_mean) ** 2).sum(0) / safe_count
        batch_mean, batch_var, batch_count = batch_mean.double(), batch_var.double(), batch_count.double()
        if self.sync_across_ranks:
            from explore.distributed import all_reduce_moments  # identity without a process group

            batch_mean, batch_var, batch_count = all_reduce_moments(batch_mean, batch_var, batch_count)
        self._merge(batch_mean, batch_var, batch_count)

    def _merge(self, batch_mean: Tensor, batch_var: Tensor, batch_count: Tensor) -> None:
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean += delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        # an empty batch (every row masked, e.g. skipped as non-finite) leaves var exactly as it was:
        # var * count / count may round differently in the last bit
        self.var.copy_(torch.where(batch_count > 0, m2 / total, self.var))
        # `count` is a scalar; with a per-element batch_count (all equal) keep one number
        self.count.copy_(total.reshape(-1)[0] if total.dim() else total)

    @property
    def std(self) -> Tensor:
        return torch.sqrt(self.var + 1e-8)

    def normalize(self, x: Tensor, clip: float | None = None, subtract_mean: bool = True) -> Tensor:
        mean = self.mean.to(torch.float32) if subtract_mean else 0.0
        out = (x.float() - mean) / self.std.to(torch.float32)
        return out.clamp(-clip, clip) if clip is not None else out


class DiscountedReturnFilter(PerEnvState):
    """The running discounted return of a reward stream, per env and ALONG TIME.

    ret[t, i] = gamma * ret[t-1, i] + r[t, i]. The carry `returns` (one entry per env) persists
    across rollouts, as the stream is non-episodic. Steps with `valid == False` (autoreset dummy
    steps) leave the return unchanged. RND divides its bonus by the running std of this return.
    (CleanRL's ppo_rnd_envpool iterated over the transposed array, i.e. across envs: issue #360.)

    The carry is rank-local state (one entry per env of THIS process). Loading a state dict whose
    carry has a different env count keeps the fresh zero carry instead of failing.
    """

    rank_local = True

    def __init__(self, num_envs: int, gamma: float):
        super().__init__()
        self.gamma = gamma
        self.per_env_buffers = ("returns",)
        self.register_buffer("returns", torch.zeros(num_envs))

    def reset_carry(self) -> None:
        """Start every env's running return from 0 (as at the start of training)."""
        self.returns.zero_()

    def reset_per_env_state(self) -> None:
        self.reset_carry()

    @torch.no_grad()
    def forward(self, rewards: Tensor, valid: Tensor | None = None) -> Tensor:
        """rewards: (T, num_envs) in time order; returns the (T, num_envs) running returns."""
        if valid is None:
            valid = torch.ones_like(rewards, dtype=torch.bool)
        out = torch.empty_like(rewards)
        carry = self.returns.to(rewards.dtype)
        for t in range(rewards.shape[0]):
            carry = torch.where(valid[t], self.gamma * carry + rewards[t], carry)
            out[t] = carry
        self.returns.copy_(carry)
        return out


# --- intrinsic reward normalization -----------------------------------------------------------

RewardNorm = Literal["reward", "return", "none"]
REWARD_NORMS = ("reward", "return", "none")


class RewardNormalizer(nn.Module):
    """Divides a (T, N) intrinsic reward by a running std, without subtracting a mean.

    mode "reward": the std of the rewards themselves (Henaff et al. 2023's intrinsic reward
    normalization); mode "return": the std of their discounted return (gamma), per env along
    time, as RND does. Statistics are buffers, saved by `state_dict()`. Invalid steps neither
    enter the statistics nor get a reward.
    """

    def __init__(self, num_envs: int, mode: Literal["reward", "return"] = "reward", gamma: float = 0.99):
        super().__init__()
        if mode not in ("reward", "return"):
            raise ConfigError(f"reward normalization {mode!r} is invalid: use 'reward' or 'return'")
        self.mode = mode
        self.rms = RunningMeanStd(())
        self.return_filter = DiscountedReturnFilter(num_envs, gamma) if mode == "return" else None

    @torch.no_grad()
    def forward(self, rewards: Tensor, valid: Tensor) -> Tensor:
        rewards = rewards * valid
        stream = rewards if self.return_filter is None else self.return_filter(rewards, valid)
        self.rms.update(stream, valid)
        return rewards / self.rms.std.to(rewards.dtype)

    @property
    def std(self) -> Tensor:
        return self.rms.std


def make_normalizer(mode: RewardNorm, num_envs: int, gamma: float) -> RewardNormalizer | None:
    """The normalizer for `mode`, None for "none"; ConfigError naming the valid modes otherwise."""
    if mode not in REWARD_NORMS:
        raise ConfigError(
            f"reward normalization {mode!r} is invalid: use one of {', '.join(map(repr, REWARD_NORMS))}"
        )
    return None if mode == "none" else RewardNormalizer(num_envs, mode, gamma)


@dataclass
class RewardNormConfig(BonusConfig):
    reward_norm: RewardNorm = "reward"
    """running-std normalization of products, NovelD and E3B: 'reward', 'return' or 'none' (RND keeps its
    own return-based one)"""

    def validate_bonus_settings(self) -> None:
        super().validate_bonus_settings()
        if self.reward_norm not in REWARD_NORMS:
            raise ConfigError(
                f"--reward-norm {self.reward_norm!r} is invalid: use one of {', '.join(map(repr, REWARD_NORMS))}"
            )
