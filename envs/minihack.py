"""MiniHack (the NetHack Learning Environment) behind the VecEnv protocol, stepped in worker processes.

NLE has no batched or threaded stepper (envpool has no NetHack), so `MiniHackVecEnv` steps its
envs in worker processes (several envs per worker), with observations written to one shared-memory
block and only small control messages going through the pipes. Verified against nle 1.3.0,
minihack 1.0.2 and minigrid 3.2.0 (tests/test_minihack.py pins each point):

- Observations: a Dict of NLE/MiniHack keys, by default "glyphs" (21, 79) int16, "glyphs_crop"
  (9, 9) int16 (the egocentric crop around the agent, padded with 0), "blstats" (27,) int64
  (NLE's dtype; [0] x, [1] y, ..., [9] score, [12] depth, ...) and "message" (256,) uint8 (the
  top line as zero-padded bytes). `observation_keys=` picks others (e.g. "chars", "colors").
- Time limit: each task's own (MiniHack's per-task `max_episode_steps`: Room-5x5 100,
  MultiRoom-N4 120, Labyrinth-Big 1000, ...) unless `max_episode_steps` is given. NLE 1.3.0
  reports its own time limit as terminated=True (end_status ABORTED); here NLE's cut is switched
  off and the limit is applied by this module, so the step that reaches it is `truncated`
  (bootstrap) and never `terminated`. A death or a solved task on that same step is terminated.
- Autoreset is NEXT_STEP, as envpool's (see envs.core): the step that ends an episode returns
  the true final observation; the next step of that env is a dummy (action ignored, reset
  observation, reward 0, elapsed_step 0).
- info: "env_id", "elapsed_step", "success" (True on the step an episode ends with NetHack's
  TASK_SUCCESSFUL) and "end_status" (`EndStatus`: -2 worker lost, -1 time limit, 0 running,
  1 death, 2 task successful).
- Seeds: env i of a vector env built with `seed` plays the episodes of seed + i; episode k of it
  uses NetHack seeds drawn from SeedSequence([seed + i, generation, k]) (NetHack's core and disp
  RNGs, no reseeding, the moon phase derived from the seed), and the same draw seeds Python's
  `random` and, for the MiniGrid-based tasks, the MiniGrid layout generator. NetHack applies a
  seed to one reset only, hence one seed per episode. `MiniHackEnv(env_id, seed=seed + i)`
  replays env i's episodes.
- Faults: a worker that dies (a crash, SIGKILL) or raises is restarted with fresh envs; see
  `MiniHackVecEnv` for how the episodes it held are reported (truncated, never merged).
  `recv` never waits more than `timeout` seconds on a silent worker: a hung worker is killed
  and TimeoutError names it. (The worker processes are envs.pool's.)

Compatibility notes (minihack 1.0.2 with gymnasium 1.x and minigrid 3.x):
- `MiniGridHack.seed` calls `minigrid_env.seed()`, which gymnasium removed: seeding here calls
  NLE's seed directly and seeds the MiniGrid env through `reset(seed=...)`.
- MiniHack passes width=76, height=21 (NetHack's map) to every MiniGrid env it wraps; MultiRoom
  accepts them from minigrid 3.1 on, Crossing envs (LavaCrossing*, SimpleCrossing*) reject them
  (their size is fixed): those are built through a small adapter that drops the two arguments.
- The Boxoban tasks need the level files (minihack/scripts/download_boxoban_levels.py) and the
  two *-Custom-v0 ids need a `des_file=` keyword; without them they fail when built.

Importing this module does not import nle or minihack (they are optional: the `minihack` extra).
"""

from __future__ import annotations

import contextlib
import copy
import enum
import functools
import importlib.util
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import gymnasium as gym
import numpy as np

from envs.core import RowCaptions, StepResult, VecEnv, available_cpus, check_actions
from envs.pool import Request, Worker, WorkerPool
from envs.pool import WorkerCrashedError as WorkerCrashedError  # re-exported: raised by MiniHackVecEnv
from explore.errors import UnknownEnvError, require

logger = logging.getLogger(__name__)

EXTRA = "minihack"
ID_PATTERN = re.compile(r"^MiniHack-")
DEFAULT_OBSERVATION_KEYS: tuple[str, ...] = ("glyphs", "glyphs_crop", "blstats", "message")

# The 16 tasks of Henaff et al. 2023 (E3B x global bonuses); all registered by minihack 1.0.2.
PAPER_TASKS: tuple[str, ...] = (
    "MiniHack-Levitate-Potion-Restricted-v0",
    "MiniHack-Levitate-Boots-Restricted-v0",
    "MiniHack-Freeze-Horn-Restricted-v0",
    "MiniHack-Freeze-Wand-Restricted-v0",
    "MiniHack-Freeze-Random-Restricted-v0",
    "MiniHack-LavaCross-Restricted-v0",
    "MiniHack-WoD-Hard-Restricted-v0",
    "MiniHack-MultiRoom-N4-Locked-v0",
    "MiniHack-MultiRoom-N6-Lava-v0",
    "MiniHack-MultiRoom-N6-Lava-OpenDoor-v0",
    "MiniHack-MultiRoom-N6-LavaMonsters-v0",
    "MiniHack-MultiRoom-N10-OpenDoor-v0",
    "MiniHack-MultiRoom-N10-Lava-OpenDoor-v0",
    "MiniHack-LavaCrossingS19N13-v0",
    "MiniHack-LavaCrossingS19N17-v0",
    "MiniHack-Labyrinth-Big-v0",
)

# Every id minihack 1.0.2 registers (tests/test_minihack.py checks this against the live registry).
# Kept as data so that listing ids (which `import envs` does for every suite) costs no import:
# `import minihack` takes about 2 s (its wiki module imports `inflect`).
MINIHACK_IDS: tuple[str, ...] = tuple(
    """
    MiniHack-Boxoban-Hard-v0 MiniHack-Boxoban-Medium-v0 MiniHack-Boxoban-Unfiltered-v0
    MiniHack-ClosedDoor-v0 MiniHack-Corridor-R2-v0 MiniHack-Corridor-R3-v0 MiniHack-Corridor-R5-v0
    MiniHack-CorridorBattle-Dark-v0 MiniHack-CorridorBattle-v0 MiniHack-Eat-Distr-v0 MiniHack-Eat-Fixed-v0
    MiniHack-Eat-v0 MiniHack-ExploreMaze-Easy-Mapped-v0 MiniHack-ExploreMaze-Easy-v0
    MiniHack-ExploreMaze-Hard-Mapped-v0 MiniHack-ExploreMaze-Hard-v0 MiniHack-Freeze-Horn-Full-v0
    MiniHack-Freeze-Horn-Restricted-v0 MiniHack-Freeze-Lava-Full-v0 MiniHack-Freeze-Lava-Restricted-v0
    MiniHack-Freeze-Random-Full-v0 MiniHack-Freeze-Random-Restricted-v0 MiniHack-Freeze-Wand-Full-v0
    MiniHack-Freeze-Wand-Restricted-v0 MiniHack-HideNSeek-Big-v0 MiniHack-HideNSeek-Lava-v0
    MiniHack-HideNSeek-Mapped-v0 MiniHack-HideNSeek-v0 MiniHack-KeyRoom-Dark-S15-v0
    MiniHack-KeyRoom-Dark-S5-v0 MiniHack-KeyRoom-Fixed-S5-v0 MiniHack-KeyRoom-S15-v0 MiniHack-KeyRoom-S5-v0
    MiniHack-Labyrinth-Big-v0 MiniHack-Labyrinth-Small-v0 MiniHack-LavaCross-Full-v0
    MiniHack-LavaCross-Levitate-Full-v0 MiniHack-LavaCross-Levitate-Potion-Inv-Full-v0
    MiniHack-LavaCross-Levitate-Potion-Inv-Restricted-v0 MiniHack-LavaCross-Levitate-Potion-Pickup-Full-v0
    MiniHack-LavaCross-Levitate-Potion-Pickup-Restricted-v0 MiniHack-LavaCross-Levitate-Restricted-v0
    MiniHack-LavaCross-Levitate-Ring-Inv-Full-v0 MiniHack-LavaCross-Levitate-Ring-Inv-Restricted-v0
    MiniHack-LavaCross-Levitate-Ring-Pickup-Full-v0 MiniHack-LavaCross-Levitate-Ring-Pickup-Restricted-v0
    MiniHack-LavaCross-Restricted-v0 MiniHack-LavaCrossingS11N5-v0 MiniHack-LavaCrossingS19N13-v0
    MiniHack-LavaCrossingS19N17-v0 MiniHack-LavaCrossingS9N1-v0 MiniHack-LavaCrossingS9N2-v0
    MiniHack-LavaCrossingS9N3-v0 MiniHack-Levitate-Boots-Fixed-v0 MiniHack-Levitate-Boots-Full-v0
    MiniHack-Levitate-Boots-Restricted-v0 MiniHack-Levitate-Potion-Fixed-v0 MiniHack-Levitate-Potion-Full-v0
    MiniHack-Levitate-Potion-Restricted-v0 MiniHack-Levitate-Random-Full-v0 MiniHack-Levitate-Ring-Fixed-v0
    MiniHack-Levitate-Ring-Full-v0 MiniHack-Levitate-Ring-Restricted-v0 MiniHack-LockedDoor-Fixed-v0
    MiniHack-LockedDoor-v0 MiniHack-MazeWalk-15x15-v0 MiniHack-MazeWalk-45x19-v0 MiniHack-MazeWalk-9x9-v0
    MiniHack-MazeWalk-Mapped-15x15-v0 MiniHack-MazeWalk-Mapped-45x19-v0 MiniHack-MazeWalk-Mapped-9x9-v0
    MiniHack-Memento-F2-v0 MiniHack-Memento-F4-v0 MiniHack-Memento-Short-F2-v0
    MiniHack-MultiRoom-N10-Lava-OpenDoor-v0 MiniHack-MultiRoom-N10-Lava-v0 MiniHack-MultiRoom-N10-OpenDoor-v0
    MiniHack-MultiRoom-N10-v0 MiniHack-MultiRoom-N2-Extreme-v0 MiniHack-MultiRoom-N2-Lava-v0
    MiniHack-MultiRoom-N2-LavaMonsters-v0 MiniHack-MultiRoom-N2-Locked-v0 MiniHack-MultiRoom-N2-Monster-v0
    MiniHack-MultiRoom-N2-v0 MiniHack-MultiRoom-N4-Extreme-v0 MiniHack-MultiRoom-N4-Lava-v0
    MiniHack-MultiRoom-N4-LavaMonsters-v0 MiniHack-MultiRoom-N4-Locked-v0 MiniHack-MultiRoom-N4-Monster-v0
    MiniHack-MultiRoom-N4-v0 MiniHack-MultiRoom-N6-Extreme-v0 MiniHack-MultiRoom-N6-Lava-OpenDoor-v0
    MiniHack-MultiRoom-N6-Lava-v0 MiniHack-MultiRoom-N6-LavaMonsters-v0 MiniHack-MultiRoom-N6-Locked-v0
    MiniHack-MultiRoom-N6-Monster-v0 MiniHack-MultiRoom-N6-OpenDoor-v0 MiniHack-MultiRoom-N6-v0
    MiniHack-Navigation-Custom-v0 MiniHack-Pray-Distr-v0 MiniHack-Pray-Fixed-v0 MiniHack-Pray-v0
    MiniHack-PutOn-Distr-v0 MiniHack-PutOn-Fixed-v0 MiniHack-PutOn-v0 MiniHack-Quest-Easy-v0
    MiniHack-Quest-Hard-v0 MiniHack-Quest-Medium-v0 MiniHack-Read-Distr-v0 MiniHack-Read-Fixed-v0
    MiniHack-Read-v0 MiniHack-River-Lava-v0 MiniHack-River-Monster-v0 MiniHack-River-MonsterLava-v0
    MiniHack-River-Narrow-v0 MiniHack-River-v0 MiniHack-Room-15x15-v0 MiniHack-Room-5x5-v0
    MiniHack-Room-Dark-15x15-v0 MiniHack-Room-Dark-5x5-v0 MiniHack-Room-Monster-15x15-v0
    MiniHack-Room-Monster-5x5-v0 MiniHack-Room-Random-15x15-v0 MiniHack-Room-Random-5x5-v0
    MiniHack-Room-Trap-15x15-v0 MiniHack-Room-Trap-5x5-v0 MiniHack-Room-Ultimate-15x15-v0
    MiniHack-Room-Ultimate-5x5-v0 MiniHack-SimpleCrossingS11N5-v0 MiniHack-SimpleCrossingS9N1-v0
    MiniHack-SimpleCrossingS9N2-v0 MiniHack-SimpleCrossingS9N3-v0 MiniHack-Sink-Distr-v0
    MiniHack-Sink-Fixed-v0 MiniHack-Sink-v0 MiniHack-Skill-Custom-v0 MiniHack-Sokoban1a-v1
    MiniHack-Sokoban1b-v1 MiniHack-Sokoban2a-v1 MiniHack-Sokoban2b-v1 MiniHack-Sokoban3a-v1
    MiniHack-Sokoban3b-v1 MiniHack-Sokoban4a-v1 MiniHack-Sokoban4b-v1 MiniHack-Wear-Distr-v0
    MiniHack-Wear-Fixed-v0 MiniHack-Wear-v0 MiniHack-Wield-Distr-v0 MiniHack-Wield-Fixed-v0 MiniHack-Wield-v0
    MiniHack-WoD-Easy-Full-v0 MiniHack-WoD-Easy-Restricted-v0 MiniHack-WoD-Hard-Full-v0
    MiniHack-WoD-Hard-Restricted-v0 MiniHack-WoD-Medium-Full-v0 MiniHack-WoD-Medium-Restricted-v0
    MiniHack-WoD-Pro-Full-v0 MiniHack-WoD-Pro-Restricted-v0 MiniHack-Zap-Distr-v0 MiniHack-Zap-Fixed-v0
    MiniHack-Zap-v0
    """.split()  # noqa: SIM905 (161 ids read better as a block than one per line)
)


class EndStatus(enum.IntEnum):
    """`info["end_status"]`: NLE's StepStatus values, plus the two ends this module adds."""

    WORKER_LOST = -2  # the worker process holding the env died: the episode was cut (truncated)
    ABORTED = -1  # the time limit (NLE's own name for it): truncated
    RUNNING = 0
    DEATH = 1  # terminated
    TASK_SUCCESSFUL = 2  # terminated, success


# ---------------------------------------------------------------------------------------------
# Dependencies and ids


def _check_installed() -> None:
    """Raise MissingDependencyError (naming the extra) unless nle and minihack are installed.

    find_spec does not import, so listing ids stays cheap; `require` then produces the error.
    """
    for module in ("nle", "minihack"):
        if importlib.util.find_spec(module) is None:
            require(module, extra=EXTRA, purpose="MiniHack environments")


def _import_minihack() -> Any:
    """Import minihack (which registers its ids with gymnasium) or say which extra installs it."""
    require("nle", extra=EXTRA, purpose="MiniHack environments")
    with warnings.catch_warnings():  # minihack 1.0.2 imports the deprecated pkg_resources
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        return require("minihack", extra=EXTRA, purpose="MiniHack environments")


def minihack_ids() -> list[str]:
    """Every id minihack registers, e.g. 'MiniHack-MultiRoom-N4-Locked-v0' (needs the extra)."""
    _check_installed()
    return list(MINIHACK_IDS)


def _check_env_id(env_id: str) -> str:
    """The bare id ('Explore/' stripped), or UnknownEnvError with close matches."""
    from envs.registration import strip_namespace  # not at import: registration imports this module

    bare = strip_namespace(env_id)
    if bare not in MINIHACK_IDS:
        raise UnknownEnvError(env_id, MINIHACK_IDS)
    return bare


# ---------------------------------------------------------------------------------------------
# One env: construction, seeding, time limit, end status (shared by workers and MiniHackEnv)


_FIT_NAMESPACE = "ExploreMiniGridFit"


def _minigrid_without_frame(
    target: str, width: int | None = None, height: int | None = None, **kwargs: Any
) -> gym.Env:
    """Build MiniGrid env `target` without the width/height MiniHack passes to every MiniGrid env.

    Crossing envs fix their size through `grid_size` and assert that width/height are None; the
    grid (at most 19 x 19 in MiniHack's ids) fits NetHack's 76 x 21 map anyway.
    """
    del width, height
    spec = gym.spec(target)
    return gym.envs.registration.load_env_creator(spec.entry_point)(**{**spec.kwargs, **kwargs})


def _fit_minigrid_env_name(env_name: str) -> str:
    """The MiniGrid id MiniHack should build: `env_name`, or an adapter id for grid_size-based envs."""
    require("minigrid", extra=EXTRA, purpose="MiniHack's MiniGrid-based tasks (MultiRoom, Crossing)")
    if "size" not in gym.spec(env_name).kwargs:  # MultiRoom: takes width/height (minigrid >= 3.1)
        return env_name
    fitted = f"{_FIT_NAMESPACE}/{env_name}"
    if fitted not in gym.registry:
        gym.register(
            fitted,
            entry_point=_minigrid_without_frame,
            kwargs={"target": env_name},
            disable_env_checker=True,
        )
    return fitted


def _construct(env_id: str, observation_keys: Sequence[str], env_kwargs: dict[str, Any]) -> Any:
    """The bare MiniHack env (no gymnasium wrappers: they would intercept max_episode_steps)."""
    _import_minihack()
    spec = gym.spec(env_id)
    # A copy per env: a stateful argument (a RewardManager) must not be shared by a worker's envs.
    kwargs = {**spec.kwargs, **copy.deepcopy(env_kwargs), "observation_keys": tuple(observation_keys)}
    kwargs.setdefault("fix_moon_phase", True)  # otherwise luck depends on today's moon: not reproducible
    if "env_name" in kwargs:
        kwargs["env_name"] = _fit_minigrid_env_name(kwargs["env_name"])
    with warnings.catch_warnings():
        # MiniHack-MultiRoom-N4-* build MiniGrid-MultiRoom-N4-S5-v0 (6 rooms of at most 5x5, as in
        # gym_minigrid, which the MiniHack papers used); minigrid 3.x warns that a v1 with 4 rooms
        # exists. The task is MiniHack's: keep v0, without a warning the user cannot act on.
        warnings.filterwarnings("ignore", message=".*MiniGrid-MultiRoom-N4-S5-v0 is out of date")
        return gym.envs.registration.load_env_creator(spec.entry_point)(**kwargs)


class _EpisodeSeeds:
    """Per-episode NetHack seeds for one env: SeedSequence([seed, generation, episode]).

    `generation` counts worker restarts, so a restarted env does not replay the episodes it lost.
    """

    def __init__(self, seed: int, generation: int = 0):
        if seed < 0:
            raise ValueError(f"seeds must be >= 0, got {seed}")
        self.seed, self.generation, self.episode = int(seed), int(generation), 0

    def next(self) -> tuple[int, int]:
        state = np.random.SeedSequence([self.seed, self.generation, self.episode]).generate_state(
            2, np.uint64
        )
        self.episode += 1
        return int(state[0] >> 1), int(state[1] >> 1)  # NetHack's seeds are signed longs


def _seed_env(env: Any, core: int, disp: int) -> None:
    """Seed everything one MiniHack reset draws from."""
    from nle.env.base import NLE

    # MiniGridHack.seed calls minigrid_env.seed(), which gymnasium removed: call NLE's directly.
    NLE.seed(env, core, disp, reseed=False)
    random.seed(core)  # Boxoban's level choice and MiniHack's level-seed choice use `random`
    minigrid_env = getattr(env, "minigrid_env", None)
    if minigrid_env is not None:  # the MultiRoom/Crossing layout is drawn by MiniGrid at each reset
        minigrid_env.reset(seed=core % 2**32)


@dataclass
class _Transition:
    obs: dict[str, np.ndarray]
    reward: float
    terminated: bool
    truncated: bool
    success: bool
    end_status: int
    elapsed_step: int


class _MiniHackTask:
    """One MiniHack env with this module's conventions: seeded episodes, the time limit, end status."""

    def __init__(
        self,
        env_id: str,
        seed: int,
        observation_keys: Sequence[str],
        max_episode_steps: int | None,
        env_kwargs: dict[str, Any],
        generation: int = 0,
    ):
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(
                f"max_episode_steps must be >= 1 (or None: the task's own), got {max_episode_steps}"
            )
        self.env = _construct(env_id, observation_keys, env_kwargs)
        task_limit = int(self.env._max_episode_steps)  # NLE keeps the task's limit here (0.9 to 1.3)
        self.max_episode_steps = task_limit if max_episode_steps is None else int(max_episode_steps)
        # NLE's own cut reports terminated=True; switch it off and cut here, as a truncation.
        self.env._max_episode_steps = sys.maxsize
        self.seeds = _EpisodeSeeds(seed, generation)
        self.elapsed = 0
        self.needs_reset = True  # the next step is a reset (the NEXT_STEP dummy)

    def reset(self) -> _Transition:
        _seed_env(self.env, *self.seeds.next())
        obs, _ = self.env.reset()
        self.elapsed, self.needs_reset = 0, False
        return _Transition(obs, 0.0, False, False, False, int(EndStatus.RUNNING), 0)

    def step(self, action: int) -> _Transition:
        """One agent step, or the dummy reset step after an episode ended (action ignored)."""
        if self.needs_reset:
            return self.reset()
        obs, reward, done, _, info = self.env.step(int(action))
        self.elapsed += 1
        status = int(info["end_status"])
        terminated = bool(done)  # death, a solved task, or a game NetHack ended itself
        truncated = not terminated and self.elapsed >= self.max_episode_steps
        if truncated:
            status = int(EndStatus.ABORTED)
        self.needs_reset = terminated or truncated
        success = terminated and status == int(EndStatus.TASK_SUCCESSFUL)
        return _Transition(obs, float(reward), terminated, truncated, success, status, self.elapsed)

    def spaces(self) -> dict[str, Any]:
        return {
            "observation_space": self.env.observation_space,
            "action_space": self.env.action_space,
            "max_episode_steps": self.max_episode_steps,
        }

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------------------------------------
# Shared memory: one block holding every field of every env's latest result


_ALIGN = 64


@dataclass(frozen=True)
class _Layout:
    """Field name -> (offset, shape, dtype) inside the shared block; picklable, sent to workers."""

    fields: tuple[tuple[str, int, tuple[int, ...], str], ...]
    size: int

    @classmethod
    def build(cls, num_envs: int, observation_space: gym.spaces.Dict) -> _Layout:
        entries: list[tuple[str, tuple[int, ...], np.dtype]] = [
            (f"obs/{key}", (num_envs, *space.shape), np.dtype(space.dtype))
            for key, space in observation_space.spaces.items()
        ]
        entries += [
            ("reward", (num_envs,), np.dtype(np.float32)),
            ("terminated", (num_envs,), np.dtype(np.bool_)),
            ("truncated", (num_envs,), np.dtype(np.bool_)),
            ("success", (num_envs,), np.dtype(np.bool_)),
            ("end_status", (num_envs,), np.dtype(np.int32)),
            ("elapsed_step", (num_envs,), np.dtype(np.int32)),
        ]
        fields, offset = [], 0
        for name, shape, dtype in entries:
            fields.append((name, offset, shape, dtype.str))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            offset += -(-nbytes // _ALIGN) * _ALIGN
        return cls(tuple(fields), max(offset, _ALIGN))

    def views(self, buffer: memoryview) -> dict[str, np.ndarray]:
        return {
            name: np.ndarray(shape, dtype=np.dtype(dtype), buffer=buffer, offset=offset)
            for name, offset, shape, dtype in self.fields
        }


def _write(views: dict[str, np.ndarray], env_id: int, t: _Transition) -> None:
    for key, value in t.obs.items():
        views[f"obs/{key}"][env_id] = value
    views["reward"][env_id] = t.reward
    views["terminated"][env_id] = t.terminated
    views["truncated"][env_id] = t.truncated
    views["success"][env_id] = t.success
    views["end_status"][env_id] = t.end_status
    views["elapsed_step"][env_id] = t.elapsed_step


# ---------------------------------------------------------------------------------------------
# Worker process


@dataclass(frozen=True)
class _WorkerConfig:
    """What a worker needs to build its envs; picklable."""

    env_id: str
    observation_keys: tuple[str, ...]
    max_episode_steps: int | None
    env_kwargs: dict[str, Any]
    scratch_dir: str


class _MiniHackWorker:
    """What a worker process runs (an envs.pool WorkerHandler): its envs, writing to the shared block.

    Requests: ("step", (env_ids, actions)) and ("reset", (env_ids, seeds or None)) write each
    result to the shared block and reply with the env ids; ("attach", (name, layout)) attaches the
    block (made once the first worker has described the spaces).
    """

    def __init__(
        self,
        env_ids: list[int],
        seeds: list[int],
        generation: int,
        config: _WorkerConfig,
        shm_name: str | None,
        layout: _Layout | None,
    ):
        # NLE copies libnethack and its data into one temp dir per env; keep them where the parent
        # can remove them even if this process is killed.
        os.environ["TMPDIR"] = config.scratch_dir
        tempfile.tempdir = config.scratch_dir
        self.tasks: dict[int, _MiniHackTask] = {}
        self.shm: shared_memory.SharedMemory | None = None
        self.views: dict[str, np.ndarray] = {}
        for env_id, seed in zip(env_ids, seeds, strict=True):
            self.tasks[env_id] = _MiniHackTask(
                config.env_id,
                seed,
                config.observation_keys,
                config.max_episode_steps,
                config.env_kwargs,
                generation,
            )
        self.first = env_ids[0]
        if shm_name is not None and layout is not None:
            self._attach(shm_name, layout)

    def _attach(self, shm_name: str, layout: _Layout) -> None:
        self.shm = shared_memory.SharedMemory(name=shm_name)
        self.views = layout.views(self.shm.buf)

    def describe(self) -> dict[str, Any]:
        return self.tasks[self.first].spaces()

    def handle(self, command: str, payload: Any) -> Any:
        if command == "step":
            ids, actions = payload
            for env_id, action in zip(ids, actions, strict=True):
                _write(self.views, env_id, self.tasks[env_id].step(action))
            return ids
        if command == "reset":
            ids, new_seeds = payload
            for n, env_id in enumerate(ids):
                if new_seeds is not None:
                    self.tasks[env_id].seeds = _EpisodeSeeds(new_seeds[n])
                _write(self.views, env_id, self.tasks[env_id].reset())
            return ids
        if command == "attach":
            self._attach(*payload)
            return None
        raise ValueError(f"unknown command {command!r}")

    def close(self) -> None:
        self.views.clear()
        for task in self.tasks.values():
            with contextlib.suppress(Exception):  # best effort at exit: the process ends anyway
                task.close()
        if self.shm is not None:
            self.shm.close()


# ---------------------------------------------------------------------------------------------
# The vector env


_IDLE, _IN_FLIGHT, _READY = 0, 1, 2  # per env: user holds its row / a request is out / result queued


class MiniHackVecEnv(VecEnv):
    """`num_envs` MiniHack envs in `num_workers` worker processes, with async send/recv.

    `batch_size < num_envs` is envpool's async mode: `recv` returns the first `batch_size` envs to
    finish (whole workers finish together), named by `info["env_id"]`; `send(actions, env_ids)`
    then steps just those. `recv` returns fewer rows only when fewer envs are in flight.

    Faults. A worker that dies (segfault, OOM kill, SIGKILL) or raises is restarted: the parent
    kills what is left of it, starts a new process for the same env ids and carries on. The
    episodes it held are gone, and each is reported once, on its env's next result, as a
    truncation: the last observation the trainer saw, reward 0, terminated False, truncated True,
    end_status WORKER_LOST. So the trainer bootstraps from the value of that last state (as if
    the lost step had done nothing), nothing is merged across the cut, and the env's following
    step is the usual NEXT_STEP dummy with the new episode's reset observation. (A reset or dummy
    step in flight is simply redone.) After `max_restarts` restarts of one worker the next fault
    raises WorkerCrashedError naming the worker and its env ids. A worker that owes a result and
    says nothing for `timeout` seconds (alive but hung) is killed and `recv` raises TimeoutError
    naming it; the next call restarts it like a crashed one. The processes, restarts and
    timeouts are envs.pool's, shared with the text games and Go-Explore's emulators.

    Workers start with "forkserver" (or "spawn"), so, as with any such multiprocessing, a script
    that builds a MiniHackVecEnv at import time needs the `if __name__ == "__main__":` guard.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int = 0,
        *,
        observation_keys: Sequence[str] = DEFAULT_OBSERVATION_KEYS,
        max_episode_steps: int | None = None,
        num_workers: int | None = None,
        batch_size: int | None = None,
        timeout: float = 60.0,
        startup_timeout: float = 120.0,
        max_restarts: int = 3,
        start_method: str | None = None,
        **env_kwargs: Any,
    ):
        """
        Args:
            env_id: a MiniHack id ('MiniHack-...' or 'Explore/MiniHack-...').
            num_envs: number of envs; env i plays the episodes of seed + i.
            observation_keys: NLE/MiniHack observation keys to return.
            max_episode_steps: episode cut in agent steps (truncated); None: the task's own.
            num_workers: worker processes (default min(num_envs, usable CPUs)); envs are split
                evenly, consecutive ids per worker.
            batch_size: rows `recv` waits for (default num_envs: synchronous stepping).
            timeout: seconds `recv` waits without any worker answering before TimeoutError.
            startup_timeout: seconds a worker may take to import NLE and build its envs.
            max_restarts: restarts allowed per worker before a fault stops the run.
            start_method: "forkserver" (default on Linux: workers fork from a clean server that
                has imported NLE once, so starts and restarts are fast and the trainer's threads
                are never forked) or "spawn".
            env_kwargs: passed to the MiniHack env constructor (e.g. des_file=, reward_win=).
        """
        self.closed = True  # until the workers are up: close() is then safe at any point
        self.env_id = _check_env_id(env_id)
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(
                f"max_episode_steps must be >= 1 (or None: the task's own), got {max_episode_steps}"
            )
        _check_installed()
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        self.num_workers = min(self.num_envs, int(num_workers or available_cpus()))
        self.batch_size = int(batch_size or self.num_envs)
        if not 1 <= self.batch_size <= self.num_envs:
            raise ValueError(f"batch_size must be in [1, num_envs={self.num_envs}], got {batch_size}")
        self.observation_keys = tuple(observation_keys)
        self._scratch = tempfile.mkdtemp(prefix="explore-minihack-")
        self._config = _WorkerConfig(
            self.env_id, self.observation_keys, max_episode_steps, dict(env_kwargs), self._scratch
        )
        self._shm: shared_memory.SharedMemory | None = None
        self._layout: _Layout | None = None
        self._views: dict[str, np.ndarray] = {}
        self._pool: WorkerPool | None = None
        self.closed = False
        try:
            self._start(timeout, startup_timeout, max_restarts, start_method)
        except BaseException:
            self.close()
            raise

    # --- construction --------------------------------------------------------------------

    def _start(
        self, timeout: float, startup_timeout: float, max_restarts: int, start_method: str | None
    ) -> None:
        splits = [ids.tolist() for ids in np.array_split(np.arange(self.num_envs), self.num_workers)]
        self._owner = np.empty(self.num_envs, dtype=np.int64)
        self._spans = []  # each worker's envs as a slice (they are consecutive)
        for index, ids in enumerate(splits):
            self._owner[ids] = index
            self._spans.append(slice(ids[0], ids[-1] + 1))
        self._pool = WorkerPool(
            self.env_id,
            _MiniHackWorker,
            self._worker_args,
            splits,
            on_reply=self._on_reply,
            on_restart=self._on_restart,
            timeout=timeout,
            startup_timeout=startup_timeout,
            max_restarts=max_restarts,
            start_method=start_method,
            preload=("envs.minihack", "minihack"),
        )
        first = self._pool.descriptions[0]
        self.single_observation_space = first["observation_space"]
        self.single_action_space = first["action_space"]
        self._num_actions = int(self.single_action_space.n)
        self.max_episode_steps = int(first["max_episode_steps"])
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)

        self._layout = _Layout.build(self.num_envs, self.single_observation_space)
        self._shm = self._pool.create_block(self._layout.size)
        self._views = self._layout.views(self._shm.buf)

        n = self.num_envs
        self._all_ids = np.arange(n)
        self._state = np.full(n, _IDLE, dtype=np.int8)
        self._ready: deque[int] = deque()
        self._lost = np.zeros(n, dtype=bool)  # its episode died with a worker: report the cut next
        self._last_done = np.ones(n, dtype=bool)  # before any reset, a step is a reset
        self._last_elapsed = np.zeros(n, dtype=np.int32)
        self._resetting = np.zeros(n, dtype=bool)  # the request in flight is a reset
        self._last_obs = {
            key: np.zeros(space.shape, space.dtype) for key, space in self.observation_space.items()
        }
        # The space's keys, not the requested ones: MiniHack adds "glyphs_crop" for "pixel_crop".
        self._obs_keys = tuple(self.single_observation_space.spaces)

        for worker in self._pool.workers:
            self._pool.send(worker, "attach", (self._shm.name, self._layout))
        self._drain("attach")

    def _worker_args(self, index: int, env_ids: list[int], generation: int) -> tuple:
        """A worker's build arguments; a restarted one attaches to the shared block at once."""
        shm_name = self._shm.name if self._shm is not None else None
        return (env_ids, [self.seed + i for i in env_ids], generation, self._config, shm_name, self._layout)

    # --- the protocol --------------------------------------------------------------------

    def async_reset(self, seed: int | None = None) -> None:
        """Reset every env; with `seed`, env i restarts the episode sequence of seed + i."""
        self._check_open()
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self._drain("async_reset")  # results still in flight are discarded
        self._ready.clear()
        self._lost[:] = False
        if seed is not None:
            self.seed = int(seed)
        self._resetting[:] = True
        for worker in self._pool.workers:
            self._state[worker.env_ids] = _IN_FLIGHT
            seeds = None if seed is None else [self.seed + i for i in worker.env_ids]
            self._pool.send(worker, "reset", (worker.env_ids, seeds))

    def send(self, actions: np.ndarray, env_ids: np.ndarray | None = None) -> None:
        self._check_open()
        actions, env_ids = check_actions(actions, self._num_actions, self.num_envs, env_ids)
        ids = self._all_ids if env_ids is None else env_ids
        busy = ids[self._state[ids] != _IDLE]
        if busy.size:
            raise RuntimeError(f"envs {busy.tolist()} were sent actions already: recv() their results first")

        if env_ids is None and not self._lost.any():  # the synchronous step: one message per worker
            self._state[:] = _IN_FLIGHT
            self._resetting[:] = False
            action_list = actions.tolist()
            for worker in self._pool.workers:
                self._pool.send(worker, "step", (worker.env_ids, action_list[self._spans[worker.index]]))
            return

        lost = self._lost[ids]
        for env_id in ids[lost]:  # the cut of an episode a dead worker held: no worker involved
            self._report_lost_episode(int(env_id))
        ids, actions = ids[~lost], actions[~lost]
        for worker_index in np.unique(self._owner[ids]):
            mine = self._owner[ids] == worker_index
            worker = self._pool.workers[int(worker_index)]
            self._state[ids[mine]] = _IN_FLIGHT
            self._resetting[ids[mine]] = False
            self._pool.send(worker, "step", (ids[mine].tolist(), actions[mine].tolist()))

    def recv(self) -> StepResult:
        self._check_open()
        in_flight = int((self._state == _IN_FLIGHT).sum())
        target = min(self.batch_size, in_flight + len(self._ready))
        if target == 0:
            raise RuntimeError("recv() with nothing in flight: call send() or async_reset() first")
        self._pool.pump(lambda: len(self._ready) >= target, "recv")
        ids = np.sort(np.array([self._ready.popleft() for _ in range(target)], dtype=np.int64))
        rows: slice | np.ndarray = slice(None) if target == self.num_envs else ids
        views = self._views

        def take(name: str) -> np.ndarray:
            """A copy of the rows (workers write the next results there); fancy indexing copies."""
            return views[name][rows].copy() if isinstance(rows, slice) else views[name][rows]

        obs = {key: take(f"obs/{key}") for key in self._obs_keys}
        reward, terminated, truncated = take("reward"), take("terminated"), take("truncated")
        info = {
            "env_id": ids.astype(np.int32),
            "elapsed_step": take("elapsed_step"),
            "success": take("success"),
            "end_status": take("end_status"),
        }
        for key, value in obs.items():
            self._last_obs[key][rows] = value
        self._last_done[rows] = terminated | truncated
        self._last_elapsed[rows] = info["elapsed_step"]
        self._state[rows] = _IDLE
        return obs, reward, terminated, truncated, info

    # --- plumbing ------------------------------------------------------------------------

    def _on_reply(self, worker: Worker, command: str, payload: Any, env_ids: Any) -> None:
        if command in ("step", "reset"):
            self._state[env_ids] = _READY
            self._ready.extend(env_ids)

    def _on_restart(self, worker: Worker, lost: list[Request]) -> None:
        """A worker was replaced: report or redo what its envs had in flight (see the class docstring)."""
        # `lost` is not needed: each env's state says what it had in flight, and a lost "attach"
        # needs no redo (a restarted worker attaches at start: its build arguments name the block)
        del lost
        redo_steps, redo_resets = [], []
        for env_id in worker.env_ids:
            state = self._state[env_id]
            if state == _IN_FLIGHT:
                if self._resetting[env_id]:
                    redo_resets.append(env_id)
                elif self._last_done[env_id]:
                    redo_steps.append(env_id)  # a dummy step: the new env resets instead
                else:
                    self._report_lost_episode(env_id)
            elif state == _READY:
                # Its result was written before the crash and is queued; the episode behind it is
                # gone: cut it at the next step unless that result already ended it.
                row_done = bool(self._views["terminated"][env_id] or self._views["truncated"][env_id])
                self._lost[env_id] = not row_done
            else:  # _IDLE: the trainer holds its last row
                self._lost[env_id] = not self._last_done[env_id]
        if redo_steps:
            self._pool.send(worker, "step", (redo_steps, [0] * len(redo_steps)))
        if redo_resets:
            self._pool.send(worker, "reset", (redo_resets, None))

    def _report_lost_episode(self, env_id: int) -> None:
        """Queue the truncation that ends an episode lost with its worker (see the class docstring)."""
        views = self._views
        for key in self._obs_keys:
            views[f"obs/{key}"][env_id] = self._last_obs[key][env_id]
        views["reward"][env_id] = 0.0
        views["terminated"][env_id] = False
        views["truncated"][env_id] = True
        views["success"][env_id] = False
        views["end_status"][env_id] = int(EndStatus.WORKER_LOST)
        views["elapsed_step"][env_id] = self._last_elapsed[env_id] + 1
        self._lost[env_id] = False
        self._state[env_id] = _READY
        self._ready.append(env_id)

    def _drain(self, what: str) -> None:
        if self._pool is not None and self._pool.busy:
            self._pool.pump(lambda: not self._pool.busy, what)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this MiniHackVecEnv is closed")

    # --- introspection and closing ---------------------------------------------------------

    @property
    def worker_pids(self) -> list[int | None]:
        """Process id of each worker (changes when a worker is restarted)."""
        return self._pool.pids

    @property
    def worker_restarts(self) -> list[int]:
        return self._pool.restarts

    def worker_env_ids(self, index: int) -> list[int]:
        return list(self._pool.workers[index].env_ids)

    def close(self, timeout: float = 2.0, **kwargs: Any) -> None:
        """Stop every worker (asked, then SIGTERM, then SIGKILL), join them, free shared memory.

        `timeout` bounds the polite phase; whatever NLE leaves behind in a killed worker lives in
        this env's scratch directory, which is removed here.
        """
        if getattr(self, "_closing_done", False):
            return
        self._closing_done = True
        self._views = {}
        if getattr(self, "_pool", None) is not None:
            self._pool.close(timeout)
        if getattr(self, "_scratch", None):
            shutil.rmtree(self._scratch, ignore_errors=True)
        self.closed = True


# ---------------------------------------------------------------------------------------------
# Single env and the suite


class MiniHackEnv(gym.Env):
    """One MiniHack task in this process, with the vector env's conventions (seeds, time limit, info).

    What `gymnasium.make("Explore/MiniHack-...")` returns. No autoreset: call reset after an
    episode ends. `MiniHackEnv(env_id, seed=s + i)` plays the episodes of env i of
    `MiniHackVecEnv(env_id, n, seed=s)`.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        env_id: str,
        seed: int = 0,
        observation_keys: Sequence[str] = DEFAULT_OBSERVATION_KEYS,
        max_episode_steps: int | None = None,
        **env_kwargs: Any,
    ):
        self.env_id = _check_env_id(env_id)
        self._task = _MiniHackTask(self.env_id, seed, tuple(observation_keys), max_episode_steps, env_kwargs)
        self.observation_space = self._task.env.observation_space
        self.action_space = self._task.env.action_space
        self.max_episode_steps = self._task.max_episode_steps

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._task.seeds = _EpisodeSeeds(seed)
        t = self._task.reset()
        return _copy(t.obs), {"elapsed_step": 0, "success": False, "end_status": t.end_status}

    def step(self, action):
        if self._task.needs_reset:
            raise RuntimeError("the episode has ended (or never started): call reset()")
        (checked,), _ = check_actions(np.array([action]), int(self.action_space.n), 1)
        t = self._task.step(int(checked))
        info = {"elapsed_step": t.elapsed_step, "success": t.success, "end_status": t.end_status}
        return _copy(t.obs), t.reward, t.terminated, t.truncated, info

    def close(self) -> None:
        self._task.close()


def _copy(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """NLE reuses its observation buffers on the next step: hand out copies."""
    return {key: np.array(value, copy=True) for key, value in obs.items()}


# --- captions: transitions in words, for the judge-reward bonus (explore/judge_reward.py) -----------

BLSTATS_X, BLSTATS_Y, BLSTATS_HP, BLSTATS_DEPTH, BLSTATS_GOLD = 0, 1, 10, 12, 13
# event bits of a transition, in the order their sentences are written
_EVENTS = (
    "You moved.",
    "You did not move.",
    "You descended to dungeon level {depth}.",
    "You lost health.",
    "You regained health.",
    "You picked up gold.",
    "A key is in view.",
    "A door is in view.",
    "A staircase down is in view.",
)
_SIGHT_BITS = {"key": 6, "door": 7, "stairs": 8}


@functools.lru_cache(maxsize=1)
def _sight_glyphs() -> dict[str, np.ndarray]:
    """Glyph ids of what a caption mentions when it is on the map: keys, doors, stairs/ladders down."""
    import nle.nethack as nh

    keys = {"skeleton key", "lock pick", "credit card"}
    cmap = {"door": {"open door", "closed door"}, "stairs": {"staircase down", "ladder down"}}
    sights = {
        "key": np.array(
            [nh.GLYPH_OBJ_OFF + i for i in range(nh.NUM_OBJECTS) if nh.objdescr.from_idx(i).oc_name in keys]
        )
    }
    for name, wanted in cmap.items():
        sights[name] = np.array(
            [
                nh.GLYPH_CMAP_OFF + i
                for i in range(nh.MAXPCHARS)
                if nh.symdef.from_idx(i).explanation in wanted
            ]
        )
    return sights


def _describe_row(row: np.ndarray) -> str:
    """One caption from [message bytes (256), event bits, depth] (see `captions`)."""
    message = bytes(row[:256].astype(np.uint8)).split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    bits, depth = int(row[256]), int(row[257])
    events = [text.format(depth=depth) for i, text in enumerate(_EVENTS) if bits >> i & 1]
    return " ".join([message, *events] if message else events)


_ROW_CAPTIONS = RowCaptions(_describe_row)


def captions(obs: dict[str, np.ndarray], next_obs: dict[str, np.ndarray] | None = None) -> list[str]:
    """Captions of B transitions obs -> next_obs (arrays with one leading dim B), or of B states.

    A transition's caption is the next message, then what blstats say changed (moved or not, a
    descent with the new depth, health lost or regained, gold picked up), then what is in view on
    the map ("glyphs", when observed): a key, a door, a staircase down. A state's caption (next_obs
    None) is its message and what is in view. Computed with array operations over the batch; the
    sentences are written once per distinct (message, events) row and cached.
    """
    after = obs if next_obs is None else next_obs
    blstats = np.asarray(after["blstats"]).astype(np.int64)
    bits = np.zeros(blstats.shape[0], dtype=np.int64)
    if next_obs is not None:
        before = np.asarray(obs["blstats"]).astype(np.int64)
        moved = (before[:, [BLSTATS_X, BLSTATS_Y]] != blstats[:, [BLSTATS_X, BLSTATS_Y]]).any(1)
        for bit, flag in enumerate(
            (
                moved,
                ~moved,
                blstats[:, BLSTATS_DEPTH] > before[:, BLSTATS_DEPTH],
                blstats[:, BLSTATS_HP] < before[:, BLSTATS_HP],
                blstats[:, BLSTATS_HP] > before[:, BLSTATS_HP],
                blstats[:, BLSTATS_GOLD] > before[:, BLSTATS_GOLD],
            )
        ):
            bits |= flag.astype(np.int64) << bit
    if "glyphs" in after:
        glyphs = np.asarray(after["glyphs"]).reshape(blstats.shape[0], -1)
        for name, ids in _sight_glyphs().items():
            bits |= np.isin(glyphs, ids).any(1).astype(np.int64) << _SIGHT_BITS[name]
    message = np.zeros((blstats.shape[0], 256), dtype=np.int64)
    text = np.asarray(after["message"]).reshape(blstats.shape[0], -1)[:, :256]
    message[:, : text.shape[1]] = text
    rows = np.concatenate([message, bits[:, None], blstats[:, BLSTATS_DEPTH, None]], axis=1)
    return _ROW_CAPTIONS(rows)


def captioner(observation_space: gym.Space) -> Callable[..., list[str]] | None:
    """`captions` for NLE observations (a Dict with "message" and "blstats"), else None."""
    keys = getattr(observation_space, "spaces", {})
    return captions if "message" in keys and "blstats" in keys else None


def config_kwargs(config: Any) -> dict[str, Any]:
    """Env settings from a training config: `max_episode_steps` only when set (None: the task's own).

    MiniHack's limits are part of each task (Room-5x5 100 steps, MultiRoom-N4 120, Labyrinth-Big
    1000); Atari's 4500 would make the sparse tasks far easier to stumble through.
    """
    value = getattr(config, "max_episode_steps", None)
    return {} if value is None else {"max_episode_steps": int(value)}


def suite():
    """The MiniHack suite for envs.registration."""
    from envs.registration import EnvSuite

    return EnvSuite(
        name="minihack",
        extra=EXTRA,
        id_pattern=ID_PATTERN,
        list_ids=minihack_ids,
        make_vec=MiniHackVecEnv,
        make_single=MiniHackEnv,
        observation_kind="minihack",
        config_kwargs=config_kwargs,
    )
