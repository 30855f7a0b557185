"""Credit assignment as pure tensor functions, shared by every agent.

Everything reduces to one backward recursion over time (dim 0), with per-step tensors:

    delta_t = reward_t + discount_t * next_value_t - value_t
    A_t     = delta_t + trace_t * A_{t+1}

Classic GAE sets discount_t = gamma * (1 - terminated_t) and trace_t = gamma * lambda * (1 - done_t).
Token-level backups (POAD/BAD) use discount 1 and trace lambda inside an action and gamma at its
last token: `token_advantages` packs each env's action tokens into one time axis, builds those
tensors and calls the same recursion. Nothing else in the package computes advantages.

Group- and tree-based token credit for language agents sits below it: GRPO's group-normalized
advantages, TEMPO's prefix-tree advantages, KTAE's key-token values and the high-entropy
forking-token mask.

Two rollout layouts exist, named after gymnasium's autoreset modes:
- NEXT_STEP (envpool, `rollout_advantages`): the step after a done is a dummy step whose
  observation is the true final one.
- SAME_STEP (text envs, `action_advantages`, `token_advantages`): the env resets inside the done
  step; the true final observation's value, needed to bootstrap a truncation, comes separately
  as `final_values`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def generalized_advantages(
    rewards: Tensor, values: Tensor, next_values: Tensor, discounts: Tensor, traces: Tensor
) -> Tensor:
    """A_t = delta_t + traces_t * A_{t+1}, delta_t = rewards_t + discounts_t * next_values_t - values_t.

    All arguments share one shape (T, ...); the recursion runs along dim 0 and stops after t = 0.
    An empty rollout (T = 0, or no envs) has no advantages: the result is empty, of the same shape.
    """
    deltas = rewards + discounts * next_values - values
    advantages = torch.empty_like(deltas)
    running = deltas.new_zeros(deltas.shape[1:])
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
        next_values = torch.cat([values[1:], last_value.unsqueeze(0)])
        advantages = _episodic_advantages(rewards, values, next_values, terminated, truncated, gamma, lam)
    else:
        next_values = torch.cat([values[1:], last_value.unsqueeze(0)])
        passthrough_values = torch.where(valid, values, next_values)
        next_values = torch.cat([passthrough_values[1:], last_value.unsqueeze(0)])
        # built in the values' dtype: a Python float in torch.where is rounded to float32 first
        one = values.new_ones(())
        discounts = torch.where(valid, one * gamma, one)
        traces = torch.where(valid, one * (gamma * lam), one)
        advantages = generalized_advantages(rewards, passthrough_values, next_values, discounts, traces)
    advantages = advantages * valid_f
    return advantages, advantages + values


def _episodic_advantages(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
) -> Tensor:
    """GAE where termination does not bootstrap and any done cuts the trace."""
    done = (terminated | truncated).to(values.dtype)
    discounts = gamma * (1.0 - terminated.to(values.dtype))
    traces = gamma * lam * (1.0 - done)
    return generalized_advantages(rewards, values, next_values, discounts, traces)


def _next_turn_values(
    values: Tensor, last_value: Tensor, truncated: Tensor, final_values: Tensor | None
) -> Tensor:
    """V of the state after each turn under SAME_STEP autoreset: the next turn's value, the
    bootstrap value after the last turn, and the true final observation's value on truncation."""
    next_values = torch.cat([values[1:], last_value.unsqueeze(0)])
    if final_values is not None:
        next_values = torch.where(truncated, final_values.to(values.dtype), next_values)
    elif bool(truncated.any()):
        raise ValueError(
            "truncated turns need final_values (V of the true final observation) under SAME_STEP "
            "autoreset; pass final_values=... or zeros to bootstrap from 0"
        )
    return next_values


def action_advantages(
    rewards: Tensor,
    values: Tensor,
    last_value: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
    final_values: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Action-level GAE over turns for a (T, N) SAME_STEP rollout (one value per action).

    values[t] = V(obs[t]); last_value = V(obs after the last turn); final_values[t] = V(true
    final observation) where truncated[t] (required if any turn is truncated). Termination does
    not bootstrap, truncation bootstraps from final_values, and the trace stops at any done.
    Returns (advantages, returns).
    """
    next_values = _next_turn_values(values, last_value, truncated, final_values)
    advantages = _episodic_advantages(rewards, values, next_values, terminated, truncated, gamma, lam)
    return advantages, advantages + values


def pack_tokens(x: Tensor, mask: Tensor) -> Tensor:
    """(T, N, A) per-turn token slots -> (L, N): each env's real tokens in time order, zero-padded at
    the end, L = the most real tokens any env has. `unpack_tokens` is the inverse."""
    num_turns, num_envs, slots = mask.shape
    flat_mask = mask.permute(1, 0, 2).reshape(num_envs, num_turns * slots)
    positions = flat_mask.long().cumsum(1) - 1
    length = int(flat_mask.sum(1).max()) if flat_mask.numel() else 0
    env_index = torch.arange(num_envs, device=mask.device).unsqueeze(1).expand_as(flat_mask)
    packed = x.new_zeros(num_envs, length)
    flat_x = x.permute(1, 0, 2).reshape(num_envs, num_turns * slots)
    packed[env_index[flat_mask], positions[flat_mask]] = flat_x[flat_mask]
    return packed.T


def unpack_tokens(packed: Tensor, mask: Tensor) -> Tensor:
    """(L, N) packed tokens -> (T, N, A) slots (zeros where mask is False)."""
    num_turns, num_envs, slots = mask.shape
    flat_mask = mask.permute(1, 0, 2).reshape(num_envs, num_turns * slots)
    positions = flat_mask.long().cumsum(1) - 1
    env_index = torch.arange(num_envs, device=mask.device).unsqueeze(1).expand_as(flat_mask)
    flat = packed.new_zeros(num_envs, num_turns * slots)
    flat[flat_mask] = packed.T[env_index[flat_mask], positions[flat_mask]]
    return flat.reshape(num_envs, num_turns, slots).permute(1, 0, 2)


TOKEN_CREDIT_MODES = ("bad", "ntpo")


def token_advantages(
    rewards: Tensor,
    token_values: Tensor,
    token_mask: Tensor,
    last_value: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
    mode: str = "bad",
    final_values: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Token-level GAE for language agents (POAD's BAD, or naive token-level PPO), SAME_STEP layout.

    Turn t of env n generated the tokens where token_mask[t, n] is True (left-aligned, at least
    one per turn); token_values[t, n, j] = V of the prefix before token j (j = 0: the prompt).
    rewards/terminated/truncated are per turn (T, N); last_value and final_values as in
    `action_advantages`, read as the value of the next prompt.

    mode="bad" (POAD): inside an action delta = V_{j+1} - V_j and the trace is lambda (no
    discount, no reward); at the action's last token delta = r + gamma V_{t+1,0} - V_{t,last}
    and the trace is gamma lambda, cut at dones. With lambda = 1 the return at each action's first
    token equals the action-level return. mode="ntpo" discounts by gamma between every token,
    which shrinks each reward by gamma^(tokens after it was earned): the discrepancy POAD fixes.

    This is one call of `generalized_advantages` on each env's packed token stream.
    Returns (advantages, returns), (T, N, A), zero on padding slots.
    """
    if mode not in TOKEN_CREDIT_MODES:
        raise ValueError(f"token credit mode {mode!r} is not one of {TOKEN_CREDIT_MODES}")
    dtype = token_values.dtype
    mask = token_mask.bool()
    lengths = mask.sum(-1)
    if bool((lengths == 0).any()):
        raise ValueError("every turn needs at least one action token (token_mask has an empty turn)")
    slot = torch.arange(mask.shape[-1], device=mask.device)
    is_last = slot == (lengths - 1).unsqueeze(-1)

    next_turn_values = _next_turn_values(token_values[..., 0], last_value, truncated, final_values)
    inner_next = torch.cat([token_values[..., 1:], torch.zeros_like(token_values[..., :1])], dim=-1)
    next_values = torch.where(is_last, next_turn_values.unsqueeze(-1), inner_next)

    not_terminated = 1.0 - terminated.to(dtype).unsqueeze(-1)
    not_done = 1.0 - (terminated | truncated).to(dtype).unsqueeze(-1)
    inner_discount = 1.0 if mode == "bad" else gamma
    inner_trace = lam if mode == "bad" else gamma * lam
    discounts = torch.where(is_last, gamma * not_terminated, torch.full_like(token_values, inner_discount))
    traces = torch.where(is_last, gamma * lam * not_done, torch.full_like(token_values, inner_trace))
    token_rewards = torch.where(is_last, rewards.to(dtype).unsqueeze(-1), torch.zeros_like(token_values))

    packed = [pack_tokens(x, mask) for x in (token_rewards, token_values, next_values, discounts, traces)]
    advantages = unpack_tokens(generalized_advantages(*packed), mask)
    returns = (advantages + token_values) * mask.to(dtype)
    return advantages, returns


def group_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO: (r_i - mean of its group) / (sample std of its group + eps), for rewards (B,).

    group_ids (B,) are integer labels (any values); a group of one gets advantage 0. The caller
    broadcasts each response's advantage over its tokens.
    """
    _, groups = torch.unique(group_ids, return_inverse=True)
    num_groups = int(groups.max()) + 1 if groups.numel() else 0
    rewards = rewards.to(torch.float64 if rewards.dtype == torch.float64 else torch.float32)
    counts = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device).index_add_(
        0, groups, torch.ones_like(rewards)
    )
    means = torch.zeros_like(counts).index_add_(0, groups, rewards) / counts
    centered = rewards - means[groups]
    sq = torch.zeros_like(counts).index_add_(0, groups, centered**2)
    stds = torch.sqrt(sq / (counts - 1).clamp(min=1))
    scale = stds[groups] + eps
    # a group of one (or of equal rewards, with eps = 0) has nothing to compare against: advantage 0
    return torch.where(scale > 0, centered / scale.clamp(min=torch.finfo(scale.dtype).tiny), 0.0)


def prefix_tree_advantages(token_ids: Tensor, mask: Tensor, rewards: Tensor, eps: float = 1e-6) -> Tensor:
    """TEMPO (prefix-to-tree) token advantages for ONE group of G responses, (G, L) -> (G, L).

    A_ij = (r_i - mean_G + V(P_ij) - V(P_i,j-1)) / (std_G + eps), where P_ij is response i's
    prefix through token j, V(P) the mean reward of the group's responses that share P, and
    V(empty prefix) = mean_G. The extra term is non-zero only where the tree branches. The
    trie is built in one pass over the tokens (O(G L)); std is the sample std, as in
    `group_advantages`. Zero on padding.
    """
    num_responses, length = token_ids.shape
    ids = token_ids.tolist()
    valid = mask.bool().tolist()
    children: dict[tuple[int, int], int] = {}
    node_of = [[0] * length for _ in range(num_responses)]  # node 0 is the root (empty prefix)
    for i in range(num_responses):
        node = 0
        for j in range(length):
            if not valid[i][j]:
                break
            node = children.setdefault((node, ids[i][j]), len(children) + 1)
            node_of[i][j] = node
    nodes = torch.tensor(node_of, dtype=torch.long, device=rewards.device).view(num_responses, length)
    mask = mask.bool()
    rewards = rewards.to(torch.float64 if rewards.dtype == torch.float64 else torch.float32)
    num_nodes = len(children) + 1
    # every response passes through each node of its path once: sum and count rewards per node
    flat_nodes = nodes[mask]
    flat_rewards = rewards.unsqueeze(1).expand_as(nodes)[mask]
    sums = torch.zeros(num_nodes, dtype=rewards.dtype, device=rewards.device).index_add_(
        0, flat_nodes, flat_rewards
    )
    counts = torch.zeros_like(sums).index_add_(0, flat_nodes, torch.ones_like(flat_rewards))
    mean = rewards.mean()
    sums[0], counts[0] = mean, 1.0
    node_values = sums / counts.clamp(min=1)
    prefix_values = node_values[nodes]
    parent_values = torch.cat(
        [torch.full_like(prefix_values[:, :1], float(mean)), prefix_values[:, :-1]], dim=1
    )
    std = rewards.std(unbiased=True) if num_responses > 1 else torch.zeros_like(mean)
    advantages = (rewards.unsqueeze(1) - mean + prefix_values - parent_values) / (std + eps)
    return advantages * mask.to(advantages.dtype)


def forking_token_mask(entropies: Tensor, mask: Tensor, top_fraction: float = 0.2) -> Tensor:
    """The top `top_fraction` highest-entropy valid tokens of the batch (Wang et al. 2025).

    Exactly ceil(top_fraction * valid tokens) are selected; ties at the threshold are broken by
    torch.topk's order. Policy-gradient terms outside the mask are dropped by the caller.
    """
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    mask = mask.bool()
    count = math.ceil(top_fraction * int(mask.sum()))
    selected = torch.zeros_like(mask)
    if count == 0:
        return selected
    scores = torch.where(mask, entropies.float(), torch.full_like(entropies.float(), -math.inf))
    top = torch.topk(scores.flatten(), count).indices
    selected.view(-1)[top] = True
    return selected & mask


def _log_choose(n: Tensor, k: Tensor) -> Tensor:
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def fisher_exact_pvalues(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """Two-sided Fisher exact test of 2x2 tables [[a, b], [c, d]], batched over any shape.

    The p-value sums the hypergeometric probabilities (margins fixed) of every table no more
    likely than the observed one, as scipy.stats.fisher_exact does.
    """
    a, b, c, d = (x.to(torch.float64) for x in (a, b, c, d))
    total, row, col = a + b + c + d, a + b, a + c
    x = torch.arange(int(total.max()) + 1 if total.numel() else 1, dtype=torch.float64, device=a.device)
    x = x.view(-1, *([1] * a.dim()))
    low, high = torch.clamp(row + col - total, min=0), torch.minimum(row, col)
    feasible = (x >= low) & (x <= high)
    safe = torch.where(feasible, x, low)
    log_p = _log_choose(col, safe) + _log_choose(total - col, row - safe) - _log_choose(total, row)
    log_observed = _log_choose(col, a) + _log_choose(total - col, row - a) - _log_choose(total, row)
    as_extreme = feasible & (log_p <= log_observed + 1e-7)
    return torch.where(as_extreme, log_p.exp(), 0.0).sum(0).clamp(max=1.0)


def _entropy_bits(p: Tensor) -> Tensor:
    q = 1.0 - p
    return -(torch.xlogy(p, p) + torch.xlogy(q, q)) / math.log(2.0)


def key_token_values(token_ids: Tensor, mask: Tensor, correct: Tensor) -> Tensor:
    """KTAE's key-token values for ONE group of G rollouts, (G, L) -> (G, L), each in (-1, 1).

    Per vocabulary token, a 2x2 table counts the correct and incorrect rollouts that contain it
    (a, b) and that do not (c, d). Strength: (1 - Fisher p-value) times the information gain of
    "contains the token" about correctness, as a fraction of the outcome's entropy (both in
    [0, 1]). Direction: the arcsine difference asin sqrt(a / (a + c)) - asin sqrt(b / (b + d)),
    divided by pi / 2. The value is strength * direction; the caller adds it to the GRPO advantage
    of each token. This weighting of the paper's three statistics is ours (stated here). A group
    that is all correct or all incorrect carries no information: zeros.
    """
    mask = mask.bool()
    correct = correct.bool()
    num_rollouts = token_ids.shape[0]
    vocab, inverse = torch.unique(token_ids[mask], return_inverse=True)
    contains = torch.zeros(num_rollouts, vocab.numel(), dtype=torch.bool, device=token_ids.device)
    rows = torch.arange(num_rollouts, device=token_ids.device).unsqueeze(1).expand_as(token_ids)[mask]
    contains[rows, inverse] = True
    a = (contains & correct.unsqueeze(1)).sum(0).double()
    b = (contains & ~correct.unsqueeze(1)).sum(0).double()
    num_correct = correct.sum().double()
    c, d = num_correct - a, (num_rollouts - num_correct) - b
    outcome_entropy = _entropy_bits(num_correct / num_rollouts)
    if float(outcome_entropy) == 0.0:
        return torch.zeros(token_ids.shape, dtype=torch.float64, device=token_ids.device)
    with_token, without_token = a + b, c + d
    conditional = (
        with_token * _entropy_bits(a / with_token.clamp(min=1))
        + without_token * _entropy_bits(c / without_token.clamp(min=1))
    ) / num_rollouts
    information = ((outcome_entropy - conditional) / outcome_entropy).clamp(0.0, 1.0)
    strength = (1.0 - fisher_exact_pvalues(a, b, c, d)) * information
    direction = (torch.asin(torch.sqrt(a / (a + c))) - torch.asin(torch.sqrt(b / (b + d)))) / (math.pi / 2)
    values = torch.zeros(token_ids.shape, dtype=torch.float64, device=token_ids.device)
    values[mask] = (strength * direction)[inverse]
    return values
