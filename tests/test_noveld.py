"""Exact tests of explore.noveld: the NovelD formula, its normalization, and RND on non-frame observations."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from explore.errors import ConfigError
from explore.normalize import RunningMeanStd
from explore.noveld import NovelD, ObsRND, RewardNormalizer, make_rnd
from explore.rnd import RND


class FrameMeanRND(nn.Module):
    """Test double for RND: the prediction error of a sample is the mean pixel of its frame, known in advance.

    Has what NovelD reads of an RND (inputs, prediction_error, obs_rms) and no networks; counts the
    rows it scores, so a test can tell how many RND passes NovelD made.
    """

    def __init__(self, num_envs: int = 2):
        super().__init__()
        self.obs_rms = RunningMeanStd((1, 84, 84))
        self.rows_scored = 0

    def inputs(self, obs: torch.Tensor, leading: int) -> torch.Tensor:
        return obs[..., -1:, :, :]  # the newest frame, as RND's networks see it

    def prediction_error(self, frames: torch.Tensor) -> torch.Tensor:
        self.rows_scored += frames.shape[0]
        return frames.float().mean(dim=(1, 2, 3))


def frames_of(values: list[list[int]]) -> torch.Tensor:
    """(T, N) pixel values -> (T, N, 4, 84, 84) uint8 frames filled with them."""
    v = torch.tensor(values, dtype=torch.uint8)
    return v[:, :, None, None, None].expand(*v.shape, 4, 84, 84).clone()


# Two envs, a trainer-layout rollout of T = 5: obs = V[:-1], next_obs = V[1:] (frames of value V).
# env 1's episode ends at step 1 (its final frame is 50); step 2 is the autoreset dummy (to 20).
V = [[10, 40], [20, 30], [20, 50], [30, 20], [10, 30], [20, 30]]
VALID = torch.tensor([[1, 1], [1, 1], [1, 0], [1, 1], [1, 1]], dtype=torch.bool)
DONES = torch.tensor([[0, 0], [0, 1], [0, 0], [0, 0], [0, 0]], dtype=torch.bool)
# max(N(s') - 0.5 N(s), 0):
NOVELTY = [[15, 10], [10, 35], [20, 0], [0, 20], [15, 15]]
#   env 0: 20 first, 20 again, 30 first, 10 first (novelty 0), 20 third time
#   env 1: 30 first, 50 first (episode ends), dummy, 30 first OF THE NEW EPISODE, 30 again
FIRST_VISIT = [[1, 1], [0, 1], [1, 0], [1, 1], [0, 0]]
NOVELD = [[15, 10], [0, 35], [20, 0], [0, 20], [0, 0]]


def trainer_batch(values: list[list[int]] = V) -> dict[str, torch.Tensor]:
    frames = frames_of(values)
    return {
        "obs": frames[:-1],
        "next_obs": frames[1:],
        "actions": torch.zeros(VALID.shape, dtype=torch.long),
        "valid": VALID,
        "dones": DONES,
    }


def make_noveld(**kwargs) -> NovelD:
    torch.manual_seed(0)
    return NovelD(FrameMeanRND(num_envs=2), num_envs=2, **kwargs)


def test_noveld_formula_exact_on_known_errors():
    noveld = make_noveld(alpha=0.5, reward_norm="none")
    assert noveld.kind == "global" and noveld.name == "noveld"
    assert_close(noveld.bonus(trainer_batch()), torch.tensor(NOVELD, dtype=torch.float32))
    metrics = noveld.metrics()
    assert metrics["first_visit_fraction"] == pytest.approx(np.mean([1, 1, 0, 1, 1, 1, 1, 0, 0]))
    assert metrics["novelty_mean"] == pytest.approx(np.sum(NOVELTY) / 9)


def test_plain_global_novelty_without_the_episodic_gate():
    noveld = make_noveld(alpha=0.5, episodic_gate=False, reward_norm="none")
    assert noveld.episodic is None
    assert_close(noveld.bonus(trainer_batch()), torch.tensor(NOVELTY, dtype=torch.float32) * VALID)
    assert_close(make_noveld(alpha=0.5).global_novelty(trainer_batch()), noveld.bonus(trainer_batch()))


def test_alpha_weights_the_current_state():
    noveld = make_noveld(alpha=0.1, episodic_gate=False, reward_norm="none")
    v = torch.tensor(V, dtype=torch.float32)
    expected = (v[1:] - 0.1 * v[:-1]).clamp(min=0) * VALID
    assert_close(noveld.bonus(trainer_batch()), expected)


def test_reward_normalized_by_the_running_std_of_the_reward():
    noveld = make_noveld(alpha=0.5, reward_norm="reward")
    raw = np.array(NOVELD, dtype=np.float64)[VALID.numpy()]
    # RunningMeanStd's prior: mean 0, var 1, weight 1e-4
    total = raw.size + 1e-4
    mean = raw.sum() / total
    var = (1e-4 * 1.0 + 1e-4 * mean**2 + ((raw - mean) ** 2).sum()) / total
    expected = torch.tensor(NOVELD, dtype=torch.float32) / float(np.sqrt(var + 1e-8))
    assert_close(noveld.bonus(trainer_batch()), expected)
    assert noveld.metrics()["reward_std"] == pytest.approx(np.sqrt(var + 1e-8))


def test_return_normalization_uses_the_discounted_return_per_env():
    normalizer = RewardNormalizer(num_envs=2, mode="return", gamma=0.5)
    rewards = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    valid = torch.ones(2, 2, dtype=torch.bool)
    returns = np.array([[1.0, 2.0], [3.5, 5.0]])  # ret_t = 0.5 ret_{t-1} + r_t, per env along time
    total = 4 + 1e-4
    mean = returns.sum() / total
    var = (1e-4 + 1e-4 * mean**2 + ((returns - mean) ** 2).sum()) / total
    assert_close(normalizer(rewards, valid), rewards / float(np.sqrt(var + 1e-8)))


def test_trainer_layout_shares_the_rnd_pass():
    """obs[t + 1] == next_obs[t] in a trainer's rollout: T + 1 rows are scored, not 2T."""
    noveld = make_noveld(reward_norm="none")
    noveld.bonus(trainer_batch())
    assert noveld.rnd.rows_scored == 6 * 2
    other = make_noveld(reward_norm="none")
    batch = trainer_batch()
    batch["obs"] = batch["obs"].flip(0)  # no longer the trainer's layout
    v = torch.tensor(V, dtype=torch.float32)
    expected = (v[1:] - 0.5 * v[:-1].flip(0)).clamp(min=0) * torch.tensor(FIRST_VISIT) * VALID
    assert_close(other.bonus(batch), expected)
    assert other.rnd.rows_scored == 2 * 5 * 2


def test_observation_statistics_update_with_valid_next_frames_after_scoring():
    noveld = make_noveld()
    noveld.bonus(trainer_batch())
    next_values = torch.tensor(V[1:], dtype=torch.float64)[VALID]
    assert noveld.rnd.obs_rms.count.item() == pytest.approx(9 + 1e-4)
    assert noveld.rnd.obs_rms.mean.mean().item() == pytest.approx(next_values.sum().item() / (9 + 1e-4))


def test_loss_is_rnds_loss():
    torch.manual_seed(0)
    rnd = RND(num_envs=2, update_proportion=0.5)
    noveld = NovelD(rnd, num_envs=2)
    minibatch = {
        "next_obs": torch.randint(0, 256, (6, 4, 84, 84), dtype=torch.uint8),
        "valid": torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool),
    }
    torch.manual_seed(1)
    ours = noveld.loss(minibatch)
    torch.manual_seed(1)
    theirs = rnd.loss(minibatch)
    assert ours.keys() == theirs.keys() == {"loss", "update_fraction"}
    assert_close(ours["loss"], theirs["loss"])
    ours["loss"].backward()
    assert all(p.grad is None for p in rnd.target.parameters())
    assert any(p.grad is not None for p in rnd.predictor.parameters())


def test_reset_reaches_the_episodic_count():
    noveld = make_noveld()
    noveld.reset(torch.tensor([True, False]))
    assert noveld.episodic.pending_reset.tolist() == [True, False]


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="alpha"):
        make_noveld(alpha=-0.1)
    with pytest.raises(ConfigError, match="'reward', 'return', 'none'"):
        make_noveld(reward_norm="std")
    with pytest.raises(ConfigError, match="unknown state key 'glyps'"):
        NovelD(FrameMeanRND(2), 2, state_key="glyps", observation_space=MINIHACK)


# --- RND on observations other than 84x84 frames -------------------------------------------

MINIHACK = gym.spaces.Dict(
    {
        "glyphs": gym.spaces.Box(0, 5976, (21, 79), np.int16),
        "blstats": gym.spaces.Box(-(2**31), 2**31 - 1, (27,), np.int64),
        "message": gym.spaces.Box(0, 255, (256,), np.uint8),
    }
)


def minihack_obs(*lead: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "glyphs": torch.randint(0, 5976, (*lead, 21, 79), generator=g, dtype=torch.int16),
        "blstats": torch.randint(0, 80, (*lead, 27), generator=g, dtype=torch.int64),
        "message": torch.randint(0, 256, (*lead, 256), generator=g, dtype=torch.uint8),
    }


@pytest.fixture(scope="module")
def minihack_rnd() -> ObsRND:
    """One ObsRND for MiniHack observations; tests that change it take a deep copy (construction is the slow part)."""
    torch.manual_seed(0)
    return ObsRND(2, MINIHACK)


def test_make_rnd_picks_the_plain_rnd_for_frames():
    frames = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert type(make_rnd(2, frames)) is RND


def test_obs_rnd_flattens_the_selected_part_in_sorted_key_order(minihack_rnd: ObsRND):
    rnd = minihack_rnd
    assert not rnd.pixels and rnd.input_features == 27 + 21 * 79 + 256
    obs = minihack_obs(3, 2)
    x = rnd.inputs(obs, leading=2)
    assert x.shape == (3, 2, 1, 1, rnd.input_features) and x.dtype == torch.float32
    expected = torch.cat([obs[k].reshape(3, 2, -1).float() for k in ("blstats", "glyphs", "message")], -1)
    assert torch.equal(x[:, :, 0, 0], expected)
    xy = ObsRND(2, MINIHACK, input_key="xy")
    assert torch.equal(xy.inputs(obs, 2)[..., 0, 0, :], obs["blstats"][..., 0:2].float())


def test_obs_rnd_uses_rnds_code_with_mlp_networks(minihack_rnd: ObsRND):
    rnd = copy.deepcopy(minihack_rnd)
    rnd.update_proportion = 1.0
    assert {id(p) for p in rnd.parameters() if p.requires_grad} == {id(p) for p in rnd.predictor.parameters()}
    batch = {"next_obs": minihack_obs(4, 2), "valid": torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]]).bool()}
    rewards = rnd.bonus(batch)
    assert rewards.shape == (4, 2) and rewards[1, 1] == 0 and (rewards[batch["valid"]] > 0).all()
    assert rnd.obs_rms.count.item() == pytest.approx(7 + 1e-4)
    flat = {
        "next_obs": {k: v.flatten(0, 1) for k, v in batch["next_obs"].items()},
        "valid": batch["valid"].flatten(),
    }
    out = rnd.loss(flat)
    assert torch.isfinite(out["loss"]) and out["update_fraction"].item() == pytest.approx(7 / 8)


def test_obs_rnd_on_a_dict_pixel_entry_sees_its_newest_frame():
    space = gym.spaces.Dict(
        {"pixel": gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), "step": gym.spaces.Box(0, 9, (1,))}
    )
    rnd = ObsRND(2, space, input_key="pixel")
    assert rnd.pixels
    obs = {"pixel": torch.randint(0, 256, (3, 2, 4, 84, 84), dtype=torch.uint8), "step": torch.zeros(3, 2, 1)}
    assert torch.equal(rnd.inputs(obs, 2), obs["pixel"][:, :, -1:])


class DictEnvs:
    """A vector env stand-in with MiniHack-like dict observations (numpy), for the warm-up."""

    num_envs = 2
    single_action_space = gym.spaces.Discrete(4)

    def __init__(self):
        self.t = 0

    def reset(self):
        return {k: v.numpy() for k, v in minihack_obs(2, seed=0).items()}, {}

    def step(self, actions):
        self.t += 1
        return {k: v.numpy() for k, v in minihack_obs(2, seed=self.t).items()}, None, None, None, {}


def test_obs_rnd_warmup_converts_numpy_dict_observations(minihack_rnd: ObsRND):
    rnd = copy.deepcopy(minihack_rnd)
    rnd.warmup(DictEnvs(), num_steps=3, chunk_steps=2)
    assert rnd.obs_rms.count.item() == pytest.approx(6 + 1e-4)
    assert rnd.obs_rms.mean.shape == (1, 1, rnd.input_features)


def test_noveld_on_minihack_end_to_end():
    torch.manual_seed(0)
    rnd = make_rnd(2, MINIHACK)
    assert isinstance(rnd, ObsRND)  # not frames: RND on the flattened observation
    noveld = NovelD(rnd, 2, state_key="xy", observation_space=MINIHACK)
    obs = minihack_obs(5, 2, seed=3)
    batch = {
        "obs": {k: v[:-1] for k, v in obs.items()},
        "next_obs": {k: v[1:] for k, v in obs.items()},
        "valid": torch.ones(4, 2, dtype=torch.bool),
        "dones": torch.zeros(4, 2, dtype=torch.bool),
    }
    rewards = noveld.bonus(batch)
    assert rewards.shape == (4, 2) and (rewards >= 0).all()
    flat = {
        k: ({kk: vv.flatten(0, 1) for kk, vv in v.items()} if isinstance(v, dict) else v.flatten())
        for k, v in batch.items()
    }
    assert torch.isfinite(noveld.loss(flat)["loss"])
