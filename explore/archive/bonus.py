"""The archive as a PPO bonus: 1 for the first visit ever to a cell, 0 afterwards.

    explore train --bonus archive                 # Atari: Go-Explore's 11 x 8 x 8-level frame cells
    explore train --bonus "archive+0.5*rnd"

`ArchiveBonus` keeps the set of cells seen over all of training (the global archive, without
trajectories: PPO does not return to cells) as a sorted int64 buffer, saved by `state_dict()`.
A transition earns 1 when its next observation's cell has never been seen before; within a rollout
the visits are taken in time order (and env order within a step), so of several envs reaching a
new cell at the same step only the lowest-numbered one is rewarded. Dummy autoreset steps
(`valid` False) neither count nor earn.

Cells: frame observations (..., C, H, W) use the newest frame through `atari_cell` (on 84 x 84
frames here, not the 210 x 160 screen the Go-Explore runner uses, so the two archives' keys differ);
(..., H, W) frames are used as they are; NLE dict observations use `minihack_cell` (level, x, y,
plus key items when "inv_glyphs" is observed). Everything runs on the batch's device, no host sync
per step. Under torchrun each rank keeps its own cell set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from explore.archive.cells import Downscale, minihack_cell
from explore.bonus import Batch, BonusModule, masked_mean


class ArchiveBonus(BonusModule):
    """First-visit bonus over a global cell archive: r = 1{cell(s') never seen before}."""

    name = "archive"
    kind = "global"

    def __init__(self, width: int = 11, height: int = 8, levels: int = 8, cell_fn: Any = None):
        super().__init__()
        self.cell = Downscale(width, height, levels)
        self.cell_fn = cell_fn
        self.register_buffer("cell_keys", torch.zeros(0, dtype=torch.int64))
        self._last_bonus_mean = torch.zeros(())
        self._last_new = 0

    def keys(self, obs: Any, batch_dims: int) -> Tensor:
        """int64 cell keys of observations with `batch_dims` leading dims, e.g. (T, N, ...) -> (T, N)."""
        if self.cell_fn is not None:
            lead = (obs["blstats"] if isinstance(obs, dict) else obs).shape[:batch_dims]
            flat = {k: v.flatten(0, batch_dims - 1) for k, v in obs.items()} if isinstance(obs, dict) else \
                obs.flatten(0, batch_dims - 1)
            return torch.as_tensor(self.cell_fn(flat)).view(lead)
        if isinstance(obs, dict):
            lead = obs["blstats"].shape[:batch_dims]
            flat = {k: v.flatten(0, batch_dims - 1) for k, v in obs.items()}
            return minihack_cell(flat).view(lead)
        lead = obs.shape[:batch_dims]
        flat = obs.flatten(0, batch_dims - 1)
        stacked = flat.dim() == 4
        return self.cell(flat, stacked=stacked).view(lead)

    def first_visits(self, keys: Tensor, valid: Tensor) -> Tensor:
        """Mark the first visit ever of each cell in (T, N) `keys` (time-major), adding the new cells."""
        flat_keys = keys.reshape(-1)
        flat_valid = valid.reshape(-1)
        first = torch.zeros_like(flat_valid)
        positions = torch.nonzero(flat_valid).squeeze(1)
        visited = flat_keys[positions]
        if not visited.numel():
            return first.view(keys.shape)
        unique, group = torch.unique(visited, return_inverse=True)
        earliest = torch.full_like(unique, positions.numel()).scatter_reduce(
            0, group, torch.arange(positions.numel(), device=keys.device), "amin"
        )
        table = self.cell_keys
        if table.numel():
            at = torch.searchsorted(table, unique).clamp(max=table.numel() - 1)
            new = table[at] != unique
        else:
            new = torch.ones_like(unique, dtype=torch.bool)
        first[positions[earliest[new]]] = True
        self.cell_keys = torch.sort(torch.cat([table, unique[new]])).values
        self._last_new = new.sum()
        return first.view(keys.shape)

    @torch.no_grad()
    def bonus(self, batch: Batch) -> Tensor:
        """1.0 where the next observation's cell is visited for the first time ever, else 0; (T, N)."""
        valid = batch["valid"].bool()
        keys = self.keys(batch["next_obs"], valid.dim())
        rewards = self.first_visits(keys, valid).float()
        self._last_bonus_mean = masked_mean(rewards, valid)
        return rewards

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        saved = state_dict.get(prefix + "cell_keys")
        if saved is not None:
            self.cell_keys = torch.empty_like(saved, device=self.cell_keys.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def metrics(self) -> dict[str, float]:
        return {
            "cells": float(self.cell_keys.numel()),
            "new_cells": float(self._last_new),
            "intrinsic_reward_mean": float(self._last_bonus_mean),
        }

    @classmethod
    def from_context(cls, context) -> ArchiveBonus:
        """Builder for explore.combine's registry (`--bonus archive`)."""
        return cls().to(context.device)
