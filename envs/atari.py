"""Atari through envpool, with the settings of Random Network Distillation (Burda et al. 2018).

Defaults: sticky actions p = 0.25, the full 18-action space, episodes cut at 4500 agent steps
(18000 frames at frame skip 4), 84x84 grayscale frames stacked 4 deep, no life-loss episodes and
no reward clipping in the env (the trainer clips the extrinsic reward and logs the raw return).
`info["ram"]` carries the 128-byte console RAM (Montezuma's Revenge keeps its room id in byte 3,
which the suite's `exploration/rooms_visited` counts).
"""

from __future__ import annotations

from typing import Any

from envs.envpool_base import EnvpoolEnv, EnvpoolVecEnv
from envs.metrics import DistinctIds
from explore.errors import require

RND_ATARI_SETTINGS: dict[str, Any] = {
    "repeat_action_probability": 0.25,
    "full_action_space": True,
    "max_episode_steps": 4500,
    "episodic_life": False,
    "reward_clip": False,
}

MONTEZUMA_ROOM_RAM_INDEX = 3

# make() kwarg -> the training config's field that sets it (None there: RND's setting above)
CONFIG_FIELDS = {
    "repeat_action_probability": "sticky_action_prob",
    "full_action_space": "full_action_space",
    "max_episode_steps": "max_episode_steps",
}


def _envpool():
    return require("envpool", extra="atari", purpose="Atari environments")


def atari_ids() -> list[str]:
    """Every Atari id envpool registers, e.g. 'MontezumaRevenge-v5'."""
    _envpool()  # MissingDependencyError naming the 'atari' extra when envpool is not installed
    from envpool.registration import registry

    return sorted(i for i, spec in registry.specs.items() if spec[0] == "envpool.atari")


class AtariVecEnv(EnvpoolVecEnv):
    """`num_envs` Atari games stepped by envpool's C++ thread pool, with RND's settings by default."""

    default_kwargs = RND_ATARI_SETTINGS
    extra = "atari"
    purpose = "Atari environments"

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, **kwargs: Any):
        super().__init__(env_id, num_envs, seed=seed, **kwargs)
        self.max_episode_steps = int(self._make_kwargs["max_episode_steps"])


def info_metrics(env_id: str, device: Any) -> list[DistinctIds]:
    """Montezuma's Revenge: the rooms visited, from RAM byte 3 (room ids fit in a byte)."""
    if "MontezumaRevenge" not in env_id:
        return []
    return [DistinctIds("rooms_visited", 256, lambda info: info["ram"][:, MONTEZUMA_ROOM_RAM_INDEX], device)]


class AtariEnv(EnvpoolEnv):
    """A single Atari game with gymnasium's Env API (the user calls reset after an episode ends)."""

    vec_cls = AtariVecEnv


def suite():
    """The Atari suite for envs.registration."""
    import re

    from envs.registration import EnvSuite, kwargs_from_fields

    return EnvSuite(
        name="atari",
        extra="atari",
        id_pattern=re.compile(r"^[A-Z][A-Za-z0-9]*-v5$"),
        list_ids=atari_ids,
        make_vec=AtariVecEnv,
        make_single=AtariEnv,
        observation_kind="frames",
        config_kwargs=kwargs_from_fields(CONFIG_FIELDS),
        info_metrics=info_metrics,
    )
