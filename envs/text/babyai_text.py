"""BabyAI as a text game, after GLAM (Carta et al. 2023): `BabyAI-Text-GoToLocal-v0`, ...

The levels run in envpool's native BabyAI port (as envs.minigrid does); each observation is the
agent's partial 7x7 egocentric view written out in sentences, one per line:

    You see a wall 2 steps forward
    You see a wall 3 steps left
    You see a red ball 1 step left and 2 steps forward
    You see a closed blue door 3 steps right and 1 step forward
    You carry a yellow key

Walls: only the nearest one straight ahead, to the left and to the right (as GLAM); every other
visible object (keys, balls, boxes, doors with their state, goals, lava) with its offset. The
mission ("go to the red ball") is `info["goal"]`/`info["mission"]`.

Commands (the admissible list, always the same): "turn left", "turn right", "go forward",
"pick up", "drop", "toggle" (MiniGrid's actions 0-5). Any other command is invalid: it is played
as MiniGrid's "done" action, which BabyAI treats as a no-op (it still costs a step).

- Reward: BabyAI's (1 - 0.9 * steps / level limit on success, else 0); `score` is the episode's
  sum of rewards, `max_score` 1.0; `success` = the level terminated with a positive reward.
- `gold_path` is [] (envpool's port has no bot to solve levels).
- Time limit: the level's own (envpool) or `max_episode_steps` (default 64), whichever comes first.
- Seeds: envpool seeds env i of a pool made with seed s with s + i and draws each later episode
  from that env's own generator. A single env's `reset(seed=s)` rebuilds its pool from s, so
  `BabyAITextEnv` reset with seed s + i and then reset without seeds plays the same episodes as
  env i of `BabyAITextVecEnv(seed=s)`; reset(seed=s) + the same commands replays an episode.
- The vector env is one envpool pool of `num_envs` levels (stepped by envpool's threads, no worker
  processes: `num_workers` is ignored), with the same TextVecEnv interface and SAME_STEP
  autoreset: an env whose episode ends is reset inside the step with envpool's `reset(env_ids)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.text.core import (
    GameState,
    TextEnv,
    normalize_command,
)
from envs.text.vector import TextStepResult, TextVecEnvBase
from explore.errors import require

EXTRA = "text"
COMMANDS = ("turn left", "turn right", "go forward", "pick up", "drop", "toggle")
ACTION_OF = {c: i for i, c in enumerate(COMMANDS)}
NOOP = 6  # MiniGrid's "done": a no-op in BabyAI levels

# text id -> envpool id (GLAM's tasks first; "PickUp" is the one-room PickupLoc level)
BABYAI_TASKS: dict[str, str] = {
    "BabyAI-Text-GoToRedBall-v0": "BabyAI-GoToRedBall-v0",
    "BabyAI-Text-GoToLocal-v0": "BabyAI-GoToLocal-v0",
    "BabyAI-Text-GoTo-v0": "BabyAI-GoTo-v0",
    "BabyAI-Text-PickUp-v0": "BabyAI-PickupLoc-v0",
    "BabyAI-Text-PickupDist-v0": "BabyAI-PickupDist-v0",
    "BabyAI-Text-Open-v0": "BabyAI-Open-v0",
    "BabyAI-Text-OpenDoor-v0": "BabyAI-OpenDoor-v0",
    "BabyAI-Text-PutNextLocal-v0": "BabyAI-PutNextLocal-v0",
    "BabyAI-Text-UnlockLocal-v0": "BabyAI-UnlockLocal-v0",
    "BabyAI-Text-ActionObjDoor-v0": "BabyAI-ActionObjDoor-v0",
    "BabyAI-Text-BossLevel-v0": "BabyAI-BossLevel-v0",
}
DEFAULT_MAX_EPISODE_STEPS = 64

# MiniGrid's encodings (minigrid.core.constants)
OBJECTS = {0: "unseen", 1: "empty", 2: "wall", 3: "floor", 4: "door", 5: "key", 6: "ball", 7: "box", 8: "goal", 9: "lava", 10: "agent"}
COLORS = {0: "red", 1: "green", 2: "blue", 3: "purple", 4: "yellow", 5: "grey"}
DOOR_STATES = {0: "open", 1: "closed", 2: "locked"}
_UNSEEN, _EMPTY, _WALL, _FLOOR, _DOOR, _AGENT = 0, 1, 2, 3, 4, 10
AGENT_X, AGENT_Y = 3, 6  # the agent's cell in the 7x7 view; it faces y = 0


def _steps(n: int, word: str) -> str:
    return f"{n} step{'s' if n != 1 else ''} {word}"


def _offset(dx: int, forward: int) -> str:
    parts = []
    if dx < 0:
        parts.append(_steps(-dx, "left"))
    elif dx > 0:
        parts.append(_steps(dx, "right"))
    if forward > 0:
        parts.append(_steps(forward, "forward"))
    return " and ".join(parts)


def _name(kind: int, color: int, state: int) -> str:
    obj = OBJECTS.get(int(kind), "object")
    if obj == "door":
        return f"{DOOR_STATES.get(int(state), '')} {COLORS.get(int(color), '')} door".strip()
    if obj in ("lava", "goal"):
        return obj
    return f"{COLORS.get(int(color), '')} {obj}".strip()


def describe(image: np.ndarray) -> str:
    """The sentences for one (7, 7, 3) egocentric view, indexed [x, y, (type, colour, state)]."""
    image = np.asarray(image)
    lines = []
    # the nearest wall straight ahead, to the left and to the right (rays stop at any non-empty cell)
    for label, cells in (
        ("forward", [(AGENT_X, y) for y in range(AGENT_Y - 1, -1, -1)]),
        ("left", [(x, AGENT_Y) for x in range(AGENT_X - 1, -1, -1)]),
        ("right", [(x, AGENT_Y) for x in range(AGENT_X + 1, 7)]),
    ):
        for distance, (x, y) in enumerate(cells, start=1):
            kind = int(image[x, y, 0])
            if kind == _WALL:
                lines.append(f"You see a wall {_steps(distance, label)}")
            if kind not in (_EMPTY, _FLOOR):
                break
    objects = []
    for y in range(7):
        for x in range(7):
            kind = int(image[x, y, 0])
            if kind in (_UNSEEN, _EMPTY, _WALL, _FLOOR, _AGENT) or (x, y) == (AGENT_X, AGENT_Y):
                continue
            dx, forward = x - AGENT_X, AGENT_Y - y
            objects.append((abs(dx) + forward, x, y, f"You see a {_name(kind, image[x, y, 1], image[x, y, 2])} {_offset(dx, forward)}"))
    lines += [text for *_, text in sorted(objects)]
    carried = image[AGENT_X, AGENT_Y]
    if int(carried[0]) not in (_UNSEEN, _EMPTY, _FLOOR, _WALL, _AGENT):
        lines.append(f"You carry a {_name(*carried)}")
    return "\n".join(lines) if lines else "You see nothing"


def caption(description: str, mission: str) -> str:
    """The judge-reward caption of a BabyAI state: its mission, then its description as sentences."""
    sentences = ". ".join(line for line in description.splitlines() if line)
    return f"Mission: {mission}. {sentences}." if mission else f"{sentences}."


def captions(descriptions: list[str], missions: list[str]) -> list[str]:
    """`caption` over a batch of text observations and their goals (the text trainer's rows)."""
    return [caption(d, m) for d, m in zip(descriptions, missions, strict=True)]


def decode_mission(row: np.ndarray) -> str:
    return np.asarray(row, dtype=np.uint8).tobytes().split(b"\0", 1)[0].decode("utf-8")


def command_to_action(command: Any) -> tuple[int, bool]:
    """(MiniGrid action, invalid) for one command."""
    text, malformed = normalize_command(command)
    action = ACTION_OF.get(text)
    if action is None or malformed:
        return NOOP, True
    return action, False


def _make_pool(env_id: str, num_envs: int, seed: int, **envpool_kwargs: Any) -> Any:
    envpool = require("envpool", extra=EXTRA, purpose="BabyAI-Text environments")
    return envpool.make(BABYAI_TASKS[env_id], env_type="gymnasium", num_envs=num_envs, seed=seed, **envpool_kwargs)


class BabyAITextEnv(TextEnv):
    """One BabyAI level as a text game (see the module docstring)."""

    default_max_episode_steps = DEFAULT_MAX_EPISODE_STEPS

    def __init__(self, env_id: str, seed: int = 0, max_episode_steps: int | None = None, **envpool_kwargs: Any):
        super().__init__(env_id, seed=seed, max_episode_steps=max_episode_steps)
        require("envpool", extra=EXTRA, purpose="BabyAI-Text environments")
        self._envpool_kwargs = envpool_kwargs
        self._pool: Any = None
        self._pool_seed: int | None = None
        self._pool_fresh = False  # built and not reset yet: its next episode is its seed's first
        self._score = 0.0
        self._level_truncated = False

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict[str, Any]]:
        # envpool seeds at construction only: a seeded reset (and the first) rebuilds the pool
        # unless it is fresh from that seed
        if seed is None and self._pool is None:
            seed = self._seed_base
        if seed is not None and not (self._pool_fresh and self._pool_seed == seed):
            if self._pool is not None:
                self._pool.close()
            self._pool = _make_pool(self.env_id, 1, int(seed), **self._envpool_kwargs)
            self._pool_seed, self._pool_fresh = int(seed), True
        result = super().reset(seed=seed, options=options)
        self._pool_fresh = False
        return result

    def _start(self, game_seed: int) -> GameState:
        obs, _ = self._pool.reset()
        self._score = 0.0
        return GameState(
            obs=describe(obs["image"][0]),
            score=0.0,
            max_score=1.0,
            admissible_commands=list(COMMANDS),
            goal=decode_mission(obs["mission"][0]),
        )

    def _play(self, command: str) -> GameState:
        action, _ = command_to_action(command)
        obs, reward, terminated, truncated, _ = self._pool.step(np.array([action], dtype=np.int32))
        r = float(reward[0])
        self._score += r
        won = bool(terminated[0]) and r > 0
        self._level_truncated = bool(truncated[0]) and not terminated[0]
        return GameState(
            obs=describe(obs["image"][0]),
            score=self._score,
            max_score=1.0,
            admissible_commands=list(COMMANDS),
            won=won,
            lost=bool(terminated[0]) and not won,
            reward=r,
            goal=self._state.goal if self._state is not None else "",
        )

    def step(self, command: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        self._level_truncated = False
        obs, reward, terminated, truncated, info = super().step(command)
        if self._level_truncated and not truncated:  # the level's own limit came first
            truncated, self._done = True, True
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.close()


class BabyAITextVecEnv(TextVecEnvBase):
    """`num_envs` BabyAI-Text levels in one envpool pool, with the TextVecEnv interface (SAME_STEP).

    Seeds: reset(seed=s) (or the list [s, s+1, ...]) rebuilds the pool from s, env i playing s + i.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int = 0,
        max_episode_steps: int | None = None,
        num_threads: int = 0,
        **envpool_kwargs: Any,
    ):
        super().__init__(env_id, num_envs)
        self.max_episode_steps = max_episode_steps if max_episode_steps is not None else DEFAULT_MAX_EPISODE_STEPS
        self._kwargs = {**envpool_kwargs, "num_threads": num_threads}
        self._seed = int(seed)
        self._pool = _make_pool(env_id, num_envs, self._seed, **self._kwargs)
        self._pool_fresh = True
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._score = np.zeros(num_envs, dtype=np.float64)
        self._mission = [""] * num_envs
        self._pending: tuple[str, Any] | None = None

    def _reset_row(self, i: int, obs: dict[str, np.ndarray], k: int) -> dict[str, Any]:
        self._elapsed[i], self._score[i] = 0, 0.0
        self._mission[i] = decode_mission(obs["mission"][k])
        return {
            "obs": describe(obs["image"][k]),
            "admissible_commands": list(COMMANDS),
            "score": 0.0,
            "max_score": 1.0,
            "success": False,
            "invalid_action": False,
            "elapsed_step": 0,
            "gold_path": [],
            "goal": self._mission[i],
        }

    def async_reset(self, seed: int | list[int] | None = None) -> None:
        seeds = self.seeds_for(seed)
        if seeds[0] is not None:
            if seeds != list(range(seeds[0], seeds[0] + self.num_envs)):
                raise ValueError(
                    f"{self.env_id}: BabyAI-Text seeds its envpool pool with one seed s (env i plays s + i): "
                    f"give an int or the list [s, s+1, ..., s+{self.num_envs - 1}], got {seed!r}"
                )
            if not (self._pool_fresh and seeds[0] == self._seed):
                self._pool.close()
                self._seed = int(seeds[0])
                self._pool = _make_pool(self.env_id, self.num_envs, self._seed, **self._kwargs)
        self._pool_fresh = False
        self._pending = ("reset", None)

    def send(self, commands: list[str], env_ids: np.ndarray | None = None) -> None:
        if env_ids is not None:
            raise ValueError("text vector envs step every env at once: env_ids must be None")
        self._pending = ("step", self.check_commands(commands))

    def recv(self) -> TextStepResult:
        if self._pending is None:
            raise RuntimeError(f"{self.env_id}: recv() without a pending reset or send()")
        kind, commands = self._pending
        self._pending = None
        if kind == "reset":
            obs, _ = self._pool.reset()
            return self._batch.collate([self._reset_row(i, obs, i) for i in range(self.num_envs)], reset=True)
        actions, invalid = zip(*(command_to_action(c) for c in commands), strict=True)
        obs, reward, terminated, truncated, _ = self._pool.step(np.asarray(actions, dtype=np.int32))
        self._elapsed += 1
        self._score += reward
        if self.max_episode_steps is not None:
            truncated = truncated | (self._elapsed >= self.max_episode_steps)
        truncated = truncated & ~terminated
        rows: list[dict[str, Any]] = []
        for i in range(self.num_envs):
            won = bool(terminated[i] and reward[i] > 0)
            rows.append(
                {
                    "obs": describe(obs["image"][i]),
                    "reward": float(reward[i]),
                    "terminated": bool(terminated[i]),
                    "truncated": bool(truncated[i]),
                    "admissible_commands": list(COMMANDS),
                    "score": float(self._score[i]),
                    "max_score": 1.0,
                    "success": won,
                    "invalid_action": bool(invalid[i]),
                    "elapsed_step": int(self._elapsed[i]),
                    "gold_path": [],
                    "goal": self._mission[i],
                }
            )
        done = np.nonzero(terminated | truncated)[0]
        if len(done):
            ended = {int(i): rows[i] for i in done}
            new_obs, new_info = self._pool.reset(done.astype(np.int32))
            for k, i in enumerate(new_info["env_id"]):
                old = ended[int(i)]
                row = self._reset_row(int(i), new_obs, k)
                row.update(
                    reward=old["reward"],
                    terminated=old["terminated"],
                    truncated=old["truncated"],
                    success=old["success"],  # describes the step that ended the episode
                    invalid_action=old["invalid_action"],
                    final_obs=old["obs"],
                    final_score=old["score"],
                    final_success=old["success"],
                    episode_return=old["score"],
                    episode_length=old["elapsed_step"],
                )
                rows[int(i)] = row
        return self._batch.collate(rows, reset=False)

    def close_extras(self, **kwargs: Any) -> None:
        pool = getattr(self, "_pool", None)  # absent when the constructor failed
        if pool is not None:
            pool.close()
