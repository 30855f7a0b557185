"""MiniGrid and BabyAI through envpool's native C++ ports, behind the VecEnv protocol.

envpool 1.2.5 registers 177 MiniGrid-*/BabyAI-* ids under its `envpool.minigrid` module; they
run in envpool's thread pool like Atari, so the same async `send`/`recv` and NEXT_STEP autoreset
hold (see envs.core). Verified against envpool 1.2.5 (tests/test_minigrid.py pins each point):

- Observations are envpool's Dict, unchanged: "image" (7, 7, 3) uint8, MiniGrid's egocentric
  view indexed [x, y, channel] with channels (object type, colour, state) as small integer ids;
  "direction" int32 in [0, 4); "mission" the mission text as zero-padded UTF-8 bytes (96 bytes
  for MiniGrid tasks, 512 for BabyAI; `decode_mission` turns rows back into strings).
- Rewards are MiniGrid's: 1 - 0.9 * steps / max_steps on reaching the goal, 0 otherwise (lava,
  a wrong object, a time limit), -1 on a collision in Dynamic-Obstacles. The reward scale
  depends on max_steps, so overriding `max_episode_steps` changes the rewards too.
- The agent's (x, y) grid position, which envpool reports only in `info["agent_pos"]` (int32), is
  copied into the observation as the entry "agent_pos" (`POSITION_KEY`), so that a bonus can key on
  it (`--state-key agent_pos`: the position counts of RIDE's and NovelD's count baselines, which count
  the full state). It is a privileged entry (explore.obs.PRIVILEGED_KEYS): the networks do not read
  it and the whole-observation state key "obs" leaves it out. On the step that ends an episode it is
  the final position; on the dummy step after it, the new episode's start.
- envpool reports no success flag (its info has env_id, elapsed_step, agent_pos, mission_id and
  players), so `info["success"]` is derived here: terminated and reward > 0. That is MiniGrid's
  own definition: only reaching the goal / completing the instruction gives a positive reward,
  and it always ends the episode; lava, wrong pick-ups and collisions terminate with reward <= 0.
- `max_episode_steps` is each task's own limit by default (MiniGrid's max_steps: 100 for
  Empty-5x5, 640 for DoorKey-8x8); BabyAI ids register 0, meaning the level computes its own
  limit (`vec.max_episode_steps` is then None). The step that reaches the limit is `truncated`.

envs.envpool_base holds the envpool plumbing shared with Atari; MiniGrid adds only the success
flag and the per-task episode limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from envs.core import RowCaptions, StepResult
from envs.envpool_base import EnvpoolEnv, EnvpoolVecEnv
from explore.errors import require

EXTRA = "minigrid"
ENVPOOL_MODULE = "envpool.minigrid"  # the registry module of every MiniGrid/BabyAI id
ID_PATTERN = re.compile(r"^(MiniGrid|BabyAI)-")

# MiniGrid's action ids (minigrid.core.actions.Actions), for scripted tests and debugging.
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE, DONE = range(7)

POSITION_KEY = "agent_pos"  # the observation entry holding envpool's info["agent_pos"] (privileged)
# MiniGrid's grids are at most a few dozen cells wide; the bound only has to contain every position
_POSITION_SPACE = gym.spaces.Box(0, np.iinfo(np.int32).max, (2,), np.int32)


def _envpool():
    return require("envpool", extra=EXTRA, purpose="MiniGrid and BabyAI environments")


def minigrid_ids() -> list[str]:
    """Every MiniGrid-*/BabyAI-* id envpool registers, sorted (e.g. 'MiniGrid-DoorKey-8x8-v0')."""
    _envpool()  # MissingDependencyError naming the 'minigrid' extra when envpool is not installed
    from envpool.registration import registry

    return sorted(i for i, spec in registry.specs.items() if spec[0] == ENVPOOL_MODULE)


def decode_mission(mission: np.ndarray) -> str | np.ndarray:
    """Mission bytes back to text: one row -> str, a batch (N, L) -> object array of N strings."""
    arr = np.asarray(mission, dtype=np.uint8)
    if arr.ndim == 1:
        return arr.tobytes().split(b"\0", 1)[0].decode("utf-8")
    return np.array([decode_mission(row) for row in arr], dtype=object)


class MiniGridVecEnv(EnvpoolVecEnv):
    """`num_envs` MiniGrid or BabyAI tasks; `info["success"]` marks the step that reaches the goal.

    Observations are envpool's dict plus "agent_pos", the (x, y) position from envpool's info.

    No defaults are imposed on envpool: each task keeps its own episode limit (MiniGrid's
    rewards are scaled by it), unless the caller passes `max_episode_steps`.
    """

    extra = EXTRA
    purpose = "MiniGrid and BabyAI environments"

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, **kwargs: Any):
        super().__init__(env_id, num_envs, seed=seed, **kwargs)
        self.single_observation_space = gym.spaces.Dict(
            {**self.single_observation_space.spaces, POSITION_KEY: _POSITION_SPACE}
        )
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        limit = int(self._pool.spec.config.max_episode_steps)
        # BabyAI registers 0: the level sets its own limit from its size
        self.max_episode_steps: int | None = limit if limit > 0 else None

    def _postprocess(self, obs, reward, terminated, truncated, info) -> StepResult:
        # MiniGrid gives a positive reward only for success, and success always terminates
        info["success"] = terminated & (reward > 0)
        obs = {**obs, POSITION_KEY: info["agent_pos"]}
        return obs, reward, terminated, truncated, info

    decode_mission = staticmethod(decode_mission)


class MiniGridEnv(EnvpoolEnv):
    """A single MiniGrid or BabyAI task (what gymnasium.make("Explore/MiniGrid-...") returns)."""

    vec_cls = MiniGridVecEnv


_IMAGE_SIZE = 7 * 7 * 3


def _describe_row(row: np.ndarray) -> str:
    """One caption from [image (7 * 7 * 3), mission bytes] (see `captions`)."""
    from envs.text.babyai_text import caption, describe

    image = row[:_IMAGE_SIZE].reshape(7, 7, 3)
    return caption(describe(image), decode_mission(row[_IMAGE_SIZE:]))


_ROW_CAPTIONS = RowCaptions(_describe_row)


def captions(obs: dict[str, np.ndarray], next_obs: dict[str, np.ndarray] | None = None) -> list[str]:
    """Captions of B transitions (the state they reach) or of B states: the mission and the view in words.

    The view is BabyAI-Text's description (envs.text.babyai_text.describe: walls ahead and to the
    sides, every visible object with its offset, what the agent carries), so a pixel/grid agent and a
    text agent on the same level are judged on the same captions. Written once per distinct
    (view, mission) row of the batch and cached.
    """
    after = obs if next_obs is None else next_obs
    image = np.asarray(after["image"], dtype=np.uint8)
    rows = np.concatenate(
        [image.reshape(image.shape[0], -1), np.asarray(after["mission"], dtype=np.uint8)], axis=1
    )
    return _ROW_CAPTIONS(rows)


def captioner(observation_space: gym.Space) -> Callable[..., list[str]] | None:
    """`captions` for MiniGrid/BabyAI observations (a Dict with a 7x7 "image" and "mission"), else None."""
    spaces = getattr(observation_space, "spaces", {})
    fits = "image" in spaces and "mission" in spaces and tuple(spaces["image"].shape) == (7, 7, 3)
    return captions if fits else None


def config_kwargs(config: Any) -> dict[str, Any]:
    """Env settings from a training config: `max_episode_steps` only when the user set one
    (None keeps each task's own limit, which also scales MiniGrid's rewards)."""
    value = getattr(config, "max_episode_steps", None)
    return {} if value is None else {"max_episode_steps": int(value)}


def suite():
    """The MiniGrid/BabyAI suite for envs.registration."""
    from envs.registration import EnvSuite

    return EnvSuite(
        name="minigrid",
        extra=EXTRA,
        id_pattern=ID_PATTERN,
        list_ids=minigrid_ids,
        make_vec=MiniGridVecEnv,
        make_single=MiniGridEnv,
        observation_kind="minigrid",
        config_kwargs=config_kwargs,
    )
