"""MiniGrid/BabyAI on envpool behind the VecEnv protocol (real envpool, no doubles).

Scripted episodes rely on MiniGrid-Empty-5x5-v0's fixed layout: the agent starts at (1, 1)
facing east (direction 0) and the goal is at (3, 3), so FORWARD, FORWARD, RIGHT, FORWARD,
FORWARD reaches it in 5 steps, for MiniGrid's reward 1 - 0.9 * 5 / 100 = 0.955.
"""

from __future__ import annotations

import dataclasses
import re

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs import registration
from envs.minigrid import (
    FORWARD,
    LEFT,
    RIGHT,
    MiniGridEnv,
    MiniGridVecEnv,
    config_kwargs,
    decode_mission,
    minigrid_ids,
    suite,
)

EMPTY = "MiniGrid-Empty-5x5-v0"
TO_GOAL = [FORWARD, FORWARD, RIGHT, FORWARD, FORWARD]
LAVA, EMPTY_CELL = 9, 1  # MiniGrid object ids
NUM_ENVS = 3


def steps(vec: MiniGridVecEnv, action: int):
    return vec.step(np.full(vec.num_envs, action))


@pytest.fixture
def with_minigrid_suite(monkeypatch):
    """The minigrid suite registered (as SUITE_MODULES will do), undone after the test."""
    if not any(s.name == "minigrid" for s in registration.SUITES):
        monkeypatch.setattr(registration, "SUITES", [*registration.SUITES, suite()])
    before = set(gym.registry)
    yield
    for key in set(gym.registry) - before:
        del gym.registry[key]


def test_ids_are_listed_from_envpools_registry():
    ids = minigrid_ids()
    assert ids == sorted(ids)
    for expected in (EMPTY, "MiniGrid-DoorKey-8x8-v0", "MiniGrid-KeyCorridorS3R3-v0", "BabyAI-GoToLocal-v0"):
        assert expected in ids
    assert all(re.match(r"^(MiniGrid|BabyAI)-", i) for i in ids)
    assert len(ids) > 150
    assert all(suite().id_pattern.match(i) for i in ids)
    assert not suite().id_pattern.match("MontezumaRevenge-v5")


@pytest.mark.parametrize("env_id, mission_bytes", [(EMPTY, 96), ("BabyAI-GoToLocal-v0", 512)])
def test_reset_and_step_match_the_spaces(env_id, mission_bytes):
    vec = MiniGridVecEnv(env_id, num_envs=NUM_ENVS, seed=0)
    try:
        single = vec.single_observation_space
        assert isinstance(single, gym.spaces.Dict)
        assert single["image"].shape == (7, 7, 3) and single["image"].dtype == np.uint8
        assert single["direction"] == gym.spaces.Discrete(4)
        assert single["mission"].shape == (mission_bytes,) and single["mission"].dtype == np.uint8
        assert vec.single_action_space == gym.spaces.Discrete(7)
        assert vec.action_space.shape == (NUM_ENVS,)
        assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP

        obs, info = vec.reset()
        assert vec.observation_space.contains(obs)
        assert obs["image"].shape == (NUM_ENVS, 7, 7, 3)
        assert all(single.contains({k: v[i] for k, v in obs.items()}) for i in range(NUM_ENVS))
        np.testing.assert_array_equal(info["elapsed_step"], np.zeros(NUM_ENVS))
        assert all(isinstance(m, str) and m for m in decode_mission(obs["mission"]))

        obs, reward, terminated, truncated, info = steps(vec, LEFT)
        assert vec.observation_space.contains(obs)
        assert reward.shape == (NUM_ENVS,) and np.issubdtype(reward.dtype, np.floating)
        for flag in (terminated, truncated, info["success"]):
            assert flag.shape == (NUM_ENVS,) and flag.dtype == np.bool_
        assert not np.shares_memory(terminated, truncated)
        np.testing.assert_array_equal(np.sort(info["env_id"]), np.arange(NUM_ENVS))
        np.testing.assert_array_equal(info["elapsed_step"], np.ones(NUM_ENVS))
    finally:
        vec.close()


def test_reaching_the_goal_terminates_with_success_then_a_dummy_step():
    vec = MiniGridVecEnv(EMPTY, num_envs=2, seed=0)
    try:
        obs, _ = vec.reset()
        assert decode_mission(obs["mission"][0]) == "get to the green goal square"
        for t, action in enumerate(TO_GOAL[:-1], start=1):
            _, reward, terminated, truncated, info = steps(vec, action)
            np.testing.assert_array_equal(info["elapsed_step"], [t, t])
            assert not (terminated | truncated | info["success"]).any()
            assert (reward == 0).all()

        _, reward, terminated, truncated, info = steps(vec, TO_GOAL[-1])
        np.testing.assert_allclose(reward, [0.955, 0.955], rtol=1e-6)  # 1 - 0.9 * 5 / 100
        np.testing.assert_array_equal(terminated, [True, True])
        np.testing.assert_array_equal(truncated, [False, False])
        np.testing.assert_array_equal(info["success"], [True, True])
        np.testing.assert_array_equal(info["agent_pos"], [[3, 3], [3, 3]])

        # NEXT_STEP: the dummy step returns the reset observation with reward 0 and no success
        obs, reward, terminated, truncated, info = steps(vec, FORWARD)
        np.testing.assert_array_equal(info["elapsed_step"], [0, 0])
        np.testing.assert_array_equal(reward, [0.0, 0.0])
        assert not (terminated | truncated | info["success"]).any()
        np.testing.assert_array_equal(info["agent_pos"], [[1, 1], [1, 1]])
        np.testing.assert_array_equal(obs["direction"], [0, 0])
    finally:
        vec.close()


def test_lava_terminates_without_success():
    # LavaGapS5 puts a lava column at x = 2 with one gap; envs whose start cell faces lava die
    vec = MiniGridVecEnv("MiniGrid-LavaGapS5-v0", num_envs=6, seed=0)
    try:
        obs, _ = vec.reset()
        in_front = obs["image"][:, 3, 5, 0]  # the cell ahead of the agent in its egocentric view
        into_lava = in_front == LAVA
        assert into_lava.any() and (in_front == EMPTY_CELL).any()  # both cases occur with seed 0
        _, reward, terminated, truncated, info = steps(vec, FORWARD)
        np.testing.assert_array_equal(terminated, into_lava)
        assert not truncated.any()
        np.testing.assert_array_equal(reward, np.zeros(6))
        assert not info["success"].any()
    finally:
        vec.close()


def test_time_limit_truncates_then_the_dummy_step_resets():
    vec = MiniGridVecEnv(EMPTY, num_envs=2, seed=0, max_episode_steps=3)
    try:
        first_obs, _ = vec.reset()
        assert vec.max_episode_steps == 3
        assert vec._pool.spec.config.max_episode_steps == 3
        for t in (1, 2):
            _, _, terminated, truncated, info = steps(vec, LEFT)
            np.testing.assert_array_equal(info["elapsed_step"], [t, t])
            assert not (terminated | truncated).any()

        # step 3 hits the limit: truncated, not terminated, no success, the TRUE final observation
        final_obs, reward, terminated, truncated, info = steps(vec, LEFT)
        np.testing.assert_array_equal(truncated, [True, True])
        np.testing.assert_array_equal(terminated, [False, False])
        assert not info["success"].any()
        np.testing.assert_array_equal(info["elapsed_step"], [3, 3])
        np.testing.assert_array_equal(final_obs["direction"], [1, 1])  # east turned left 3 times: south

        # the dummy step: action ignored, the reset observation, reward 0, not done
        obs, reward, terminated, truncated, info = steps(vec, FORWARD)
        np.testing.assert_array_equal(info["elapsed_step"], [0, 0])
        np.testing.assert_array_equal(reward, [0.0, 0.0])
        assert not (terminated | truncated).any()
        for key in obs:
            np.testing.assert_array_equal(obs[key], first_obs[key])

        *_, info = steps(vec, FORWARD)
        np.testing.assert_array_equal(info["elapsed_step"], [1, 1])
    finally:
        vec.close()


def test_each_task_keeps_its_own_episode_limit():
    vec = MiniGridVecEnv("MiniGrid-DoorKey-8x8-v0", num_envs=1)
    babyai = MiniGridVecEnv("BabyAI-GoToLocal-v0", num_envs=1)
    try:
        assert vec.max_episode_steps == 640  # MiniGrid's 10 * size**2
        assert babyai.max_episode_steps is None  # BabyAI levels set their own limit
    finally:
        vec.close()
        babyai.close()


def test_async_recv_adds_success_to_the_returned_rows():
    num_envs, batch_size = 4, 2
    vec = MiniGridVecEnv(EMPTY, num_envs=num_envs, seed=0, batch_size=batch_size)
    try:
        vec.async_reset()
        sent = np.zeros(num_envs, dtype=int)
        successes = 0
        for _ in range(20):
            obs, reward, terminated, truncated, info = vec.recv()
            env_id = info["env_id"]
            assert obs["image"].shape == (batch_size, 7, 7, 3)
            assert info["success"].shape == (batch_size,)
            assert len(set(env_id.tolist())) == batch_size
            # every env walks the scripted path (5 steps, then the dummy step), so an env
            # succeeds exactly on its 5th step of each 6
            np.testing.assert_array_equal(info["success"], sent[env_id] % 6 == 5)
            np.testing.assert_array_equal(info["success"], terminated)
            successes += int(info["success"].sum())
            actions = np.array([TO_GOAL[sent[i] % 6] if sent[i] % 6 < 5 else FORWARD for i in env_id])
            vec.send(actions, env_id)
            sent[env_id] += 1
        assert successes > 0
    finally:
        vec.close()


def test_reset_with_a_new_seed_rebuilds_the_pool():
    vec = MiniGridVecEnv("MiniGrid-DoorKey-8x8-v0", num_envs=2, seed=0)
    try:
        a, _ = vec.reset()
        for _ in range(3):
            steps(vec, FORWARD)
        b, _ = vec.reset(seed=0)  # the same seed again: the same episodes (DoorKey's layout is random)
        np.testing.assert_array_equal(a["image"], b["image"])
        d, _ = vec.reset()  # no seed: the next episodes, a new layout
        assert not np.array_equal(a["image"], d["image"])
        c, _ = vec.reset(seed=123)
        assert vec.seed == 123
        assert not np.array_equal(a["image"], c["image"])
    finally:
        vec.close()


def test_single_env_returns_one_row():
    env = MiniGridEnv(EMPTY)
    try:
        obs, info = env.reset()
        assert env.observation_space.contains(obs)
        assert obs["image"].shape == (7, 7, 3)
        for action in TO_GOAL:
            obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        assert isinstance(reward, float) and reward == pytest.approx(0.955)
        assert terminated is True and truncated is False
        assert info["success"]
    finally:
        env.close()


def test_gymnasium_registration_and_envs_make(with_minigrid_suite):
    registered = registration.register_gymnasium_ids()
    assert f"Explore/{EMPTY}" in registered
    assert f"Explore/{EMPTY}" in gym.registry
    assert "minigrid" in registration.available_ids()
    assert registration.find_suite(EMPTY).name == "minigrid"

    single = gym.make(f"Explore/{EMPTY}")
    try:
        obs, info = single.reset()
        assert single.observation_space.contains(obs)
        for action in TO_GOAL:
            obs, reward, terminated, truncated, info = single.step(action)
        assert terminated and info["success"]
    finally:
        single.close()

    vec = gym.make_vec(f"Explore/{EMPTY}", num_envs=2)
    try:
        assert isinstance(vec, MiniGridVecEnv) and isinstance(vec, envs.VecEnv)
        obs, info = vec.reset()
        assert obs["image"].shape == (2, 7, 7, 3)
    finally:
        vec.close()

    made = envs.make(f"Explore/{EMPTY}", num_envs=2, seed=1, max_episode_steps=9)
    try:
        assert isinstance(made, MiniGridVecEnv)
        assert made.env_id == EMPTY and made.max_episode_steps == 9
    finally:
        made.close()


def test_config_kwargs_pass_the_episode_limit_only_when_set():
    from agents.ppo import PRESETS

    assert config_kwargs(PRESETS["minigrid"]) == {}  # None: each task keeps its own limit
    assert config_kwargs(PRESETS["paper"]) == {}  # Atari's 4500 lives in the Atari suite, not the Config
    assert config_kwargs(dataclasses.replace(PRESETS["minigrid"], max_episode_steps=64)) == {
        "max_episode_steps": 64
    }
    assert suite().config_kwargs(dataclasses.replace(PRESETS["minigrid"], max_episode_steps=64)) == {
        "max_episode_steps": 64
    }
