"""Exact tests of the token-level credit in explore.credit (POAD/BAD, NTPO, GRPO, TEMPO, forking mask).

Reference values come from literal transcriptions of the recursions in
shared/reference/algorithms.md (nested Python loops over turns and tokens), or from hand arithmetic.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from explore.credit import (
    action_advantages,
    fisher_exact_pvalues,
    forking_token_mask,
    group_advantages,
    key_token_values,
    pack_tokens,
    prefix_tree_advantages,
    token_advantages,
    unpack_tokens,
)


def turns_to_tensors(turn_values: list[list[list[float]]], slots: int):
    """[[turn token values per env]] (N lists of T lists) -> (T, N, A) values and mask."""
    num_envs, num_turns = len(turn_values), len(turn_values[0])
    values = torch.zeros(num_turns, num_envs, slots, dtype=torch.float64)
    mask = torch.zeros(num_turns, num_envs, slots, dtype=torch.bool)
    for n, env_turns in enumerate(turn_values):
        for t, tokens in enumerate(env_turns):
            values[t, n, : len(tokens)] = torch.tensor(tokens, dtype=torch.float64)
            mask[t, n, : len(tokens)] = True
    return values, mask


def reference_token_gae(
    values, mask, rewards, last_value, terminated, truncated, final_values, gamma, lam, mode
):
    """The POAD recursion of algorithms.md, one env and one token at a time."""
    num_turns, num_envs, _ = values.shape
    advantages = torch.zeros_like(values)
    for n in range(num_envs):
        gae = 0.0
        for t in reversed(range(num_turns)):
            length = int(mask[t, n].sum())
            for j in reversed(range(length)):
                v = float(values[t, n, j])
                if j == length - 1:
                    if truncated[t, n]:
                        next_v = float(final_values[t, n])
                    elif t + 1 < num_turns:
                        next_v = float(values[t + 1, n, 0])
                    else:
                        next_v = float(last_value[n])
                    not_term = 0.0 if terminated[t, n] else 1.0
                    not_done = 0.0 if (terminated[t, n] or truncated[t, n]) else 1.0
                    delta = float(rewards[t, n]) + gamma * next_v * not_term - v
                    gae = delta + gamma * lam * not_done * gae
                else:
                    next_v = float(values[t, n, j + 1])
                    inner_gamma = 1.0 if mode == "bad" else gamma
                    gae = inner_gamma * next_v - v + inner_gamma * lam * gae
                advantages[t, n, j] = gae
    return advantages


# A hand-built episode: three turns of 2, 3 and 1 tokens, rewards 0, 1, 2, terminal at the end.
EPISODE_VALUES = [[[0.5, 0.6], [0.7, 0.2, 0.9], [1.5]]]
EPISODE_REWARDS = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
NO = torch.zeros(3, 1, dtype=torch.bool)
TERMINAL = torch.tensor([[False], [False], [True]])


def test_bad_with_lambda_one_equals_action_level_return_on_every_token():
    values, mask = turns_to_tensors(EPISODE_VALUES, slots=3)
    gamma = 0.9
    _, returns = token_advantages(
        EPISODE_REWARDS, values, mask, torch.zeros(1, dtype=torch.float64), TERMINAL, NO, gamma, 1.0, "bad"
    )
    action_returns = [0.0 + gamma * 1.0 + gamma**2 * 2.0, 1.0 + gamma * 2.0, 2.0]  # 2.52, 2.8, 2.0
    for t, length in enumerate([2, 3, 1]):
        assert_close(returns[t, 0, :length], torch.full((length,), action_returns[t], dtype=torch.float64))
    # and the action-level GAE agrees at each action's first token
    _, act_returns = action_advantages(
        EPISODE_REWARDS, values[..., 0], torch.zeros(1, dtype=torch.float64), TERMINAL, NO, gamma, 1.0
    )
    assert_close(act_returns[:, 0], torch.tensor(action_returns, dtype=torch.float64))


def test_naive_token_backup_discounts_by_tokens_after_the_reward():
    """NTPO's return at token j of turn t: gamma^(tokens left in the action) on r_t, and so on."""
    values, mask = turns_to_tensors(EPISODE_VALUES, slots=3)
    gamma = 0.9
    _, returns = token_advantages(
        EPISODE_REWARDS, values, mask, torch.zeros(1, dtype=torch.float64), TERMINAL, NO, gamma, 1.0, "ntpo"
    )
    g2 = 2.0  # last turn: one token
    g1 = [gamma**2 * 1.0 + gamma**3 * g2, gamma * 1.0 + gamma**2 * g2, 1.0 + gamma * g2]
    g0 = [gamma * 0.0 + gamma**2 * g1[0], 0.0 + gamma * g1[0]]
    assert_close(returns[0, 0, :2], torch.tensor(g0, dtype=torch.float64))
    assert_close(returns[1, 0, :3], torch.tensor(g1, dtype=torch.float64))
    assert_close(returns[2, 0, :1], torch.tensor([g2], dtype=torch.float64))
    # the discrepancy against the action-level return at the first action's first token
    assert returns[0, 0, 0] == pytest.approx(gamma**4 * 1.0 + gamma**5 * 2.0)
    assert returns[0, 0, 0] < 0.9 * 1.0 + 0.81 * 2.0


@pytest.mark.parametrize("mode", ["bad", "ntpo"])
def test_token_gae_matches_the_literal_recursion_with_dones_and_bootstraps(mode):
    generator = torch.Generator().manual_seed(3)
    num_turns, num_envs, slots = 6, 3, 4
    lengths = torch.randint(1, slots + 1, (num_turns, num_envs), generator=generator)
    mask = torch.arange(slots) < lengths.unsqueeze(-1)
    values = torch.randn(num_turns, num_envs, slots, generator=generator, dtype=torch.float64) * mask
    rewards = torch.randn(num_turns, num_envs, generator=generator, dtype=torch.float64)
    terminated = torch.zeros(num_turns, num_envs, dtype=torch.bool)
    truncated = torch.zeros(num_turns, num_envs, dtype=torch.bool)
    terminated[1, 0] = terminated[5, 2] = True
    truncated[3, 1] = truncated[2, 0] = True
    final_values = torch.randn(num_turns, num_envs, generator=generator, dtype=torch.float64)
    last_value = torch.randn(num_envs, generator=generator, dtype=torch.float64)
    gamma, lam = 0.95, 0.9
    advantages, returns = token_advantages(
        rewards, values, mask, last_value, terminated, truncated, gamma, lam, mode, final_values=final_values
    )
    expected = reference_token_gae(
        values, mask, rewards, last_value, terminated, truncated, final_values, gamma, lam, mode
    )
    assert_close(advantages, expected)
    assert_close(returns, (expected + values) * mask)
    assert (advantages[~mask] == 0).all()


def test_one_token_actions_reduce_to_action_level_gae():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(5, 2, 1, generator=generator, dtype=torch.float64)
    mask = torch.ones(5, 2, 1, dtype=torch.bool)
    rewards = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    terminated = torch.zeros(5, 2, dtype=torch.bool)
    terminated[2, 1] = True
    truncated = torch.zeros(5, 2, dtype=torch.bool)
    truncated[1, 0] = True
    final_values = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    last_value = torch.randn(2, generator=generator, dtype=torch.float64)
    for mode in ("bad", "ntpo"):
        adv, _ = token_advantages(
            rewards, values, mask, last_value, terminated, truncated, 0.9, 0.8, mode, final_values
        )
        act, _ = action_advantages(
            rewards, values[..., 0], last_value, terminated, truncated, 0.9, 0.8, final_values
        )
        assert_close(adv[..., 0], act)


def test_action_advantages_hand_values_with_truncation():
    rewards = torch.tensor([[1.0], [0.0], [2.0]], dtype=torch.float64)
    values = torch.tensor([[0.5], [0.4], [0.3]], dtype=torch.float64)
    truncated = torch.tensor([[False], [True], [False]])
    final_values = torch.tensor([[0.0], [10.0], [0.0]], dtype=torch.float64)
    gamma, lam = 0.5, 0.5
    adv, _ = action_advantages(
        rewards, values, torch.tensor([1.0], dtype=torch.float64), NO, truncated, gamma, lam, final_values
    )
    a2 = 2.0 + 0.5 * 1.0 - 0.3
    a1 = 0.0 + 0.5 * 10.0 - 0.4  # bootstraps from the final observation, trace cut
    a0 = (1.0 + 0.5 * 0.4 - 0.5) + 0.25 * a1
    assert_close(adv[:, 0], torch.tensor([a0, a1, a2], dtype=torch.float64))
    with pytest.raises(ValueError, match="final_values"):
        action_advantages(
            rewards, values, torch.tensor([1.0], dtype=torch.float64), NO, truncated, gamma, lam
        )


def test_bad_input_is_named():
    values, mask = turns_to_tensors(EPISODE_VALUES, slots=3)
    with pytest.raises(ValueError, match="'gae'"):
        token_advantages(EPISODE_REWARDS, values, mask, torch.zeros(1), TERMINAL, NO, 0.9, 1.0, "gae")
    mask[1, 0] = False
    with pytest.raises(ValueError, match="at least one action token"):
        token_advantages(EPISODE_REWARDS, values, mask, torch.zeros(1), TERMINAL, NO, 0.9, 1.0)


def test_pack_unpack_round_trip_keeps_time_order():
    values, mask = turns_to_tensors([[[1, 2], [3], [4, 5, 6]], [[7], [8, 9], [10]]], slots=3)
    packed = pack_tokens(values, mask)
    assert packed.shape == (6, 2)
    assert packed[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    assert packed[:, 1].tolist() == [7, 8, 9, 10, 0, 0]
    assert_close(unpack_tokens(packed, mask), values)


def test_group_advantages_hand_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 3.0, 2.0], dtype=torch.float64)
    groups = torch.tensor([7, 7, 7, 7, 2, 2, 9])
    adv = group_advantages(rewards, groups, eps=0.0)
    std_a = math.sqrt(4 * 0.25 / 3)  # sample std of (1, 0, 0, 1)
    std_b = math.sqrt(2.0)  # sample std of (5, 3)
    expected = [0.5 / std_a, -0.5 / std_a, -0.5 / std_a, 0.5 / std_a, 1 / std_b, -1 / std_b, 0.0]
    assert_close(adv, torch.tensor(expected, dtype=torch.float64))
    # identical rewards in a group: zero advantage, no division by zero
    assert_close(group_advantages(torch.ones(4), torch.zeros(4, dtype=torch.long)), torch.zeros(4))


def brute_force_prefix_tree(token_ids, mask, rewards, eps):
    num_responses, length = token_ids.shape
    mean, std = rewards.mean(), rewards.std(unbiased=True)
    seqs = [token_ids[i][mask[i]].tolist() for i in range(num_responses)]

    def prefix_value(i, j):  # mean reward of responses sharing seqs[i][: j + 1]; j = -1: all
        sharing = [
            k for k in range(num_responses) if seqs[k][: j + 1] == seqs[i][: j + 1] and len(seqs[k]) > j
        ]
        return float(rewards[sharing].mean())

    out = torch.zeros(num_responses, length, dtype=torch.float64)
    for i in range(num_responses):
        for j in range(len(seqs[i])):
            out[i, j] = (rewards[i] - mean + prefix_value(i, j) - prefix_value(i, j - 1)) / (std + eps)
    return out


def test_prefix_tree_advantages_equal_brute_force_prefix_sharing():
    generator = torch.Generator().manual_seed(5)
    num_responses, length = 8, 7
    # few distinct tokens so that prefixes are shared and branch at various depths
    token_ids = torch.randint(0, 2, (num_responses, length), generator=generator)
    token_ids[:4, :2] = torch.tensor([1, 0])
    lengths = torch.randint(2, length + 1, (num_responses,), generator=generator)
    mask = torch.arange(length) < lengths.unsqueeze(1)
    rewards = torch.randn(num_responses, generator=generator, dtype=torch.float64)
    adv = prefix_tree_advantages(token_ids, mask, rewards, eps=1e-6)
    assert_close(adv, brute_force_prefix_tree(token_ids, mask, rewards, 1e-6))


def test_prefix_tree_without_branching_is_grpo():
    token_ids = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    mask = torch.ones(3, 3, dtype=torch.bool)
    rewards = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    adv = prefix_tree_advantages(token_ids, mask, rewards)
    grpo = group_advantages(rewards, torch.zeros(3, dtype=torch.long))
    # the branch happens at the first token; after it each token's prefix holds one response
    assert_close(adv[:, 1:], grpo.unsqueeze(1).expand(3, 2))
    assert_close(adv[:, 0], (rewards - rewards.mean() + rewards - rewards.mean()) / (rewards.std() + 1e-6))


def test_forking_token_mask_selects_exactly_the_top_fraction():
    entropies = torch.tensor([[0.1, 0.9, 0.5, 0.3, 7.0], [0.8, 0.2, 0.7, 0.6, 0.4]])
    mask = torch.tensor([[True, True, True, True, False], [True, True, True, True, True]])
    selected = forking_token_mask(entropies, mask, top_fraction=0.2)  # 9 valid -> ceil(1.8) = 2
    assert selected.sum() == 2
    assert selected[0, 1] and selected[1, 0]  # 0.9 and 0.8; the masked 7.0 is never chosen
    assert not selected[0, 4]
    assert forking_token_mask(entropies, mask, 1.0).equal(mask)
    with pytest.raises(ValueError, match="top_fraction"):
        forking_token_mask(entropies, mask, 0.0)


def test_fisher_exact_pvalues_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(1)
    tables = torch.randint(0, 9, (40, 4), generator=generator)
    ours = fisher_exact_pvalues(*tables.unbind(1))
    for table, p in zip(tables.tolist(), ours.tolist(), strict=True):
        expected = stats.fisher_exact([[table[0], table[1]], [table[2], table[3]]]).pvalue
        assert p == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_key_token_values_direction_strength_and_hand_value():
    # token 7 appears in every correct rollout and no incorrect one; token 1 appears everywhere
    token_ids = torch.tensor([[1, 7, 2], [1, 7, 3], [1, 7, 0], [1, 4, 0], [1, 5, 0], [1, 6, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    correct = torch.tensor([True, True, True, False, False, False])
    values = key_token_values(token_ids, mask, correct)
    # token 7: a=3, b=0, c=0, d=3; Fisher p = 2 / C(6, 3) = 0.1; information gain = 1 bit of 1
    assert values[0, 1] == pytest.approx((1 - 0.1) * 1.0 * 1.0)
    assert values[0, 0] == 0.0  # token 1 is in every rollout: no information, no direction
    assert values[3, 1] < 0  # token 4 appears only in an incorrect rollout
    assert (values[~mask] == 0).all()
    assert (values.abs() < 1).all()
    assert not key_token_values(token_ids, mask, torch.ones(6, dtype=torch.bool)).any()
