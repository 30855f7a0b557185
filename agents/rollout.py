"""The rollout of the pixel trainer: T steps of N envs on the device, collected group by group.

The envs are split into groups stepped asynchronously: while group g simulates on envpool's
threads, the policy acts for group g+1 (`collect`). Per step the only host sync is the action copy
the envs need; rewards, flags, observations and episode statistics go to device buffers, read once
per update (`finished_episodes`). Autoreset is NEXT_STEP (envs/core.py): the step after a done is a
dummy, marked invalid (valid_t = not done_{t-1}).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Categorical

from envs.core import VecEnv
from envs.metrics import DistinctIds
from explore.obs import Obs, allocate_obs, cat_obs, map_obs, obs_to_tensor, write_obs

CoreState = tuple[Tensor, ...]
# (obs, recurrent state or None, episode starts) -> (logits, value_ext, value_int, new state or None)
PolicyStep = Callable[[Obs, CoreState | None, Tensor], tuple[Tensor, Tensor, Tensor, CoreState | None]]


def as_policy_step(policy: Callable[..., Any]) -> PolicyStep:
    """The PolicyStep of a two-head policy (agents.grid_networks): feed-forward policies take the
    observation alone and keep no state; recurrent ones take (obs, state, episode starts)."""

    def policy_step(obs: Obs, state: CoreState | None, starts: Tensor):
        return (*policy(obs), None) if state is None else policy(obs, state, starts)

    return policy_step


def flatten_time(x: Tensor) -> Tensor:
    """(T, N, ...) -> (T * N, ...)"""
    return x.reshape(-1, *x.shape[2:])


class RolloutBuffer:
    """Device storage of one rollout, the envs' latest observation and their running episodes.

    `policy_step` evaluates the policy (feed-forward or recurrent alike, see PolicyStep);
    `initial_state` is the recurrent core's zero state (None: feed-forward); `info_metrics` are
    the suite's exploration measures read from each step's info (e.g. Montezuma's rooms).
    """

    def __init__(
        self,
        groups: Sequence[VecEnv],
        policy_step: PolicyStep,
        num_steps: int,
        device: torch.device,
        *,
        reward_clip: float,
        use_amp: bool = False,
        initial_state: CoreState | None = None,
        info_metrics: Sequence[DistinctIds] = (),
    ):
        self.groups = list(groups)
        self.policy_step = policy_step
        self.device = device
        self.reward_clip = reward_clip
        self.use_amp = use_amp
        self.info_metrics = list(info_metrics)
        group_size = groups[0].num_envs
        self.slices = [slice(g * group_size, (g + 1) * group_size) for g in range(len(groups))]
        T, N = num_steps, group_size * len(groups)
        self.num_steps, self.num_envs = T, N
        obs_space = groups[0].single_observation_space

        self.obs = allocate_obs(obs_space, (T, N), device)
        self.actions = torch.zeros((T, N), dtype=torch.long, device=device)
        self.logprobs = torch.zeros((T, N), device=device)
        self.rewards = torch.zeros((T, N), device=device)  # clipped to [-reward_clip, reward_clip]
        self.terminated = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.truncated = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.valid = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.values_ext = torch.zeros((T, N), device=device)
        self.values_int = torch.zeros((T, N), device=device)
        # recurrent policies: starts[t] marks obs[t] as an episode's first (the obs after a dummy step)
        self.starts = torch.zeros((T, N), dtype=torch.bool, device=device)

        self.next_obs = allocate_obs(obs_space, (N,), device)
        self.next_valid = torch.ones(N, dtype=torch.bool, device=device)
        self.next_start = torch.ones(N, dtype=torch.bool, device=device)
        self.core_state = initial_state
        self.start_state: CoreState | None = None  # the core state at the rollout's first step

        # episode statistics: running sums, and per step the finished episodes' figures (NaN: none)
        self.episode_return = torch.zeros(N, device=device)
        self.episode_length = torch.zeros(N, dtype=torch.long, device=device)
        self.finished_returns = torch.full((T, N), float("nan"), device=device)
        self.finished_lengths = torch.zeros((T, N), dtype=torch.long, device=device)
        self.finished_success = torch.full((T, N), float("nan"), device=device)

    def reset(self) -> None:
        """Reset every env and take its first observation."""
        for envs, sl in zip(self.groups, self.slices, strict=True):
            first_obs, _ = envs.reset()
            write_obs(self.next_obs, sl, obs_to_tensor(first_obs, self.device))

    def collect(self) -> None:
        """Fill the rollout; group g simulates while the policy acts for group g+1."""
        self.start_state = None if self.core_state is None else tuple(x.clone() for x in self.core_state)
        for step in range(self.num_steps):
            for g in range(len(self.groups)):
                if step > 0:
                    self.observe(g, step - 1)
                self.act(g, step)
        for g in range(len(self.groups)):
            self.observe(g, self.num_steps - 1)

    def evaluate(self, obs: Obs, state: CoreState | None, starts: Tensor):
        """The policy's (logits, v_ext, v_int, new state) without gradients (bf16 autocast on cuda)."""
        with torch.no_grad(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.use_amp):
            return self.policy_step(obs, state, starts)

    def act(self, g: int, step: int) -> None:
        """Choose actions for group g from its latest observation and send them to its envs."""
        sl = self.slices[g]
        group_obs = map_obs(lambda x: x[sl], self.next_obs)
        write_obs(self.obs, (step, sl), group_obs)
        self.valid[step, sl] = self.next_valid[sl]
        self.starts[step, sl] = self.next_start[sl]
        group_state = None if self.core_state is None else tuple(x[:, sl] for x in self.core_state)
        logits, v_ext, v_int, group_state = self.evaluate(group_obs, group_state, self.next_start[sl])
        if self.core_state is not None:
            for full, part in zip(self.core_state, group_state, strict=True):
                full[:, sl] = part.float()
        # no argument validation: it costs a host sync per step, and NaN logits still fail in sample()
        pi = Categorical(logits=logits.float(), validate_args=False)
        action = pi.sample()
        self.actions[step, sl] = action
        self.logprobs[step, sl] = pi.log_prob(action)
        self.values_ext[step, sl] = v_ext.float()
        self.values_int[step, sl] = v_int.float()
        self.groups[g].send(action.cpu().numpy())  # the one host copy per step: the envs need the actions

    def observe(self, g: int, step: int) -> None:
        """Receive group g's step results and record them on the device."""
        sl, device = self.slices[g], self.device
        o, r, term, trunc, info = self.groups[g].recv()
        r = torch.as_tensor(r, device=device)
        term = torch.as_tensor(term, device=device)
        trunc = torch.as_tensor(trunc, device=device)
        self.rewards[step, sl] = r.clamp(-self.reward_clip, self.reward_clip)
        self.terminated[step, sl] = term
        self.truncated[step, sl] = trunc
        write_obs(self.next_obs, sl, obs_to_tensor(o, device))
        done = term | trunc
        self.next_valid[sl] = ~done
        self.next_start[sl] = ~self.valid[step, sl]  # the obs after a dummy step is a reset observation
        self.episode_return[sl] += r
        self.episode_length[sl] += self.valid[step, sl].long()
        self.finished_returns[step, sl] = torch.where(done, self.episode_return[sl], torch.nan)
        self.finished_lengths[step, sl] = self.episode_length[sl]
        if "success" in info:
            success = torch.as_tensor(info["success"], device=device)
            self.finished_success[step, sl] = torch.where(done, success.float(), torch.nan)
        self.episode_return[sl] *= ~done
        self.episode_length[sl] *= ~done
        for metric in self.info_metrics:
            metric.observe(info)

    def next_obs_sequence(self) -> Obs:
        """The observation after each step (the true final observation at a done), (T, N, ...)."""
        return cat_obs(map_obs(lambda x: x[1:], self.obs), map_obs(lambda x: x.unsqueeze(0), self.next_obs))

    def bootstrap_values(self) -> tuple[Tensor, Tensor]:
        """(v_ext, v_int) of the envs' latest observation, to bootstrap the rollout's last step."""
        _, v_ext, v_int, _ = self.evaluate(self.next_obs, self.core_state, self.next_start)
        return v_ext.float(), v_int.float()

    def flat(self, next_obs: Obs, **per_step: Tensor) -> dict[str, Any]:
        """The (T * N)-flattened batch of the PPO update, with extra (T, N) tensors (advantages, returns)."""
        return {
            "obs": map_obs(flatten_time, self.obs),
            "next_obs": map_obs(flatten_time, next_obs),
            "actions": self.actions.reshape(-1),
            "logprobs": self.logprobs.reshape(-1),
            "valid": self.valid.reshape(-1),
            "starts": self.starts.reshape(-1),
            **{key: value.reshape(-1) for key, value in per_step.items()},
        }

    def finished_episodes(self) -> Tensor:
        """(E, 3) return, length and success (NaN: the suite reports none) of the episodes that ended
        in this rollout, then cleared for the next one."""
        done_mask = ~torch.isnan(self.finished_returns)
        episodes = torch.stack(
            [
                self.finished_returns[done_mask],
                self.finished_lengths[done_mask].float(),
                self.finished_success[done_mask],
            ],
            1,
        )
        self.finished_returns.fill_(float("nan"))
        self.finished_success.fill_(float("nan"))
        return episodes
