"""DeepSea (bsuite's deep-exploration probe, Osband et al. 2019), batched in torch, behind the VecEnv protocol.

The task, exactly as `bsuite.environments.deep_sea.DeepSea` (deterministic, the bsuite experiment):
an N x N grid, the agent starts in the top-left cell and falls one row per step, so an episode is
exactly N steps. Each step it moves left or right; which of the actions 0 and 1 means "right"
differs per cell, drawn once per environment as bsuite draws it:
`np.random.RandomState(mapping_seed).binomial(1, 0.5, [N, N])` (action a is "right" in cell
(r, c) when a == mapping[r, c]). Moving right costs 0.01 / N; moving right from the last column
(which only the last row can reach) finds the treasure, +1. The observation is the one-hot
position, all zeros after the last step (bsuite's "null observation"). A random policy finds the
treasure with probability 2^-N per episode, and the move cost makes "always left" the greedy
optimum of every undirected learner.

Observations are the N x N grid flattened to (N * N,) float32 (bsuite's (N, N) array in row-major
order), so the vector MLP policy reads it. `info["success"]` is True on the step that finds the
treasure.

The action mapping. bsuite's agent meets ONE environment, i.e. one mapping; a policy that sees
only the position cannot serve several mappings at once. So by default all `num_envs` instances
share one mapping, from `mapping_seed` (default: the env's `seed`), and the trainer passes the
run's seed (`suite().config_kwargs`) so that every env group of a run is the same MDP. With
`per_env_mapping=True` instance i uses `mapping_seed + i` instead (B different MDPs in one tensor
op, e.g. for testing against B bsuite instances). Either way each mapping is bsuite's own draw
for its seed, so `DeepSea(N, mapping_seed=s)` from bsuite is the same MDP.

Not included: bsuite's stochastic ("windy") variant and its `bad_episode` bookkeeping.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from envs.core import InProcessVecEnv, check_actions
from explore.errors import UnknownEnvError

EXTRA = "bandits"  # torch only, like the bandits: no extra dependency
ID_PATTERN = re.compile(r"^DeepSea-")
_ID_FORMAT = re.compile(r"^DeepSea-N(\d+)-v0$")
NAMESPACE_PREFIX = "Explore/"
SIZES: tuple[int, ...] = tuple(range(5, 65, 5))  # the registered sizes, 5 to 60
UNSCALED_MOVE_COST = 0.01  # bsuite's default: a right move costs 0.01 / N, so the optimal return is 0.99
NUM_ACTIONS = 2


def deepsea_ids() -> list[str]:
    """Every registered DeepSea id (bare)."""
    return [f"DeepSea-N{size}-v0" for size in SIZES]


def parse_size(env_id: str) -> int:
    """The grid size N of `DeepSea-N<N>-v0` (bare or `Explore/`-namespaced); unknown ids list the valid ones."""
    bare = env_id[len(NAMESPACE_PREFIX) :] if env_id.startswith(NAMESPACE_PREFIX) else env_id
    match = _ID_FORMAT.match(bare)
    if match is None or int(match.group(1)) not in SIZES:
        raise UnknownEnvError(env_id, deepsea_ids())
    return int(match.group(1))


def bsuite_action_mapping(size: int, mapping_seed: int) -> np.ndarray:
    """bsuite's action mapping for `mapping_seed`: the same RNG calls as DeepSea.__init__, (N, N) of 0/1."""
    return np.random.RandomState(mapping_seed).binomial(1, 0.5, [size, size])


class BatchedDeepSea:
    """B DeepSea instances of one size stepped together in torch (no Python loop over instances).

    `mappings` is (M, N, N) with M == 1 (shared) or M == B (one per instance). State: `row`, `column`
    (B,) long. `step` does not reset: the caller restarts rows with `restart(mask)`.
    """

    def __init__(
        self, size: int, mappings: np.ndarray, num_instances: int, device: str | torch.device = "cpu"
    ):
        if mappings.shape[0] not in (1, num_instances) or mappings.shape[1:] != (size, size):
            raise ValueError(f"mappings must be (1 or {num_instances}, {size}, {size}), got {mappings.shape}")
        self.size = size
        self.num_instances = num_instances
        self.device = torch.device(device)
        self.move_cost = UNSCALED_MOVE_COST / size
        self._mapping = torch.as_tensor(mappings.reshape(mappings.shape[0], -1), device=self.device).long()
        self._mapping_row = (
            torch.zeros(num_instances, dtype=torch.long, device=self.device)
            if mappings.shape[0] == 1
            else torch.arange(num_instances, device=self.device)
        )
        self.row = torch.zeros(num_instances, dtype=torch.long, device=self.device)
        self.column = torch.zeros(num_instances, dtype=torch.long, device=self.device)

    def restart(self, mask: Tensor | None = None) -> None:
        """Put the rows in `mask` (all when None) back on the start cell."""
        if mask is None:
            self.row.zero_()
            self.column.zero_()
        else:
            self.row.masked_fill_(mask, 0)
            self.column.masked_fill_(mask, 0)

    def observe(self) -> Tensor:
        """(B, N * N) float32: one-hot position, zeros after the last row (bsuite's null observation)."""
        cells = self.size * self.size
        index = torch.where(self.row < self.size, self.row * self.size + self.column, cells)
        return torch.nn.functional.one_hot(index, cells + 1)[:, :cells].float()

    def step(self, actions: Tensor, active: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Move the `active` rows by `actions` (B,); returns (reward float64, terminated, success), 0/False elsewhere."""
        cell = (self.row * self.size + self.column).clamp(max=self.size * self.size - 1)
        right = (actions == self._mapping[self._mapping_row, cell]) & active
        success = right & (self.column == self.size - 1)
        reward = success.double() - right.double() * self.move_cost
        moved = torch.where(right, self.column + 1, self.column - 1).clamp(0, self.size - 1)
        self.column = torch.where(active, moved, self.column)
        self.row = self.row + active.long()
        return reward, active & (self.row == self.size), success


class DeepSeaVecEnv(InProcessVecEnv):
    """`num_envs` DeepSea instances of one size as a VecEnv (numpy I/O, NEXT_STEP autoreset).

    Episodes end with `terminated` after N steps (no time limit is involved); the next step of that
    env is the dummy (action ignored, reward 0, the start observation, `elapsed_step` 0). The
    mapping is fixed for the env's life (bsuite's); `reset(seed=s)` rebuilds it from s.
    Info: env_id, elapsed_step, success.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int = 0,
        mapping_seed: int | None = None,
        per_env_mapping: bool = False,
        device: str | torch.device = "cpu",
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.size = parse_size(env_id)
        self.env_id = f"DeepSea-N{self.size}-v0"
        self.num_envs = int(num_envs)
        self.per_env_mapping = per_env_mapping
        self.device = torch.device(device)
        self.max_episode_steps = self.size
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (self.size * self.size,), dtype=np.float32)
        self.single_action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._build(seed if mapping_seed is None else mapping_seed)
        super().__init__()  # the queue of computed results

    def _build(self, mapping_seed: int) -> None:
        if mapping_seed < 0:
            raise ValueError(f"mapping_seed must be >= 0, got {mapping_seed}")
        self.mapping_seeds = (
            [mapping_seed + i for i in range(self.num_envs)] if self.per_env_mapping else [mapping_seed]
        )
        mappings = np.stack([bsuite_action_mapping(self.size, s) for s in self.mapping_seeds])
        self.sea = BatchedDeepSea(self.size, mappings, self.num_envs, self.device)
        self._needs_reset = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def action_mapping(self, env: int) -> np.ndarray:
        """The (N, N) mapping of env `env` (bsuite's `_action_mapping` for its mapping seed)."""
        return bsuite_action_mapping(self.size, self.mapping_seeds[env if self.per_env_mapping else 0])

    def async_reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._build(seed)
        self.sea.restart()
        self._needs_reset.zero_()
        n = self.num_envs
        info = {
            "env_id": np.arange(n, dtype=np.int32),
            "elapsed_step": np.zeros(n, dtype=np.int32),
            "success": np.zeros(n, dtype=bool),
        }
        obs = self.sea.observe().cpu().numpy()
        self._pending = [(obs, np.zeros(n, dtype=np.float32), np.zeros(n, bool), np.zeros(n, bool), info)]

    def send(self, actions: np.ndarray, env_ids: np.ndarray | None = None) -> None:
        actions, env_ids = check_actions(actions, NUM_ACTIONS, self.num_envs, env_ids)
        ids = np.arange(self.num_envs) if env_ids is None else env_ids
        selected = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        full_actions = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        ids_t = torch.as_tensor(ids, device=self.device)
        selected[ids_t] = True
        full_actions[ids_t] = torch.as_tensor(actions, device=self.device)
        restart = selected & self._needs_reset
        reward, terminated, success = self.sea.step(full_actions, selected & ~self._needs_reset)
        self.sea.restart(restart)
        self._needs_reset = (self._needs_reset & ~restart) | terminated
        obs = self.sea.observe()[ids_t].cpu().numpy()
        info = {
            "env_id": ids.astype(np.int32),
            "elapsed_step": self.sea.row[ids_t].cpu().numpy().astype(np.int32),
            "success": success[ids_t].cpu().numpy(),
        }
        self._pending.append(
            (
                obs,
                reward[ids_t].float().cpu().numpy(),
                terminated[ids_t].cpu().numpy(),
                np.zeros(ids.shape[0], dtype=bool),
                info,
            )
        )


class DeepSeaEnv(gym.Env):
    """One DeepSea instance with gymnasium's Env API (what gymnasium.make("Explore/DeepSea-N10-v0") gives)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_id: str, seed: int = 0, mapping_seed: int | None = None):
        self._vec = DeepSeaVecEnv(env_id, num_envs=1, seed=seed, mapping_seed=mapping_seed)
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        obs, info = self._vec.reset(seed=seed)
        self._done = False
        return obs[0], {key: value[0] for key, value in info.items()}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError(f"{self._vec.env_id}: call reset() before step() (after an episode's end too)")
        obs, reward, terminated, truncated, info = self._vec.step(np.array([action]))
        self._done = bool(terminated[0])
        return obs[0], float(reward[0]), bool(terminated[0]), False, {k: v[0] for k, v in info.items()}


def suite():
    """The DeepSea suite for envs.registration; a run's envs share the mapping of its seed."""
    from envs.registration import EnvSuite

    return EnvSuite(
        name="deepsea",
        extra=EXTRA,
        id_pattern=ID_PATTERN,
        list_ids=deepsea_ids,
        make_vec=DeepSeaVecEnv,
        make_single=DeepSeaEnv,
        config_kwargs=lambda config: {"mapping_seed": config.seed},
        observation_kind="vector",
    )


__all__ = [
    "SIZES",
    "BatchedDeepSea",
    "DeepSeaEnv",
    "DeepSeaVecEnv",
    "bsuite_action_mapping",
    "deepsea_ids",
    "parse_size",
    "suite",
]
