"""The envpool Atari VecEnv behind the VecEnv protocol, and the env registry (real envpool, no doubles)."""

from __future__ import annotations

import gc
import sys

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.atari import MONTEZUMA_ROOM_RAM_INDEX, AtariVecEnv
from explore.errors import UnknownEnvError

NUM_ENVS = 3


@pytest.fixture(scope="module")
def montezuma():
    vec = envs.make("MontezumaRevenge-v5", num_envs=NUM_ENVS, seed=0)
    yield vec
    vec.close()


def test_make_returns_an_atari_vec_env(montezuma):
    assert isinstance(montezuma, AtariVecEnv)
    assert isinstance(montezuma, envs.VecEnv)
    assert montezuma.num_envs == NUM_ENVS
    assert montezuma.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP


def test_spaces_describe_a_batch_of_stacked_frames(montezuma):
    single = montezuma.single_observation_space
    assert single.shape == (4, 84, 84)
    assert single.dtype == np.uint8
    assert montezuma.observation_space.shape == (NUM_ENVS, *single.shape)
    assert montezuma.observation_space.dtype == single.dtype
    assert montezuma.action_space.shape == (NUM_ENVS,)


def test_reset_and_step_match_the_promised_spaces(montezuma):
    obs, info = montezuma.reset()
    assert obs.shape == montezuma.observation_space.shape
    assert obs.dtype == montezuma.observation_space.dtype
    assert montezuma.observation_space.contains(obs)
    assert all(montezuma.single_observation_space.contains(o) for o in obs)
    np.testing.assert_array_equal(info["elapsed_step"], np.zeros(NUM_ENVS))

    montezuma.action_space.seed(0)
    actions = montezuma.action_space.sample()
    assert montezuma.action_space.contains(actions)
    obs, reward, terminated, truncated, info = montezuma.step(actions)

    assert montezuma.observation_space.contains(obs)
    assert reward.shape == (NUM_ENVS,)
    assert np.issubdtype(reward.dtype, np.floating)
    for flag in (terminated, truncated):
        assert flag.shape == (NUM_ENVS,)
        assert flag.dtype == np.bool_
    # terminated and truncated are two separate arrays, never one merged `done`
    assert terminated is not truncated
    assert not np.shares_memory(terminated, truncated)
    assert not (terminated | truncated).any()  # one step cannot end a Montezuma episode

    assert isinstance(info, dict)
    np.testing.assert_array_equal(np.sort(info["env_id"]), np.arange(NUM_ENVS))
    np.testing.assert_array_equal(info["elapsed_step"], np.ones(NUM_ENVS))
    assert info["ram"].shape == (NUM_ENVS, 128)
    assert info["ram"].dtype == np.uint8
    # the trainer counts rooms from this byte: Montezuma's Revenge starts in room 1
    np.testing.assert_array_equal(info["ram"][:, MONTEZUMA_ROOM_RAM_INDEX], np.ones(NUM_ENVS))


def test_rnd_settings_reach_envpool(montezuma):
    assert montezuma.single_action_space == gym.spaces.Discrete(18)  # the full action space
    config = montezuma._pool.spec.config
    assert config.repeat_action_probability == pytest.approx(0.25)
    assert config.max_episode_steps == 4500
    assert config.full_action_space is True
    assert config.episodic_life is False
    assert config.reward_clip is False
    assert montezuma.max_episode_steps == 4500


def test_envpool_kwargs_override_the_rnd_settings():
    vec = envs.make("Pong-v5", num_envs=1, seed=0, full_action_space=False, repeat_action_probability=0.0)
    try:
        assert vec.single_action_space == gym.spaces.Discrete(6)  # Pong's minimal action set
        assert vec._pool.spec.config.repeat_action_probability == 0.0
        assert vec._pool.spec.config.max_episode_steps == 4500  # untouched settings keep the RND value
    finally:
        vec.close()


def test_next_step_autoreset_after_a_time_limit():
    vec = envs.make("MontezumaRevenge-v5", num_envs=2, seed=0, max_episode_steps=5)
    try:
        vec.reset()
        right = np.full(2, 3)  # RIGHT: Panama Joe moves, so the frame stack changes over an episode
        for t in range(1, 5):
            obs, reward, terminated, truncated, info = vec.step(right)
            np.testing.assert_array_equal(info["elapsed_step"], [t, t])
            assert not terminated.any() and not truncated.any()

        # step 5 ends the episode by the time limit: truncated, not terminated, with the TRUE final obs
        final_obs, reward, terminated, truncated, info = vec.step(right)
        np.testing.assert_array_equal(truncated, [True, True])
        np.testing.assert_array_equal(terminated, [False, False])
        np.testing.assert_array_equal(info["elapsed_step"], [5, 5])
        for o in final_obs:  # frames from within the episode, not a freshly reset stack
            assert not np.array_equal(o[0], o[-1])

        # the next step is the dummy: action ignored, reset observation, reward 0, not done
        obs, reward, terminated, truncated, info = vec.step(right)
        np.testing.assert_array_equal(info["elapsed_step"], [0, 0])
        np.testing.assert_array_equal(reward, [0.0, 0.0])
        assert not terminated.any() and not truncated.any()
        assert not np.array_equal(obs, final_obs)
        for o in obs:  # a reset stack repeats the first frame
            assert all(np.array_equal(o[k], o[-1]) for k in range(o.shape[0]))

        # and the new episode counts from 1 again
        *_, info = vec.step(right)
        np.testing.assert_array_equal(info["elapsed_step"], [1, 1])
    finally:
        vec.close()


def test_async_send_recv_returns_the_rows_named_by_env_id():
    num_envs, batch_size = 4, 2
    vec = envs.make("Pong-v5", num_envs=num_envs, seed=0, batch_size=batch_size)
    try:
        vec.async_reset()
        steps = np.zeros(num_envs, dtype=int)
        for _ in range(6):
            obs, reward, terminated, truncated, info = vec.recv()
            env_id = info["env_id"]
            assert obs.shape == (batch_size, *vec.single_observation_space.shape)
            assert reward.shape == terminated.shape == truncated.shape == (batch_size,)
            assert env_id.shape == (batch_size,)
            assert len(set(env_id.tolist())) == batch_size
            assert all(0 <= i < num_envs for i in env_id)
            # each row's elapsed_step is the number of steps sent to that env so far
            np.testing.assert_array_equal(info["elapsed_step"], steps[env_id])
            vec.send(np.zeros(batch_size, dtype=np.int64), env_id)
            steps[env_id] += 1
    finally:
        vec.close()


def test_gymnasium_registration():
    assert "Explore/MontezumaRevenge-v5" in gym.registry

    single = gym.make("Explore/MontezumaRevenge-v5")
    try:
        obs, info = single.reset()
        assert obs.shape == (4, 84, 84)
        assert single.observation_space.contains(obs)
        assert single.action_space == gym.spaces.Discrete(18)
        obs, reward, terminated, truncated, info = single.step(0)
        assert single.observation_space.contains(obs)
        assert isinstance(reward, float)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        assert info["elapsed_step"] == 1
    finally:
        single.close()

    vec = gym.make_vec("Explore/Pong-v5", num_envs=2)
    try:
        assert isinstance(vec, envs.VecEnv)
        assert vec.num_envs == 2
        obs, info = vec.reset()
        assert obs.shape == (2, 4, 84, 84)
    finally:
        vec.close()


def test_namespaced_ids_are_accepted_by_make():
    vec = envs.make("Explore/Pong-v5", num_envs=1)
    try:
        assert vec.env_id == "Pong-v5"
    finally:
        vec.close()


def test_available_ids_lists_the_atari_games():
    ids = envs.available_ids()
    assert "MontezumaRevenge-v5" in ids["atari"]
    assert "Pong-v5" in ids["atari"]
    assert ids["atari"] == sorted(ids["atari"])


def test_unknown_id_suggests_the_close_match():
    with pytest.raises(UnknownEnvError) as excinfo:
        envs.make("MontezumRevenge-v5", num_envs=1)
    message = str(excinfo.value)
    assert "'MontezumRevenge-v5'" in message
    assert "Did you mean" in message and "MontezumaRevenge-v5" in message
    assert "MontezumaRevenge-v5" in excinfo.value.suggestions
    assert "explore list-envs" in message


def test_zero_envs_is_a_value_error_naming_the_value():
    with pytest.raises(ValueError, match=r"num_envs must be >= 1, got 0"):
        envs.make("MontezumaRevenge-v5", num_envs=0)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"num_envs": 0}, "num_envs must be >= 1, got 0"),
        ({"num_envs": 2, "no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_a_failed_constructor_raises_only_its_own_error(monkeypatch, bad, error):
    """The constructor's error is the one the user sees: gymnasium's VectorEnv.__del__ calls close()
    on the half-built env, which must not raise a second error (an AttributeError on `_pool`)."""
    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises((ValueError, TypeError), match=error):
        AtariVecEnv("Pong-v5", **bad)
    gc.collect()
    assert [f"{u.exc_type.__name__}: {u.exc_value}" for u in unraisable] == []
