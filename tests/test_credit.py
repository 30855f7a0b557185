"""Exact tests of explore.credit against advantages computed by hand.

Conventions of every test below (NEXT_STEP autoreset, see explore.credit.rollout_advantages):
values[t] = V(obs[t]); rewards/terminated/truncated[t] belong to the step taken from obs[t];
last_value = V(obs after the last step); valid[t] is False on the dummy step after a done,
where obs[t] is the true final observation.
"""

from __future__ import annotations

import torch
from torch.testing import assert_close

from explore.credit import generalized_advantages, rollout_advantages

GAMMA = 0.9
LAM = 0.8
GL = GAMMA * LAM  # 0.72


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def flags(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


def column(values) -> torch.Tensor:
    """A (T,) list as a (T, 1) rollout of one env."""
    return t64(values).unsqueeze(1)


def bool_column(values) -> torch.Tensor:
    return flags(values).unsqueeze(1)


def reference_gae(rewards, values, last_value, gamma, lam):
    """Textbook GAE for one env and no dones (plain python floats)."""
    next_values = list(values[1:]) + [last_value]
    advantages = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


# --- generalized_advantages -------------------------------------------------------------------


def test_generalized_advantages_hand_computed_per_step_discounts_and_traces():
    # a token-level style backup: discount 1 / trace lambda inside an action, gamma at its end
    rewards = t64([1.0, 0.0, 2.0])
    values = t64([0.5, 1.0, 0.25])
    next_values = t64([1.0, 0.25, 4.0])
    discounts = t64([1.0, 0.9, 0.5])
    traces = t64([0.8, 0.72, 0.3])  # the last trace multiplies A_T = 0 and must not matter
    d0 = 1.0 + 1.0 * 1.0 - 0.5  # 1.5
    d1 = 0.0 + 0.9 * 0.25 - 1.0  # -0.775
    d2 = 2.0 + 0.5 * 4.0 - 0.25  # 3.75
    a2 = d2
    a1 = d1 + 0.72 * a2  # -0.775 + 2.7 = 1.925
    a0 = d0 + 0.8 * a1  # 1.5 + 1.54 = 3.04
    out = generalized_advantages(rewards, values, next_values, discounts, traces)
    assert_close(out, t64([a0, a1, a2]))
    assert_close(out, t64([3.04, 1.925, 3.75]))


def test_generalized_advantages_arbitrary_trailing_shape():
    g = torch.Generator().manual_seed(0)
    shape = (4, 2, 3)  # (T, N, K)
    rewards, values, next_values = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3))
    discounts = torch.rand(shape, generator=g, dtype=torch.float64)
    traces = torch.rand(shape, generator=g, dtype=torch.float64)
    out = generalized_advantages(rewards, values, next_values, discounts, traces)
    assert out.shape == shape

    # every (n, k) column is an independent recursion along dim 0, written out by hand
    expected = torch.empty(shape, dtype=torch.float64)
    for n in range(shape[1]):
        for k in range(shape[2]):
            running = 0.0
            for t in reversed(range(shape[0])):
                delta = (
                    rewards[t, n, k].item()
                    + discounts[t, n, k].item() * next_values[t, n, k].item()
                    - values[t, n, k].item()
                )
                running = delta + traces[t, n, k].item() * running
                expected[t, n, k] = running
    assert_close(out, expected)

    # one element fully by hand: the last step has no successor, so A_{T-1} = delta_{T-1}
    n, k = 1, 2
    d3 = rewards[3, n, k] + discounts[3, n, k] * next_values[3, n, k] - values[3, n, k]
    d2 = rewards[2, n, k] + discounts[2, n, k] * next_values[2, n, k] - values[2, n, k]
    assert_close(out[3, n, k], d3)
    assert_close(out[2, n, k], d2 + traces[2, n, k] * d3)


# --- rollout_advantages, episodic (extrinsic) ------------------------------------------------


def test_plain_episode_matches_reference_and_hand_values():
    rewards = [1.0, 0.0, 2.0, 1.0]
    values = [0.5, 1.0, 0.2, 0.4]
    last_value = 0.6
    # deltas: r_t + 0.9 * V_{t+1} - V_t, bootstrapping from last_value at the rollout end
    d0 = 1.0 + 0.9 * 1.0 - 0.5  # 1.4
    d1 = 0.0 + 0.9 * 0.2 - 1.0  # -0.82
    d2 = 2.0 + 0.9 * 0.4 - 0.2  # 2.16
    d3 = 1.0 + 0.9 * 0.6 - 0.4  # 1.14
    a3 = d3  # 1.14
    a2 = d2 + GL * a3  # 2.16 + 0.8208 = 2.9808
    a1 = d1 + GL * a2  # -0.82 + 2.146176 = 1.326176
    a0 = d0 + GL * a1  # 1.4 + 0.95484672 = 2.35484672
    hand = t64([a0, a1, a2, a3])
    assert_close(hand, t64([2.35484672, 1.326176, 2.9808, 1.14]))
    assert_close(hand, t64(reference_gae(rewards, values, last_value, GAMMA, LAM)))

    no = bool_column([False] * 4)
    for episodic in (True, False):
        adv, ret = rollout_advantages(
            column(rewards),
            column(values),
            t64([last_value]),
            no,
            no,
            bool_column([True] * 4),
            GAMMA,
            LAM,
            episodic=episodic,
        )
        assert_close(adv, hand.unsqueeze(1))
        assert_close(ret, hand.unsqueeze(1) + column(values))


def test_last_value_bootstrap_at_rollout_end():
    # only the last step sees last_value: A_t changes by (0.9 * 0.72^(T-1-t)) * delta(last_value)
    no = bool_column([False] * 3)
    yes = bool_column([True] * 3)
    args = (column([0.0, 0.0, 0.0]), column([0.0, 0.0, 0.0]))
    adv_a, _ = rollout_advantages(*args, t64([0.0]), no, no, yes, GAMMA, LAM)
    adv_b, _ = rollout_advantages(*args, t64([10.0]), no, no, yes, GAMMA, LAM)
    assert_close(adv_a, column([0.0, 0.0, 0.0]))
    # A_2 = 0.9 * 10 = 9; A_1 = 0.72 * 9 = 6.48; A_0 = 0.72 * 6.48 = 4.6656
    assert_close(adv_b, column([4.6656, 6.48, 9.0]))


def test_lambda_one_no_dones_is_discounted_monte_carlo_plus_bootstrap():
    rewards = [1.0, -2.0, 0.5, 3.0, 1.0]
    values = [0.3, -0.7, 2.0, 1.1, -0.4]  # arbitrary: with lam = 1 they cancel out of the return
    last_value = 2.0
    g = GAMMA
    expected = [
        1.0 + g * -2.0 + g**2 * 0.5 + g**3 * 3.0 + g**4 * 1.0 + g**5 * 2.0,
        -2.0 + g * 0.5 + g**2 * 3.0 + g**3 * 1.0 + g**4 * 2.0,
        0.5 + g * 3.0 + g**2 * 1.0 + g**3 * 2.0,
        3.0 + g * 1.0 + g**2 * 2.0,
        1.0 + g * 2.0,
    ]
    # numerically: 1 - 1.8 + 0.405 + 2.187 + 0.6561 + 1.18098 = 3.62908, ...
    assert_close(t64(expected), t64([3.62908, 2.9212, 5.468, 5.52, 2.8]))
    no = bool_column([False] * 5)
    for episodic in (True, False):
        adv, ret = rollout_advantages(
            column(rewards),
            column(values),
            t64([last_value]),
            no,
            no,
            bool_column([True] * 5),
            g,
            1.0,
            episodic=episodic,
        )
        assert_close(ret, column(expected))
        assert_close(adv, column(expected) - column(values))


# A five-step rollout of one env whose episode ends at t = 1; t = 2 is the autoreset dummy step:
# obs[2] is the true final observation (V = 3.0), obs[3] is the reset observation (V = 0.2).
EP_REWARDS = [1.0, 5.0, 7.0, 2.0, 1.0]  # 7.0 on the dummy step is garbage that must be ignored
EP_VALUES = [0.5, 1.0, 3.0, 0.2, 0.4]
EP_LAST = 0.6
EP_VALID = [True, True, False, True, True]
EP_DONE_AT_1 = [False, True, False, False, False]
EP_NONE = [False] * 5


def episode_advantages(terminated, truncated, episodic=True, rewards=EP_REWARDS, values=EP_VALUES):
    return rollout_advantages(
        column(rewards),
        column(values),
        t64([EP_LAST]),
        bool_column(terminated),
        bool_column(truncated),
        bool_column(EP_VALID),
        GAMMA,
        LAM,
        episodic=episodic,
    )


# The second episode (t = 3, 4) is the same in every episodic case.
A4 = 1.0 + 0.9 * 0.6 - 0.4  # 1.14
A3 = (2.0 + 0.9 * 0.4 - 0.2) + GL * A4  # 2.16 + 0.8208 = 2.9808


def test_termination_does_not_bootstrap_and_cuts_the_trace():
    adv, ret = episode_advantages(terminated=EP_DONE_AT_1, truncated=EP_NONE)
    a1 = 5.0 - 1.0  # no bootstrap from V(final obs) = 3.0, no trace from the future: 4.0
    a0 = (1.0 + 0.9 * 1.0 - 0.5) + GL * a1  # 1.4 + 2.88 = 4.28
    expected = [a0, a1, 0.0, A3, A4]
    assert_close(adv, column(expected))
    assert_close(adv, column([4.28, 4.0, 0.0, 2.9808, 1.14]))
    assert_close(ret, column(expected) + column(EP_VALUES))
    assert_close(ret, column([4.78, 5.0, 3.0, 3.1808, 1.54]))


def test_truncation_bootstraps_from_final_observation_and_cuts_the_trace():
    adv, ret = episode_advantages(terminated=EP_NONE, truncated=EP_DONE_AT_1)
    a1 = 5.0 + 0.9 * 3.0 - 1.0  # bootstraps from values[2] = V(final obs): 6.7
    a0 = (1.0 + 0.9 * 1.0 - 0.5) + GL * a1  # 1.4 + 4.824 = 6.224
    expected = [a0, a1, 0.0, A3, A4]
    assert_close(adv, column(expected))
    assert_close(adv, column([6.224, 6.7, 0.0, 2.9808, 1.14]))
    assert_close(ret, column(expected) + column(EP_VALUES))


def test_dummy_step_has_zero_advantage_and_does_not_leak_backwards():
    for terminated, truncated in ((EP_DONE_AT_1, EP_NONE), (EP_NONE, EP_DONE_AT_1)):
        base, base_ret = episode_advantages(terminated, truncated)
        # change the dummy step's reward and everything in the next episode
        rewards = [1.0, 5.0, -100.0, 50.0, -30.0]
        values = [0.5, 1.0, 3.0, -8.0, 9.0]
        other, other_ret = episode_advantages(terminated, truncated, rewards=rewards, values=values)
        assert base[2, 0].item() == 0.0 and other[2, 0].item() == 0.0
        assert_close(other[:2], base[:2])  # the first episode sees none of it
        # the dummy step's return target is its own value (it is masked out of every loss)
        assert base_ret[2, 0].item() == 3.0


def test_two_envs_are_independent():
    # env 0 terminates at t = 1, env 1 truncates at t = 1 and also has a different last value
    rewards = torch.stack([t64(EP_REWARDS), t64(EP_REWARDS)], dim=1)
    values = torch.stack([t64(EP_VALUES), t64(EP_VALUES)], dim=1)
    terminated = torch.stack([flags(EP_DONE_AT_1), flags(EP_NONE)], dim=1)
    truncated = torch.stack([flags(EP_NONE), flags(EP_DONE_AT_1)], dim=1)
    valid = torch.stack([flags(EP_VALID), flags(EP_VALID)], dim=1)
    adv, ret = rollout_advantages(rewards, values, t64([0.6, 1.6]), terminated, truncated, valid, GAMMA, LAM)
    a4_env1 = 1.0 + 0.9 * 1.6 - 0.4  # 2.04
    a3_env1 = 2.16 + GL * a4_env1  # 2.16 + 1.4688 = 3.6288
    expected = t64([[4.28, 6.224], [4.0, 6.7], [0.0, 0.0], [2.9808, a3_env1], [1.14, a4_env1]])
    assert_close(adv, expected)
    assert_close(ret, expected + values)


def test_done_on_last_step():
    # terminated at the last step ignores last_value; truncated bootstraps from it (= V(final obs))
    rewards, values, valid = column([1.0, 2.0]), column([0.5, 1.0]), bool_column([True, True])
    no, last = bool_column([False, False]), bool_column([False, True])
    adv_term, _ = rollout_advantages(rewards, values, t64([10.0]), last, no, valid, GAMMA, LAM)
    adv_trunc, _ = rollout_advantages(rewards, values, t64([10.0]), no, last, valid, GAMMA, LAM)
    # terminated: A1 = 2 - 1 = 1; A0 = (1 + 0.9 * 1 - 0.5) + 0.72 * 1 = 2.12
    assert_close(adv_term, column([2.12, 1.0]))
    # truncated: A1 = 2 + 0.9 * 10 - 1 = 10; A0 = 1.4 + 0.72 * 10 = 8.6
    assert_close(adv_trunc, column([8.6, 10.0]))


def test_dummy_step_at_rollout_start_is_masked():
    # the previous rollout ended with a done, so t = 0 is the dummy step (obs[0] is the final obs)
    adv, ret = rollout_advantages(
        column([9.0, 1.0, 2.0]),
        column([4.0, 0.5, 1.0]),
        t64([0.5]),
        bool_column([False] * 3),
        bool_column([False] * 3),
        bool_column([False, True, True]),
        GAMMA,
        LAM,
    )
    a2 = 2.0 + 0.9 * 0.5 - 1.0  # 1.45
    a1 = (1.0 + 0.9 * 1.0 - 0.5) + GL * a2  # 1.4 + 1.044 = 2.444
    assert_close(adv, column([0.0, a1, a2]))
    assert_close(adv, column([0.0, 2.444, 1.45]))
    assert_close(ret, column([4.0, 2.944, 2.45]))


# --- rollout_advantages, non-episodic (intrinsic) --------------------------------------------


def test_non_episodic_stream_flows_through_the_reset_observation():
    expected_adv = None
    for terminated, truncated in ((EP_DONE_AT_1, EP_NONE), (EP_NONE, EP_DONE_AT_1), (EP_NONE, EP_NONE)):
        # dones are ignored: the result does not depend on the flags, only on `valid`
        adv, ret = episode_advantages(terminated, truncated, episodic=False)
        # the dummy step is passed through with reward 0, discount 1, trace 1, and the final obs's
        # value (3.0) is replaced by the reset obs's (0.2), so t = 1 bootstraps from V(reset obs)
        a4 = 1.0 + 0.9 * 0.6 - 0.4  # 1.14
        a3 = (2.0 + 0.9 * 0.4 - 0.2) + GL * a4  # 2.9808
        a2_passthrough = (0.0 + 1.0 * 0.4 - 0.4) + 0.0 + 1.0 * a3  # delta 0, trace 1: = A3
        assert a2_passthrough == a3
        a1 = (5.0 + 0.9 * 0.2 - 1.0) + GL * a2_passthrough  # 4.18 + 2.146176 = 6.326176
        a0 = (1.0 + 0.9 * 1.0 - 0.5) + GL * a1  # 1.4 + 4.55484672 = 5.95484672
        expected_adv = column([a0, a1, 0.0, a3, a4])
        assert_close(adv, expected_adv)
        assert_close(adv, column([5.95484672, 6.326176, 0.0, 2.9808, 1.14]))
        assert_close(ret, expected_adv + column(EP_VALUES))

    # the same as plain GAE over the stream with the dummy step cut out
    ref = reference_gae([1.0, 5.0, 2.0, 1.0], [0.5, 1.0, 0.2, 0.4], EP_LAST, GAMMA, LAM)
    assert_close(expected_adv[[0, 1, 3, 4], 0], t64(ref))

    # V(final obs) and the dummy step's reward have no influence at all
    other, _ = episode_advantages(
        EP_DONE_AT_1,
        EP_NONE,
        episodic=False,
        rewards=[1.0, 5.0, 123.0, 2.0, 1.0],
        values=[0.5, 1.0, -50.0, 0.2, 0.4],
    )
    assert_close(other, expected_adv)


def test_non_episodic_dummy_step_on_last_step_passes_through_last_value():
    # done at t = 1, dummy at t = 2 = T - 1: the reset obs is the obs after the rollout
    adv, _ = rollout_advantages(
        column([1.0, 5.0, 0.0]),
        column([0.5, 1.0, 3.0]),
        t64([0.2]),
        bool_column([False, True, False]),
        bool_column([False] * 3),
        bool_column([True, True, False]),
        GAMMA,
        LAM,
        episodic=False,
    )
    a1 = 5.0 + 0.9 * 0.2 - 1.0  # bootstraps from last_value = V(reset obs): 4.18
    a0 = 1.4 + GL * a1  # 1.4 + 3.0096 = 4.4096
    assert_close(adv, column([a0, a1, 0.0]))
    assert_close(adv, column([4.4096, 4.18, 0.0]))


def test_non_episodic_float64_matches_an_exact_float64_recursion():
    """The discounts and traces are built in the values' dtype: a float64 rollout matches a plain-Python
    (float64) recursion to rounding error, where float32 discounts were off by ~3e-7 relatively."""
    T, gamma, lam = 300, 0.999, 0.95
    g = torch.Generator().manual_seed(0)
    rewards = torch.rand(T, 1, generator=g, dtype=torch.float64)
    values = torch.randn(T, 1, generator=g, dtype=torch.float64) * 10
    last_value = torch.tensor([3.25], dtype=torch.float64)
    valid = torch.ones(T, 1, dtype=torch.bool)
    valid[[40, 41, 150, T - 1]] = False  # dummy steps after episode ends, one on the last step
    none = torch.zeros(T, 1, dtype=torch.bool)
    advantages, returns = rollout_advantages(
        rewards, values, last_value, none, none, valid, gamma, lam, episodic=False
    )

    r, v, ok = rewards[:, 0].tolist(), values[:, 0].tolist() + [3.25], valid[:, 0].tolist()
    # a dummy step passes through: its value is the next step's, zero reward, discount 1, trace 1
    passthrough = [v[t] if ok[t] else v[t + 1] for t in range(T)] + [3.25]
    expected = [0.0] * T
    running = 0.0
    for t in reversed(range(T)):
        discount, trace = (gamma, gamma * lam) if ok[t] else (1.0, 1.0)
        delta = (r[t] if ok[t] else 0.0) + discount * passthrough[t + 1] - passthrough[t]
        running = delta + trace * running
        expected[t] = running if ok[t] else 0.0
    assert advantages.dtype == torch.float64
    assert_close(advantages[:, 0], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert_close(
        returns[:, 0], torch.tensor(expected, dtype=torch.float64) + values[:, 0], rtol=1e-12, atol=1e-12
    )


def test_an_empty_rollout_has_empty_advantages():
    """No steps (T = 0) or no envs: an empty result of the input's shape, not an IndexError."""
    for T, N in [(0, 3), (3, 0), (0, 0)]:
        zeros, flags = torch.zeros(T, N), torch.zeros(T, N, dtype=torch.bool)
        for episodic in (True, False):
            advantages, returns = rollout_advantages(
                zeros, zeros, torch.zeros(N), flags, flags, flags, 0.99, 0.95, episodic=episodic
            )
            assert advantages.shape == returns.shape == (T, N)
