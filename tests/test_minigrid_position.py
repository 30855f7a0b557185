"""MiniGrid's position entry "agent_pos" and the count bonuses keyed on it, against real envpool stepping.

The entry must be exactly the position envpool reports (checked against a raw envpool pool stepped with
the same seed and actions, and by hand on Empty-5x5's fixed layout), and the count bonuses on
`--state-key agent_pos` must equal a brute-force dictionary count of the recorded positions.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from envs.minigrid import FORWARD, POSITION_KEY, RIGHT, MiniGridVecEnv
from explore.counts import EpisodicCount, GlobalCount, StateKey, state_key_problem
from explore.errors import ConfigError
from explore.obs import OBSERVATION_KINDS, PRIVILEGED_KEYS, obs_to_tensor

envpool = pytest.importorskip("envpool")

MULTIROOM = "MiniGrid-MultiRoom-N4-S5-v0"


def record(vec: MiniGridVecEnv, actions: np.ndarray):
    """Step `vec` through actions (T, N) from a reset; (next_obs as (T, N, ...) tensors, valid, dones).

    valid[t] is False for the autoreset dummy step (the step after an episode end), as the trainer marks it.
    """
    vec.reset()
    next_obs, valid, dones = [], [], []
    ended = np.zeros(vec.num_envs, dtype=bool)
    for row in actions:
        obs, _, terminated, truncated, _ = vec.step(row)
        next_obs.append(obs)
        valid.append(~ended)
        ended = terminated | truncated
        dones.append(ended)
    stacked = {key: np.stack([o[key] for o in next_obs]) for key in next_obs[0]}
    return (
        obs_to_tensor(stacked, torch.device("cpu")),
        torch.as_tensor(np.stack(valid)),
        torch.as_tensor(np.stack(dones)),
    )


def rollout_slice(batch: dict, steps: slice) -> dict:
    """The steps `steps` of a (T, N) batch, dict observations included."""
    return {
        key: {k: v[steps] for k, v in value.items()} if isinstance(value, dict) else value[steps]
        for key, value in batch.items()
    }


def test_the_entry_is_envpools_reported_position():
    num_envs, steps, seed = 4, 300, 3
    actions = np.random.default_rng(0).integers(0, 7, size=(steps, num_envs))
    vec = MiniGridVecEnv(MULTIROOM, num_envs=num_envs, seed=seed)
    raw = envpool.make(MULTIROOM, env_type="gymnasium", num_envs=num_envs, seed=seed)
    try:
        obs, _ = vec.reset()
        raw_obs, raw_info = raw.reset()
        assert vec.single_observation_space[POSITION_KEY].shape == (2,)
        np.testing.assert_array_equal(obs[POSITION_KEY], raw_info["agent_pos"])
        ends = 0
        for row in actions:
            obs, _, terminated, truncated, info = vec.step(row)
            raw_obs, _, raw_terminated, raw_truncated, raw_info = raw.step(row.astype(np.int32))
            np.testing.assert_array_equal(obs[POSITION_KEY], raw_info["agent_pos"])
            np.testing.assert_array_equal(obs["image"], raw_obs["image"])  # the same episodes
            assert vec.observation_space.contains(obs)
            ends += int((terminated | truncated).sum())
        assert ends >= num_envs  # 300 steps cross MultiRoom's 120-step limit: resets are covered
    finally:
        vec.close()
        raw.close()


def test_the_position_by_hand_on_empty_5x5():
    # the agent starts at (1, 1) facing east; x grows eastward, y southward
    vec = MiniGridVecEnv("MiniGrid-Empty-5x5-v0", num_envs=1, seed=0)
    try:
        obs, _ = vec.reset()
        seen = [obs[POSITION_KEY][0].tolist()]
        for action in (FORWARD, FORWARD, RIGHT, FORWARD, FORWARD, FORWARD):
            obs, *_ = vec.step(np.array([action]))
            seen.append(obs[POSITION_KEY][0].tolist())
        # the 5th action reaches the goal (the final position), the 6th is the dummy step (the start again)
        assert seen == [[1, 1], [2, 1], [3, 1], [3, 1], [3, 2], [3, 3], [1, 1]]
    finally:
        vec.close()


def test_counts_on_the_position_match_a_brute_force_count():
    num_envs, steps = 3, 260
    vec = MiniGridVecEnv(MULTIROOM, num_envs=num_envs, seed=5)
    try:
        actions = np.random.default_rng(1).integers(0, 3, size=(steps, num_envs))  # turns and moves
        next_obs, valid, dones = record(vec, actions)
    finally:
        vec.close()
    assert dones.any() and not valid.all()  # episode ends and dummy steps are in the trajectory
    positions = next_obs[POSITION_KEY].numpy()

    # brute force: time order, every env's step t before step t + 1; the dummy step is not counted
    global_visits: Counter = Counter()
    episode_visits = [Counter() for _ in range(num_envs)]
    expect_global = np.zeros((steps, num_envs))
    expect_episodic = np.zeros((steps, num_envs))
    for t in range(steps):
        for env in range(num_envs):
            if valid[t, env]:
                cell = tuple(positions[t, env])
                global_visits[cell] += 1
                episode_visits[env][cell] += 1
        for env in range(num_envs):
            if valid[t, env]:
                cell = tuple(positions[t, env])
                expect_global[t, env] = 1 / math.sqrt(global_visits[cell])
                expect_episodic[t, env] = 1 / math.sqrt(episode_visits[env][cell])
            if dones[t, env]:
                episode_visits[env] = Counter()
    # a cell visited repeatedly within an episode: the episodic bonus falls below 1
    assert (expect_episodic[valid.numpy()] < 1).any()

    batch = {"next_obs": next_obs, "valid": valid, "dones": dones}
    half = steps // 2  # two rollouts: counts carry from one to the next
    for module, expect in (
        (GlobalCount(POSITION_KEY), expect_global),
        (EpisodicCount(num_envs, POSITION_KEY), expect_episodic),
    ):
        got = [module.bonus(rollout_slice(batch, sl)) for sl in (slice(0, half), slice(half, steps))]
        np.testing.assert_allclose(torch.cat(got).numpy(), expect, rtol=1e-6)
    assert GlobalCount(POSITION_KEY).state_key.spec == POSITION_KEY
    # the table holds one entry per distinct visited cell
    table = GlobalCount(POSITION_KEY)
    table.bonus(batch)
    assert table.table_keys.shape[0] == len(global_visits)


def test_the_whole_observation_key_leaves_the_position_out():
    vec = MiniGridVecEnv(MULTIROOM, num_envs=2, seed=0)
    try:
        obs, _ = vec.reset()
    finally:
        vec.close()
    obs = obs_to_tensor(obs, torch.device("cpu"))
    assert POSITION_KEY in PRIVILEGED_KEYS
    without = {k: v for k, v in obs.items() if k != POSITION_KEY}
    moved = {**obs, POSITION_KEY: obs[POSITION_KEY] + 1}
    key = StateKey("obs")
    np.testing.assert_array_equal(key(obs, 1).numpy(), key(without, 1).numpy())
    np.testing.assert_array_equal(key(obs, 1).numpy(), key(moved, 1).numpy())
    assert not torch.equal(StateKey(POSITION_KEY)(obs, 1), StateKey(POSITION_KEY)(moved, 1))


def test_the_minigrid_kind_declares_the_entry_for_the_flag_check():
    kind = OBSERVATION_KINDS["minigrid"]
    vec = MiniGridVecEnv(MULTIROOM, num_envs=1)
    try:
        assert set(kind.dict_keys) == set(vec.single_observation_space.spaces)
        StateKey(POSITION_KEY, vec.single_observation_space)  # checked against the space: no error
    finally:
        vec.close()
    assert state_key_problem(POSITION_KEY, kind) is None
    assert "agent_pos" in state_key_problem("agent_position", kind)  # a typo names the entry
    with pytest.raises(ConfigError, match="agent_pos"):
        StateKey("agent_position")._check_keys(list(kind.dict_keys))


def test_rnd_sees_what_the_agent_observes_not_the_position():
    from explore.rnd import ObsRND

    vec = MiniGridVecEnv(MULTIROOM, num_envs=2, seed=0)
    try:
        obs, _ = vec.reset()
        space = vec.single_observation_space
    finally:
        vec.close()
    rnd = ObsRND(2, space, input_key="obs")
    assert rnd.input_features == 7 * 7 * 3 + 1 + 96  # image, direction, mission bytes; no agent_pos
    obs = obs_to_tensor(obs, torch.device("cpu"))
    moved = {**obs, POSITION_KEY: obs[POSITION_KEY] + 1}
    assert torch.equal(rnd.inputs(obs, 1), rnd.inputs(moved, 1))
