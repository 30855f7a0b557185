"""Random Network Distillation (Burda et al. 2018) as a bonus module.

- Target and predictor see the LAST frame of the next observation (1 x 84 x 84), normalized by a
  running mean/std of observations and clipped to [-5, 5]. The statistics start from a random
  agent (`warmup`); the policy never sees this normalization.
- The intrinsic reward is the MEAN squared error over the 512 output features.
- Rewards are divided by the running std of their discounted return (gamma_int), computed per
  env along time and never reset (the intrinsic stream is non-episodic); the mean is not subtracted.
- The predictor learns from a random `update_proportion` of each minibatch's valid samples.
- The target is frozen: no gradient, never in an optimizer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from agents.networks import RNDPredictor, RNDTarget
from explore.bonus import Batch, BonusModule
from explore.normalize import DiscountedReturnFilter, RunningMeanStd

OBS_CLIP = 5.0


def last_frame(obs: Tensor) -> Tensor:
    """(..., C, H, W) frame stack -> (..., 1, H, W), the newest frame."""
    return obs[..., -1:, :, :]


class RND(BonusModule):
    name = "rnd"

    def __init__(
        self,
        num_envs: int,
        frame_shape: tuple[int, int, int] = (1, 84, 84),
        gamma_int: float = 0.99,
        update_proportion: float = 0.25,
        out_features: int = 512,
    ):
        super().__init__()
        self.update_proportion = update_proportion
        self.target = RNDTarget(frame_shape[0], out_features)
        self.predictor = RNDPredictor(frame_shape[0], out_features)
        self.target.requires_grad_(False)
        self.obs_rms = RunningMeanStd(frame_shape)
        self.reward_rms = RunningMeanStd(())
        self.return_filter = DiscountedReturnFilter(num_envs, gamma_int)
        self._last_bonus_mean = torch.zeros(())

    def normalize_obs(self, frames: Tensor) -> Tensor:
        return self.obs_rms.normalize(frames, clip=OBS_CLIP)

    def prediction_error(self, frames: Tensor) -> Tensor:
        """Per-sample mean squared error between predictor and target features; frames (B, 1, H, W)."""
        x = self.normalize_obs(frames)
        return (self.predictor(x) - self.target(x)).pow(2).mean(-1)

    @torch.no_grad()
    def bonus(self, batch: Batch, chunk_size: int = 8192) -> Tensor:
        """Normalized intrinsic rewards for a (T, N) rollout; updates the reward and observation statistics."""
        frames = last_frame(batch["next_obs"])
        valid = batch["valid"]
        flat = frames.reshape(-1, *frames.shape[2:])
        errors = torch.cat([self.prediction_error(c) for c in flat.split(chunk_size)]).view(valid.shape)
        errors = errors * valid
        returns = self.return_filter(errors, valid)
        self.reward_rms.update(returns, valid)
        rewards = errors / self.reward_rms.std.to(errors.dtype)
        self.obs_rms.update(
            frames, valid
        )  # after scoring, so a rollout is scored with the statistics before it
        self._last_bonus_mean = (rewards.sum() / valid.sum().clamp(min=1)).detach()
        return rewards

    def loss(self, minibatch: Batch) -> dict[str, Tensor]:
        frames = last_frame(minibatch["next_obs"])
        errors = self.prediction_error(frames)
        selected = (torch.rand(errors.shape, device=errors.device) < self.update_proportion) & minibatch[
            "valid"
        ]
        selected_f = selected.to(errors.dtype)
        loss = (errors * selected_f).sum() / selected_f.sum().clamp(min=1.0)
        return {"loss": loss, "update_fraction": selected_f.mean()}

    def metrics(self) -> dict[str, float]:
        return {
            "intrinsic_reward_mean": float(self._last_bonus_mean),
            "reward_std": float(self.reward_rms.std),
            "obs_mean": float(self.obs_rms.mean.mean()),
        }

    @torch.no_grad()
    def warmup(
        self,
        envs,
        num_steps: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        to_frames: Callable[[np.ndarray], np.ndarray] | None = None,
        chunk_steps: int = 128,
    ) -> None:
        """Initialize the observation statistics from a uniformly random agent (`num_steps` steps per env).

        The reference uses 50 rollouts of 128 steps. Leaves the envs mid-episode; the caller resets.
        """
        to_frames = to_frames or (lambda obs: obs[:, -1:])
        rng = np.random.default_rng(seed)
        num_actions = int(envs.single_action_space.n)
        envs.reset()
        chunk: list[np.ndarray] = []
        for step in range(num_steps):
            obs, *_ = envs.step(rng.integers(num_actions, size=envs.num_envs))
            chunk.append(to_frames(obs))
            if len(chunk) == chunk_steps or step == num_steps - 1:
                self.obs_rms.update(torch.from_numpy(np.stack(chunk)).to(device))
                chunk.clear()


def frozen(module: nn.Module) -> bool:
    """True when no parameter of `module` takes gradients."""
    return not any(p.requires_grad for p in module.parameters())
