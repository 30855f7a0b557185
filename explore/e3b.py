"""Exploration via Elliptical Episodic Bonuses (E3B; Henaff et al. 2022) as a bonus module.

The bonus of a transition is the elliptical novelty of the observation it leads to,

    b_t = phi(s_{t+1})^T C_t^{-1} phi(s_{t+1}),    C_t = ridge * I + sum of phi phi^T seen so far
                                                         in this episode (this env),

a count generalized to feature space: it is large in directions of phi that the episode has
not visited and falls as a direction is revisited. Decisions, and why:

- Which observation: the NEXT observation s_{t+1} (where the action led), as the reference does.
  Under NEXT_STEP autoreset the step that ends an episode carries the true final observation, so
  the last state of an episode is scored too. The reset observation of a new episode arrives on
  the dummy step, which gets bonus 0 and does not enter C^{-1} (the reference, with same-step
  autoreset, scores the reset observation in place of the final one instead).
- Order: score with C^{-1} BEFORE phi is included, then fold phi in with Sherman-Morrison
  (u = C^{-1} phi, C^{-1} <- C^{-1} - u u^T / (1 + b)). A first visit therefore scores
  |phi|^2 / ridge, and k visits of the same phi score (|phi|^2 / ridge) / (1 + k |phi|^2 / ridge).
- Episodic memory: one batched (num_envs, d, d) buffer `cov_inverse`, reset to I / ridge for an env
  after the step that ended its episode. It is carried across rollouts (an episode spans them)
  and saved by `state_dict()`. A (T, N) rollout is processed in time order, vectorized over envs.
- The encoder phi is trained ONLY by the inverse-dynamics loss (predict a_t from phi(s_t) and
  phi(s_{t+1}), cross-entropy over valid transitions). It must be its own module, not a trunk
  shared with the policy: otherwise the policy loss would reshape the feature space that the
  bonus measures novelty in (the point of inverse dynamics is to keep only what the agent can
  control). `check_separate_from(policy)` raises if parameters are shared. `bonus` runs without
  gradient, so nothing reaches the encoder through the rewards.
- Rewards are returned raw (not normalized by a running std); a caller that wants the
  reference's normalization applies it to the (T, N) output.
- Precision: `cov_dtype`, float32 by default (as the reference; the buffer is N * d * d, and
  d = 1024 in the reference), float64 available. Repeated Sherman-Morrison in float32 stays close
  to the explicit inverse for well-spread features (relative Frobenius error about 3e-6 after 200
  steps, 8e-5 after 5000, d = 16, unit-norm phi), but C^{-1} is stored with an absolute resolution
  of about 1e-7 / ridge, so the bonus of a state revisited many times bottoms out at about 1e-5
  times the first-visit bonus |phi|^2 / ridge: measured with one phi repeated, the bonus stops
  falling strictly after about 1900 revisits when |phi|^2 = 1 and after about 200 when
  |phi|^2 = 100. After reward normalization that floor is noise far below the signal of novel
  states; use float64 where long episodes must still rank heavily revisited states (it keeps
  1e-13 accuracy over 5000 steps, at twice the memory).

Two ways to drive it, sharing one update (`_score_and_update`):
- rollout mode (the trainer): `bonus(batch)` once per rollout; `batch["dones"]` drive the resets;
- step mode: `bonus_step(next_obs, valid, done)` once per env step.
`reset(done)` is deferred: it marks envs whose memory must be cleared before their next scored
step. In step mode that is the same as clearing now. In rollout mode the trainer calls `reset`
while collecting, i.e. BEFORE `bonus(batch)` has scored the steps that precede the done; clearing
then would cut every episode that straddles two rollouts. So `bonus(batch)` drops the pending
resets of envs whose episode end the batch itself records (its dones reset those envs at the right
step) and applies the rest (e.g. envs restarted by the caller) before the rollout's first step.
The one case this cannot tell apart: an env restarted by the caller between rollouts that also
ends an episode inside the next rollout keeps its old memory until that episode end.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from explore.bonus import Batch, BonusConfig, BonusContext, BonusModule, loss_minibatch, register_bonus
from explore.checkpoint import PerEnvState
from explore.errors import ConfigError
from explore.networks import make_encoder
from explore.obs import ObservationKind, cat_obs

Obs = Tensor | dict[str, Tensor]


def flatten_obs(obs: Obs, leading: int) -> Obs:
    """Merge the first `leading` dims into one, entry by entry for dicts."""
    if isinstance(obs, dict):
        return {key: value.flatten(0, leading - 1) for key, value in obs.items()}
    return obs.flatten(0, leading - 1)


def split_obs(obs: Obs, chunk_size: int) -> list[Obs]:
    """Split along dim 0 into chunks of at most `chunk_size` rows."""
    if isinstance(obs, dict):
        parts = {key: value.split(chunk_size) for key, value in obs.items()}
        return [
            {key: chunks[i] for key, chunks in parts.items()} for i in range(len(next(iter(parts.values()))))
        ]
    return list(obs.split(chunk_size))


def first_dims(obs: Obs, n: int) -> tuple[int, ...]:
    """The leading `n` dims of an observation (of any entry, for dicts)."""
    tensor = next(iter(obs.values())) if isinstance(obs, dict) else obs
    return tuple(tensor.shape[:n])


class E3B(BonusModule, PerEnvState):
    """E3B: elliptical episodic bonus over inverse-dynamics features (see the module docstring).

    Args:
        num_envs: number of parallel envs (one C^{-1} each).
        encoder: maps an observation batch (Tensor or dict of Tensors, one flat leading dim) to
            (B, embed_dim) features. It does its own input preprocessing (e.g. uint8 -> float),
            since dict observations may hold integer ids that must not be cast.
        embed_dim: d, the feature size.
        num_actions: size of the discrete action space (the inverse-dynamics classes).
        ridge: lambda in C_0 = lambda I (0.1 in the paper).
        hidden_dim: width of the inverse-dynamics MLP.
        cov_dtype: dtype of the C^{-1} buffer (float32 or float64).
    """

    name = "e3b"
    kind = "episodic"

    def __init__(
        self,
        num_envs: int,
        encoder: nn.Module,
        embed_dim: int,
        num_actions: int,
        ridge: float = 0.1,
        hidden_dim: int = 256,
        cov_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if not ridge > 0:
            raise ValueError(f"ridge {ridge!r} is invalid: it must be > 0 (C_0 = ridge * I is inverted)")
        if cov_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"cov_dtype {cov_dtype!r} is invalid: use torch.float32 or torch.float64")
        self.num_envs = num_envs
        self.embed_dim = embed_dim
        self.ridge = float(ridge)
        self.encoder = encoder
        self.inverse_head = nn.Sequential(
            nn.Linear(2 * embed_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_actions)
        )
        initial = torch.eye(embed_dim, dtype=cov_dtype) / self.ridge
        self.register_buffer("initial_inverse", initial, persistent=False)  # derived from ridge
        self.register_buffer("cov_inverse", initial.repeat(num_envs, 1, 1))
        self.register_buffer("pending_reset", torch.zeros(num_envs, dtype=torch.bool))
        self.per_env_buffers = ("cov_inverse", "pending_reset")
        self._last_bonus_mean = torch.zeros(())
        self._inverse_stats: Tensor | None = None  # sums since the last metrics(): (ce, correct, count)

    # --- features ------------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, obs: Obs, leading: int = 1, chunk_size: int = 8192) -> Tensor:
        """phi for observations with `leading` batch dims -> (*leading dims, d), no gradient.

        One batched encoder pass (in chunks of `chunk_size` rows, to bound memory on big rollouts).
        """
        dims = first_dims(obs, leading)
        flat = flatten_obs(obs, leading)
        phi = torch.cat([self.encoder(chunk) for chunk in split_obs(flat, chunk_size)])
        return phi.view(*dims, self.embed_dim)

    # --- episodic memory -----------------------------------------------------------------------

    def reset_per_env_state(self) -> None:
        """Every env starts a fresh episode (resuming with a different env count)."""
        self.cov_inverse.copy_(self.initial_inverse.expand_as(self.cov_inverse))
        self.pending_reset.zero_()

    def _clear(self, mask: Tensor) -> None:
        """C^{-1} <- I / ridge for the envs where `mask` (N,) is True (no host sync)."""
        mask = mask.to(self.cov_inverse.device, torch.bool)[:, None, None]
        self.cov_inverse.copy_(torch.where(mask, self.initial_inverse, self.cov_inverse))

    def _score_and_update(self, phi: Tensor, valid: Tensor, done: Tensor | None = None) -> Tensor:
        """The one E3B step for all envs at once; phi (N, d), valid and done (N,) bool -> bonus (N,).

        Scores phi with the current C^{-1}, folds phi into C^{-1} by Sherman-Morrison where valid,
        then clears the memory of envs whose episode ended at this step. Invalid rows are zeroed
        first, so they score 0 and leave C^{-1} unchanged (u = 0) whatever their observation is.
        """
        cinv = self.cov_inverse
        valid = valid.to(cinv.device, torch.bool)
        phi = torch.where(valid[:, None], phi.to(cinv.dtype), 0.0)
        u = torch.bmm(cinv, phi.unsqueeze(-1))  # (N, d, 1); C^{-1} is symmetric, so u^T = phi^T C^{-1}
        b = (u.squeeze(-1) * phi).sum(-1)  # (N,)
        cinv.baddbmm_(u / (1.0 + b)[:, None, None], u.transpose(1, 2), alpha=-1.0)
        if done is not None:
            self._clear(done)
        return b

    def reset(self, done: Tensor) -> None:
        """Mark envs (`done` (N,) bool) whose episodic memory is cleared before their next scored step.

        Deferred rather than immediate so that a trainer may call it while collecting a rollout it
        scores afterwards with `bonus(batch)` (see the module docstring).
        """
        self.pending_reset |= done.to(self.pending_reset.device, torch.bool)

    def _apply_pending(self, explained: Tensor | None = None) -> None:
        """Clear the pending envs, except those whose episode end `explained` (N,) already covers."""
        mask = self.pending_reset if explained is None else self.pending_reset & ~explained
        self._clear(mask)
        self.pending_reset.zero_()

    # --- the bonus -----------------------------------------------------------------------------

    @torch.no_grad()
    def bonus(self, batch: Batch, chunk_size: int = 8192) -> Tensor:
        """E3B bonus of each transition of a (T, N) rollout, scoring next_obs; 0 where not valid.

        Updates C^{-1} in time order (a loop over T, vectorized over envs), resetting an env's
        memory after the step where `dones` is True; the state carries to the next rollout.
        """
        valid, dones = batch["valid"], batch["dones"]
        phi = self.embed(batch["next_obs"], leading=2, chunk_size=chunk_size)
        self._apply_pending(explained=dones.any(0).to(self.pending_reset.device))
        # the envs each step ends an episode of, found once per rollout (one host sync): a step resets
        # only those rows, rather than rewriting every env's (d, d) memory through a mask at every step
        ended = dones.to(self.cov_inverse.device, torch.bool).nonzero()  # (K, 2) (step, env), step-major
        ends_per_step = torch.bincount(ended[:, 0], minlength=valid.shape[0]).tolist()
        ended_envs = ended[:, 1].split(ends_per_step)
        scores = []
        for t in range(valid.shape[0]):
            scores.append(self._score_and_update(phi[t], valid[t]))
            if ends_per_step[t]:
                self.cov_inverse[ended_envs[t]] = self.initial_inverse
        rewards = torch.stack(scores).float()
        self._last_bonus_mean = rewards.sum() / valid.sum().clamp(min=1)
        return rewards

    @torch.no_grad()
    def bonus_step(self, next_obs: Obs, valid: Tensor, done: Tensor | None = None) -> Tensor:
        """E3B bonus of one step of every env, (N,): scores `next_obs` (N, ...), then updates C^{-1}.

        For callers that step one at a time. `done` (optional) clears the memory of envs whose
        episode ended at this step, after scoring it; `reset(done)` after the call does the same.
        """
        phi = self.embed(next_obs, leading=1)
        self._apply_pending()
        return self._score_and_update(phi, valid, done).float()

    # --- the inverse-dynamics loss ---------------------------------------------------------------

    def inverse_logits(self, obs: Obs, next_obs: Obs) -> Tensor:
        """Action logits (B, num_actions) from (phi(s_t), phi(s_{t+1})); one encoder pass for both."""
        batch_size = first_dims(obs, 1)[0]
        phi = self.encoder(cat_obs(obs, next_obs))
        return self.inverse_head(torch.cat([phi[:batch_size], phi[batch_size:]], dim=-1))

    def loss(self, minibatch: Batch) -> dict[str, Tensor]:
        """Cross-entropy of the inverse-dynamics prediction over valid transitions.

        The dummy autoreset step is excluded: its action was ignored by the env, so it is not
        recoverable from (s_t, s_{t+1}). This loss is the only one that trains the encoder.
        """
        minibatch = loss_minibatch(minibatch, self.name)
        actions = minibatch["actions"].long()
        mask = minibatch["valid"].float()
        logits = self.inverse_logits(minibatch["obs"], minibatch["next_obs"]).float()
        ce = F.cross_entropy(logits, actions, reduction="none")
        correct = (logits.argmax(-1) == actions).float()
        count = mask.sum()
        loss = (ce * mask).sum() / count.clamp(min=1.0)
        accuracy = (correct * mask).sum() / count.clamp(min=1.0)
        stats = torch.stack([(ce.detach() * mask).sum(), (correct * mask).sum(), count])
        self._inverse_stats = stats if self._inverse_stats is None else self._inverse_stats + stats
        return {"loss": loss, "inverse_accuracy": accuracy.detach()}

    def check_separate_from(self, module: nn.Module) -> None:
        """Raise ValueError if `module` (e.g. the policy) shares parameters with this module.

        A shared encoder would be trained by the policy loss too, which E3B rules out.
        """
        ours = {id(p): name for name, p in self.named_parameters()}
        shared = sorted(ours[id(p)] for p in module.parameters() if id(p) in ours)
        if shared:
            raise ValueError(
                f"E3B's encoder must be its own module, trained only by inverse dynamics; "
                f"these parameters are shared: {', '.join(shared)}"
            )

    def metrics(self) -> dict[str, float]:
        """Mean bonus of the last rollout; inverse-dynamics loss and accuracy since the last call."""
        out = {**super().metrics(), "intrinsic_reward_mean": float(self._last_bonus_mean)}
        if self._inverse_stats is not None:
            ce_sum, correct, count = self._inverse_stats.tolist()
            out["inverse_loss"] = ce_sum / max(count, 1.0)
            out["inverse_accuracy"] = correct / max(count, 1.0)
            self._inverse_stats = None
        return out


# --- configuration and registration ---------------------------------------------------------


@dataclass
class E3BConfig(BonusConfig):
    e3b_lambda: float = 0.1
    """E3B ridge: C_0 = lambda * I"""
    e3b_dim: int = 128
    """E3B embedding size (the reference uses 1024; memory num_envs * dim^2)"""

    def validate_bonus_settings(self) -> None:
        super().validate_bonus_settings()
        if not self.e3b_lambda > 0:
            raise ConfigError(f"--e3b-lambda {self.e3b_lambda!r} is invalid: it must be > 0")
        if self.e3b_dim < 1:
            raise ConfigError(f"--e3b-dim {self.e3b_dim!r} is invalid: it must be >= 1")

    def observation_problem(self, kind: ObservationKind) -> str | None:
        if kind.name not in ("frames", "minigrid", "minihack", "vector"):
            return (
                BonusConfig.observation_problem(self, kind) or "E3B has no encoder for this observation kind"
            )
        return None


# Raw scale |phi|^2 / lambda: alone, it gets the running-std normalization of a product
@register_bonus("e3b", E3BConfig, kind="episodic", self_normalized=False)
def build_e3b(context: BonusContext, config: E3BConfig) -> E3B:
    space = context.require_space("e3b")
    if not isinstance(context.action_space, gym.spaces.Discrete):
        raise ConfigError(
            f"bonus 'e3b' needs a discrete action space in BonusContext (its inverse dynamics classify "
            f"actions); got {context.action_space!r}"
        )
    # the policy's torso architecture (the compact one under --network compact), its own weights
    encoder = make_encoder(space, config.e3b_dim, network=context.network)
    return E3B(
        context.num_envs, encoder, config.e3b_dim, int(context.action_space.n), ridge=config.e3b_lambda
    )
