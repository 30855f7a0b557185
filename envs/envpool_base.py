"""envpool plumbing shared by every envpool suite (Atari, MiniGrid/BabyAI), written once."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.core import StepResult, VecEnv, available_cpus, check_actions
from explore.errors import require


class EnvpoolVecEnv(VecEnv):
    """`num_envs` envpool environments (env_type="gymnasium") behind the VecEnv protocol.

    The plumbing every envpool suite needs, written once: the pool is built with the suite's
    `default_kwargs` overridden by the caller's; envpool seeds only at construction, so a seeded
    reset rebuilds the pool (unless it is fresh from that seed); actions are checked
    (envs.core.check_actions) and go to envpool as int32; `batch_size < num_envs` turns on
    envpool's async mode, where `recv` returns the first `batch_size` envs to finish, named by
    `info["env_id"]`. Subclasses set the class attributes and may post-process each step in
    `_postprocess` (MiniGrid adds `info["success"]` there).
    """

    default_kwargs: ClassVar[dict[str, Any]] = {}  # envpool.make settings, overridable per call
    extra: ClassVar[str]  # the pip extra that a MissingDependencyError names when envpool is missing
    purpose: ClassVar[str]  # what the envs are for, in that error's message

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int = 0,
        batch_size: int | None = None,
        num_threads: int = 0,
        **envpool_kwargs: Any,
    ):
        if num_envs < 1:  # envpool itself fails with a bare AssertionError
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.env_id = env_id
        self.num_envs = num_envs
        self.batch_size = batch_size or num_envs
        self._make_kwargs = {**self.default_kwargs, **envpool_kwargs, "num_threads": num_threads}
        # the pool's step threads (envpool's 0: one per env of a batch, up to the cores)
        self.num_threads = num_threads or min(self.batch_size, available_cpus())
        self._pool = self._make_pool(seed)
        self.single_observation_space = self._pool.observation_space
        self.single_action_space = self._pool.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self._num_actions = int(self.single_action_space.n)  # every envpool suite here is Discrete

    def _make_pool(self, seed: int):
        self.seed = seed
        self._pool_is_fresh = True  # no reset yet: its first episodes are the seed's
        envpool = require("envpool", extra=self.extra, purpose=self.purpose)
        return envpool.make(
            self.env_id,
            env_type="gymnasium",
            num_envs=self.num_envs,
            batch_size=self.batch_size,
            seed=seed,
            **self._make_kwargs,
        )

    def async_reset(self, seed: int | None = None) -> None:
        # envpool seeds at construction only: a seeded reset rebuilds the pool unless it is
        # fresh from that seed, so reset(seed=s) always starts the same episodes (gymnasium's rule)
        if seed is not None and (seed != self.seed or not self._pool_is_fresh):
            self._pool.close()
            self._pool = self._make_pool(seed)
        self._pool_is_fresh = False
        self._pool.async_reset()

    def send(self, actions: np.ndarray, env_ids: np.ndarray | None = None) -> None:
        # envpool itself accepts any id (Atari) or aborts the process (MiniGrid): check here
        actions, ids = check_actions(actions, self._num_actions, self.num_envs, env_ids)
        self._pool.send(actions.astype(np.int32), ids)

    def recv(self) -> StepResult:
        return self._postprocess(*self._pool.recv())

    def _postprocess(
        self,
        obs: Any,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        info: dict[str, Any],
    ) -> StepResult:
        """Hook for suite-specific info keys; the rows are those named by info["env_id"]."""
        return obs, reward, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        # a constructor that failed before its pool existed still gets close() from gymnasium's
        # VectorEnv.__del__: nothing to close then, and no second error to hide the first
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()
        self.closed = True


def _first_row(x: Any) -> Any:
    """Row 0 of a batched observation: an array, or a dict of arrays (MiniGrid)."""
    if isinstance(x, dict):
        return {k: _first_row(v) for k, v in x.items()}
    return x[0]


class EnvpoolEnv(gym.Env):
    """One envpool environment with gymnasium's Env API (the user resets after an episode ends).

    Generic over the vector class (`vec_cls`) and over array or dict observations.
    """

    metadata = {"render_modes": []}
    vec_cls: ClassVar[type[EnvpoolVecEnv]]

    def __init__(self, env_id: str, seed: int = 0, **envpool_kwargs: Any):
        self._vec = self.vec_cls(env_id, num_envs=1, seed=seed, **envpool_kwargs)
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space

    @staticmethod
    def _info_row(info: dict[str, Any]) -> dict[str, Any]:
        return {k: v[0] for k, v in info.items() if isinstance(v, np.ndarray)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self._vec.reset(seed=seed)
        return _first_row(obs), self._info_row(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self._vec.step(np.array([action]))
        return (
            _first_row(obs),
            float(reward[0]),
            bool(terminated[0]),
            bool(truncated[0]),
            self._info_row(info),
        )

    def close(self) -> None:
        self._vec.close()
