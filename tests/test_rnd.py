"""Exact tests of explore.rnd.RND: frozen target, observation normalization, the bonus, the loss."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from explore.bonus import BonusModule
from explore.rnd import OBS_CLIP, RND, frozen, last_frame


def make_rnd(num_envs: int = 2, seed: int = 0, **kwargs) -> RND:
    torch.manual_seed(seed)
    return RND(num_envs=num_envs, **kwargs)


def random_obs(*leading: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (*leading, 4, 84, 84), generator=g, dtype=torch.uint8)


def manual_normalize(rnd: RND, frames: torch.Tensor) -> torch.Tensor:
    mean = rnd.obs_rms.mean.float()
    std = torch.sqrt(rnd.obs_rms.var + 1e-8).float()
    return ((frames.float() - mean) / std).clamp(-5.0, 5.0)


@torch.no_grad()
def manual_errors(rnd: RND, frames: torch.Tensor) -> torch.Tensor:
    """Per-sample mean over the 512 features of (predictor - target)^2, frames (B, 1, 84, 84)."""
    x = manual_normalize(rnd, frames)
    diff = rnd.predictor(x) - rnd.target(x)
    assert diff.shape == (frames.shape[0], 512)
    return (diff**2).sum(-1) / 512.0


def with_prior(
    samples: np.ndarray, epsilon: float = 1e-4, prior_mean: float = 0.0, prior_var: float = 1.0
) -> tuple[np.ndarray, np.ndarray, float]:
    """RunningMeanStd's result: samples (axis 0) merged with its prior state (weight epsilon).

    A fresh RunningMeanStd holds mean 0, var 1 with count epsilon (1e-4).
    """
    total = samples.shape[0] + epsilon
    mean = (samples.sum(0) + epsilon * prior_mean) / total
    m2 = epsilon * prior_var + epsilon * (prior_mean - mean) ** 2 + ((samples - mean) ** 2).sum(0)
    return mean, m2 / total, total


def frame_valued_errors(frames: torch.Tensor) -> torch.Tensor:
    """A stand-in for prediction_error: the error of a sample is the mean pixel of its frame."""
    return frames.float().mean(dim=(1, 2, 3))


# --- the target network is frozen ------------------------------------------------------------


def test_rnd_is_a_bonus_module_with_a_frozen_target():
    rnd = make_rnd()
    assert isinstance(rnd, BonusModule) and rnd.name == "rnd"
    assert all(not p.requires_grad for p in rnd.target.parameters())
    assert all(p.requires_grad for p in rnd.predictor.parameters())
    assert frozen(rnd.target) and not frozen(rnd.predictor)
    # the only trainable parameters are the predictor's (statistics are buffers)
    trainable = {id(p) for p in rnd.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in rnd.predictor.parameters()}


def test_optimizer_step_moves_the_predictor_only():
    rnd = make_rnd(update_proportion=1.0)
    optimizer = torch.optim.Adam([p for p in rnd.parameters() if p.requires_grad], lr=1e-3)
    target_before = copy.deepcopy(rnd.target.state_dict())
    predictor_before = copy.deepcopy(rnd.predictor.state_dict())

    minibatch = {"next_obs": random_obs(8), "valid": torch.ones(8, dtype=torch.bool)}
    out = rnd.loss(minibatch)
    assert out["loss"].requires_grad and out["loss"].item() > 0.0
    out["loss"].backward()
    assert all(p.grad is None for p in rnd.target.parameters())
    assert all(p.grad is not None for p in rnd.predictor.parameters())
    optimizer.step()

    for name, value in rnd.target.state_dict().items():
        assert torch.equal(value, target_before[name]), name
    for name, value in rnd.predictor.state_dict().items():
        assert not torch.equal(value, predictor_before[name]), name


# --- observation normalization ----------------------------------------------------------------


def test_observation_normalization_clips_to_five():
    rnd = make_rnd()
    rnd.obs_rms.mean.fill_(100.0)
    rnd.obs_rms.var.fill_(4.0)  # std = sqrt(4 + 1e-8) = 2
    frames = torch.zeros(1, 1, 84, 84, dtype=torch.uint8)
    frames[..., :21, :] = 255  # (255 - 100) / 2 = 77.5 -> 5
    frames[..., 21:42, :] = 0  # -50 -> -5
    frames[..., 42:63, :] = 104  # 2
    frames[..., 63:, :] = 97  # -1.5
    expected = torch.empty(1, 1, 84, 84)
    expected[..., :21, :] = 5.0
    expected[..., 21:42, :] = -5.0
    expected[..., 42:63, :] = 2.0
    expected[..., 63:, :] = -1.5
    out = rnd.normalize_obs(frames)
    assert OBS_CLIP == 5.0
    assert out.dtype == torch.float32
    assert_close(out, expected)
    assert out.max().item() == 5.0 and out.min().item() == -5.0

    # the networks see the clipped input: every frame beyond +-5 std scores the same
    bright = torch.full((2, 1, 84, 84), 255, dtype=torch.uint8)
    at_clip = torch.full((2, 1, 84, 84), 110, dtype=torch.uint8)  # (110 - 100) / 2 = 5 exactly
    dark = torch.zeros(2, 1, 84, 84, dtype=torch.uint8)
    at_minus_clip = torch.full((2, 1, 84, 84), 90, dtype=torch.uint8)
    with torch.no_grad():
        assert_close(rnd.prediction_error(bright), rnd.prediction_error(at_clip))
        assert_close(rnd.prediction_error(dark), rnd.prediction_error(at_minus_clip))


def test_normalization_uses_observation_statistics_per_pixel():
    rnd = make_rnd()
    g = torch.Generator().manual_seed(1)
    rnd.obs_rms.mean.copy_(torch.rand(1, 84, 84, generator=g, dtype=torch.float64) * 255)
    rnd.obs_rms.var.copy_(torch.rand(1, 84, 84, generator=g, dtype=torch.float64) * 400 + 1)
    frames = random_obs(3, seed=2)[:, -1:]
    out = rnd.normalize_obs(frames)
    assert_close(out, manual_normalize(rnd, frames))
    assert out.abs().max().item() <= 5.0


# --- the intrinsic reward -------------------------------------------------------------------


def test_prediction_error_is_mean_squared_error_over_512_features():
    rnd = make_rnd()
    rnd.obs_rms.mean.fill_(120.0)
    rnd.obs_rms.var.fill_(900.0)
    frames = random_obs(5, seed=3)[:, -1:]
    with torch.no_grad():
        errors = rnd.prediction_error(frames)
    assert errors.shape == (5,)
    assert_close(errors, manual_errors(rnd, frames))
    # a sum over the features would be 512 times larger
    assert (errors > 0).all()


def test_bonus_hand_computed_with_stubbed_errors(monkeypatch):
    rnd = make_rnd(num_envs=2, gamma_int=0.5)
    monkeypatch.setattr(rnd, "prediction_error", frame_valued_errors)
    # the error of each (t, n) is the value its last frame is filled with
    table = torch.tensor([[1, 2], [200, 4], [5, 6]], dtype=torch.uint8)  # 200 sits on a dummy step
    valid = torch.tensor([[True, True], [False, True], [True, True]])
    next_obs = torch.zeros(3, 2, 4, 84, 84, dtype=torch.uint8)
    next_obs[:, :, -1] = table[:, :, None, None]
    next_obs[:, :, :-1] = 77  # older frames are not scored

    rewards = rnd.bonus({"next_obs": next_obs, "valid": valid}, chunk_size=4)
    assert rewards.shape == (3, 2)

    # running return per env along time (gamma 0.5), unchanged on the dummy step:
    # env 0: 1, 1, 0.5 * 1 + 5 = 5.5; env 1: 2, 0.5 * 2 + 4 = 5, 0.5 * 5 + 6 = 8.5
    assert_close(rnd.return_filter.returns, torch.tensor([5.5, 8.5]))
    # reward_rms over the five valid returns {1, 5.5, 2, 5, 8.5}: mean 4.4, var 35.7 / 5 = 7.14
    mean, var, count = with_prior(np.array([1.0, 5.5, 2.0, 5.0, 8.5]))
    assert_close(rnd.reward_rms.mean, torch.tensor(mean, dtype=torch.float64))
    assert_close(rnd.reward_rms.var, torch.tensor(var, dtype=torch.float64))
    assert_close(rnd.reward_rms.count, torch.tensor(5.0001, dtype=torch.float64))
    assert abs(mean - 4.4) < 1e-3 and abs(var - 7.14) < 1e-3

    # rewards: errors / std of the return, mean not subtracted, 0 on the dummy step
    std = np.sqrt(var + 1e-8)
    expected = torch.tensor([[1.0, 2.0], [0.0, 4.0], [5.0, 6.0]]) / std
    assert_close(rewards, expected.float())
    assert rewards[1, 0].item() == 0.0

    # the observation statistics learn from the valid last frames only: {1, 2, 4, 5, 6}
    obs_mean, obs_var, obs_count = with_prior(np.array([1.0, 2.0, 4.0, 5.0, 6.0]))
    assert_close(rnd.obs_rms.mean, torch.full((1, 84, 84), obs_mean, dtype=torch.float64))
    assert_close(rnd.obs_rms.var, torch.full((1, 84, 84), obs_var, dtype=torch.float64))
    assert_close(rnd.obs_rms.count, torch.tensor(obs_count, dtype=torch.float64))
    assert_close(rnd.metrics()["intrinsic_reward_mean"], (18.0 / std) / 5)

    # a second rollout continues the carry (non-episodic stream): env 0: 0.5 * 5.5 + 3 = 5.75
    next_obs2 = torch.zeros(1, 2, 4, 84, 84, dtype=torch.uint8)
    next_obs2[0, 0, -1], next_obs2[0, 1, -1] = 3, 1
    rnd.bonus({"next_obs": next_obs2, "valid": torch.ones(1, 2, dtype=torch.bool)})
    assert_close(rnd.return_filter.returns, torch.tensor([5.75, 5.25]))


def test_bonus_with_the_networks_matches_a_manual_computation():
    rnd = make_rnd(num_envs=2, gamma_int=0.9)
    rnd.obs_rms.mean.fill_(110.0)
    rnd.obs_rms.var.fill_(1600.0)
    rnd.return_filter.returns.copy_(torch.tensor([0.5, 2.0]))  # a carry from an earlier rollout
    T, N = 4, 2
    next_obs = random_obs(T, N, seed=4)
    valid = torch.tensor([[True, True], [True, False], [False, True], [True, True]])
    frames = next_obs[:, :, -1:]

    # everything from the statistics BEFORE the call
    errors = manual_errors(rnd, frames.reshape(-1, 1, 84, 84)).view(T, N) * valid
    carry = [0.5, 2.0]
    returns = torch.zeros(T, N)
    for t in range(T):
        for n in range(N):
            if valid[t, n]:
                carry[n] = 0.9 * carry[n] + errors[t, n].item()
            returns[t, n] = carry[n]
    mean, var, _ = with_prior(returns[valid].double().numpy())
    expected = errors / float(np.sqrt(var + 1e-8))
    # obs_rms starts from mean 110, var 1600 with count 1e-4
    frames_mean, frames_var, _ = with_prior(
        frames[valid].double().numpy(), prior_mean=110.0, prior_var=1600.0
    )

    chunked = copy.deepcopy(rnd)
    rewards = rnd.bonus({"next_obs": next_obs, "valid": valid})
    assert rewards.shape == (T, N)
    assert_close(rewards, expected)
    assert (rewards[~valid] == 0).all() and (rewards[valid] > 0).all()
    assert_close(rnd.return_filter.returns, torch.tensor(carry))
    assert_close(rnd.reward_rms.mean, torch.tensor(mean, dtype=torch.float64))
    # float64 statistics of float32 errors: the convolutions' rounding (NHWC on the CPU) shows at 1e-7
    assert_close(rnd.reward_rms.var, torch.tensor(var, dtype=torch.float64), rtol=1e-6, atol=1e-7)
    assert_close(rnd.obs_rms.mean, torch.from_numpy(frames_mean))
    assert_close(rnd.obs_rms.var, torch.from_numpy(frames_var), rtol=1e-6, atol=1e-6)  # float32 batch var

    # scoring in chunks changes nothing
    assert_close(chunked.bonus({"next_obs": next_obs, "valid": valid}, chunk_size=3), rewards)


def test_state_dict_round_trip_restores_statistics_and_carry():
    rnd = make_rnd(num_envs=2, gamma_int=0.9, seed=0)
    rnd.bonus({"next_obs": random_obs(3, 2, seed=5), "valid": torch.tensor([[1, 1], [0, 1], [1, 1]]).bool()})
    assert (rnd.return_filter.returns != 0).all()
    state = rnd.state_dict()
    for key in (
        "obs_rms.mean",
        "obs_rms.var",
        "obs_rms.count",
        "reward_rms.mean",
        "reward_rms.var",
        "reward_rms.count",
        "return_filter.returns",
    ):
        assert key in state, key

    fresh = make_rnd(num_envs=2, gamma_int=0.9, seed=1)
    assert not torch.equal(fresh.return_filter.returns, rnd.return_filter.returns)
    fresh.load_state_dict(state)
    for stats in ("obs_rms", "reward_rms"):
        for buf in ("mean", "var", "count"):
            a, b = getattr(getattr(fresh, stats), buf), getattr(getattr(rnd, stats), buf)
            assert torch.equal(a, b), (stats, buf)
    assert torch.equal(fresh.return_filter.returns, rnd.return_filter.returns)
    for name, value in rnd.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name

    # and the restored module scores the next rollout identically
    batch = {"next_obs": random_obs(2, 2, seed=6), "valid": torch.ones(2, 2, dtype=torch.bool)}
    assert torch.equal(fresh.bonus(batch), rnd.bonus(batch))


# --- the predictor loss ----------------------------------------------------------------------


def test_loss_uses_the_samples_selected_by_update_proportion():
    p = 0.25
    rnd = make_rnd(update_proportion=p)
    B = 64
    next_obs = random_obs(B, seed=7)
    valid = torch.ones(B, dtype=torch.bool)
    valid[::5] = False
    minibatch = {"next_obs": next_obs, "valid": valid}

    torch.manual_seed(123)
    out = rnd.loss(minibatch)
    errors = manual_errors(rnd, next_obs[:, -1:])

    torch.manual_seed(123)
    selected = (torch.rand(B) < p) & valid
    assert 0 < selected.sum() < valid.sum()
    assert_close(out["loss"], errors[selected].mean())
    assert_close(out["update_fraction"], selected.float().mean())
    # the subset matters: the mean over all valid samples is a different number
    assert not torch.isclose(errors[selected].mean(), errors[valid].mean())


def test_update_fraction_matches_update_proportion_on_a_large_batch(monkeypatch):
    p = 0.25
    rnd = make_rnd(update_proportion=p)
    monkeypatch.setattr(rnd, "prediction_error", frame_valued_errors)
    B = 20_000
    g = torch.Generator().manual_seed(8)
    next_obs = torch.randint(0, 256, (B, 4, 1, 1), generator=g, dtype=torch.uint8)
    torch.manual_seed(9)
    out = rnd.loss({"next_obs": next_obs, "valid": torch.ones(B, dtype=torch.bool)})
    torch.manual_seed(9)
    selected = torch.rand(B) < p
    assert_close(out["update_fraction"], selected.float().mean())
    assert abs(out["update_fraction"].item() - p) < 0.015
    assert_close(out["loss"], next_obs[selected, -1].float().mean())


def test_invalid_samples_never_enter_the_loss():
    rnd = make_rnd(update_proportion=1.0)
    B = 12
    next_obs = random_obs(B, seed=10)
    valid = torch.tensor([True, False, True, True, False, False, True, True, False, True, True, False])
    out = rnd.loss({"next_obs": next_obs, "valid": valid})
    errors = manual_errors(rnd, next_obs[:, -1:])
    assert_close(out["loss"], errors[valid].mean())
    assert_close(out["update_fraction"], torch.tensor(7 / 12))
    out["loss"].backward()
    grads = [p.grad.clone() for p in rnd.predictor.parameters()]

    # replacing the invalid frames changes neither the loss nor its gradient
    rnd.predictor.zero_grad()
    other = next_obs.clone()
    other[~valid] = 255 - other[~valid]
    out2 = rnd.loss({"next_obs": other, "valid": valid})
    assert_close(out2["loss"], out["loss"])
    out2["loss"].backward()
    for a, p in zip(grads, rnd.predictor.parameters(), strict=True):
        assert_close(p.grad, a)

    # with no valid sample the loss is 0, not NaN
    none = rnd.loss({"next_obs": next_obs, "valid": torch.zeros(B, dtype=torch.bool)})
    assert none["loss"].item() == 0.0 and none["update_fraction"].item() == 0.0


def test_last_frame_keeps_the_newest_frame():
    obs = random_obs(2, 3, seed=11)
    assert torch.equal(last_frame(obs), obs[:, :, 3:4])


# --- warmup on a real environment ------------------------------------------------------------


def test_warmup_on_envpool_pong():
    envs = pytest.importorskip("envs")
    pytest.importorskip("envpool")
    rnd = make_rnd(num_envs=2)
    env = envs.make("Pong-v5", num_envs=2, seed=0)
    try:
        rnd.warmup(env, num_steps=8, seed=0, chunk_steps=3)
    finally:
        env.close()
    assert_close(rnd.obs_rms.count, torch.tensor(16 + 1e-4, dtype=torch.float64))
    assert rnd.obs_rms.mean.shape == (1, 84, 84)
    mean = rnd.obs_rms.mean.mean().item()
    assert 30.0 < mean < 200.0  # grayscale Pong frames, not zeros and not [0, 1]
    assert rnd.obs_rms.mean.min() >= 0.0 and rnd.obs_rms.mean.max() <= 255.0
    assert rnd.metrics()["obs_mean"] == pytest.approx(mean)

    # the same statistics as replaying the same random agent by hand (envpool is deterministic)
    env = envs.make("Pong-v5", num_envs=2, seed=0)
    try:
        rng = np.random.default_rng(0)
        env.reset()
        frames = [env.step(rng.integers(18, size=2))[0][:, -1:] for _ in range(8)]
    finally:
        env.close()
    samples = np.concatenate(frames).astype(np.float64)
    assert samples.shape == (16, 1, 84, 84)
    expected_mean, expected_var, _ = with_prior(samples)
    assert_close(rnd.obs_rms.mean, torch.from_numpy(expected_mean))
    # merged chunk by chunk (3 + 3 + 2 steps) from float32 batch statistics
    assert_close(rnd.obs_rms.var, torch.from_numpy(expected_var), rtol=1e-6, atol=1e-6)


# --- the loss runs the networks on the selected samples only -----------------------------------


def reference_full_batch_loss(rnd: RND, minibatch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss as it was computed before: both networks on EVERY sample, then a masked mean."""
    errors = rnd.prediction_error(last_frame(minibatch["next_obs"]))
    selected = (torch.rand(errors.shape) < rnd.update_proportion) & minibatch["valid"]
    selected_f = selected.float()
    return (errors * selected_f).sum() / selected_f.sum().clamp(min=1.0)


def loss_and_predictor_grads(rnd: RND, compute) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """(loss, predictor gradients, the next number of the global random stream) of `compute()`."""
    rnd.predictor.zero_grad(set_to_none=True)
    torch.manual_seed(2024)
    loss = compute()
    after = torch.rand(1)  # the stream after the loss: the selection must draw exactly as before
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in rnd.predictor.parameters()], after


def test_loss_on_the_selected_samples_equals_the_full_batch_loss_on_real_frames():
    envs = pytest.importorskip("envs")
    pytest.importorskip("envpool")
    env = envs.make("MontezumaRevenge-v5", num_envs=4, seed=0)
    try:
        rng = np.random.default_rng(0)
        env.reset()
        steps = [env.step(rng.integers(18, size=4))[0] for _ in range(64)]
    finally:
        env.close()
    next_obs = torch.from_numpy(np.concatenate(steps))  # 256 real frame stacks, a minibatch's size
    assert next_obs.shape == (256, 4, 84, 84) and next_obs.dtype == torch.uint8
    rnd = make_rnd(num_envs=4)
    rnd.obs_rms.update(last_frame(next_obs))  # a normalization as after warm-up, not the identity
    valid = torch.ones(256, dtype=torch.bool)
    valid[::7] = False
    minibatch = {"next_obs": next_obs, "valid": valid}

    loss, grads, after = loss_and_predictor_grads(rnd, lambda: rnd.loss(minibatch)["loss"])
    ref_loss, ref_grads, ref_after = loss_and_predictor_grads(
        rnd, lambda: reference_full_batch_loss(rnd, minibatch)
    )
    assert loss.item() > 0.0
    assert torch.equal(after, ref_after)
    assert_close(loss, ref_loss, rtol=1e-6, atol=0.0)
    for grad, ref in zip(grads, ref_grads, strict=True):
        assert_close(grad, ref, rtol=1e-5, atol=1e-7 * ref.abs().max().item())


def test_an_empty_selection_gives_a_zero_loss_with_a_graph():
    rnd = make_rnd(update_proportion=0.25)
    B = 8
    out = rnd.loss({"next_obs": random_obs(B, seed=12), "valid": torch.zeros(B, dtype=torch.bool)})
    assert out["loss"].item() == 0.0 and out["update_fraction"].item() == 0.0
    assert out["loss"].requires_grad
    out["loss"].backward()
    assert all(p.grad is not None and not p.grad.any() for p in rnd.predictor.parameters())
