"""Random Network Distillation (Burda et al. 2018) as a bonus module.

- Target and predictor see the LAST frame of the next observation (1 x 84 x 84), normalized by a
  running mean/std of observations and clipped to [-5, 5]. The statistics start from a random
  agent (`warmup`); the policy never sees this normalization.
- The intrinsic reward is the MEAN squared error over the 512 output features.
- Rewards are divided by the running std of their discounted return (gamma_int), computed per
  env along time and never reset (the intrinsic stream is non-episodic); the mean is not subtracted.
- The predictor learns from a random `update_proportion` of each minibatch's valid samples.
- The target is frozen: no gradient, never in an optimizer.
- Other observations (MiniHack and MiniGrid dicts, flat vectors): `ObsRND` presents a chosen part
  of the observation, flattened, to MLP networks; `make_rnd` picks by the observation space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from explore.bonus import (
    Batch,
    BonusConfig,
    BonusContext,
    BonusModule,
    invalid_flag,
    loss_minibatch,
    register_bonus,
)
from explore.counts import Obs, StateKey, state_key_problem
from explore.networks import layer_init, nature_cnn
from explore.normalize import DiscountedReturnFilter, RunningMeanStd
from explore.obs import ObservationKind, observed_keys

OBS_CLIP = 5.0


class RNDTarget(nn.Module):
    """The fixed random network whose features the predictor learns to reproduce."""

    def __init__(self, in_channels: int = 1, out_features: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nature_cnn(in_channels, nn.LeakyReLU), layer_init(nn.Linear(64 * 7 * 7, out_features))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class RNDPredictor(nn.Module):
    """The trained predictor: the same torso with a deeper head."""

    def __init__(self, in_channels: int = 1, out_features: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nature_cnn(in_channels, nn.LeakyReLU),
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.ReLU(),
            layer_init(nn.Linear(512, 512)),
            nn.ReLU(),
            layer_init(nn.Linear(512, out_features)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def channels_last(x: Tensor) -> Tensor:
    """A copy of (B, C, H, W) `x` laid out NHWC, also for C = 1, where `x.contiguous(memory_format=...)`
    keeps the NCHW strides (both layouts count as contiguous) and convolutions would stay NCHW."""
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


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
        self.pixels = True  # convolutional target and predictor (ObsRND: MLPs on other observations)
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
        if self.pixels and x.device.type == "cpu":
            x = channels_last(x)  # oneDNN's NHWC convolutions: scoring a rollout is ~1.2x faster on the CPU
        return (self.predictor(x) - self.target(x)).pow(2).mean(-1)

    def inputs(self, obs: Obs, leading: int) -> Tensor:
        """What the networks see of observations with `leading` batch dims: the newest frame (*lead, 1, H, W)."""
        return last_frame(obs)

    def _numpy_inputs(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        """`inputs` of one step of numpy observations (N, ...), as numpy (the warm-up's default)."""
        tensors = (
            {k: torch.as_tensor(np.asarray(v)) for k, v in obs.items()}
            if isinstance(obs, dict)
            else torch.as_tensor(np.asarray(obs))
        )
        return self.inputs(tensors, 1).numpy()

    @torch.no_grad()
    def bonus(self, batch: Batch, chunk_size: int = 8192) -> Tensor:
        """Normalized intrinsic rewards for a (T, N) rollout; updates the reward and observation statistics."""
        valid = batch["valid"]
        frames = self.inputs(batch["next_obs"], valid.dim())
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
        """Mean prediction error over a random `update_proportion` of the minibatch's valid samples.

        Target and predictor run on the selected samples only (a quarter of the work at the
        reference's 0.25); the selection is one `torch.rand` over the whole minibatch, drawn
        before any network runs, so the random stream is the same whatever the subset's size.
        """
        minibatch = loss_minibatch(minibatch, self.name)
        frames = self.inputs(minibatch["next_obs"], 1)
        valid = minibatch["valid"]
        selected = (torch.rand(valid.shape, device=frames.device) < self.update_proportion) & valid
        if self.update_proportion >= 1.0:  # every valid sample trains: a masked mean, no gather
            errors = self.prediction_error(frames)
            selected_f = selected.to(errors.dtype)
            loss = (errors * selected_f).sum() / selected_f.sum().clamp(min=1.0)
        else:  # an empty selection gives a 0 loss that still has a graph (0 rows, clamped count)
            errors = self.prediction_error(frames[selected])
            selected_f = selected.to(errors.dtype)
            loss = errors.sum() / selected_f.sum().clamp(min=1.0)
        return {"loss": loss, "update_fraction": selected_f.mean()}

    def metrics(self) -> dict[str, float]:
        return {
            **super().metrics(),
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
        to_frames = to_frames or self._numpy_inputs
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


# --- RND on observations other than 84x84 frames -------------------------------------------


def is_frame_shape(shape: tuple[int, ...]) -> bool:
    """True for a (C, 84, 84) frame stack, the input RND's convolutional networks take."""
    return len(shape) == 3 and tuple(shape[1:]) == (84, 84)


def part_shapes(space: gym.Space, selector: StateKey) -> list[tuple[int, ...]]:
    """The shapes (without batch dims) of the parts `selector` takes from observations of `space`."""
    if not isinstance(space, gym.spaces.Dict):
        return [tuple(space.shape)]
    if selector.spec == "obs":
        return [tuple(space[k].shape) for k in observed_keys(space.spaces)]
    if selector.spec == "xy":
        return [(2,)]
    return [tuple(space[selector.spec].shape)]


def _flat_target(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        layer_init(nn.Linear(in_features, hidden)),
        nn.LeakyReLU(),
        layer_init(nn.Linear(hidden, hidden)),
        nn.LeakyReLU(),
        layer_init(nn.Linear(hidden, out_features)),
    )


def _flat_predictor(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """One hidden layer deeper than the target, as RND's predictor is."""
    return nn.Sequential(
        nn.Flatten(),
        layer_init(nn.Linear(in_features, hidden)),
        nn.LeakyReLU(),
        layer_init(nn.Linear(hidden, hidden)),
        nn.ReLU(),
        layer_init(nn.Linear(hidden, hidden)),
        nn.ReLU(),
        layer_init(nn.Linear(hidden, out_features)),
    )


class ObsRND(RND):
    """RND on a part of an observation that is not an Atari frame stack.

    `input_key` selects the part with the state-key specs of `explore.counts` ("obs": the whole
    observation, "glyphs", "xy", any dict entry). If the part is one (C, 84, 84) entry, RND's
    convolutional networks see its newest frame; otherwise the part is flattened to a float
    vector of D features and presented to RND as a (1, 1, D) "frame", with MLP target and
    predictor. Everything else (observation and reward normalization, the loss, warm-up) is
    RND's own code: this class only converts observations (`inputs`) for it.

    Integer ids (e.g. glyphs) are used as numbers, normalized per position by RND's running
    statistics: different ids give different inputs, which is what a novelty detector needs.
    """

    def __init__(
        self,
        num_envs: int,
        observation_space: gym.Space,
        input_key: str = "obs",
        gamma_int: float = 0.99,
        update_proportion: float = 0.25,
        hidden: int = 256,
        out_features: int = 128,
    ):
        selector = StateKey(input_key, observation_space)
        shapes = part_shapes(observation_space, selector)
        pixels = len(shapes) == 1 and is_frame_shape(shapes[0])
        super().__init__(num_envs, (1, 84, 84), gamma_int, update_proportion)
        self.pixels = pixels
        self.selector = selector
        self.input_features = sum(math.prod(s) for s in shapes)
        if not self.pixels:
            # RND's constructor built the convolutional pair; the vector input replaces them
            self.target = _flat_target(self.input_features, hidden, out_features)
            self.target.requires_grad_(False)
            self.predictor = _flat_predictor(self.input_features, hidden, out_features)
            self.obs_rms = RunningMeanStd((1, 1, self.input_features))

    def inputs(self, obs: Obs, leading: int) -> Tensor:
        """What the networks see of observations with `leading` batch dims: (*lead, 1, H, W) or (*lead, 1, 1, D)."""
        parts = self.selector.parts(obs)
        if self.pixels:
            return last_frame(parts[0])
        lead = parts[0].shape[:leading]
        flat = torch.cat([p.reshape(*lead, -1).float() for p in parts], dim=-1)
        return flat.view(*lead, 1, 1, self.input_features)


def make_rnd(
    num_envs: int,
    observation_space: gym.Space,
    input_key: str = "obs",
    gamma_int: float = 0.99,
    update_proportion: float = 0.25,
) -> RND:
    """RND for this observation space: the plain RND for (C, 84, 84) frames, else ObsRND."""
    if isinstance(observation_space, gym.spaces.Box) and is_frame_shape(observation_space.shape):
        return RND(num_envs, (1, 84, 84), gamma_int, update_proportion)
    return ObsRND(num_envs, observation_space, input_key, gamma_int, update_proportion)


# --- configuration and registration ---------------------------------------------------------


@dataclass
class RNDConfig(BonusConfig):
    update_proportion: float = 0.25
    """fraction of each minibatch that trains the RND predictor"""
    rnd_warmup_iterations: int = 50
    """random-agent rollouts of num_steps steps that initialize the bonus's observation statistics
    (RND, NovelD; the reference uses 50)"""
    rnd_input: str = "obs"
    """what RND sees of a dict or vector observation: a state key (obs, xy, glyphs, message or an entry
    name), flattened; Atari frame stacks always give RND their newest frame"""

    def validate_bonus_settings(self) -> None:
        super().validate_bonus_settings()
        if not 0.0 < self.update_proportion <= 1.0:
            raise invalid_flag("update_proportion", self.update_proportion, "it must lie in (0, 1]")
        if self.rnd_warmup_iterations < 0:
            raise invalid_flag("rnd_warmup_iterations", self.rnd_warmup_iterations, "it must be >= 0")

    def observation_problem(self, kind: ObservationKind) -> str | None:
        problem = state_key_problem(self.rnd_input, kind)
        return BonusConfig.observation_problem(self, kind) or (problem and f"--rnd-input: {problem}")


@register_bonus("rnd", RNDConfig)
def build_rnd(context: BonusContext, config: RNDConfig) -> RND:
    space = context.require_space("rnd")
    return make_rnd(context.num_envs, space, config.rnd_input, context.gamma_int, config.update_proportion)
