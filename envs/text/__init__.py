"""Text games behind one interface: TextWorldExpress, TextWorld and BabyAI-Text.

    from envs.text import make_text_env, make_text_vec_env

    env = make_text_env("TWX-CoinCollector-v0", numLocations=3, includeDoors=False)
    obs, info = env.reset(seed=0)            # info["admissible_commands"], info["gold_path"], ...
    obs, reward, terminated, truncated, info = env.step("move east")

    with make_text_vec_env("TextWorld-v0", num_envs=8, num_workers=2, seed=0) as vec:
        obs, infos = vec.reset()             # obs: list[str]
        obs, rewards, terminated, truncated, infos = vec.step(commands)   # SAME_STEP autoreset

Ids (also `Explore/<id>` for gymnasium.make / gymnasium.make_vec, and `explore list-envs`):
- `TWX-CoinCollector-v0`, `TWX-Cooking-v0`, `TWX-TWC-v0`, `TWX-MapReader-v0`,
  `TWX-Arithmetic-v0`, `TWX-Sorting-v0`, `TWX-SimonSays-v0`, `TWX-PeckingOrder-v0`
  (envs.text.twx: TWX's game parameters as keyword arguments, `fold=` train/dev/test);
- `TextWorld-v0` (envs.text.textworld_games: world_size, nb_objects, quest_length, generated and
  cached on first use);
- `BabyAI-Text-<Task>-v0` (envs.text.babyai_text: GoToRedBall, GoToLocal, GoTo, PickUp, ...).

Conventions (single env: envs.text.core; vector env: envs.text.vector and envs.text.workers):
commands never raise (invalid ones are flagged in `info["invalid_action"]`), episodes are
deterministic given the seed, env i of a vector env seeded s plays seed s + i, and the vector
env's autoreset is SAME_STEP with `final_obs`/`final_score`/`final_success` in its infos.

This module imports no game package: textworld, textworld_express and envpool load when a game
is made; a missing one raises MissingDependencyError naming the `text` extra.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

from explore.errors import UnknownEnvError, require

EXTRA = "text"
ID_PATTERN = re.compile(r"^(TWX-|TextWorld-|BabyAI-Text-)")

# kept as data (mirrors twx.TWX_GAMES and babyai_text.BABYAI_TASKS; a test checks they agree) so
# that listing ids imports nothing
TWX_IDS: tuple[str, ...] = (
    "TWX-CoinCollector-v0",
    "TWX-Cooking-v0",
    "TWX-TWC-v0",
    "TWX-MapReader-v0",
    "TWX-Arithmetic-v0",
    "TWX-Sorting-v0",
    "TWX-SimonSays-v0",
    "TWX-PeckingOrder-v0",
)
TEXTWORLD_IDS: tuple[str, ...] = ("TextWorld-v0",)
BABYAI_TEXT_IDS: tuple[str, ...] = (
    "BabyAI-Text-GoToRedBall-v0",
    "BabyAI-Text-GoToLocal-v0",
    "BabyAI-Text-GoTo-v0",
    "BabyAI-Text-PickUp-v0",
    "BabyAI-Text-PickupDist-v0",
    "BabyAI-Text-Open-v0",
    "BabyAI-Text-OpenDoor-v0",
    "BabyAI-Text-PutNextLocal-v0",
    "BabyAI-Text-UnlockLocal-v0",
    "BabyAI-Text-ActionObjDoor-v0",
    "BabyAI-Text-BossLevel-v0",
)
_FAMILIES: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (TWX_IDS, "textworld_express", "TextWorldExpress games"),
    (TEXTWORLD_IDS, "textworld", "TextWorld games"),
    (BABYAI_TEXT_IDS, "envpool", "BabyAI-Text environments"),
)
ALL_IDS: tuple[str, ...] = TWX_IDS + TEXTWORLD_IDS + BABYAI_TEXT_IDS


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def text_ids() -> list[str]:
    """Every text id whose package is installed; MissingDependencyError if none is."""
    ids = [i for family, module, _ in _FAMILIES if _installed(module) for i in family]
    if not ids:
        require("textworld_express", extra=EXTRA, purpose="Text games")  # raises, naming the extra
    return ids


def _check_env_id(env_id: str) -> str:
    from envs.registration import strip_namespace

    bare = strip_namespace(env_id)
    for family, module, purpose in _FAMILIES:
        if bare in family:
            require(module, extra=EXTRA, purpose=purpose)
            return bare
    raise UnknownEnvError(env_id, ALL_IDS)


def make_text_env(env_id: str, **kwargs: Any) -> Any:
    """One text game (a gymnasium.Env with Text spaces; see envs.text.core.TextEnv).

    kwargs: `seed` (the seed stream, default 0), `max_episode_steps` (default per game), and the
    family's own (TWX: fold, gold_path, game parameters; TextWorld: world_size, nb_objects,
    quest_length, game_seed, num_games, cache_dir; BabyAI-Text: envpool settings).
    """
    bare = _check_env_id(env_id)
    if bare in TWX_IDS:
        from envs.text.twx import TWXEnv

        return TWXEnv(bare, **kwargs)
    if bare in TEXTWORLD_IDS:
        from envs.text.textworld_games import TextWorldEnv

        return TextWorldEnv(bare, **kwargs)
    from envs.text.babyai_text import BabyAITextEnv

    return BabyAITextEnv(bare, **kwargs)


def make_text_vec_env(
    env_id: str, num_envs: int, num_workers: int | None = None, seed: int = 0, **kwargs: Any
) -> Any:
    """`num_envs` copies of a text game behind the TextVecEnv interface (SAME_STEP autoreset).

    TWX and TextWorld games run in `num_workers` processes (None: one per CPU, at most num_envs;
    0: in this process); BabyAI-Text runs in one envpool pool (num_workers is ignored). Env i plays
    the seed stream seed + i. See envs.text.workers.TextVecEnv for start_method, max_restarts
    and timeout.
    """
    bare = _check_env_id(env_id)
    if bare in BABYAI_TEXT_IDS:
        from envs.text.babyai_text import BabyAITextVecEnv

        return BabyAITextVecEnv(bare, num_envs, seed=seed, **kwargs)
    from envs.text.workers import TextVecEnv

    return TextVecEnv(bare, num_envs, num_workers=num_workers, seed=seed, **kwargs)


def _make_vec(env_id: str, num_envs: int = 1, seed: int = 0, **kwargs: Any) -> Any:
    """The registry's (and gymnasium.make_vec's) entry point."""
    kwargs.pop("vectorization_mode", None)
    kwargs.pop("vector_kwargs", None)
    return make_text_vec_env(env_id, num_envs, seed=seed, **kwargs)


def config_kwargs(config: Any) -> dict[str, Any]:
    """Env settings from a training config: `max_episode_steps` only when the user set one."""
    value = getattr(config, "max_episode_steps", None)
    return {} if value is None else {"max_episode_steps": int(value)}


def suite():
    """The text-game suite for envs.registration."""
    from envs.registration import EnvSuite

    return EnvSuite(
        name="text",
        extra=EXTRA,
        id_pattern=ID_PATTERN,
        list_ids=text_ids,
        make_vec=_make_vec,
        make_single=make_text_env,
        observation_kind="text",
        config_kwargs=config_kwargs,
    )


__all__ = [
    "ALL_IDS",
    "BABYAI_TEXT_IDS",
    "EXTRA",
    "TEXTWORLD_IDS",
    "TWX_IDS",
    "make_text_env",
    "make_text_vec_env",
    "suite",
    "text_ids",
]
