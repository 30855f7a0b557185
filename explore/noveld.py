"""NovelD (Zhang et al. 2021) on top of RND, its plain global novelty, and RND for non-frame observations.

    r(s, s') = max(N(s') - alpha * N(s), 0) * 1{N_e(s') = 1}

Decisions, and why:
- N(.) is the RAW RND prediction error (`RND.prediction_error`: the mean squared feature error on
  the RND-normalized input), not RND's normalized reward. The difference N(s') - alpha N(s)
  compares two errors from the same networks at the same moment, so they share a scale; RND's
  reward normalization is a running statistic of a different stream and would only add lag.
  Both errors of a transition are computed with the observation statistics from before the
  rollout, which are then updated with the rollout's next observations, as `RND.bonus` does.
- The final reward is divided by a running std (`RewardNormalizer`, mode "reward" by default:
  the std of the reward itself, no mean subtracted), as in Henaff et al. 2023 (the E3B code's
  `--reward_norm int`, intrinsic coefficient 1.0). Mode "return" uses RND's rule instead (the std
  of the discounted return, per env along time), "none" leaves it raw.
- The episodic factor is `EpisodicCount(mode="first_visit")` on a configurable state key.
- `episodic_gate=False` leaves the factor out: the module then scores the plain global novelty
  max(N(s') - alpha N(s), 0), the global factor of a product such as E3B x NovelD
  (b_E3B * max(rnd(s') - alpha rnd(s), 0), alpha = 0.1 in the study); the product normalizes.
- `loss()` delegates to the wrapped RND's `loss()`: the predictor trains exactly as in RND.
- RND's networks see 84x84 frames; `ObsRND` extends it to other observations (MiniHack and
  MiniGrid dicts, flat vectors): a chosen part of the observation, flattened to a float vector,
  normalized per feature by RND's running statistics, with MLP target and predictor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from agents.networks import layer_init
from explore.bonus import Batch, BonusModule, masked_mean
from explore.counts import EpisodicCount, Obs, StateKey
from explore.errors import ConfigError
from explore.normalize import DiscountedReturnFilter, RunningMeanStd
from explore.rnd import RND, last_frame

RewardNorm = Literal["reward", "return", "none"]
REWARD_NORMS = ("reward", "return", "none")


class RewardNormalizer(nn.Module):
    """Divides a (T, N) intrinsic reward by a running std, without subtracting a mean.

    mode "reward": the std of the rewards themselves (Henaff et al. 2023's intrinsic reward
    normalization); mode "return": the std of their discounted return (gamma), per env along
    time, as RND does. Statistics are buffers, saved by `state_dict()`. Invalid steps neither
    enter the statistics nor get a reward.
    """

    def __init__(self, num_envs: int, mode: Literal["reward", "return"] = "reward", gamma: float = 0.99):
        super().__init__()
        if mode not in ("reward", "return"):
            raise ConfigError(f"reward normalization {mode!r} is invalid: use 'reward' or 'return'")
        self.mode = mode
        self.rms = RunningMeanStd(())
        self.return_filter = DiscountedReturnFilter(num_envs, gamma) if mode == "return" else None

    @torch.no_grad()
    def forward(self, rewards: Tensor, valid: Tensor) -> Tensor:
        rewards = rewards * valid
        stream = rewards if self.return_filter is None else self.return_filter(rewards, valid)
        self.rms.update(stream, valid)
        return rewards / self.rms.std.to(rewards.dtype)

    @property
    def std(self) -> Tensor:
        return self.rms.std


def make_normalizer(mode: RewardNorm, num_envs: int, gamma: float) -> RewardNormalizer | None:
    """The normalizer for `mode`, None for "none"; ConfigError naming the valid modes otherwise."""
    if mode not in REWARD_NORMS:
        raise ConfigError(
            f"reward normalization {mode!r} is invalid: use one of {', '.join(map(repr, REWARD_NORMS))}"
        )
    return None if mode == "none" else RewardNormalizer(num_envs, mode, gamma)


# --- RND on observations other than 84x84 frames -------------------------------------------


def is_frame_shape(shape: tuple[int, ...]) -> bool:
    """True for a (C, 84, 84) frame stack, the input RND's convolutional networks take."""
    return len(shape) == 3 and tuple(shape[1:]) == (84, 84)


def part_shapes(space: gym.Space, selector: StateKey) -> list[tuple[int, ...]]:
    """The shapes (without batch dims) of the parts `selector` takes from observations of `space`."""
    if not isinstance(space, gym.spaces.Dict):
        return [tuple(space.shape)]
    if selector.spec == "obs":
        return [tuple(space[k].shape) for k in sorted(space.spaces)]
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
    RND's own code: this class only converts observations before calling it.

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

    @torch.no_grad()
    def bonus(self, batch: Batch, chunk_size: int = 8192) -> Tensor:
        leading = batch["valid"].dim()
        return super().bonus({**batch, "next_obs": self.inputs(batch["next_obs"], leading)}, chunk_size)

    def loss(self, minibatch: Batch) -> dict[str, Tensor]:
        return super().loss({**minibatch, "next_obs": self.inputs(minibatch["next_obs"], 1)})

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
        """RND's warm-up, with numpy observations converted as `inputs` converts tensors."""

        def convert(obs) -> np.ndarray:
            tensors = (
                {k: torch.as_tensor(np.asarray(v)) for k, v in obs.items()}
                if isinstance(obs, dict)
                else torch.as_tensor(np.asarray(obs))
            )
            return self.inputs(tensors, 1).numpy()

        super().warmup(envs, num_steps, device, seed, to_frames or convert, chunk_steps)


def rnd_inputs(rnd: RND, obs: Obs, leading: int) -> Tensor:
    """What `rnd`'s networks see of `obs`: ObsRND's conversion, else the newest frame."""
    return rnd.inputs(obs, leading) if isinstance(rnd, ObsRND) else last_frame(obs)


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


# --- NovelD -----------------------------------------------------------------------------------


class NovelD(BonusModule):
    """NovelD: max(N(s') - alpha N(s), 0) * 1{N_e(s') = 1}, N the raw RND error (see the module docstring).

    Args:
        rnd: the RND whose prediction error is N (trained through this module's `loss`).
        num_envs: number of parallel envs (episodic counts and reward statistics are per env).
        alpha: weight of the current state's novelty (0.5 in NovelD; 0.1 in the E3B code).
        state_key: state key of the episodic first-visit count (`explore.counts.KEY_SPECS`).
        episodic_gate: multiply by 1{N_e(s') = 1}; False gives the plain global novelty.
        reward_norm: "reward", "return" or "none" (see `RewardNormalizer`).
        gamma_int: discount of the "return" normalization.
        observation_space: checks `state_key` at construction when given.
    """

    name = "noveld"
    kind = "global"

    def __init__(
        self,
        rnd: RND,
        num_envs: int,
        alpha: float = 0.5,
        state_key: str = "obs",
        episodic_gate: bool = True,
        reward_norm: RewardNorm = "reward",
        gamma_int: float = 0.99,
        observation_space: gym.Space | None = None,
    ):
        super().__init__()
        if not alpha >= 0:
            raise ConfigError(f"NovelD alpha {alpha!r} is invalid: it must be >= 0")
        self.rnd = rnd
        self.alpha = float(alpha)
        self.episodic = (
            EpisodicCount(num_envs, state_key, "first_visit", observation_space) if episodic_gate else None
        )
        self.normalizer = make_normalizer(reward_norm, num_envs, gamma_int)
        zero = torch.zeros(())
        self._last = {"intrinsic_reward_mean": zero, "novelty_mean": zero, "first_visit_fraction": zero}

    def _errors(self, inputs: Tensor, leading: int, chunk_size: int) -> Tensor:
        """Raw RND error per sample of (*lead, ...) network inputs, in chunks -> (*lead)."""
        flat = inputs.reshape(-1, *inputs.shape[leading:])
        errors = [self.rnd.prediction_error(chunk) for chunk in flat.split(chunk_size)]
        return (
            torch.cat(errors).view(inputs.shape[:leading])
            if errors
            else flat.new_zeros(inputs.shape[:leading])
        )

    @torch.no_grad()
    def global_novelty(self, batch: Batch, chunk_size: int = 8192) -> Tensor:
        """max(N(s') - alpha N(s), 0) per transition, (T, N), 0 where not valid; updates RND's input statistics.

        In a trainer's rollout obs[t + 1] is next_obs[t], so the errors are shared: one RND pass
        over T + 1 steps instead of 2T (checked once per rollout, a single host sync).
        """
        valid = batch["valid"]
        leading = valid.dim()
        nxt = rnd_inputs(self.rnd, batch["next_obs"], leading)
        cur = rnd_inputs(self.rnd, batch["obs"], leading)
        if leading == 2 and nxt.shape[0] > 1 and torch.equal(cur[1:], nxt[:-1]):
            errors = self._errors(torch.cat([cur[:1], nxt]), leading, chunk_size)
            err_cur, err_next = errors[:-1], errors[1:]
        else:
            err_cur, err_next = self._errors(torch.cat([cur, nxt]), leading, chunk_size).chunk(2)
        novelty = (err_next - self.alpha * err_cur).clamp(min=0.0) * valid
        self.rnd.obs_rms.update(nxt, valid)  # after scoring, as RND.bonus does
        return novelty

    @torch.no_grad()
    def bonus(self, batch: Batch, chunk_size: int = 8192) -> Tensor:
        """NovelD reward of each transition of a (T, N) rollout (normalized unless reward_norm="none")."""
        valid = batch["valid"]
        novelty = self.global_novelty(batch, chunk_size)
        rewards = novelty
        if self.episodic is not None:
            first_visit = self.episodic.bonus(batch)
            rewards = novelty * first_visit
            self._last["first_visit_fraction"] = masked_mean(first_visit, valid)
        self._last["novelty_mean"] = masked_mean(novelty, valid)
        if self.normalizer is not None:
            rewards = self.normalizer(rewards, valid)
        self._last["intrinsic_reward_mean"] = masked_mean(rewards, valid)
        return rewards

    def reset(self, done: Tensor) -> None:
        if self.episodic is not None:
            self.episodic.reset(done)

    def loss(self, minibatch: Batch) -> dict[str, Tensor]:
        """RND's predictor loss, unchanged."""
        return self.rnd.loss(minibatch)

    def warmup(self, *args, **kwargs) -> None:
        """RND's observation-statistics warm-up (see `RND.warmup`)."""
        self.rnd.warmup(*args, **kwargs)

    def metrics(self) -> dict[str, float]:
        out = {k: float(v) for k, v in self._last.items()}
        if self.episodic is None:
            del out["first_visit_fraction"]
        out["obs_mean"] = float(self.rnd.obs_rms.mean.mean())
        if self.normalizer is not None:
            out["reward_std"] = float(self.normalizer.std)
        return out
