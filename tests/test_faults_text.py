"""Standing fault tests for the text games: control characters, surrogates and huge strings never
reach a game, and no worker call waits forever (issue 13, defect 6). Real games, no doubles.

Before the fix TextWorld's interpreter segfaulted the process on "look\\x00" and waited forever on
"\\x00"; TextWorld and TextWorldExpress raised on a lone surrogate.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.text.core import MAX_COMMAND_CHARS, MAX_RAW_COMMAND_CHARS, normalize_command

# (what an agent sends, what the game must receive instead: worked out by hand)
NASTY: dict[str, tuple[object, str]] = {
    "nul after a verb": ("look\x00", "look"),
    "nul alone": ("\x00", ""),
    "escape sequence": ("\x1b[31mlook\x1b[0m", "[31mlook [0m"),
    "bell and backspace": ("inv\x07\x08entory", "inv entory"),
    "delete and c1 controls": ("\x7flook\x85\x9f", "look"),
    "lone surrogate": ("look\ud800", "look"),
    "zero-width space and bom": ("\ufefflook\u200b", "look"),
    "non-ascii letters": ("CAF\u00c9 \U0001f600", "caf"),
    "bytes, not utf-8": (b"look\xff", "look"),
    "100k characters": ("look " * 20_000, ("look " * 52)[:MAX_COMMAND_CHARS]),
    "100k nuls": ("\x00" * 100_000, ""),
    "not a string": (3.5, "3.5"),
    "none": (None, ""),
}


@pytest.mark.parametrize("case", list(NASTY))
def test_normalize_command_keeps_only_printable_ascii_and_flags_the_command(case):
    raw, clean = NASTY[case]
    sent, malformed = normalize_command(raw)
    assert sent == clean and malformed
    assert len(sent) <= MAX_COMMAND_CHARS and all(" " <= c <= "~" for c in sent)


def test_whitespace_and_case_alone_are_not_malformed():
    assert normalize_command("  Look\r\n\tAROUND ") == ("look around", False)
    assert normalize_command("x" * MAX_COMMAND_CHARS) == ("x" * MAX_COMMAND_CHARS, False)
    assert normalize_command("x" * (MAX_COMMAND_CHARS + 1)) == ("x" * MAX_COMMAND_CHARS, True)
    # raw input beyond MAX_RAW_COMMAND_CHARS is dropped first, even when it would collapse away
    assert normalize_command(" " * MAX_RAW_COMMAND_CHARS + "look") == ("", True)


# --- every game: the nasty command plays exactly as its clean form, flagged invalid -----------

COIN = ("TWX-CoinCollector-v0", {"numLocations": 3, "includeDoors": False, "numDistractorItems": 0})
BABYAI = ("BabyAI-Text-GoToRedBall-v0", {})
TW_KW = {"world_size": 2, "nb_objects": 2, "quest_length": 2}


def game_spec(name: str, tw_cache_dir: str | None) -> tuple[str, dict]:
    if name == "textworld":
        return "TextWorld-v0", {**TW_KW, "cache_dir": tw_cache_dir}
    return {"twx": COIN, "babyai": BABYAI}[name]


MODULES = {"twx": "textworld_express", "textworld": "textworld", "babyai": "envpool"}


@pytest.fixture(params=["twx", "textworld", "babyai"])
def game(request, tmp_path_factory):
    pytest.importorskip(MODULES[request.param])
    cache = str(tmp_path_factory.mktemp("tw")) if request.param == "textworld" else None
    return game_spec(request.param, cache)


def test_every_game_plays_each_nasty_command_as_its_clean_form(game):
    from envs.text import make_text_env

    env_id, kwargs = game
    nasty_env, clean_env = make_text_env(env_id, **kwargs), make_text_env(env_id, **kwargs)
    try:
        for raw, clean in NASTY.values():
            nasty_env.reset(seed=3)
            clean_env.reset(seed=3)
            obs, reward, terminated, truncated, info = nasty_env.step(raw)
            assert info["invalid_action"]
            assert (obs, reward, terminated, truncated) == clean_env.step(clean)[:4]
            # and the game goes on answering
            assert nasty_env.step("look")[0] == clean_env.step("look")[0]
    finally:
        nasty_env.close()
        clean_env.close()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["twx", "textworld"])
def test_worker_vec_envs_survive_nasty_commands_without_a_restart(name, tmp_path):
    pytest.importorskip(MODULES[name])
    from envs.text import make_text_vec_env

    env_id, kwargs = game_spec(name, str(tmp_path))
    vec = make_text_vec_env(env_id, num_envs=2, num_workers=1, seed=0, **kwargs)
    try:
        vec.reset()
        for raw, _ in NASTY.values():
            obs, rewards, terminated, truncated, infos = vec.step([raw, "look"])
            assert infos["invalid_action"][0] and all(isinstance(o, str) and o for o in obs)
        assert vec.worker_restarts == [0]
        assert np.isfinite(rewards).all()
    finally:
        vec.close()


def test_babyai_text_vec_env_survives_nasty_commands():
    pytest.importorskip("envpool")
    from envs.text import make_text_vec_env

    vec = make_text_vec_env("BabyAI-Text-GoToRedBall-v0", num_envs=2, seed=0)
    try:
        vec.reset()
        for raw, _ in NASTY.values():
            obs, _, _, _, infos = vec.step([raw, "turn left"])
            assert infos["invalid_action"].tolist() == [True, False]
    finally:
        vec.close()


# --- no worker call waits forever ---------------------------------------------------------------


def test_text_workers_have_a_finite_default_timeout():
    import inspect

    from envs.text.workers import TextVecEnv

    defaults = inspect.signature(TextVecEnv).parameters
    assert defaults["timeout"].default == 60.0 and defaults["startup_timeout"].default == 300.0


@pytest.mark.slow
def test_a_hung_text_worker_raises_timeout_error_then_recv_restarts_it_and_cuts_its_episodes():
    pytest.importorskip("textworld_express")
    import os
    import signal

    from envs.text import make_text_vec_env

    env_id, kwargs = COIN
    vec = make_text_vec_env(env_id, num_envs=4, num_workers=2, seed=0, timeout=2.0, **kwargs)
    try:
        obs, _ = vec.reset()
        last, *_ = vec.step(["look around"] * 4)
        pid = vec.worker_pids[1]
        os.kill(pid, signal.SIGSTOP)  # alive but silent: what TextWorld did on "\x00"
        vec.send(["inventory"] * 4)
        with pytest.raises(
            TimeoutError, match=rf"no reply for timeout=2s from {env_id} worker 1 \(pid {pid}, envs 2-3\)"
        ):
            vec.recv()
        obs, rewards, terminated, truncated, infos = vec.recv()  # the call is still pending: finish it
        assert truncated.tolist() == [False, False, True, True] and not terminated.any()
        assert infos["final_obs"][2:] == last[2:] and (infos["episode_length"][2:] == -1).all()
        assert vec.worker_restarts == [0, 1] and vec.worker_pids[1] != pid
        vec.step(["look around"] * 4)  # and the env goes on
    finally:
        vec.close()
