"""Text games (TextWorldExpress, TextWorld, BabyAI-Text) behind envs.text: real games, no doubles.

Small games keep it fast: 3-room coin collectors without doors, a 2-room TextWorld quest of
length 2, BabyAI's GoToLocal. Each TWX env process starts one JVM (~0.3 s); worker vector envs
start a forkserver once (~4 s, it imports the package).
"""

from __future__ import annotations

import os
import signal

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("textworld_express")
pytest.importorskip("textworld")
pytest.importorskip("envpool")

import envs  # noqa: E402  (registers the Explore/ ids)
from envs import registration  # noqa: E402
from envs.pool import WorkerCrashedError  # noqa: E402
from envs.text import (  # noqa: E402
    ALL_IDS,
    BABYAI_TEXT_IDS,
    TWX_IDS,
    make_text_env,
    make_text_vec_env,
    text_ids,
)
from envs.text.babyai_text import BABYAI_TASKS, COMMANDS, describe  # noqa: E402
from envs.text.core import MAX_COMMAND_CHARS, episode_seed  # noqa: E402
from envs.text.textworld_games import GENERATED, ensure_game  # noqa: E402
from envs.text.twx import TWX_GAMES  # noqa: E402
from explore.errors import ConfigError, UnknownEnvError  # noqa: E402

COIN = "TWX-CoinCollector-v0"
COIN_KW = {"numLocations": 3, "includeDoors": False, "numDistractorItems": 0}
TW_KW = {"world_size": 2, "nb_objects": 2, "quest_length": 2}
BABYAI = "BabyAI-Text-GoToLocal-v0"
INFO_KEYS = {"admissible_commands", "score", "max_score", "success", "invalid_action", "elapsed_step", "goal", "mission"}
VEC_INFO_KEYS = INFO_KEYS - {"mission"} | {
    "gold_path",
    "final_obs",
    "final_score",
    "final_success",
    "episode_return",
    "episode_length",
}


@pytest.fixture
def tw_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORE_CACHE", str(tmp_path))
    return tmp_path / "textworld"


def check_single(env, obs, info, reset: bool):
    assert isinstance(obs, str) and obs
    assert env.observation_space.contains(obs)
    assert set(info) >= INFO_KEYS
    assert isinstance(info["admissible_commands"], list) and all(isinstance(c, str) for c in info["admissible_commands"])
    assert isinstance(info["score"], float) and isinstance(info["max_score"], float)
    assert isinstance(info["success"], bool) and isinstance(info["invalid_action"], bool)
    assert isinstance(info["elapsed_step"], int)
    if reset:
        assert info["elapsed_step"] == 0 and isinstance(info["gold_path"], list)


def play(env, seed: int, commands: list[str]) -> list[tuple]:
    obs, info = env.reset(seed=seed)
    out = [(obs, tuple(info["admissible_commands"]))]
    for c in commands:
        obs, reward, terminated, truncated, info = env.step(c)
        out.append((obs, reward, terminated, truncated, info["score"], tuple(info["admissible_commands"])))
        if terminated or truncated:
            break
    return out


def random_commands(env, seed: int, n: int, rng_seed: int) -> list[str]:
    """A fixed sequence of admissible commands for one episode of `env` seeded `seed`."""
    rng = np.random.default_rng(rng_seed)
    _, info = env.reset(seed=seed)
    commands = []
    for _ in range(n):
        c = str(rng.choice(info["admissible_commands"]))
        commands.append(c)
        _, _, terminated, truncated, info = env.step(c)
        if terminated or truncated:
            break
    return commands


# ---------------------------------------------------------------------------------------------
# ids and registration


def test_ids_registered_and_listed():
    assert set(TWX_IDS) == set(TWX_GAMES)
    assert set(BABYAI_TEXT_IDS) == set(BABYAI_TASKS)
    assert set(text_ids()) == set(ALL_IDS)
    assert "text" in envs.available_ids()
    for env_id in ("TWX-CoinCollector-v0", "TWX-Cooking-v0", "TWX-MapReader-v0", "TWX-TWC-v0", "TWX-Sorting-v0",
                   "TWX-Arithmetic-v0", "TextWorld-v0", "BabyAI-Text-GoTo-v0", "BabyAI-Text-PickUp-v0", "BabyAI-Text-Open-v0"):
        assert env_id in ALL_IDS
        assert f"Explore/{env_id}" in gym.registry
        assert registration.find_suite(env_id).name == "text"


def test_unknown_id_lists_close_matches():
    with pytest.raises(UnknownEnvError, match="TWX-CoinCollector-v0"):
        make_text_env("TWX-CoinColector-v0")
    with pytest.raises(UnknownEnvError):
        make_text_vec_env("Explore/TextWorld-v9", num_envs=1)


def test_bad_game_parameters_raise_config_error():
    with pytest.raises(ConfigError, match="numLocations"):
        make_text_env(COIN, numRooms=3)
    with pytest.raises(ConfigError, match="less than or equal"):
        make_text_env(COIN, numLocations=99)
    with pytest.raises(ConfigError, match="fold"):
        make_text_env(COIN, fold="validation")


# ---------------------------------------------------------------------------------------------
# TextWorldExpress


def test_twx_single_env_types_and_gold_path_solves_coin_collector():
    env = gym.make("Explore/TWX-CoinCollector-v0", num_locations=3, include_doors=False)  # snake_case works too
    try:
        obs, info = env.reset(seed=3)
        check_single(env.unwrapped, obs, info, reset=True)
        assert info["max_score"] == 1.0 and "coin" in info["goal"]
        gold = info["gold_path"]
        assert gold and gold[-1] == "take coin"
        for i, command in enumerate(gold):
            obs, reward, terminated, truncated, info = env.step(command)
            check_single(env.unwrapped, obs, info, reset=False)
            assert not info["invalid_action"]
            assert terminated == (i == len(gold) - 1) and not truncated
        assert info["success"] and info["score"] == 1.0 and reward == 1.0
        with pytest.raises(RuntimeError, match="reset"):
            env.step("look around")
    finally:
        env.close()


def test_twx_other_games_reset_and_step():
    for env_id, kwargs in (
        ("TWX-Cooking-v0", {"numLocations": 1, "numIngredients": 1, "numDistractorItems": 0, "includeDoors": 0}),
        ("TWX-MapReader-v0", {"numLocations": 3}),
        ("TWX-TWC-v0", {"numLocations": 1, "numItemsToPutAway": 1}),
        ("TWX-Sorting-v0", {}),
        ("TWX-Arithmetic-v0", {}),
    ):
        env = make_text_env(env_id, **kwargs)
        try:
            obs, info = env.reset(seed=1)
            check_single(env, obs, info, reset=True)
            assert info["gold_path"]
            for command in info["gold_path"]:
                obs, reward, terminated, truncated, info = env.step(command)
                if terminated:
                    break
            assert info["success"], env_id  # every TWX gold path wins its game
        finally:
            env.close()


def test_twx_deterministic_under_replay_and_folds_differ():
    env = make_text_env(COIN, max_episode_steps=12, **COIN_KW)
    try:
        commands = random_commands(env, seed=11, n=12, rng_seed=0)
        first = play(env, 11, commands)
        play(env, 12, commands[:3])  # another game in between
        assert play(env, 11, commands) == first
        # unseeded resets continue the seed stream: episode k plays episode_seed(11, k)
        env.reset(seed=11)
        _, info = env.reset()
        assert info["game_seed"] == episode_seed(11, 1)
    finally:
        env.close()
    dev = make_text_env(COIN, fold="dev", **COIN_KW)
    train = make_text_env(COIN, fold="train", **COIN_KW)
    try:
        assert [dev.reset(seed=s)[0] for s in range(4)] != [train.reset(seed=s)[0] for s in range(4)]
    finally:
        dev.close()
        train.close()


def test_invalid_empty_and_overlong_commands_are_flagged_never_raise():
    env = make_text_env(COIN, **COIN_KW)
    try:
        obs, info = env.reset(seed=0)
        for bad in ("", "   ", "dance on the table", "x" * 10_000, None):
            obs, reward, terminated, truncated, info = env.step(bad)
            assert info["invalid_action"] and reward == 0.0 and not terminated
            assert "Unknown action" in obs  # the game's own response
        obs, _, _, _, info = env.step("  LOOK   Around ")  # normalized: admissible
        assert not info["invalid_action"] and "kitchen" in obs.lower()
        assert info["elapsed_step"] == 6
    finally:
        env.close()
    assert MAX_COMMAND_CHARS == 256


def test_truncation_at_max_episode_steps():
    env = make_text_env(COIN, max_episode_steps=3, **COIN_KW)
    try:
        env.reset(seed=0)
        flags = [env.step("inventory")[2:4] for _ in range(3)]
        assert flags == [(False, False), (False, False), (False, True)]
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# vector env: SAME_STEP autoreset, counters, workers


def test_vec_same_step_autoreset_delivers_final_obs():
    n, seed = 3, 20
    vec = make_text_vec_env(COIN, num_envs=n, num_workers=0, seed=seed, max_episode_steps=2, **COIN_KW)
    single = make_text_env(COIN, seed=seed + 1, max_episode_steps=2, **COIN_KW)
    try:
        assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
        obs, infos = vec.reset()
        assert isinstance(obs, list) and len(obs) == n and all(isinstance(o, str) for o in obs)
        assert set(infos) >= VEC_INFO_KEYS
        assert all(g for g in infos["gold_path"]) and infos["final_obs"] == [None] * n
        # env i plays seed + i: env 1 starts like a single env seeded seed + 1
        single_obs, single_info = single.reset()
        assert obs[1] == single_obs and infos["gold_path"][1] == single_info["gold_path"]

        obs, rewards, terminated, truncated, infos = vec.step(["inventory"] * n)
        assert rewards.dtype == np.float32 and rewards.shape == (n,)
        assert terminated.dtype == bool and truncated.dtype == bool
        assert not truncated.any() and infos["final_obs"] == [None] * n
        assert np.isnan(infos["episode_return"]).all() and (infos["episode_length"] == 0).all()
        stepped_obs = single.step("inventory")[0]
        final_single = single.step("inventory")[0]

        obs, rewards, terminated, truncated, infos = vec.step(["inventory"] * n)
        assert truncated.all() and not terminated.any()
        assert all(isinstance(o, str) for o in infos["final_obs"])
        assert infos["final_obs"][1] == final_single and stepped_obs
        # the new episode is already there: episode 1 of env 1's seed stream
        new_obs, new_info = single.reset()
        assert obs[1] == new_obs and new_info["game_seed"] == episode_seed(seed + 1, 1)
        assert (infos["elapsed_step"] == 0).all() and (infos["score"] == 0).all()
        assert (infos["episode_length"] == 2).all() and (infos["episode_return"] == 0).all()
        assert infos["gold_path"][1] == new_info["gold_path"]
        assert vec.episodes_total == n
    finally:
        vec.close()
        single.close()


def test_vec_gold_path_success_and_invalid_counter():
    vec = make_text_vec_env(COIN, num_envs=2, num_workers=0, seed=3, **COIN_KW)
    try:
        _, infos = vec.reset()
        gold = infos["gold_path"][0]
        for t, command in enumerate(gold):  # noqa: B007
            obs, rewards, terminated, truncated, infos = vec.step([command, "fly to the moon"])
        assert terminated[0] and infos["success"][0] and infos["final_success"][0]
        assert infos["final_score"][0] == 1.0 and infos["episode_return"][0] == 1.0
        assert infos["episode_length"][0] == len(gold) and np.isnan(infos["final_score"][1])
        assert infos["invalid_action"].tolist() == [False, True]
        assert vec.invalid_actions_total == len(gold) and vec.episodes_total == 1
        assert infos["gold_path"][0] and infos["elapsed_step"][0] == 0 and t == len(gold) - 1
        vec.step(["", "x" * 5000])  # never raises
        assert vec.invalid_actions_total == len(gold) + 2
    finally:
        vec.close()


@pytest.mark.slow  # worker processes are also tested (fast) by the construction-error test
def test_worker_vec_env_equals_in_process_and_restarts_a_killed_worker():
    kwargs = dict(num_envs=4, seed=7, max_episode_steps=5, **COIN_KW)
    results = []
    for num_workers in (0, 2):
        vec = make_text_vec_env(COIN, num_workers=num_workers, **kwargs)
        try:
            rng = np.random.default_rng(1)
            obs, infos = vec.reset()
            trace = [(obs, infos["admissible_commands"], infos["gold_path"])]
            for _ in range(7):
                commands = [str(rng.choice(a)) for a in infos["admissible_commands"]]
                obs, rewards, terminated, truncated, infos = vec.step(commands)
                trace.append((obs, rewards.tolist(), terminated.tolist(), truncated.tolist(), infos["final_obs"],
                              infos["score"].tolist(), infos["elapsed_step"].tolist()))
            trace.append((vec.episodes_total, vec.invalid_actions_total))
            results.append(trace)
            if num_workers:
                # SIGKILL worker 1 (envs 2-3): its episodes end truncated, the rest play on
                last = obs
                os.kill(vec.worker_pids[1], signal.SIGKILL)
                obs, rewards, terminated, truncated, infos = vec.step(["inventory"] * 4)
                assert vec.worker_restarts == [0, 1]
                assert truncated[2:].all() and infos["final_obs"][2:] == last[2:]
                assert (infos["episode_length"][2:] == -1).all() and (infos["elapsed_step"][2:] == 0).all()
                assert all(isinstance(o, str) and o for o in obs)
                vec.max_restarts = 1
                os.kill(vec.worker_pids[0], signal.SIGKILL)
                vec.step(["inventory"] * 4)
                os.kill(vec.worker_pids[0], signal.SIGKILL)
                with pytest.raises(WorkerCrashedError, match=r"TWX-CoinCollector-v0 worker 0 \(pid \d+, envs 0-1"):
                    vec.step(["inventory"] * 4)
        finally:
            vec.close()
    assert results[0] == results[1]


def test_worker_construction_error_is_raised_with_its_type():
    with pytest.raises(ConfigError, match="less than or equal"):
        make_text_vec_env(COIN, num_envs=2, num_workers=1, numLocations=99)


# ---------------------------------------------------------------------------------------------
# TextWorld


def test_textworld_generation_cached_and_reproducible(tw_cache, tmp_path):
    path, generated = ensure_game(**TW_KW, seed=3)
    assert generated and path.is_file() and path.parent.parent == tw_cache
    mtime = path.stat().st_mtime_ns
    # the same parameters in another folder give the same game
    other, generated_other = ensure_game(**TW_KW, seed=3, folder=tmp_path / "elsewhere")
    assert generated_other and (other.parent / "game.json").read_text() == (path.parent / "game.json").read_text()
    count = len(GENERATED)
    path2, generated2 = ensure_game(**TW_KW, seed=3)
    assert path2 == path and not generated2 and len(GENERATED) == count and path.stat().st_mtime_ns == mtime

    env = make_text_env("TextWorld-v0", game_seed=3, **TW_KW)  # uses the cached game
    try:
        assert len(GENERATED) == count
        obs, info = env.reset(seed=0)
        check_single(env, obs, info, reset=True)
        assert "TextWorld" in obs and "$$" not in obs and "-= " in obs  # banner and status line removed
        gold = info["gold_path"]
        assert gold and info["max_score"] >= 1
        commands = ["dance", *gold]
        first = play(env, 0, commands)
        assert play(env, 0, commands) == first  # deterministic under replay
        _, reward, terminated, truncated, *_ = first[-1]
        assert terminated and not truncated and reward > 0 and first[1][0] == "That's not a verb I recognise."
        _, info = env.reset(seed=0)
        for c in gold:
            _, _, _, _, info = env.step(c)
        assert info["success"] and info["score"] == info["max_score"]
    finally:
        env.close()


def test_textworld_vec_env_step(tw_cache):
    with make_text_vec_env("TextWorld-v0", num_envs=2, num_workers=0, seed=5, num_games=1, **TW_KW) as vec:
        obs, infos = vec.reset()
        assert obs[0] == obs[1]  # one game (num_games=1)
        obs, rewards, terminated, truncated, infos = vec.step(["look", "eat the moon"])
        assert infos["invalid_action"].tolist() == [False, True] and "-= " in obs[0]


# ---------------------------------------------------------------------------------------------
# BabyAI-Text


def test_describe_view_glam_style():
    image = np.zeros((7, 7, 3), dtype=np.uint8)
    image[:, :, 0] = 1  # empty
    image[3, 4] = (2, 5, 0)  # wall 2 steps forward
    image[0, 6] = (2, 5, 0)  # wall 3 steps left
    image[2, 4] = (6, 0, 0)  # red ball 1 left, 2 forward
    image[5, 5] = (4, 2, 1)  # closed blue door 2 right, 1 forward
    image[3, 6] = (5, 4, 0)  # carrying a yellow key
    assert describe(image).split("\n") == [
        "You see a wall 2 steps forward",
        "You see a wall 3 steps left",
        "You see a red ball 1 step left and 2 steps forward",
        "You see a closed blue door 2 steps right and 1 step forward",
        "You carry a yellow key",
    ]


def test_babyai_text_single_env_deterministic_and_matches_vec_env():
    env = make_text_env(BABYAI, max_episode_steps=10)
    try:
        obs, info = env.reset(seed=4)
        check_single(env, obs, info, reset=True)
        assert info["admissible_commands"] == list(COMMANDS) and info["gold_path"] == []
        assert info["goal"].startswith("go to") and "You see" in obs
        commands = ["turn left", "go forward", "jump", "go forward", "turn right", "go forward"]
        first = play(env, 4, commands)
        assert play(env, 4, commands) == first
        _, _, _, _, info = env.step("jump")
        assert info["invalid_action"]
        env.reset(seed=9)
        single_obs = env.reset(seed=9 + 1)[0]
    finally:
        env.close()
    with make_text_vec_env(BABYAI, num_envs=2, seed=9, max_episode_steps=2) as vec:
        obs, infos = vec.reset()
        assert obs[1] == single_obs and set(infos) >= VEC_INFO_KEYS
        vec.step(["turn left", "dance"])
        assert vec.invalid_actions_total == 1
        obs, rewards, terminated, truncated, infos = vec.step(["turn left", "turn left"])
        assert truncated.all() and all(isinstance(o, str) for o in infos["final_obs"])
        assert (infos["elapsed_step"] == 0).all() and (infos["episode_length"] == 2).all()
        assert vec.episodes_total == 2 and rewards.dtype == np.float32
