"""The single text-game env every family builds on, and the per-env rows the vector envs batch.

A `TextEnv` is a gymnasium.Env whose observations and actions are strings (gym.spaces.Text).
Families (TextWorldExpress, TextWorld, BabyAI-Text) implement two hooks, `_start(game_seed)` and
`_play(command)`, each returning a `GameState`; this class adds what every family shares:

- commands are sanitized and normalized (`normalize_command`: lower-cased, every character
  outside printable ASCII replaced by a space, whitespace collapsed, stripped, cut at
  `MAX_COMMAND_CHARS`) and never raise: an empty, inadmissible, over-long or ill-formed command is
  passed to the game (an empty one as "") and the game's own response comes back with
  `info["invalid_action"] = True`. The games never see a control character: TextWorld's
  interpreter segfaults on "look\x00" and waits forever on "\x00", and a lone surrogate makes
  TextWorld and TextWorldExpress raise. A command is *invalid* when its normalized form is not among
  the admissible commands of the state it was issued in (TextWorld's parser also understands
  synonyms such as "n": those work but are still flagged, since they are not admissible);
- reward = change of the game's score (BabyAI-Text: the level's reward), `terminated` when the
  game is won or lost, `truncated` at `max_episode_steps` (never both);
- seeds: `reset(seed=s)` plays the game of seed `s`; later unseeded resets play the seeds
  `episode_seed(s, 1)`, `episode_seed(s, 2)`, ... (deterministic), and the first reset without
  a seed uses the constructor's `seed`. Replaying the same commands after `reset(seed=s)` gives
  the same observations (Go-Explore returns to a state this way).

info keys, always present: "admissible_commands" (list[str]), "score" (game score so far),
"max_score", "success" (the game is won), "invalid_action", "elapsed_step", "goal" and "mission"
(the task text, "" where a game has none), "game_seed"; at reset also "gold_path" (the
generator's walkthrough, [] where there is none).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

MAX_COMMAND_CHARS = 256  # longer commands are cut to this length (and flagged invalid)
# raw input beyond this is dropped before any other work, so a huge string costs bounded time
MAX_RAW_COMMAND_CHARS = 16 * MAX_COMMAND_CHARS
MAX_OBSERVATION_CHARS = 1 << 16
# every printable ASCII character, whitespace included (gym.spaces.Text's default is alphanumeric)
CHARSET = frozenset(string.printable)

_WHITESPACE = re.compile(r"\s+")
_OUTSIDE_CHARSET = re.compile(f"[^{re.escape(string.printable)}]")


def normalize_command(command: Any) -> tuple[str, bool]:
    """(the command as sent to the game, whether it was malformed).

    Malformed: not a string (None -> "", others -> str()), longer than `MAX_COMMAND_CHARS` once
    normalized (cut), or holding a character outside `CHARSET` (control characters such as NUL or
    ESC, surrogates, non-ASCII letters: each becomes a space). The result is printable ASCII
    without control characters, lower case, single-spaced, at most `MAX_COMMAND_CHARS` long.
    """
    malformed = False
    if isinstance(command, bytes):
        command = command.decode("utf-8", errors="replace")
    if not isinstance(command, str):
        malformed = True
        command = "" if command is None else str(command)
    if len(command) > MAX_RAW_COMMAND_CHARS:
        command, malformed = command[:MAX_RAW_COMMAND_CHARS], True
    command, replaced = _OUTSIDE_CHARSET.subn(" ", command.lower())
    command = _WHITESPACE.sub(" ", command).strip()
    if len(command) > MAX_COMMAND_CHARS:
        command, malformed = command[:MAX_COMMAND_CHARS].rstrip(), True
    return command, malformed or replaced > 0


def episode_seed(base: int, episode: int) -> int:
    """The game seed of episode `episode` (0, 1, ...) of a stream seeded `base`: `base` itself for
    the first episode, then a SeedSequence draw in [0, 2**31)."""
    if episode == 0:
        return int(base)
    return int(np.random.SeedSequence([int(base) & 0xFFFFFFFF, episode]).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass
class GameState:
    """What a family's `_start`/`_play` report after each command (or at the start)."""

    obs: str
    score: float
    max_score: float
    admissible_commands: list[str]
    won: bool = False
    lost: bool = False
    reward: float | None = None  # None: the change of score
    gold_path: list[str] = field(default_factory=list)  # only read at the start of an episode
    goal: str = ""


def text_space(max_length: int) -> gym.spaces.Text:
    return gym.spaces.Text(max_length=max_length, min_length=0, charset=CHARSET)


class TextEnv(gym.Env):
    """One text game (see the module docstring for the conventions every family shares).

    Subclasses set `default_max_episode_steps` and implement `_start(game_seed) -> GameState` and
    `_play(command) -> GameState`, and `close`.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    default_max_episode_steps: int | None = 100

    def __init__(self, env_id: str, seed: int = 0, max_episode_steps: int | None = None):
        self.env_id = env_id
        self.max_episode_steps = (
            max_episode_steps if max_episode_steps is not None else self.default_max_episode_steps
        )
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.observation_space = text_space(MAX_OBSERVATION_CHARS)
        self.action_space = text_space(MAX_COMMAND_CHARS)
        self._seed_base = int(seed)
        self._episode = 0  # index of the next episode in the seed stream
        self._state: GameState | None = None
        self._elapsed = 0
        self._done = True
        self.game_seed: int | None = None
        self.gold_path: list[str] = []

    # --- hooks ---------------------------------------------------------------------------

    def _start(self, game_seed: int) -> GameState:
        raise NotImplementedError

    def _play(self, command: str) -> GameState:
        raise NotImplementedError

    # --- gymnasium API -------------------------------------------------------------------

    def set_seed_stream(self, base: int, next_episode: int) -> None:
        """Continue the seed stream `base` at episode `next_episode` (used to restart workers)."""
        self._seed_base, self._episode = int(base), int(next_episode)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict[str, Any]]:
        if seed is not None:
            self._seed_base, self._episode = int(seed), 0
        self.game_seed = episode_seed(self._seed_base, self._episode)
        self._episode += 1
        state = self._start(self.game_seed)
        self._state, self._elapsed, self._done = state, 0, False
        self.gold_path = list(state.gold_path)
        info = self._info(state, invalid=False)
        info["gold_path"] = list(self.gold_path)
        return state.obs, info

    def step(self, command: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._state is None or self._done:
            raise RuntimeError(f"{self.env_id}: the episode has ended (or never started): call reset()")
        text, malformed = normalize_command(command)
        admissible = self._state.admissible_commands
        invalid = malformed or text == "" or (text not in admissible and text not in self._admissible_set())
        previous = self._state
        state = self._play(text)
        self._state = state
        self._elapsed += 1
        reward = state.reward if state.reward is not None else state.score - previous.score
        terminated = bool(state.won or state.lost)
        truncated = (
            not terminated and self.max_episode_steps is not None and self._elapsed >= self.max_episode_steps
        )
        self._done = terminated or truncated
        return state.obs, float(reward), terminated, bool(truncated), self._info(state, invalid=invalid)

    def _admissible_set(self) -> set[str]:
        assert self._state is not None
        return {normalize_command(c)[0] for c in self._state.admissible_commands}

    def _info(self, state: GameState, invalid: bool) -> dict[str, Any]:
        return {
            "admissible_commands": list(state.admissible_commands),
            "score": float(state.score),
            "max_score": float(state.max_score),
            "success": bool(state.won),
            "invalid_action": bool(invalid),
            "elapsed_step": self._elapsed,
            "goal": state.goal,
            "mission": state.goal,
            "game_seed": self.game_seed,
        }

    @property
    def needs_reset(self) -> bool:
        return self._done

    def seed_stream(self) -> tuple[int, int]:
        """(base seed, index of the next episode): where `set_seed_stream` picks up."""
        return self._seed_base, self._episode
