"""DeepSea (envs/deepsea.py) against bsuite's own `deep_sea.DeepSea`, step by step, plus the VecEnv contract."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.core import InvalidActionError
from envs.deepsea import SIZES, DeepSeaEnv, DeepSeaVecEnv, deepsea_ids, suite
from explore.errors import UnknownEnvError

deep_sea = pytest.importorskip("bsuite.environments.deep_sea")


def bsuite_envs(size: int, mapping_seeds: list[int]) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [deep_sea.DeepSea(size, mapping_seed=s, seed=0) for s in mapping_seeds]


def lockstep(vec: DeepSeaVecEnv, refs: list, steps: int, p_right: float, seed: int) -> int:
    """Step `vec` and the bsuite envs `refs` (one per env) with the same actions; returns treasures found.

    Actions follow each reference's 'right' action with probability `p_right`, so that episodes
    reach the treasure as well as every other cell. A bsuite env is reset where ours plays the
    NEXT_STEP dummy step.
    """
    rng = np.random.default_rng(seed)
    obs, info = vec.reset()
    ref_obs = np.stack([ref.reset().observation.reshape(-1) for ref in refs])
    np.testing.assert_array_equal(obs, ref_obs)
    assert (info["elapsed_step"] == 0).all()
    ended = np.zeros(len(refs), dtype=bool)
    treasures = 0
    for _ in range(steps):
        actions = np.empty(len(refs), dtype=np.int64)
        for i, ref in enumerate(refs):
            right_action = int(ref._action_mapping[min(ref._row, vec.size - 1), ref._column])
            actions[i] = right_action if rng.random() < p_right else 1 - right_action
        obs, reward, terminated, truncated, info = vec.step(actions)
        for i, ref in enumerate(refs):
            if ended[i]:  # our dummy step: bsuite starts its next episode
                step = ref.reset()
                assert reward[i] == 0.0 and not terminated[i] and info["elapsed_step"][i] == 0
            else:
                step = ref.step(int(actions[i]))
                assert reward[i] == np.float32(step.reward)
                assert terminated[i] == step.last()
                assert info["success"][i] == (step.last() and step.reward > 0.5)
                treasures += int(info["success"][i])
            np.testing.assert_array_equal(obs[i], step.observation.reshape(-1))
        assert not truncated.any()
        ended = terminated.copy()
    return treasures


@pytest.mark.parametrize("size", [5, 10, 20])
def test_per_env_mappings_match_bsuite(size):
    seeds = list(range(7, 7 + 12))
    vec = DeepSeaVecEnv(f"DeepSea-N{size}-v0", num_envs=12, seed=7, per_env_mapping=True)
    refs = bsuite_envs(size, seeds)
    for i, ref in enumerate(refs):
        np.testing.assert_array_equal(vec.action_mapping(i), ref._action_mapping)
    treasures = lockstep(vec, refs, steps=6 * size, p_right=0.97, seed=size)
    assert treasures > 0  # the treasure branch of the reward was exercised


def test_shared_mapping_is_bsuites_for_the_mapping_seed():
    vec = DeepSeaVecEnv("Explore/DeepSea-N10-v0", num_envs=6, seed=0, mapping_seed=42)
    refs = bsuite_envs(10, [42] * 6)
    assert lockstep(vec, refs, steps=45, p_right=0.9, seed=1) > 0
    vec.reset(seed=3)  # a seeded reset rebuilds the mapping from its seed
    np.testing.assert_array_equal(vec.action_mapping(0), bsuite_envs(10, [3])[0]._action_mapping)


def test_a_subset_of_envs_steps_alone():
    vec = DeepSeaVecEnv("DeepSea-N5-v0", num_envs=4, seed=0, per_env_mapping=True)
    obs, _ = vec.reset()
    vec.send(np.array([0, 1]), env_ids=np.array([2, 0]))
    sub_obs, _, _, _, info = vec.recv()
    assert info["env_id"].tolist() == [2, 0] and info["elapsed_step"].tolist() == [1, 1]
    assert sub_obs.reshape(2, 5, 5)[:, 1].sum() == 2  # both moved down a row
    full, *_ = vec.step(np.zeros(4, dtype=np.int64))
    rows = full.reshape(4, 5, 5).sum(2).argmax(1)
    assert rows.tolist() == [2, 1, 2, 1]  # envs 1 and 3 had not moved before


def test_episode_is_n_steps_then_a_dummy_step():
    vec = DeepSeaVecEnv("DeepSea-N5-v0", num_envs=3, seed=0)
    vec.reset()
    for t in range(1, 6):
        obs, reward, terminated, _, info = vec.step(np.zeros(3, dtype=np.int64))
        assert (info["elapsed_step"] == t).all() and terminated.all() == (t == 5)
    assert (obs == 0).all()  # bsuite's null observation after the last row
    obs, reward, terminated, _, info = vec.step(np.ones(3, dtype=np.int64))
    assert (reward == 0).all() and not terminated.any() and (info["elapsed_step"] == 0).all()
    assert (obs[:, 0] == 1).all() and obs.sum() == 3  # back on the start cell


@pytest.mark.parametrize("bad", [np.array([0, 2]), np.array([-1, 0]), np.array([0.5, 1.0]), np.array([0])])
def test_bad_actions_name_the_valid_range(bad):
    vec = DeepSeaVecEnv("DeepSea-N5-v0", num_envs=2)
    vec.reset()
    with pytest.raises(InvalidActionError, match=r"\[0, 2\)|shape \(2,\)"):
        vec.step(bad)


def test_ids_registry_and_gymnasium():
    assert deepsea_ids()[0] == "DeepSea-N5-v0" and SIZES[-1] == 60
    assert envs.find_suite("Explore/DeepSea-N30-v0").name == "deepsea"
    with pytest.raises(UnknownEnvError, match="DeepSea-N30-v0"):
        envs.make("DeepSea-N31-v0")
    vec = envs.make("Explore/DeepSea-N15-v0", num_envs=2, seed=5)
    assert vec.single_observation_space.shape == (225,) and vec.single_action_space.n == 2
    env = gym.make("Explore/DeepSea-N10-v0")
    check_env(env.unwrapped, skip_render_check=True)
    assert isinstance(env.unwrapped, DeepSeaEnv)


def test_a_training_run_shares_one_mapping_across_env_groups():
    class RunConfig:  # the only field config_kwargs reads
        seed = 9

    kwargs = suite().config_kwargs(RunConfig())
    groups = [DeepSeaVecEnv("DeepSea-N10-v0", num_envs=4, seed=9 + 4 * g, **kwargs) for g in range(2)]
    np.testing.assert_array_equal(groups[0].action_mapping(3), groups[1].action_mapping(0))
    np.testing.assert_array_equal(groups[0].action_mapping(0), bsuite_envs(10, [9])[0]._action_mapping)
