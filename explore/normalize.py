"""Running statistics as modules with buffers, so that `state_dict()` saves and restores them."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningMeanStd(nn.Module):
    """Mean and variance over every sample seen, merged batch by batch (Chan et al.'s parallel update).

    Samples are the leading dims of `x` in front of `shape`. An optional `mask` (the leading dims)
    leaves rows out without a boolean gather, so nothing waits on the device.
    """

    def __init__(self, shape: tuple[int, ...] = (), epsilon: float = 1e-4):
        super().__init__()
        self.shape = tuple(shape)
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
        self._merge(batch_mean.double(), batch_var.double(), batch_count.double())

    def _merge(self, batch_mean: Tensor, batch_var: Tensor, batch_count: Tensor) -> None:
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean += delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.var.copy_(m2 / total)
        # `count` is a scalar; with a per-element batch_count (all equal) keep one number
        self.count.copy_(total.reshape(-1)[0] if total.dim() else total)

    @property
    def std(self) -> Tensor:
        return torch.sqrt(self.var + 1e-8)

    def normalize(self, x: Tensor, clip: float | None = None, subtract_mean: bool = True) -> Tensor:
        mean = self.mean.to(torch.float32) if subtract_mean else 0.0
        out = (x.float() - mean) / self.std.to(torch.float32)
        return out.clamp(-clip, clip) if clip is not None else out


class DiscountedReturnFilter(nn.Module):
    """The running discounted return of a reward stream, per env and ALONG TIME.

    ret[t, i] = gamma * ret[t-1, i] + r[t, i]. The carry `returns` (one entry per env) persists
    across rollouts, as the stream is non-episodic. Steps with `valid == False` (autoreset dummy
    steps) leave the return unchanged. RND divides its bonus by the running std of this return.
    (CleanRL's ppo_rnd_envpool iterated over the transposed array, i.e. across envs: issue #360.)
    """

    def __init__(self, num_envs: int, gamma: float):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("returns", torch.zeros(num_envs))

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
