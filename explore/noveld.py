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
- RND's networks see 84x84 frames; `explore.rnd.ObsRND` extends it to other observations (MiniHack
  and MiniGrid dicts, flat vectors): a chosen part of the observation, flattened to a float vector,
  normalized per feature by RND's running statistics, with MLP target and predictor.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch
from torch import Tensor

from explore.bonus import Batch, BonusContext, BonusModule, masked_mean, register_bonus
from explore.counts import EpisodicCount, StateKeyConfig, state_key_problem
from explore.errors import ConfigError
from explore.normalize import (  # noqa: F401 (RewardNormalizer, make_normalizer: re-exported)
    REWARD_NORMS,
    RewardNorm,
    RewardNormalizer,
    RewardNormConfig,
    make_normalizer,
)
from explore.obs import ObservationKind
from explore.rnd import RND, ObsRND, RNDConfig, make_rnd  # noqa: F401 (ObsRND: re-exported)

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
        nxt = self.rnd.inputs(batch["next_obs"], leading)
        cur = self.rnd.inputs(batch["obs"], leading)
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
        out = {**super().metrics(), **{k: float(v) for k, v in self._last.items()}}
        if self.episodic is None:
            del out["first_visit_fraction"]
        out["obs_mean"] = float(self.rnd.obs_rms.mean.mean())
        if self.normalizer is not None:
            out["reward_std"] = float(self.normalizer.std)
        return out


# --- configuration and registration ---------------------------------------------------------


@dataclass
class NovelDConfig(StateKeyConfig, RewardNormConfig, RNDConfig):
    noveld_alpha: float | None = None
    """weight alpha of the current state's novelty in max(N(s') - alpha N(s), 0); None: 0.5 alone,
    0.1 as the global factor of a product with an episodic factor"""
    noveld_state_key: str | None = None
    """state key of NovelD's episodic first-visit count (None: --state-key)"""

    def validate_bonus_settings(self) -> None:
        super().validate_bonus_settings()
        if self.noveld_alpha is not None and not self.noveld_alpha >= 0:
            raise ConfigError(f"--noveld-alpha {self.noveld_alpha!r} is invalid: it must be >= 0")

    def observation_problem(self, kind: ObservationKind) -> str | None:
        key = self.noveld_state_key or self.state_key
        problem = state_key_problem(key, kind)
        flag = "--noveld-state-key" if self.noveld_state_key else "--state-key"
        return RNDConfig.observation_problem(self, kind) or (problem and f"{flag}: {problem}")


@register_bonus("noveld", NovelDConfig)
def build_noveld(context: BonusContext, config: NovelDConfig) -> NovelD:
    space = context.require_space("noveld")
    gated = not context.episodic_partner
    alpha = config.noveld_alpha if config.noveld_alpha is not None else (0.5 if gated else 0.1)
    rnd = make_rnd(context.num_envs, space, config.rnd_input, context.gamma_int, config.update_proportion)
    return NovelD(
        rnd,
        context.num_envs,
        alpha=alpha,
        state_key=config.noveld_state_key or config.state_key,
        episodic_gate=gated,
        reward_norm=config.reward_norm if gated else "none",
        gamma_int=context.gamma_int,
        observation_space=space if gated else None,
    )
