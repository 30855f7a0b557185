"""The archive as a PPO bonus: 1 for the first visit ever to a cell, 0 afterwards.

    explore train --bonus archive                 # Atari: Go-Explore's 11 x 8 x 8-level frame cells
    explore train --bonus "archive+0.5*rnd"

`ArchiveBonus` keeps the set of cells seen over all of training (the global archive, without
trajectories: PPO does not return to cells) as a sorted int64 buffer, saved by `state_dict()`.
A transition earns 1 when its next observation's cell has never been seen before; within a rollout
the visits are taken in time order (and env order within a step), so of several envs reaching a
new cell at the same step only the lowest-numbered one is rewarded. Dummy autoreset steps
(`valid` False) neither count nor earn.

Cells are registered per observation kind (`explore.archive.cells.CELLS_BY_KIND`): frame
observations (..., C, H, W) use the newest frame through `atari_cell` (on 84 x 84 frames here, not
the 210 x 160 screen the Go-Explore runner uses, so the two archives' keys differ); (..., H, W)
frames are used as they are; NLE dict observations use `minihack_cell` (level, x, y, plus key items
when "inv_glyphs" is observed); MiniGrid's use `minigrid_cell` (the egocentric view and facing);
text uses `text_key`. Everything runs on the batch's device, no host sync per step. Under torchrun
each rank keeps its own cell set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from explore.archive.cells import CELLS_BY_KIND, CellFn, Downscale
from explore.bonus import Batch, BonusConfig, BonusContext, BonusModule, masked_mean, register_bonus
from explore.errors import ConfigError
from explore.obs import NLE_KEYS, ObservationKind, observation_kind


def _kind_of_batch(obs: Any) -> str | None:
    """The observation kind of a batch, for an archive built without an observation space."""
    if isinstance(obs, dict):
        return "minihack" if any(k in obs for k in NLE_KEYS) else "minigrid" if "image" in obs else None
    if isinstance(obs, Tensor):
        return "frames" if obs.dim() >= 4 else None  # (T, N, [C,] H, W); (T, N, D) vectors have no cell
    return "text"


class ArchiveBonus(BonusModule):
    """First-visit bonus over a global cell archive: r = 1{cell(s') never seen before}.

    Cells come from `cell_fn` when given, else from the cell function registered for the
    observation kind (`obs_kind`, or read off the first batch): frames use this archive's own
    `width` x `height` x `levels` downscaling.
    """

    name = "archive"
    kind = "global"

    def __init__(
        self,
        width: int = 11,
        height: int = 8,
        levels: int = 8,
        cell_fn: CellFn | None = None,
        obs_kind: str | None = None,
    ):
        super().__init__()
        if obs_kind is not None and obs_kind not in CELLS_BY_KIND:
            raise ConfigError(no_cell_message(obs_kind))
        self.cell = Downscale(width, height, levels)
        self.cell_fn = cell_fn
        self.obs_kind = obs_kind
        self.register_buffer("cell_keys", torch.zeros(0, dtype=torch.int64))
        self._last_bonus_mean = torch.zeros(())
        self._last_new = 0

    def _cells_of(self, obs: Any) -> CellFn:
        if self.cell_fn is not None:
            return self.cell_fn
        kind = self.obs_kind or _kind_of_batch(obs)
        if kind == "frames":
            return lambda frames: self.cell(frames, stacked=frames.dim() == 4)
        if kind not in CELLS_BY_KIND:
            shape = (
                {k: tuple(v.shape) for k, v in obs.items()}
                if isinstance(obs, dict)
                else getattr(obs, "shape", None)
            )
            raise ConfigError(f"{no_cell_message(kind)} (observations: {shape})")
        return CELLS_BY_KIND[kind]

    def keys(self, obs: Any, batch_dims: int, device: torch.device | str | None = None) -> Tensor:
        """int64 cell keys of observations with `batch_dims` leading dims, e.g. (T, N, ...) -> (T, N).

        `obs` is a tensor, a dict of tensors, or (text) nested sequences of strings.
        """
        cells = self._cells_of(obs)
        if isinstance(obs, dict):
            lead = next(iter(obs.values())).shape[:batch_dims]
            flat = {k: v.flatten(0, batch_dims - 1) for k, v in obs.items()}
        elif isinstance(obs, Tensor):
            lead, flat = obs.shape[:batch_dims], obs.flatten(0, batch_dims - 1)
        else:
            texts = np.asarray(obs, dtype=object)
            lead, flat = texts.shape[:batch_dims], texts.reshape(-1).tolist()
        return torch.as_tensor(cells(flat), device=device).view(tuple(lead))

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
        keys = self.keys(batch["next_obs"], valid.dim(), valid.device)
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
            **super().metrics(),
            "cells": float(self.cell_keys.numel()),
            "new_cells": float(self._last_new),
            "intrinsic_reward_mean": float(self._last_bonus_mean),
        }


def no_cell_message(kind: str | None) -> str:
    return (
        f"the archive bonus has no cell function for {kind or 'these'} observations; cell functions are "
        f"registered for: {', '.join(sorted(CELLS_BY_KIND))} (explore.archive.cells.register_cell)"
    )


@dataclass
class ArchiveConfig(BonusConfig):
    """No hyperparameters: the cells are Go-Explore's (frames) or the suite's registered cell function."""

    def observation_problem(self, kind: ObservationKind) -> str | None:
        return None if kind.name in CELLS_BY_KIND else no_cell_message(kind.name)


@register_bonus("archive", ArchiveConfig)  # Go-Explore cells: 1 on a first visit
def build_archive(context: BonusContext, config: ArchiveConfig) -> ArchiveBonus:
    space = context.observation_space
    return ArchiveBonus(obs_kind=None if space is None else observation_kind(space))
