"""Exact tests of explore.counts: state keys, global and episodic count bonuses."""

from __future__ import annotations

import io
import math
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.testing import assert_close

from explore.bonus import BonusModule
from explore.counts import EpisodicCount, GlobalCount, StateKey, hash_rows, state_keys
from explore.errors import ConfigError

MINIHACK = gym.spaces.Dict(
    {
        "glyphs": gym.spaces.Box(0, 5976, (21, 79), np.int16),
        "glyphs_crop": gym.spaces.Box(0, 5976, (9, 9), np.int16),
        "blstats": gym.spaces.Box(-(2**31), 2**31 - 1, (27,), np.int64),
        "message": gym.spaces.Box(0, 255, (256,), np.uint8),
    }
)


def minihack_obs(*lead: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "glyphs": torch.randint(0, 5976, (*lead, 21, 79), generator=g, dtype=torch.int16),
        "glyphs_crop": torch.randint(0, 5976, (*lead, 9, 9), generator=g, dtype=torch.int16),
        "blstats": torch.randint(0, 80, (*lead, 27), generator=g, dtype=torch.int64),
        "message": torch.randint(0, 256, (*lead, 256), generator=g, dtype=torch.uint8),
    }


def cell_batch(keys: list[list[int]], valid: list[list[int]], dones: list[list[int]]) -> dict:
    """A (T, N) batch whose next observation is a dict with one entry, "cell", holding a hand-written id."""
    cells = torch.tensor(keys, dtype=torch.int32).unsqueeze(-1)
    return {
        "obs": {"cell": torch.zeros_like(cells)},
        "next_obs": {"cell": cells},
        "actions": torch.zeros(cells.shape[:2], dtype=torch.long),
        "valid": torch.tensor(valid, dtype=torch.bool),
        "dones": torch.tensor(dones, dtype=torch.bool),
    }


R2, R3 = 1 / math.sqrt(2), 1 / math.sqrt(3)

# --- the hash --------------------------------------------------------------------------------

M64 = 2**64 - 1
PRIMES = (2_147_483_647, 2_147_483_629)  # documented in explore/counts.py
SEED = 0x5EEDC0DE


def splitmix64(i: int, seed: int) -> int:
    z = (i * 0x9E3779B97F4A7C15 + seed) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def reference_key(values: list[int]) -> int:
    """The documented hash in plain Python integers: sum_j w_j v_j mod p for both primes, packed."""
    h = []
    for k, p in enumerate(PRIMES):
        weights = [splitmix64(j, SEED + (k << 40)) % (p - 1) + 1 for j in range(len(values))]
        h.append(sum((v % p) * w for v, w in zip(values, weights, strict=True)) % p)
    return h[0] * PRIMES[1] + h[1]


def test_hash_matches_the_documented_formula_exactly():
    rows = torch.tensor([[3, -1, 7, 0, 255], [0, 0, 0, 0, 0], [-32768, 32767, 1, 2, 3]], dtype=torch.int16)
    expected = torch.tensor([reference_key(r) for r in rows.tolist()], dtype=torch.int64)
    assert torch.equal(hash_rows(rows), expected)
    assert (expected >= 0).all() and (expected < 2**62).all()


def test_hash_splits_64_bit_values_and_hashes_float_bits():
    big = torch.tensor([[2**40 + 5, -3]], dtype=torch.int64)
    halves = big.view(torch.int32).long()[0].tolist()  # (low, high) of each value
    assert hash_rows(big).tolist() == [reference_key(halves)]
    # values congruent modulo a prime still get different keys
    assert hash_rows(torch.tensor([[5], [5 + PRIMES[0]]])).unique().numel() == 2
    floats = torch.tensor([[1.5, -2.0]], dtype=torch.float32)
    assert hash_rows(floats).tolist() == [reference_key(floats.view(torch.int32)[0].tolist())]


def test_dict_key_hashes_the_entries_concatenated_in_sorted_order():
    obs = {
        "b": torch.tensor([[2**40 + 1]], dtype=torch.int64),
        "a": torch.tensor([[-5, 7]], dtype=torch.int16),
        "c": torch.tensor([[True, False]]),
    }
    values = [-5, 7, *obs["b"].view(torch.int32)[0].tolist(), 1, 0]
    assert state_keys(obs, "obs", batch_dims=1).tolist() == [reference_key(values)]


def test_wide_rows_take_the_reduced_path_with_the_same_formula():
    rows = torch.randint(-(2**15), 2**15, (2, 2**15 + 3), dtype=torch.int16)  # too wide for the fast path
    assert hash_rows(rows).tolist() == [reference_key(r) for r in rows.tolist()]


# --- state keys ------------------------------------------------------------------------------


def test_same_state_same_key_different_state_different_key():
    obs = minihack_obs(6, 4, seed=1)
    obs = {k: torch.cat([v, v[:2]]) for k, v in obs.items()}  # rows 6, 7 repeat rows 0, 1
    keys = state_keys(obs, "obs", batch_dims=2)
    assert keys.shape == (8, 4) and keys.dtype == torch.int64
    assert torch.equal(keys[6:], keys[:2])
    assert keys[:6].unique().numel() == 24  # all different states, all different keys
    changed = {k: v.clone() for k, v in obs.items()}
    changed["message"][0, 0, 17] += 1  # one character of one message
    new_keys = state_keys(changed, "obs", batch_dims=2)
    assert new_keys[0, 0] != keys[0, 0] and torch.equal(new_keys.flatten()[1:], keys.flatten()[1:])


def test_tensor_observation_keys_any_leading_dims():
    frames = torch.randint(0, 256, (5, 3, 4, 84, 84), dtype=torch.uint8)
    keys = state_keys(frames, "obs", batch_dims=2)
    flat = state_keys(frames.flatten(0, 1), "obs", batch_dims=1)
    assert torch.equal(keys.flatten(), flat)
    assert keys.unique().numel() == 15


def test_xy_uses_only_blstats_0_2():
    obs = minihack_obs(3, seed=2)
    other = minihack_obs(3, seed=3)  # everything different ...
    other["blstats"][:, 0:2] = obs["blstats"][:, 0:2]  # ... but the position
    key = StateKey("xy", MINIHACK)
    assert torch.equal(key(obs, 1), key(other, 1))
    assert not torch.equal(state_keys(obs, "obs", 1), state_keys(other, "obs", 1))
    moved = {k: v.clone() for k, v in obs.items()}
    moved["blstats"][0, 1] += 1  # y of row 0
    assert key(moved, 1)[0] != key(obs, 1)[0] and torch.equal(key(moved, 1)[1:], key(obs, 1)[1:])
    # the key of (x, y) is the hash of exactly those two values
    assert key(obs, 1).tolist() == [
        reference_key(r) for r in obs["blstats"][:, 0:2].view(torch.int32).tolist()
    ]


@pytest.mark.parametrize("spec", ["glyphs", "message", "glyphs_crop"])
def test_named_keys_see_only_their_entry(spec: str):
    obs = minihack_obs(4, seed=4)
    other = minihack_obs(4, seed=5)
    other[spec] = obs[spec].clone()
    assert torch.equal(state_keys(obs, spec, 1), state_keys(other, spec, 1))
    assert not torch.equal(state_keys(obs, "obs", 1), state_keys(other, "obs", 1))


def test_unknown_state_key_is_a_config_error_naming_it_and_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        StateKey("glyps", MINIHACK)
    message = str(info.value)
    assert "'glyps'" in message and "Did you mean: glyphs" in message
    for valid in ("obs", "xy", "glyphs", "message", "blstats", "glyphs_crop"):
        assert valid in message
    with pytest.raises(ConfigError, match="'xy' needs a dict observation"):
        StateKey("xy")(torch.zeros(2, 3), 1)
    minigrid = {"image": torch.zeros(2, 7, 7, 3, dtype=torch.uint8)}
    with pytest.raises(ConfigError, match="needs the observation entry 'blstats'"):
        StateKey("xy")(minigrid, 1)
    with pytest.raises(ConfigError, match="unknown state key 'direktion'"):
        StateKey("direktion")(minigrid, 1)


# --- the scripted trajectory ------------------------------------------------------------------
# Two envs, keys are hand-written ids. Rollout 1 (T = 4):
#   env 0: A  B  A  A                       (one episode, continues into rollout 2)
#   env 1: A  C| X  A    C ends an episode; X is the autoreset dummy (valid False, never counted)
# Rollout 2 (T = 3):
#   env 0: B  C| X       the episode from rollout 1 continues, ends at C; X is a dummy
#   env 1: A  D  A       the episode begun at step 3 of rollout 1 continues
A, B, C, D, X = 10, 11, 12, 13, 99
ROLLOUT_1 = cell_batch(
    keys=[[A, A], [B, C], [A, X], [A, A]],
    valid=[[1, 1], [1, 1], [1, 0], [1, 1]],
    dones=[[0, 0], [0, 1], [0, 0], [0, 0]],
)
ROLLOUT_2 = cell_batch(
    keys=[[B, A], [C, D], [X, A]],
    valid=[[1, 1], [1, 1], [0, 1]],
    dones=[[0, 0], [1, 0], [0, 0]],
)


def test_episodic_sqrt_counts_on_the_scripted_trajectory():
    bonus = EpisodicCount(num_envs=2, state_key="cell")
    assert isinstance(bonus, BonusModule) and bonus.kind == "episodic"
    first = bonus.bonus(ROLLOUT_1)
    # env 0: A1 B1 A2 A3; env 1: A1 C1 (done) dummy A1 (a new episode)
    assert_close(first, torch.tensor([[1, 1], [1, 1], [R2, 0], [R3, 1]]))
    second = bonus.bonus(ROLLOUT_2)
    # env 0: B2 (carried) C1 (done) dummy; env 1: A2 (carried) D1 A3
    assert_close(second, torch.tensor([[R2, R2], [1, 1], [0, R3]]))


def test_episodic_first_visit_on_the_scripted_trajectory():
    bonus = EpisodicCount(num_envs=2, state_key="cell", mode="first_visit")
    assert_close(bonus.bonus(ROLLOUT_1), torch.tensor([[1.0, 1], [1, 1], [0, 0], [0, 1]]))
    assert_close(bonus.bonus(ROLLOUT_2), torch.tensor([[0.0, 0], [1, 1], [0, 0]]))


def test_episodic_counts_before_the_bonus_transform():
    bonus = EpisodicCount(num_envs=2)
    keys = ROLLOUT_1["next_obs"]["cell"].squeeze(-1).long()
    counts = bonus.update_counts(keys, ROLLOUT_1["valid"], ROLLOUT_1["dones"])
    assert counts.tolist() == [[1, 1], [1, 1], [2, 0], [3, 1]]
    # carried: env 0's episode {A: 3, B: 1}; env 1's new episode {A: 1}
    carried = sorted(
        zip(bonus.carry_env.tolist(), bonus.carry_keys.tolist(), bonus.carry_counts.tolist(), strict=True)
    )
    assert carried == [(0, A, 3), (0, B, 1), (1, A, 1)]


def test_reset_marks_an_episode_cut_before_the_next_batch():
    """reset(done) says the episode was cut outside a batch (e.g. restarted envs): counts restart."""
    bonus = EpisodicCount(num_envs=2, state_key="cell")
    bonus.bonus(ROLLOUT_1)  # carried: env 0 {A: 3, B: 1}, env 1 {A: 1}
    bonus.reset(torch.tensor([True, False]))
    # env 0: B is new again, C ends the episode; env 1 continues: A2 D1 A3
    assert_close(bonus.bonus(ROLLOUT_2), torch.tensor([[1, R2], [1, 1], [0, R3]]))
    assert not bonus.pending_reset.any()


def test_one_step_at_a_time_matches_the_whole_rollout():
    whole = EpisodicCount(num_envs=2, state_key="cell").bonus(ROLLOUT_1)
    stepper = EpisodicCount(num_envs=2, state_key="cell")
    for t in range(4):
        step = {
            k: (v[t : t + 1] if not isinstance(v, dict) else {"cell": v["cell"][t : t + 1]})
            for k, v in ROLLOUT_1.items()
        }
        assert_close(stepper.bonus(step)[0], whole[t])
        stepper.reset(ROLLOUT_1["dones"][t])  # after the step, as a one-at-a-time caller would


def cell_keys(ids: list[int]) -> torch.Tensor:
    return state_keys({"cell": torch.tensor(ids, dtype=torch.int32).unsqueeze(-1)}, "cell", batch_dims=1)


def table(bonus: GlobalCount) -> dict[int, int]:
    """The global table as {hand-written id: count}, for the ids of the scripted trajectory."""
    ids = {key: i for i, key in zip([A, B, C, D, X], cell_keys([A, B, C, D, X]).tolist(), strict=True)}
    assert bonus.table_keys.tolist() == sorted(bonus.table_keys.tolist())  # the table stays sorted
    return {ids[k]: c for k, c in zip(bonus.table_keys.tolist(), bonus.table_counts.tolist(), strict=True)}


def test_global_counts_on_the_scripted_trajectory():
    bonus = GlobalCount(state_key="cell")
    assert isinstance(bonus, BonusModule) and bonus.kind == "global"
    # step 0: A is visited by both envs, counted first: N(A) = 2 for both; step 2: env 1's dummy X is not counted
    assert_close(bonus.bonus(ROLLOUT_1), torch.tensor([[R2, R2], [1, 1], [R3, 0], [1 / math.sqrt(5)] * 2]))
    assert table(bonus) == {A: 5, B: 1, C: 1}
    # rollout 2: B2 A6 / C2 D1 / dummy A7; episode ends do not matter to a global count
    expected = [[R2, 1 / math.sqrt(6)], [R2, 1], [0, 1 / math.sqrt(7)]]
    assert_close(bonus.bonus(ROLLOUT_2), torch.tensor(expected))
    assert table(bonus) == {A: 7, B: 2, C: 2, D: 1}
    assert bonus.count_of(cell_keys([A, X, D])).tolist() == [7, 0, 1]


def test_global_counts_survive_state_dict_round_trip():
    bonus = GlobalCount(state_key="cell")
    bonus.bonus(ROLLOUT_1)
    buffer = io.BytesIO()
    torch.save(bonus.state_dict(), buffer)
    buffer.seek(0)
    restored = GlobalCount(state_key="cell")
    assert restored.table_keys.numel() == 0
    restored.load_state_dict(torch.load(buffer))
    assert torch.equal(restored.table_keys, bonus.table_keys)
    assert torch.equal(restored.table_counts, bonus.table_counts)
    assert_close(restored.bonus(ROLLOUT_2), bonus.bonus(ROLLOUT_2))


def test_episodic_state_is_not_saved():
    """Environments restart on resume, so a saved episode would never continue."""
    bonus = EpisodicCount(num_envs=2)
    assert list(bonus.state_dict()) == []


def test_invalid_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="'sqrt' or 'first_visit'"):
        EpisodicCount(2, mode="once")


# --- random trajectories against a step-by-step reference --------------------------------------


def random_rollouts(num_rollouts: int, steps: int, num_envs: int, seed: int) -> list[tuple]:
    """Keys from a small set, episodes ending at random, the dummy step after each end (NEXT_STEP)."""
    rng = np.random.default_rng(seed)
    after_done = np.zeros(num_envs, dtype=bool)
    rollouts = []
    for _ in range(num_rollouts):
        keys = rng.integers(0, 6, size=(steps, num_envs))
        valid = np.zeros((steps, num_envs), dtype=bool)
        dones = np.zeros((steps, num_envs), dtype=bool)
        for t in range(steps):
            valid[t] = ~after_done
            dones[t] = valid[t] & (rng.random(num_envs) < 0.15)
            after_done = dones[t]
        rollouts.append((keys, valid, dones))
    return rollouts


def reference(rollouts: list[tuple], num_envs: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Global and episodic counts step by step with Python dicts: count first, then read."""
    table: Counter = Counter()
    episodes = [Counter() for _ in range(num_envs)]
    out_global, out_episodic = [], []
    for keys, valid, dones in rollouts:
        g, e = np.zeros(keys.shape, dtype=np.int64), np.zeros(keys.shape, dtype=np.int64)
        for t in range(keys.shape[0]):
            for n in range(num_envs):
                if valid[t, n]:
                    table[keys[t, n]] += 1
            for n in range(num_envs):
                if valid[t, n]:
                    g[t, n] = table[keys[t, n]]
                    episodes[n][keys[t, n]] += 1
                    e[t, n] = episodes[n][keys[t, n]]
                if dones[t, n]:
                    episodes[n] = Counter()
        out_global.append(g)
        out_episodic.append(e)
    return out_global, out_episodic


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_match_a_step_by_step_reference(seed: int):
    num_envs = 5
    rollouts = random_rollouts(4, 16, num_envs, seed)
    expected_global, expected_episodic = reference(rollouts, num_envs)
    global_count, episodic = GlobalCount(), EpisodicCount(num_envs)
    for (keys, valid, dones), g, e in zip(rollouts, expected_global, expected_episodic, strict=True):
        keys, valid, dones = torch.as_tensor(keys), torch.as_tensor(valid), torch.as_tensor(dones)
        assert global_count.update_counts(keys, valid).tolist() == g.tolist()
        assert episodic.update_counts(keys, valid, dones).tolist() == e.tolist()


def test_bonus_is_zero_where_invalid_and_keys_come_from_next_obs():
    obs = minihack_obs(3, 2, seed=7)
    batch = {
        "obs": minihack_obs(3, 2, seed=8),
        "next_obs": obs,
        "valid": torch.tensor([[True, False], [False, True], [True, True]]),
        "dones": torch.zeros(3, 2, dtype=torch.bool),
    }
    for module in (GlobalCount("xy", MINIHACK), EpisodicCount(2, "xy", observation_space=MINIHACK)):
        rewards = module.bonus(batch)
        assert (rewards[~batch["valid"]] == 0).all() and (rewards[batch["valid"]] > 0).all()
        assert module.metrics()["intrinsic_reward_mean"] > 0
