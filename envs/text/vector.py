"""What every text vector env shares: SAME_STEP autoreset of one env, and batching of per-env rows.

A text vector env steps N games with one command each and returns
`(obs: list[str], rewards: float32 (N,), terminated: bool (N,), truncated: bool (N,), infos)`.

Autoreset is SAME_STEP (`metadata["autoreset_mode"]`): an env whose episode ends on a step is reset
inside that step, so `obs[i]` is already the new episode's first observation (a language-model
agent never spends a generation on a dummy step). For the envs that ended,
`infos["final_obs"][i]`, `infos["final_score"][i]` and `infos["final_success"][i]` hold the end
of the old episode (None / NaN / False for the others), and `infos["episode_return"][i]` and
`infos["episode_length"][i]` its totals (NaN / 0 for the others).

The other infos, lists or arrays of length N, describe the current observation (the new episode's
where one ended): "admissible_commands" (list[list[str]]), "score" (float64, the game score so
far: 0 after a reset), "max_score", "elapsed_step" (int64, 0 after a reset), "gold_path"
(list[list[str]], the current episode's), "goal"; except the two that describe the step just taken:
"invalid_action" (bool) and "success" (bool: True on the step an episode ends won, the same as
final_success; a won game always ends, so a running episode is never a success).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import gymnasium as gym
import numpy as np

from envs.core import InvalidActionError, VecEnv
from envs.text.core import MAX_COMMAND_CHARS, MAX_OBSERVATION_CHARS, TextEnv, text_space

TextStepResult = tuple[list[str], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]


class AutoresetEnv:
    """One TextEnv with SAME_STEP autoreset, producing the per-env rows that `RowBatch` batches."""

    def __init__(self, env: TextEnv):
        self.env = env
        self.episode_return = 0.0
        self.last_obs = ""
        self.last_score = 0.0

    def _row(self, obs: str, info: dict[str, Any]) -> dict[str, Any]:
        self.last_obs, self.last_score = obs, info["score"]
        return {
            "obs": obs,
            "admissible_commands": info["admissible_commands"],
            "score": info["score"],
            "max_score": info["max_score"],
            "success": info["success"],
            "invalid_action": info["invalid_action"],
            "elapsed_step": info["elapsed_step"],
        }

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """The first row of an episode: the only one that carries "gold_path" and "goal" (they
        do not change during an episode; RowBatch remembers them)."""
        obs, info = self.env.reset(seed=seed)
        self.episode_return = 0.0
        row = self._row(obs, info)
        row.update(gold_path=info["gold_path"], goal=info["goal"])
        return row

    def step(self, command: str) -> dict[str, Any]:
        obs, reward, terminated, truncated, info = self.env.step(command)
        self.episode_return += reward
        row = self._row(obs, info)
        row.update(reward=reward, terminated=terminated, truncated=truncated)
        if terminated or truncated:
            ended = {
                "final_obs": obs,
                "final_score": info["score"],
                "final_success": info["success"],
                "episode_return": self.episode_return,
                "episode_length": info["elapsed_step"],
            }
            row.update(self.reset())
            row.update(ended, success=ended["final_success"], invalid_action=info["invalid_action"])
        return row


class RowBatch:
    """Turns N per-env rows into the batched step result (and keeps the running counters)."""

    def __init__(self, num_envs: int):
        self.num_envs = num_envs
        self.invalid_actions_total = 0
        self.episodes_total = 0
        # per episode, sent only in its first row
        self.gold_path: list[list[str]] = [[] for _ in range(num_envs)]
        self.goal: list[str] = [""] * num_envs

    def collate(self, rows: list[dict[str, Any]], reset: bool) -> TextStepResult:
        n = self.num_envs
        for i, r in enumerate(rows):
            if "gold_path" in r:
                self.gold_path[i] = r["gold_path"]
                self.goal[i] = r["goal"]
        ended = [r.get("final_obs") is not None for r in rows]
        infos: dict[str, Any] = {
            "admissible_commands": [r["admissible_commands"] for r in rows],
            "score": np.array([r["score"] for r in rows], dtype=np.float64),
            "max_score": np.array([r["max_score"] for r in rows], dtype=np.float64),
            "success": np.array([r["success"] for r in rows], dtype=bool),
            "invalid_action": np.array([r["invalid_action"] for r in rows], dtype=bool),
            "elapsed_step": np.array([r["elapsed_step"] for r in rows], dtype=np.int64),
            "gold_path": list(self.gold_path),
            "goal": list(self.goal),
            "final_obs": [r.get("final_obs") for r in rows],
            "final_score": np.array(
                [r["final_score"] if e else np.nan for r, e in zip(rows, ended, strict=True)]
            ),
            "final_success": np.array([bool(r.get("final_success", False)) for r in rows], dtype=bool),
            "episode_return": np.array(
                [r["episode_return"] if e else np.nan for r, e in zip(rows, ended, strict=True)],
                dtype=np.float64,
            ),
            "episode_length": np.array(
                [r["episode_length"] if e else 0 for r, e in zip(rows, ended, strict=True)], dtype=np.int64
            ),
            "env_id": np.arange(n),
        }
        obs = [r["obs"] for r in rows]
        if reset:
            zeros = np.zeros(n, dtype=bool)
            return obs, np.zeros(n, dtype=np.float32), zeros, zeros.copy(), infos
        rewards = np.array([r["reward"] for r in rows], dtype=np.float32)
        terminated = np.array([r["terminated"] for r in rows], dtype=bool)
        truncated = np.array([r["truncated"] for r in rows], dtype=bool)
        self.invalid_actions_total += int(infos["invalid_action"].sum())
        self.episodes_total += int(sum(ended))
        return obs, rewards, terminated, truncated, infos


class TextVecEnvBase(VecEnv):
    """The TextVecEnv interface (see the module docstring); subclasses implement the four methods."""

    metadata: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def __init__(self, env_id: str, num_envs: int):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.env_id = env_id
        self.num_envs = num_envs
        self.single_observation_space = text_space(MAX_OBSERVATION_CHARS)
        self.single_action_space = text_space(MAX_COMMAND_CHARS)
        self.observation_space = gym.spaces.Tuple([self.single_observation_space] * num_envs)
        self.action_space = gym.spaces.Tuple([self.single_action_space] * num_envs)
        self._batch = RowBatch(num_envs)
        self.closed = False

    @property
    def invalid_actions_total(self) -> int:
        """Invalid commands over every step so far."""
        return self._batch.invalid_actions_total

    @property
    def episodes_total(self) -> int:
        """Episodes that ended (terminated or truncated) so far."""
        return self._batch.episodes_total

    def seeds_for(self, seed: int | list[int] | None) -> list[int | None]:
        """Per-env seeds: an int s gives env i the seed s + i; a list gives one per env."""
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, int | np.integer):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = [int(s) for s in seed]
        if len(seeds) != self.num_envs:
            raise ValueError(f"{self.env_id}: expected {self.num_envs} seeds, got {len(seeds)}")
        return list(seeds)

    def check_commands(self, commands: list[str]) -> list[str]:
        """One command per env, as a list; InvalidActionError (as for every suite's actions) otherwise.

        What each command says is never an error (see envs.text.core.normalize_command)."""
        if isinstance(commands, str | bytes) or not isinstance(commands, Iterable):
            raise InvalidActionError(
                f"{self.env_id}: commands must be a list of {self.num_envs} strings, one per env, "
                f"got {type(commands).__name__} {str(commands)[:80]!r}"
            )
        commands = list(commands)
        if len(commands) != self.num_envs:
            raise InvalidActionError(
                f"{self.env_id}: expected {self.num_envs} commands, one per env, got {len(commands)}"
            )
        return commands

    # reset/step are the compositions of async_reset/send/recv (envs.core.VecEnv)
    def reset(  # type: ignore[override]
        self, seed: int | list[int] | None = None, options: dict | None = None
    ) -> tuple[list[str], dict[str, Any]]:
        self.async_reset(seed=seed)
        obs, _, _, _, infos = self.recv()
        return obs, infos

    def step(self, commands: list[str]) -> TextStepResult:  # type: ignore[override]
        self.send(commands)
        return self.recv()

    def __enter__(self) -> TextVecEnvBase:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
