"""The PPO loss shared by the pixel and text trainers (agents/ppo_loss.py), against a hand computation.

Four samples, the last one masked out, clip 0.2:

    sample  A    r = exp(logratio)  -A*r   -A*clip(r, 0.8, 1.2)  max      |r-1|>0.2
    0       1    1.5                -1.5   -1.2                  -1.2     yes
    1       -2   0.9                 1.8    1.8                   1.8     no
    2       -1   1.5                 1.5    1.2                   1.5     yes
    3 (masked: A = 5, r = 2)

    policy   = (-1.2 + 1.8 + 1.5) / 3 = 0.7
    entropy  = (0.7 + 0.9 + 0.5) / 3 = 0.7
    value    = 0.5 * (mean(1, 4, 0) + mean(0.25, 0.25, 1)) = 0.5 * (5/3 + 0.5) = 13/12
    loss     = 0.7 - 0.01 * 0.7 + 0.5 * 13/12
    approx_kl = mean((r - 1) - log r) = (2 * (0.5 - log 1.5) + (-0.1 - log 0.9)) / 3
    clipfrac = 2/3
"""

from __future__ import annotations

import math

import pytest
import torch

from agents.ppo_loss import masked_mean, ppo_loss

RATIOS = [1.5, 0.9, 1.5, 2.0]
ADVANTAGES = [1.0, -2.0, -1.0, 5.0]
MASK = torch.tensor([1.0, 1.0, 1.0, 0.0])
ENTROPY = [0.7, 0.9, 0.5, 5.0]
HEAD_1 = [1.0, 2.0, 0.0, 3.0]  # targets 0: squared errors 1, 4, 0 (9 masked)
HEAD_2 = [0.5, -0.5, 1.0, 9.0]  # squared errors 0.25, 0.25, 1 (81 masked)


def loss_of(logratio: torch.Tensor, policy_mean=None, **means):
    zeros = torch.zeros(4, dtype=torch.float64)
    return ppo_loss(
        logratio,
        torch.tensor(ADVANTAGES, dtype=torch.float64),
        torch.tensor(ENTROPY, dtype=torch.float64),
        [
            (torch.tensor(HEAD_1, dtype=torch.float64), zeros),
            (torch.tensor(HEAD_2, dtype=torch.float64), zeros),
        ],
        clip_coef=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        policy_mean=policy_mean or masked_mean(MASK),
        **means,
    )


def test_ppo_loss_matches_the_hand_computation():
    logratio = torch.tensor([math.log(r) for r in RATIOS], dtype=torch.float64, requires_grad=True)
    terms = loss_of(logratio)
    value = 0.5 * (5 / 3 + 0.5)
    assert terms.policy.item() == pytest.approx(0.7, abs=1e-12)
    assert terms.entropy.item() == pytest.approx(0.7, abs=1e-12)
    assert terms.value.item() == pytest.approx(value, abs=1e-12)
    assert terms.loss.item() == pytest.approx(0.7 - 0.01 * 0.7 + 0.5 * value, abs=1e-12)
    kl = (2 * (0.5 - math.log(1.5)) + (-0.1 - math.log(0.9))) / 3
    assert terms.approx_kl.item() == pytest.approx(kl, abs=1e-12)
    assert terms.clipfrac.item() == pytest.approx(2 / 3, abs=1e-7)  # a float32 fraction

    # the gradient of the policy term: 0 where the clipped branch is taken (sample 0), -A * r / 3
    # where the unclipped one is (samples 1 and 2), 0 for the masked sample
    terms.policy.backward()
    assert logratio.grad.tolist() == pytest.approx([0.0, 1.8 / 3, 1.5 / 3, 0.0], abs=1e-12)


def test_each_term_may_have_its_own_mask_and_a_global_count():
    logratio = torch.tensor([math.log(r) for r in RATIOS], dtype=torch.float64)
    # entropy over samples 0 and 3 only; values over all four; policy divided by a global count of 6
    terms = loss_of(
        logratio,
        policy_mean=masked_mean(MASK, torch.tensor(6.0)),
        entropy_mean=masked_mean(torch.tensor([1.0, 0.0, 0.0, 1.0])),
        value_mean=lambda x: x.mean(),
    )
    assert terms.policy.item() == pytest.approx(2.1 / 6, abs=1e-12)
    assert terms.entropy.item() == pytest.approx((0.7 + 5.0) / 2, abs=1e-12)
    assert terms.value.item() == pytest.approx(
        0.5 * ((1 + 4 + 0 + 9) / 4 + (0.25 + 0.25 + 1 + 81) / 4), abs=1e-12
    )


def test_no_value_heads_means_no_value_loss():
    logratio = torch.zeros(4, dtype=torch.float64)
    terms = ppo_loss(
        logratio,
        torch.tensor(ADVANTAGES, dtype=torch.float64),
        torch.zeros(4, dtype=torch.float64),
        [],
        clip_coef=0.2,
        ent_coef=0.0,
        vf_coef=1.0,
        policy_mean=masked_mean(MASK),
    )
    assert terms.value.item() == 0.0
    # ratio 1 everywhere: the loss is -mean(A) over the valid samples
    assert terms.loss.item() == pytest.approx(-(1.0 - 2.0 - 1.0) / 3, abs=1e-12)


def test_an_empty_mask_gives_zero_not_nan():
    terms = ppo_loss(
        torch.zeros(2),
        torch.ones(2),
        torch.ones(2),
        [(torch.ones(2), torch.zeros(2))],
        clip_coef=0.2,
        ent_coef=0.01,
        vf_coef=0.5,
        policy_mean=masked_mean(torch.zeros(2)),
    )
    assert terms.loss.item() == 0.0
