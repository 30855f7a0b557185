"""The interface every intrinsic-bonus module implements.

A rollout batch is a dict of tensors with leading dims (T, N):
  "obs"       observation at t            (T, N, *obs_shape)
  "next_obs"  observation after the step  (T, N, *obs_shape); under NEXT_STEP this is the true
              final observation at a done
  "actions"   (T, N)
  "valid"     (T, N) bool, False on the autoreset dummy step
  "dones"     (T, N) bool, terminated | truncated
A minibatch has the same keys with one flat leading dim.

The trainer owns optimizers, gradient clipping and mixed precision; a bonus only says what its
loss is. Statistics are buffers, so `state_dict()` saves and restores them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

Batch = dict[str, Tensor]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of `x` over the entries where `mask` is set (0 when none is), with no host sync."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


class BonusModule(nn.Module):
    """Base class: `bonus` scores a rollout, `loss` trains on a minibatch, `reset` clears episodic state."""

    name: str = "bonus"
    kind: str = "global"  # "episodic" (state cleared at episode end) or "global" (all of training)

    def reset(self, done: Tensor) -> None:
        """Mark envs whose episode was cut outside a batch (e.g. envs restarted on resume), `done` (N,) bool.

        Within a rollout, `bonus(batch)` reads episode ends from batch["dones"] itself, so the trainer
        does not call this per step. Global bonuses keep nothing per episode.
        """

    @torch.no_grad()
    def bonus(self, batch: Batch) -> Tensor:
        """The intrinsic reward of each transition, (T, N), 0 where `valid` is False."""
        raise NotImplementedError

    def loss(self, minibatch: Batch) -> dict[str, Tensor]:
        """{"loss": scalar to minimize, other entries are logged}. Bonuses with nothing to learn return {}."""
        return {}

    def metrics(self) -> dict[str, float]:
        """Scalars to log once per update (read outside the rollout loop)."""
        return {}
