"""The PPO loss, shared by the pixel trainer (agents/ppo.py) and the text trainer (agents/llm/ppo.py).

    loss = policy - ent_coef * entropy + vf_coef * value
    policy = mean(max(-A * r, -A * clip(r, 1 - eps, 1 + eps))),  r = exp(logratio)
    value  = 0.5 * sum over value heads of mean((V - R)^2)

Every mean is masked (padding, dummy autoreset steps, tokens outside an action), and each term may
have its own mask: `masked_mean(mask, count)` builds one. Under torchrun `count` is the GLOBAL
number of valid samples, so each rank's mean is its share of the global mean (agents/ppo.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

MaskedMean = Callable[[Tensor], Tensor]


def masked_mean(mask: Tensor, count: Tensor | None = None) -> MaskedMean:
    """x -> sum(x * mask) / count; `count` defaults to the mask's sum (at least 1)."""
    mask = mask.float()
    count = mask.sum().clamp(min=1) if count is None else count
    return lambda x: (x * mask).sum() / count


@dataclass
class PPOLoss:
    loss: Tensor  # what to minimize
    policy: Tensor  # the clipped surrogate (negated)
    value: Tensor
    entropy: Tensor
    approx_kl: Tensor  # mean((r - 1) - log r), detached
    clipfrac: Tensor  # fraction of samples with |r - 1| > clip_coef, detached


def ppo_loss(
    logratio: Tensor,
    advantages: Tensor,
    entropy: Tensor,
    values: Sequence[tuple[Tensor, Tensor]],
    *,
    clip_coef: float,
    ent_coef: float,
    vf_coef: float,
    policy_mean: MaskedMean,
    entropy_mean: MaskedMean | None = None,
    value_mean: MaskedMean | None = None,
) -> PPOLoss:
    """The clipped PPO loss of a minibatch.

    logratio: log pi_new(a) - log pi_old(a) per sample; advantages: (already normalized) advantages
    of the same shape; entropy: the new policy's entropy per sample; values: (prediction, target)
    per value head (none: a critic-free method). `policy_mean` averages the policy term, approx_kl
    and clipfrac; `entropy_mean` and `value_mean` default to it.
    """
    entropy_mean = entropy_mean or policy_mean
    value_mean = value_mean or policy_mean
    ratio = logratio.exp()
    policy = policy_mean(
        torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip_coef, 1 + clip_coef))
    )
    value = torch.zeros((), device=logratio.device)
    if values:
        value = 0.5 * sum(
            (value_mean((prediction - target) ** 2) for prediction, target in values), start=value
        )
    entropy_term = entropy_mean(entropy)
    with torch.no_grad():
        approx_kl = policy_mean((ratio - 1) - logratio)
        clipfrac = policy_mean(((ratio - 1.0).abs() > clip_coef).float())
    return PPOLoss(
        loss=policy - ent_coef * entropy_term + vf_coef * value,
        policy=policy,
        value=value,
        entropy=entropy_term,
        approx_kl=approx_kl,
        clipfrac=clipfrac,
    )
