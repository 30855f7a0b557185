"""The bandit tasks (envs/bandits.py): presets, reproducibility, reward statistics, gymnasium, registry.

Statistical checks use fixed seeds and tolerances of several standard errors, so they are exact
reruns, not flaky draws: a failure means a changed distribution, not bad luck.
"""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from envs import registration
from envs.bandits import (
    BANDIT_SPECS,
    BANDIT_SUITES,
    BanditEnv,
    BanditVecEnv,
    BatchedBandit,
    get_spec,
    suite,
)
from envs.core import VecEnv
from explore.errors import UnknownEnvError

MAB_IDS = [i for i, s in BANDIT_SPECS.items() if not s.contextual]
CONTEXTUAL_IDS = [i for i, s in BANDIT_SPECS.items() if s.contextual]
ONE_PER_FAMILY = [
    "Bandit-Bernoulli-K5-Hard-v0",
    "Bandit-Gaussian-K20-Easy-v0",
    "Bandit-LowRank-K10-v0",
    "Bandit-Linear-K30-v0",
]


def roll(bandit: BatchedBandit, steps: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random arms for `steps` rounds after a reset: (arms, rewards), each (steps, B)."""
    g = torch.Generator().manual_seed(seed)
    bandit.reset()
    arms = torch.randint(bandit.num_arms, (steps, bandit.num_instances), generator=g)
    rewards = torch.stack([bandit.step(a)[0] for a in arms])
    return arms, rewards


# --- the presets ---------------------------------------------------------------------------------


def test_ids_and_suites():
    expected = {
        f"Bandit-{family}-K{k}-{level}-v0"
        for family in ("Bernoulli", "Gaussian")
        for k in (5, 20)
        for level in ("Easy", "Hard")
    } | {f"Bandit-{family}-K{k}-v0" for family in ("LowRank", "Linear") for k in (10, 30)}
    assert set(BANDIT_SPECS) == expected
    assert all(spec.id == key for key, spec in BANDIT_SPECS.items())
    assert set(BANDIT_SUITES) >= {"core", "hard-core", "full"}
    assert BANDIT_SUITES["full"] == list(BANDIT_SPECS)
    assert BANDIT_SUITES["hard-core"] == ["Bandit-Bernoulli-K20-Hard-v0"]
    for ids in BANDIT_SUITES.values():
        assert set(ids) <= set(BANDIT_SPECS)
    # core has every family, and both difficulties of the multi-armed ones
    core = [BANDIT_SPECS[i] for i in BANDIT_SUITES["core"]]
    assert {s.family for s in core} == {"bernoulli", "gaussian", "lowrank", "linear"}
    assert {(s.family, s.difficulty) for s in core if not s.contextual} == {
        (f, d) for f in ("bernoulli", "gaussian") for d in ("easy", "hard")
    }


@pytest.mark.parametrize("env_id", MAB_IDS)
def test_multi_armed_presets(env_id: str):
    spec = BANDIT_SPECS[env_id]
    assert spec.context_dim == 0 and spec.num_arms in (5, 20)
    assert spec.horizon == {"easy": 300, "hard": 1000}[spec.difficulty]
    if spec.family == "bernoulli":
        assert spec.delta == {"easy": 0.5, "hard": 0.2}[spec.difficulty]
        assert spec.noise == 0.0
    else:
        assert spec.sigma == {"easy": 1.0, "hard": 3.0}[spec.difficulty]
        assert spec.noise == spec.sigma  # the reference's Gaussian bandits: reward std == sigma


@pytest.mark.parametrize("env_id", CONTEXTUAL_IDS)
def test_contextual_presets(env_id: str):
    spec = BANDIT_SPECS[env_id]
    assert spec.num_arms in (10, 30) and spec.horizon == 200 and spec.difficulty is None
    assert spec.noise > 0
    if spec.family == "lowrank":
        assert spec.rank == spec.context_dim == 20 and spec.num_users > 0


@pytest.mark.parametrize(
    ("env_id", "low", "high"),
    [
        ("Bandit-Bernoulli-K5-Hard-v0", 0.4, 0.6),
        ("Bandit-Bernoulli-K20-Hard-v0", 0.4, 0.6),
        ("Bandit-Bernoulli-K5-Easy-v0", 0.25, 0.75),
        ("Bandit-Bernoulli-K20-Easy-v0", 0.25, 0.75),
    ],
)
def test_bernoulli_means_are_the_presets_with_a_random_best_arm(env_id: str, low: float, high: float):
    bandit = BatchedBandit(env_id, num_instances=256, seed=0)
    means = bandit.means
    k = bandit.num_arms
    assert means.shape == (256, k) and means.dtype == torch.float32
    assert ((means == torch.tensor(low)) | (means == torch.tensor(high))).all()
    assert ((means == torch.tensor(high)).sum(dim=1) == 1).all()  # exactly one best arm
    gap = means.amax(dim=1) - means.amin(dim=1)
    torch.testing.assert_close(gap, torch.full((256,), high - low), atol=1e-6, rtol=0)
    # the best arm's position is random per instance: every position occurs
    assert set(means.argmax(dim=1).tolist()) == set(range(k))
    torch.testing.assert_close(bandit.best_expected(), torch.full((256,), high))


@pytest.mark.parametrize("env_id", ["Bandit-Gaussian-K5-Hard-v0", "Bandit-Gaussian-K20-Easy-v0"])
def test_gaussian_means_and_noise(env_id: str):
    spec = BANDIT_SPECS[env_id]
    bandit = BatchedBandit(env_id, num_instances=4000, seed=1)
    means = bandit.means.double()
    n = means.numel()
    # arm means ~ N(0, sigma^2): mean within 5 standard errors, std within 5 % (n >= 20,000)
    assert abs(means.mean().item()) < 5 * spec.sigma / math.sqrt(n)
    assert means.std().item() == pytest.approx(spec.sigma, rel=0.05)
    # rewards ~ N(mean of the pulled arm, noise^2)
    arms, rewards = roll(bandit, steps=10)
    residual = (rewards - bandit.means.gather(1, arms.T).T).double()
    assert abs(residual.mean().item()) < 5 * spec.noise / math.sqrt(residual.numel())
    assert residual.std().item() == pytest.approx(spec.noise, rel=0.05)
    # the best arm is random per instance
    assert set(bandit.means.argmax(dim=1).tolist()) == set(range(spec.num_arms))


def test_bernoulli_rewards_are_coin_flips_with_the_arm_means():
    bandit = BatchedBandit("Bandit-Bernoulli-K5-Hard-v0", num_instances=500, seed=2)
    arms, rewards = roll(bandit, steps=200)
    assert rewards.dtype == torch.float32
    assert set(rewards.unique().tolist()) <= {0.0, 1.0}
    p = bandit.means.gather(1, arms.T).T  # (T, B): the pulled arm's mean
    for level in (0.4, 0.6):
        pulled = p == torch.tensor(level)
        count = int(pulled.sum())
        assert count > 10_000
        empirical = rewards[pulled].double().mean().item()
        binomial_std = math.sqrt(level * (1 - level) / count)
        assert abs(empirical - level) < 4 * binomial_std, (level, empirical, binomial_std)


# --- reproducibility -----------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ONE_PER_FAMILY)
def test_same_seed_same_instances_and_draws(env_id: str):
    a = BatchedBandit(env_id, num_instances=8, seed=7)
    b = BatchedBandit(env_id, num_instances=8, seed=7)
    c = BatchedBandit(env_id, num_instances=8, seed=8)
    ctx_a, ctx_b, ctx_c = a.reset(), b.reset(), c.reset()
    torch.testing.assert_close(a.expected_rewards(), b.expected_rewards(), rtol=0, atol=0)
    assert not torch.equal(a.expected_rewards(), c.expected_rewards())
    if a.context_dim:
        torch.testing.assert_close(ctx_a, ctx_b, rtol=0, atol=0)
        assert not torch.equal(ctx_a, ctx_c)
        torch.testing.assert_close(a.arm_params, b.arm_params, rtol=0, atol=0)
    else:
        assert ctx_a is ctx_b is ctx_c is None
        torch.testing.assert_close(a.means, b.means, rtol=0, atol=0)
    arms_a, rewards_a = roll(a, 50)
    arms_b, rewards_b = roll(b, 50)
    _, rewards_c = roll(c, 50)
    assert torch.equal(arms_a, arms_b)
    torch.testing.assert_close(rewards_a, rewards_b, rtol=0, atol=0)
    assert not torch.equal(rewards_a, rewards_c)
    # reset() rewinds the context/reward stream: the same draws again (common random numbers)
    _, again = roll(a, 50)
    torch.testing.assert_close(again, rewards_a, rtol=0, atol=0)


def test_reward_draws_do_not_depend_on_the_policy():
    """Each round draws every arm's reward, so two policies see the same reward for the same pull."""
    a = BatchedBandit("Bandit-Gaussian-K5-Easy-v0", num_instances=16, seed=3)
    b = BatchedBandit("Bandit-Gaussian-K5-Easy-v0", num_instances=16, seed=3)
    a.reset(), b.reset()
    for t in range(20):
        arms_a = torch.full((16,), t % 5)
        arms_b = torch.where(torch.arange(16) % 2 == 0, arms_a, (arms_a + 1) % 5)
        ra, _ = a.step(arms_a)
        rb, _ = b.step(arms_b)
        same = arms_a == arms_b
        torch.testing.assert_close(ra[same], rb[same], rtol=0, atol=0)


def test_resample_instances_changes_only_the_masked_rows():
    bandit = BatchedBandit("Bandit-LowRank-K10-v0", num_instances=6, seed=0)
    before_params, before_ctx = bandit.arm_params.clone(), bandit.context.clone()
    mask = torch.tensor([True, False, True, False, False, True])
    bandit.resample_instances(mask)
    changed = (bandit.arm_params != before_params).flatten(1).any(dim=1)
    assert torch.equal(changed, mask)
    assert torch.equal(bandit.context[~mask], before_ctx[~mask])
    # the new rows' contexts come from their new user populations
    torch.testing.assert_close(bandit.context, bandit.users[torch.arange(6), bandit.user_index])


# --- contextual bandits --------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", CONTEXTUAL_IDS)
def test_contextual_expected_rewards_match_the_rewards(env_id: str):
    spec = BANDIT_SPECS[env_id]
    bandit = BatchedBandit(env_id, num_instances=512, seed=4)
    context = bandit.reset()
    g = torch.Generator().manual_seed(0)
    residuals = []
    for _ in range(30):  # 15,360 pulls
        expected = bandit.expected_rewards()
        assert expected.shape == (512, spec.num_arms) and expected.dtype == torch.float32
        # the model is exactly linear in the context (what LinUCB assumes)
        torch.testing.assert_close(expected, torch.einsum("bkd,bd->bk", bandit.arm_params, context))
        torch.testing.assert_close(bandit.best_expected(), expected.amax(dim=1))
        arms = torch.randint(spec.num_arms, (512,), generator=g)
        rewards, next_context = bandit.step(arms)
        residuals.append(rewards - expected.gather(1, arms[:, None]).squeeze(1))
        assert next_context.shape == (512, spec.context_dim) and next_context.dtype == torch.float32
        context = next_context
    residual = torch.cat(residuals).double()
    assert abs(residual.mean().item()) < 5 * spec.noise / math.sqrt(residual.numel())
    assert residual.std().item() == pytest.approx(spec.noise, rel=0.05)


@pytest.mark.parametrize("env_id", ["Bandit-LowRank-K10-v0", "Bandit-LowRank-K30-v0"])
def test_lowrank_model(env_id: str):
    spec = BANDIT_SPECS[env_id]
    bandit = BatchedBandit(env_id, num_instances=32, seed=5)
    users = bandit.users
    assert users.shape == (32, spec.num_users, spec.rank)
    assert bandit.arm_params.shape == (32, spec.num_arms, spec.rank)
    assert (users[..., -1] == 1).all()  # the constant feature that carries item bias and offset
    # every user x item expected reward, normalized per instance to exactly [0, 1]
    table = users @ bandit.arm_params.transpose(1, 2)
    torch.testing.assert_close(table.amin(dim=(1, 2)), torch.zeros(32), atol=1e-5, rtol=0)
    torch.testing.assert_close(table.amax(dim=(1, 2)), torch.ones(32), atol=1e-5, rtol=0)
    # the context is a user of the fixed population
    torch.testing.assert_close(bandit.context, users[torch.arange(32), bandit.user_index], rtol=0, atol=0)
    # the user matters: different users prefer different items in almost every instance
    distinct_best = torch.tensor([len(row.unique()) for row in table.argmax(dim=2)])
    assert (distinct_best > 1).float().mean() > 0.9


def test_linear_contexts_and_parameters_are_unit_vectors():
    bandit = BatchedBandit("Bandit-Linear-K10-v0", num_instances=64, seed=6)
    torch.testing.assert_close(bandit.arm_params.norm(dim=-1), torch.ones(64, 10))
    for _ in range(3):
        torch.testing.assert_close(bandit.context.norm(dim=-1), torch.ones(64))
        bandit.step(torch.zeros(64, dtype=torch.long))
    assert (bandit.expected_rewards().abs() <= 1 + 1e-6).all()


# --- shapes and validation -----------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ONE_PER_FAMILY)
def test_shapes_dtypes_and_rounds(env_id: str):
    spec = BANDIT_SPECS[env_id]
    bandit = BatchedBandit(spec, num_instances=3, seed=0)
    assert (bandit.num_instances, bandit.num_arms, bandit.horizon) == (3, spec.num_arms, spec.horizon)
    assert bandit.context_dim == spec.context_dim and bandit.device == torch.device("cpu")
    context = bandit.reset()
    assert bandit.round == 0
    if spec.contextual:
        assert context.shape == (3, spec.context_dim) and context.dtype == torch.float32
        with pytest.raises(AttributeError):
            _ = bandit.means
    else:
        assert context is None
        assert bandit.means.shape == (3, spec.num_arms)
    rewards, next_context = bandit.step(torch.tensor([0, 1, 2]))
    assert rewards.shape == (3,) and rewards.dtype == torch.float32
    assert (next_context is None) == (not spec.contextual)
    assert bandit.round == 1
    assert bandit.best_expected().shape == (3,)


def test_bad_arms_and_ids_are_rejected():
    bandit = BatchedBandit("Bandit-Bernoulli-K5-Easy-v0", num_instances=2)
    for bad in (torch.tensor([0]), torch.tensor([0.0, 1.0]), torch.tensor([0, 5]), torch.tensor([-1, 0])):
        with pytest.raises(ValueError):
            bandit.step(bad)
    with pytest.raises(UnknownEnvError, match="Bandit-Bernoulli-K5-Easy-v0"):
        BatchedBandit("Bandit-Bernouli-K5-Easy-v0", num_instances=2)
    assert get_spec("Explore/Bandit-Linear-K10-v0") is BANDIT_SPECS["Bandit-Linear-K10-v0"]


# --- gymnasium -----------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ONE_PER_FAMILY)
def test_single_env_passes_gymnasiums_checker(env_id: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(BanditEnv(env_id), skip_render_check=True)
    # gymnasium only flags the unbounded reward and context slots of the observation
    assert all("infinity" in str(w.message) for w in caught), [str(w.message) for w in caught]


def test_single_env_episode_and_reset_seeds():
    env = BanditEnv("Bandit-Bernoulli-K5-Easy-v0")
    obs, info = env.reset(seed=11)
    assert obs.shape == (5 + 1,) and obs.dtype == np.float32 and not obs.any()
    means = env.bandit.means.clone()
    for t in range(300):
        obs, reward, terminated, truncated, info = env.step(t % 5)
        assert obs[t % 5] == 1 and obs[:5].sum() == 1 and obs[5] == reward
        assert not terminated and truncated == (t == 299) and info["elapsed_step"] == t + 1
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)
    env.reset()  # unseeded: a new instance
    assert not torch.equal(env.bandit.means, means)
    env.reset(seed=11)  # seeded: the same instance again
    assert torch.equal(env.bandit.means, means)


def test_vec_env_spaces_and_observation_layout():
    vec = BanditVecEnv("Bandit-LowRank-K10-v0", num_envs=4, seed=0)
    assert isinstance(vec, VecEnv)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    assert vec.single_observation_space.shape == (10 + 1 + 20,)
    assert vec.single_action_space == gym.spaces.Discrete(10)
    assert vec.observation_space.shape == (4, 31) and vec.action_space.shape == (4,)
    obs, info = vec.reset()
    assert vec.observation_space.contains(obs)
    assert not obs[:, :11].any()  # no previous action or reward yet
    np.testing.assert_array_equal(obs[:, 11:], vec.bandit.context.numpy())
    np.testing.assert_array_equal(info["env_id"], np.arange(4))
    np.testing.assert_array_equal(info["elapsed_step"], np.zeros(4))
    vec.action_space.seed(0)
    actions = vec.action_space.sample()
    expected = vec.bandit.expected_rewards().numpy()
    obs, reward, terminated, truncated, info = vec.step(actions)
    assert vec.observation_space.contains(obs)
    assert reward.shape == (4,) and reward.dtype == np.float32
    assert terminated.dtype == truncated.dtype == np.bool_ and not (terminated | truncated).any()
    np.testing.assert_array_equal(obs[:, :10], np.eye(10, dtype=np.float32)[actions])
    np.testing.assert_array_equal(obs[:, 10], reward)
    np.testing.assert_array_equal(obs[:, 11:], vec.bandit.context.numpy())
    chosen = expected[np.arange(4), actions]
    np.testing.assert_allclose(info["expected_reward"], chosen)
    np.testing.assert_allclose(info["regret"], expected.max(axis=1) - chosen)


def test_vec_env_truncates_at_the_horizon_then_takes_the_dummy_step():
    vec = BanditVecEnv("Bandit-Bernoulli-K5-Easy-v0", num_envs=3, seed=0)
    horizon = vec.max_episode_steps
    assert horizon == 300
    vec.reset()
    first_means = vec.bandit.means.clone()
    for t in range(horizon):
        obs, reward, terminated, truncated, info = vec.step(np.full(3, t % 5))
        assert not terminated.any()
        assert truncated.all() == (t == horizon - 1) and truncated.any() == (t == horizon - 1)
        np.testing.assert_array_equal(info["elapsed_step"], np.full(3, t + 1))
    # the truncating step returned the true final observation: the last pull and its reward
    assert (obs[:, 4] == 1).all() and (obs[:, 5] == reward).all()
    assert torch.equal(vec.bandit.means, first_means)
    # the dummy step: action ignored, reward 0, reset observation, new instances
    obs, reward, terminated, truncated, info = vec.step(np.full(3, 2))
    assert not (terminated | truncated).any()
    np.testing.assert_array_equal(reward, np.zeros(3))
    assert not obs.any()
    np.testing.assert_array_equal(info["elapsed_step"], np.zeros(3))
    np.testing.assert_array_equal(info["regret"], np.zeros(3))
    assert not torch.equal(vec.bandit.means, first_means)
    obs, reward, terminated, truncated, info = vec.step(np.full(3, 1))
    np.testing.assert_array_equal(info["elapsed_step"], np.ones(3))
    assert (obs[:, 1] == 1).all()


def test_vec_env_steps_a_subset_of_envs():
    vec = BanditVecEnv("Bandit-Linear-K10-v0", num_envs=4, seed=0)
    vec.reset()
    context = vec.bandit.context.clone()
    vec.send(np.array([3, 7]), env_ids=np.array([2, 0]))
    obs, reward, terminated, truncated, info = vec.recv()
    np.testing.assert_array_equal(info["env_id"], [2, 0])
    np.testing.assert_array_equal(info["elapsed_step"], [1, 1])
    assert obs.shape == (2, 10 + 1 + 5) and obs[0, 3] == 1 and obs[1, 7] == 1
    # envs 1 and 3 did not move: same context, still at step 0
    assert torch.equal(vec.bandit.context[[1, 3]], context[[1, 3]])
    assert not torch.equal(vec.bandit.context[[0, 2]], context[[0, 2]])
    vec.send(np.array([0, 0, 0, 0]))
    *_, info = vec.recv()
    np.testing.assert_array_equal(info["elapsed_step"], [2, 1, 2, 1])
    with pytest.raises(RuntimeError, match="recv"):
        vec.recv()


def test_vec_env_seeded_resets_repeat_and_unseeded_resets_draw_new_instances():
    vec = BanditVecEnv("Bandit-Gaussian-K5-Hard-v0", num_envs=4, seed=0)
    actions = np.array([0, 1, 2, 3])

    def episode_start(seed: int | None) -> tuple[torch.Tensor, np.ndarray]:
        vec.reset(seed=seed)
        means = vec.bandit.means.clone()
        rewards = np.stack([vec.step(actions)[1] for _ in range(5)])
        return means, rewards

    means_a, rewards_a = episode_start(5)
    means_b, rewards_b = episode_start(5)
    assert torch.equal(means_a, means_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)
    means_c, _ = episode_start(None)
    assert not torch.equal(means_a, means_c)
    # a fresh env's first unseeded reset keeps the construction seed's instances
    fresh = BanditVecEnv("Bandit-Gaussian-K5-Hard-v0", num_envs=4, seed=5)
    fresh.reset()
    assert torch.equal(fresh.bandit.means, means_a)


# --- the registry --------------------------------------------------------------------------------


@pytest.fixture
def bandits_registered(monkeypatch: pytest.MonkeyPatch):
    """The registry as it will be once envs.bandits is in SUITE_MODULES (envs/registration.py)."""
    if "envs.bandits" not in registration.SUITE_MODULES:
        monkeypatch.setattr(registration, "SUITE_MODULES", (*registration.SUITE_MODULES, "envs.bandits"))
        monkeypatch.setattr(registration, "SUITES", [*registration.SUITES, suite()])
    before = set(gym.registry)
    registered = registration.register_gymnasium_ids()
    yield registered
    for env_id in set(gym.registry) - before:  # leave gymnasium's registry as it was
        del gym.registry[env_id]


def test_every_id_is_registered(bandits_registered):
    for env_id in BANDIT_SPECS:
        assert f"Explore/{env_id}" in bandits_registered
        assert registration.find_suite(env_id).name == "bandits"
        assert registration.find_suite(f"Explore/{env_id}").name == "bandits"
    assert registration.available_ids()["bandits"] == list(BANDIT_SPECS)
    bandit_suite = suite()
    assert bandit_suite.extra == "bandits"
    assert all(bandit_suite.id_pattern.match(i) for i in BANDIT_SPECS)


def test_gymnasium_make_and_make_vec(bandits_registered):
    env = gym.make("Explore/Bandit-Bernoulli-K5-Hard-v0")
    assert isinstance(env.unwrapped, BanditEnv)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert reward in (0.0, 1.0) and not terminated and not truncated
    env.close()
    vec = gym.make_vec("Explore/Bandit-LowRank-K10-v0", num_envs=3)
    assert isinstance(vec, BanditVecEnv) and vec.num_envs == 3
    vec = registration.make("Bandit-Linear-K30-v0", num_envs=2, seed=3)
    assert isinstance(vec, BanditVecEnv) and vec.seed == 3


def test_an_unknown_id_gets_close_matches(bandits_registered):
    with pytest.raises(UnknownEnvError) as excinfo:
        registration.find_suite("Bandit-Bernouli-K5-Hard-v0")
    assert "Bandit-Bernoulli-K5-Hard-v0" in excinfo.value.suggestions
    assert "Did you mean" in str(excinfo.value)


# --- devices -------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs cuda")
@pytest.mark.parametrize("env_id", ONE_PER_FAMILY)
def test_cuda_bandits_are_reproducible(env_id: str):
    a = BatchedBandit(env_id, num_instances=64, seed=0, device="cuda")
    b = BatchedBandit(env_id, num_instances=64, seed=0, device="cuda")
    arms = torch.zeros(64, dtype=torch.long, device="cuda")
    a.reset(), b.reset()
    ra, ca = a.step(arms)
    rb, cb = b.step(arms)
    assert ra.device.type == "cuda" and torch.equal(ra, rb)
    assert a.expected_rewards().device.type == "cuda"
    vec = BanditVecEnv(env_id, num_envs=4, device="cuda")
    obs, _ = vec.reset()
    assert isinstance(obs, np.ndarray) and vec.observation_space.contains(obs)
