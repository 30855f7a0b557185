"""Atari through envpool, with the settings of Random Network Distillation (Burda et al. 2018).

Defaults: sticky actions p = 0.25, the full 18-action space, episodes cut at 4500 agent steps
(18000 frames at frame skip 4), 84x84 grayscale frames stacked 4 deep, no life-loss episodes and
no reward clipping in the env (the trainer clips the extrinsic reward and logs the raw return).
`info["ram"]` carries the 128-byte console RAM (Montezuma's Revenge keeps its room id in byte 3).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.core import StepResult, VecEnv
from explore.errors import require

RND_ATARI_SETTINGS: dict[str, Any] = {
    "repeat_action_probability": 0.25,
    "full_action_space": True,
    "max_episode_steps": 4500,
    "episodic_life": False,
    "reward_clip": False,
}

MONTEZUMA_ROOM_RAM_INDEX = 3


def _envpool():
    return require("envpool", extra="atari", purpose="Atari environments")


def atari_ids() -> list[str]:
    """Every Atari id envpool registers, e.g. 'MontezumaRevenge-v5'."""
    _envpool()  # MissingDependencyError naming the 'atari' extra when envpool is not installed
    from envpool.registration import registry

    return sorted(i for i, spec in registry.specs.items() if spec[0] == "envpool.atari")


class AtariVecEnv(VecEnv):
    """`num_envs` Atari games stepped by envpool's C++ thread pool.

    `batch_size < num_envs` turns on envpool's async mode: `recv` then returns the first
    `batch_size` envs to finish, named by `info["env_id"]`.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int = 0,
        batch_size: int | None = None,
        num_threads: int = 0,
        **envpool_kwargs: Any,
    ):
        self.env_id = env_id
        self.num_envs = num_envs
        self.batch_size = batch_size or num_envs
        self._make_kwargs = {**RND_ATARI_SETTINGS, **envpool_kwargs, "num_threads": num_threads}
        self._pool = self._make_pool(seed)
        self.single_observation_space = self._pool.observation_space
        self.single_action_space = self._pool.action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.max_episode_steps = int(self._make_kwargs["max_episode_steps"])

    def _make_pool(self, seed: int):
        self.seed = seed
        return _envpool().make(
            self.env_id,
            env_type="gymnasium",
            num_envs=self.num_envs,
            batch_size=self.batch_size,
            seed=seed,
            **self._make_kwargs,
        )

    def async_reset(self, seed: int | None = None) -> None:
        if seed is not None and seed != self.seed:  # envpool seeds at construction only
            self._pool.close()
            self._pool = self._make_pool(seed)
        self._pool.async_reset()

    def send(self, actions: np.ndarray, env_ids: np.ndarray | None = None) -> None:
        self._pool.send(np.asarray(actions, dtype=np.int32), env_ids)

    def recv(self) -> StepResult:
        obs, reward, terminated, truncated, info = self._pool.recv()
        return obs, reward, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        self._pool.close()
        self.closed = True


class AtariEnv(gym.Env):
    """A single Atari game with gymnasium's Env API (the user calls reset after an episode ends)."""

    metadata = {"render_modes": []}

    def __init__(self, env_id: str, seed: int = 0, **envpool_kwargs: Any):
        self._vec = AtariVecEnv(env_id, num_envs=1, seed=seed, **envpool_kwargs)
        self.observation_space = self._vec.single_observation_space
        self.action_space = self._vec.single_action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self._vec.reset(seed=seed)
        return obs[0], {k: v[0] for k, v in info.items() if isinstance(v, np.ndarray)}

    def step(self, action):
        obs, reward, terminated, truncated, info = self._vec.step(np.array([action]))
        info = {k: v[0] for k, v in info.items() if isinstance(v, np.ndarray)}
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def close(self) -> None:
        self._vec.close()


def suite():
    """The Atari suite for envs.registration."""
    import re

    from envs.registration import EnvSuite

    return EnvSuite(
        name="atari",
        extra="atari",
        id_pattern=re.compile(r"^[A-Z][A-Za-z0-9]*-v5$"),
        list_ids=atari_ids,
        make_vec=AtariVecEnv,
        make_single=AtariEnv,
        config_kwargs=lambda config: {
            "repeat_action_probability": config.sticky_action_prob,
            "full_action_space": config.full_action_space,
            **({"max_episode_steps": config.max_episode_steps} if config.max_episode_steps else {}),
        },
    )
