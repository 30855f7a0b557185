"""Exact tests of explore.normalize: running statistics and the discounted-return filter."""

from __future__ import annotations

import numpy as np
import torch
from torch.testing import assert_close

from explore.normalize import DiscountedReturnFilter, RunningMeanStd


def f64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def with_prior(samples: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean/var of `samples` (axis 0) merged with the initial state: mean 0, var 1, weight epsilon."""
    n = samples.shape[0]
    total = n + epsilon
    mean = samples.sum(0) / total
    m2 = epsilon * 1.0 + epsilon * mean**2 + ((samples - mean) ** 2).sum(0)
    return mean, m2 / total, total


# --- RunningMeanStd --------------------------------------------------------------------------


def test_running_mean_std_hand_values():
    rms = RunningMeanStd((), epsilon=0.0)
    rms.update(torch.tensor([1.0, 2.0, 3.0]))
    rms.update(torch.tensor([[4.0], [10.0]]))  # leading dims are all samples
    # samples 1, 2, 3, 4, 10: mean 20 / 5 = 4; var (9 + 4 + 1 + 0 + 36) / 5 = 10
    assert_close(rms.mean, f64(4.0))
    assert_close(rms.var, f64(10.0))
    assert_close(rms.count, f64(5.0))
    assert_close(rms.std, f64(np.sqrt(10.0 + 1e-8)))
    assert_close(rms.normalize(torch.tensor([14.0, -1.0])), torch.tensor([10.0, -5.0]) / np.sqrt(10.0))
    assert_close(
        rms.normalize(torch.tensor([14.0]), subtract_mean=False),
        torch.tensor([14.0 / np.sqrt(10.0)], dtype=torch.float32),
    )
    assert_close(rms.normalize(torch.tensor([100.0, -100.0]), clip=2.0), torch.tensor([2.0, -2.0]))


def test_running_mean_std_matches_numpy_over_concatenated_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)).astype(np.float32) for n in (5, 1, 17, 40)]
    everything = np.concatenate(batches).astype(np.float64)

    exact = RunningMeanStd((3,), epsilon=0.0)
    default = RunningMeanStd((3,))  # epsilon 1e-4: a pseudo-sample of mean 0, var 1
    for b in batches:
        exact.update(torch.from_numpy(b))
        default.update(torch.from_numpy(b))

    assert_close(exact.mean, f64(everything.mean(0)))
    assert_close(exact.var, f64(everything.var(0)))
    assert_close(exact.count, f64(63.0))

    mean, var, count = with_prior(everything, 1e-4)
    assert_close(default.mean, f64(mean))
    assert_close(default.var, f64(var))
    assert_close(default.count, f64(count))


def test_running_mean_std_shaped_statistics():
    rng = np.random.default_rng(1)
    # (T, N, 1, 4, 4) batches of 4x4 single-channel frames, as RND feeds its observation stats
    batches = [rng.integers(0, 256, size=(t, 2, 1, 4, 4)).astype(np.uint8) for t in (3, 1, 6)]
    rms = RunningMeanStd((1, 4, 4), epsilon=0.0)
    for b in batches:
        rms.update(torch.from_numpy(b))
    samples = np.concatenate([b.reshape(-1, 1, 4, 4) for b in batches]).astype(np.float64)
    assert rms.mean.shape == (1, 4, 4) and rms.var.shape == (1, 4, 4) and rms.count.shape == ()
    assert_close(rms.mean, f64(samples.mean(0)))
    assert_close(rms.var, f64(samples.var(0)))
    assert_close(rms.count, f64(20.0))


def test_running_mean_std_mask_leaves_rows_out_exactly():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3, 1, 4, 4)).astype(np.float32)  # (T, N, *shape)
    mask = rng.random((4, 3)) < 0.5
    mask[0, 0], mask[0, 1] = True, False  # both cases present
    x[~mask] = 1e6  # masked-out rows would wreck the statistics

    masked = RunningMeanStd((1, 4, 4))
    masked.update(torch.from_numpy(x), torch.from_numpy(mask))
    gathered = RunningMeanStd((1, 4, 4))
    gathered.update(torch.from_numpy(x[mask]))
    assert_close(masked.mean, gathered.mean)
    assert_close(masked.var, gathered.var)
    assert_close(masked.count, gathered.count)

    mean, var, count = with_prior(x[mask].astype(np.float64), 1e-4)
    assert_close(masked.mean, f64(mean))
    assert_close(masked.var, f64(var))
    assert_close(masked.count, f64(count))
    assert masked.count.item() == mask.sum() + 1e-4

    # an all-False mask changes nothing
    before = {k: v.clone() for k, v in masked.state_dict().items()}
    masked.update(torch.from_numpy(x), torch.zeros(4, 3, dtype=torch.bool))
    for k, v in masked.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_running_mean_std_state_dict_round_trip():
    rng = np.random.default_rng(3)
    rms = RunningMeanStd((1, 4, 4))
    for _ in range(3):
        rms.update(torch.from_numpy(rng.normal(5.0, 3.0, size=(7, 1, 4, 4))))
    state = rms.state_dict()
    assert set(state) == {"mean", "var", "count"}

    fresh = RunningMeanStd((1, 4, 4))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.mean, rms.mean)
    assert torch.equal(fresh.var, rms.var)
    assert torch.equal(fresh.count, rms.count)
    assert fresh.mean.dtype == torch.float64

    # and both keep evolving identically
    more = torch.from_numpy(rng.normal(size=(5, 1, 4, 4)))
    rms.update(more)
    fresh.update(more)
    assert torch.equal(fresh.mean, rms.mean) and torch.equal(fresh.var, rms.var)


# --- DiscountedReturnFilter ------------------------------------------------------------------


def test_return_filter_runs_along_time_per_env_not_across_envs():
    gamma = 0.9
    rewards = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])  # (T=3, N=2)
    out = DiscountedReturnFilter(num_envs=2, gamma=gamma)(rewards)
    # env 0: 1, 0.9 * 1 + 2 = 2.9, 0.9 * 2.9 + 3 = 5.61; env 1: 10, 29, 0.9 * 29 + 30 = 56.1
    expected = torch.tensor([[1.0, 10.0], [2.9, 29.0], [5.61, 56.1]])
    assert_close(out, expected)

    # CleanRL issue #360: iterating over rewards.T runs the filter across envs with a carry of
    # one entry per time step; it gives a different (wrong) answer on the same array
    carry = torch.zeros(3)
    transposed = []
    for row in rewards.T:  # row n = env n over time
        carry = gamma * carry + row
        transposed.append(carry)
    wrong = torch.stack(transposed)
    assert_close(wrong, torch.tensor([[1.0, 2.0, 3.0], [10.9, 21.8, 32.7]]))
    # laid back out as (T, N) it disagrees with the per-env running return everywhere but t = 0
    assert_close(wrong.T, torch.tensor([[1.0, 10.9], [2.0, 21.8], [3.0, 32.7]]))
    assert not torch.isclose(out, wrong.T)[1:].any()


def test_return_filter_carry_persists_across_calls():
    gamma = 0.5
    rewards = torch.tensor([[1.0, 4.0], [2.0, 0.0], [0.0, 8.0], [6.0, 2.0]])
    whole = DiscountedReturnFilter(2, gamma)(rewards)
    # env 0: 1, 2.5, 1.25, 6.625; env 1: 4, 2, 9, 6.5
    assert_close(whole, torch.tensor([[1.0, 4.0], [2.5, 2.0], [1.25, 9.0], [6.625, 6.5]]))

    split = DiscountedReturnFilter(2, gamma)
    first = split(rewards[:2])
    assert_close(split.returns, torch.tensor([2.5, 2.0]))  # the carry is the last row
    second = split(rewards[2:])
    assert_close(torch.cat([first, second]), whole)
    assert_close(split.returns, torch.tensor([6.625, 6.5]))

    # the carry is a buffer: it travels with state_dict
    restored = DiscountedReturnFilter(2, gamma)
    restored.load_state_dict(split.state_dict())
    assert_close(restored.returns, torch.tensor([6.625, 6.5]))
    assert_close(restored(torch.tensor([[1.0, 1.0]])), torch.tensor([[4.3125, 4.25]]))


def test_return_filter_invalid_steps_leave_the_return_unchanged():
    gamma = 0.5
    f = DiscountedReturnFilter(2, gamma)
    rewards = torch.tensor([[2.0, 1.0], [100.0, 3.0], [4.0, 100.0], [1.0, 1.0]])
    valid = torch.tensor([[True, True], [False, True], [True, False], [True, True]])
    out = f(rewards, valid)
    # env 0: 2, (skip) 2, 0.5 * 2 + 4 = 5, 0.5 * 5 + 1 = 3.5
    # env 1: 1, 0.5 * 1 + 3 = 3.5, (skip) 3.5, 0.5 * 3.5 + 1 = 2.75
    assert_close(out, torch.tensor([[2.0, 1.0], [2.0, 3.5], [5.0, 3.5], [3.5, 2.75]]))
    assert_close(f.returns, torch.tensor([3.5, 2.75]))

    # an invalid step at the very start keeps the carry from the previous call
    out2 = f(torch.tensor([[9.0, 0.0]]), torch.tensor([[False, True]]))
    assert_close(out2, torch.tensor([[3.5, 1.375]]))
