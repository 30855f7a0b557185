"""Return to a cell by replaying its action trajectory from a seeded reset (deterministic envs).

Any gymnasium env whose `reset(seed=s)` followed by the same actions always gives the same states
(the env's own randomness drawn from its seeded generator) can return to an archived cell this way,
with no state cloning: `replay(env, actions, seed)` resets with `seed` and steps the actions.
The cost is the trajectory's length in steps, so prefer emulator restore (explore.archive.ale) where
the env offers it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ReplayResult:
    obs: Any
    score: float  # sum of the rewards along the trajectory
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    steps: int  # actions stepped (fewer than given when the episode ended early and strict=False)


class ReplayDivergedError(RuntimeError):
    """The episode ended before the trajectory did: the env is not deterministic under this seed."""


def replay(env, actions: Sequence[int] | np.ndarray, seed: int | None = None, options: dict | None = None,
           strict: bool = True) -> ReplayResult:
    """Reset `env` with `seed` and step `actions`; returns where that leaves the env.

    With `strict`, an episode that ends before the last action raises ReplayDivergedError (a
    deterministic env replays its archived trajectories without ending early)."""
    obs, info = env.reset(seed=seed, options=options)
    score, terminated, truncated = 0.0, False, False
    actions = np.asarray(actions).tolist()
    steps = 0
    for steps, action in enumerate(actions, start=1):
        obs, reward, terminated, truncated, info = env.step(action)
        score += float(reward)
        if (terminated or truncated) and steps < len(actions):
            if strict:
                raise ReplayDivergedError(
                    f"the episode ended after {steps} of {len(actions)} replayed actions (seed {seed}): "
                    "the env is not deterministic under this seed, so cells cannot be returned to by replay"
                )
            break
    return ReplayResult(obs, score, bool(terminated), bool(truncated), info, steps)


class ReplayReturner:
    """Go-Explore's return step for a deterministic env: `return_to(trajectory)` replays it from `seed`."""

    def __init__(self, env, seed: int = 0, options: dict | None = None):
        self.env = env
        self.seed = seed
        self.options = options
        self.steps = 0  # env steps spent replaying

    def return_to(self, trajectory: Sequence[int] | np.ndarray) -> ReplayResult:
        result = replay(self.env, trajectory, self.seed, self.options)
        self.steps += result.steps
        return result
