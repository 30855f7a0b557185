"""Credit assignment as pure tensor functions, shared by every agent.

Everything reduces to one backward recursion over time (dim 0), with per-step tensors:

    delta_t = reward_t + discount_t * next_value_t - value_t
    A_t     = delta_t + trace_t * A_{t+1}

Classic GAE sets discount_t = gamma * (1 - terminated_t) and trace_t = gamma * lambda * (1 - done_t).
Token-level backups (POAD/BAD) use discount 1 and trace lambda inside an action and gamma at its
last token. The rollout helper below builds those tensors for the PPO rollout layout.
"""

from __future__ import annotations

import torch
from torch import Tensor


def generalized_advantages(
    rewards: Tensor, values: Tensor, next_values: Tensor, discounts: Tensor, traces: Tensor
) -> Tensor:
    """A_t = delta_t + traces_t * A_{t+1}, delta_t = rewards_t + discounts_t * next_values_t - values_t.

    All arguments share one shape (T, ...); the recursion runs along dim 0 and stops after t = 0.
    """
    deltas = rewards + discounts * next_values - values
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + traces[t] * running
        advantages[t] = running
    return advantages


def rollout_advantages(
    rewards: Tensor,
    values: Tensor,
    last_value: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    valid: Tensor,
    gamma: float,
    lam: float,
    episodic: bool = True,
) -> tuple[Tensor, Tensor]:
    """GAE advantages and value targets for a (T, N) rollout with NEXT_STEP autoreset.

    Layout: values[t] = V(obs[t]); rewards[t], terminated[t], truncated[t] belong to the
    transition taken from obs[t]; last_value = V(obs after the last step). valid[t] is False
    on the dummy step after a done (obs[t] is the final observation, its action was ignored).

    episodic=True (the extrinsic stream): termination does not bootstrap; truncation bootstraps
    from V(final observation), which is values[t+1] under NEXT_STEP; the trace stops at any done.
    episodic=False (RND's intrinsic stream): dones are ignored. The dummy step is passed through
    with zero reward, discount 1 and trace 1, and the final observation's value is replaced by
    the reset observation's, so the return flows into the next episode as if the final
    observation had been the reset one (as in the reference, which never sees the final one).

    One approximation at the rollout boundary: when an episode ends on the last step, the reset
    observation is not known yet (its dummy step opens the next rollout), so the non-episodic
    stream bootstraps from last_value = V(final observation) there.

    Dummy steps get advantage 0 and are excluded from every loss by `valid`.
    Returns (advantages, returns) with returns = advantages + values.
    """
    valid_f = valid.to(values.dtype)
    rewards = rewards * valid_f
    if episodic:
        done = (terminated | truncated).to(values.dtype)
        next_values = torch.cat([values[1:], last_value.unsqueeze(0)])
        discounts = gamma * (1.0 - terminated.to(values.dtype))
        traces = gamma * lam * (1.0 - done)
        advantages = generalized_advantages(rewards, values, next_values, discounts, traces)
    else:
        next_values = torch.cat([values[1:], last_value.unsqueeze(0)])
        passthrough_values = torch.where(valid, values, next_values)
        next_values = torch.cat([passthrough_values[1:], last_value.unsqueeze(0)])
        discounts = torch.where(valid, gamma, 1.0).to(values.dtype)
        traces = torch.where(valid, gamma * lam, 1.0).to(values.dtype)
        advantages = generalized_advantages(rewards, passthrough_values, next_values, discounts, traces)
    advantages = advantages * valid_f
    return advantages, advantages + values
