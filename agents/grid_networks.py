"""Policies and encoders for dict observations (MiniGrid/BabyAI, MiniHack), and dispatch by space.

Every policy here keeps `agents.networks.TwoHeadPolicy`'s output contract, so the PPO trainer
can treat them alike: `forward(obs) -> (logits (B, A), v_ext (B,), v_int (B,))`, where `obs` is a
dict of tensors with one flat leading dim B. With `use_lstm=True` the contract becomes
`forward(obs, core_state, done) -> (logits, v_ext, v_int, new_core_state)`.

Each architecture is a *torso* (observation -> (B, features)) plus heads. The torsos live in
`explore.networks`, below both agents and bonuses, since bonuses build encoders of the same
architectures (`make_encoder`, re-exported here).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import Tensor, nn

from agents.networks import TwoHeadPolicy
from explore.errors import ConfigError
from explore.networks import (  # noqa: F401 (re-exported: the torsos and encoders by their old home)
    BLSTATS_CLIP,
    MINIHACK_KEYS,
    NETWORKS,
    NLE_BLSTATS_SCALE,
    NLE_MAX_GLYPH,
    CompactMiniGridTorso,
    FrameTorso,
    MiniGridTorso,
    MiniHackTorso,
    Obs,
    VectorTorso,
    _id_count,
    check_network,
    layer_init,
    make_encoder,
    max_glyph,
    network_family,
)

CoreState = tuple[Tensor, Tensor]


class TwoHeads(nn.Module):
    """Policy logits and extrinsic/intrinsic values from one feature vector.

    Orthogonal init with a small policy gain (a near-uniform initial policy) and unit value gain,
    as in CleanRL's PPO.
    """

    def __init__(self, in_features: int, num_actions: int):
        super().__init__()
        self.policy = layer_init(nn.Linear(in_features, num_actions), std=0.01)
        self.value_ext = layer_init(nn.Linear(in_features, 1), std=1.0)
        self.value_int = layer_init(nn.Linear(in_features, 1), std=1.0)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (
            self.policy(features),
            self.value_ext(features).squeeze(-1),
            self.value_int(features).squeeze(-1),
        )


class RecurrentTwoHeadPolicy(nn.Module):
    """A torso, an optional LSTM core, and TwoHeads: the shared body of the dict-observation policies.

    Without the LSTM, `forward(obs) -> (logits, v_ext, v_int)`.
    With it, `forward(obs, core_state, done) -> (logits, v_ext, v_int, new_core_state)`:
    - `core_state` is `(h, c)`, each (1, B, hidden) (`initial_state(B)` gives zeros);
    - `obs` has leading dim T * B, time-major (T = 1 while acting; T = num_steps when a
      minibatch of whole env sequences is replayed, as in CleanRL's ppo_atari_lstm);
    - `done` has T * B entries (or shape (T, B)): where True, the state is zeroed *before* that
      observation is read, so done[t] must mark "obs[t] starts a new episode". Under the
      NEXT_STEP autoreset of envs.core that is the observation returned by the dummy step,
      i.e. done[t] = not valid[t - 1] (equivalently info["elapsed_step"] == 0 for that obs).
    """

    def __init__(self, torso: nn.Module, num_actions: int, use_lstm: bool = False):
        super().__init__()
        self.torso = torso
        self.use_lstm = use_lstm
        hidden = torso.out_dim
        self.core = nn.LSTM(hidden, hidden) if use_lstm else None
        self.heads = TwoHeads(hidden, num_actions)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> CoreState:
        if self.core is None:
            raise ValueError("this policy has no LSTM core (use_lstm=False)")
        shape = (self.core.num_layers, batch_size, self.core.hidden_size)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(
        self, obs: Obs, core_state: CoreState | None = None, done: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor] | tuple[Tensor, Tensor, Tensor, CoreState]:
        features = self.torso(obs)
        if self.core is None:
            if core_state is not None or done is not None:
                raise ValueError("core_state/done given to a policy without an LSTM core (use_lstm=False)")
            return self.heads(features)
        if done is None:
            raise ValueError("an LSTM policy needs `done` (True where an observation starts an episode)")
        if core_state is None:
            batch = done.shape[-1] if done.dim() == 2 else done.numel()
            core_state = self.initial_state(batch, features.device)
        features, core_state = self._unroll(features, core_state, done)
        return (*self.heads(features), core_state)

    def _unroll(self, features: Tensor, core_state: CoreState, done: Tensor) -> tuple[Tensor, CoreState]:
        batch = core_state[0].shape[1]
        steps = features.reshape(-1, batch, features.shape[-1])
        keep = (~done.bool()).to(features.dtype).reshape(-1, batch)
        outputs = []
        for x_t, keep_t in zip(steps, keep, strict=True):
            mask = keep_t.view(1, -1, 1)
            out, core_state = self.core(x_t.unsqueeze(0), (core_state[0] * mask, core_state[1] * mask))
            outputs.append(out)
        return torch.cat(outputs).reshape(-1, features.shape[-1]), core_state


class VectorPolicy(RecurrentTwoHeadPolicy):
    """MLP policy for flat observations; with `use_lstm` the meta-RL agent that learns across bandit instances."""

    def __init__(
        self, observation_space: gym.spaces.Box, num_actions: int, hidden: int = 128, use_lstm: bool = False
    ):
        super().__init__(VectorTorso(observation_space, out_dim=hidden), num_actions, use_lstm)


class MiniGridPolicy(RecurrentTwoHeadPolicy):
    """MiniGrid/BabyAI policy: MiniGridTorso (image ids, direction, optional mission GRU), two value heads."""

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        num_actions: int,
        hidden: int = 256,
        use_lstm: bool = False,
        **torso_kwargs: Any,
    ):
        super().__init__(
            MiniGridTorso(observation_space, out_dim=hidden, **torso_kwargs), num_actions, use_lstm
        )


class CompactMiniGridPolicy(RecurrentTwoHeadPolicy):
    """The fast MiniGrid/BabyAI policy (`network="compact"`): CompactMiniGridTorso and two value heads."""

    def __init__(
        self, observation_space: gym.spaces.Dict, num_actions: int, hidden: int = 64, use_lstm: bool = False
    ):
        super().__init__(CompactMiniGridTorso(observation_space, out_dim=hidden), num_actions, use_lstm)


class MiniHackPolicy(RecurrentTwoHeadPolicy):
    """MiniHack policy as in the NLE baseline / E3B: MiniHackTorso, an optional LSTM, two value heads.

    Defaults follow E3B's NetHackPolicyNet (64-dim glyph embedding, 5 conv layers, 1024 hidden).
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        num_actions: int,
        hidden: int = 1024,
        use_lstm: bool = False,
        **torso_kwargs: Any,
    ):
        super().__init__(
            MiniHackTorso(observation_space, out_dim=hidden, **torso_kwargs), num_actions, use_lstm
        )


SUPPORTED_SPACES = (
    "Box uint8 (C, 84, 84) stacked frames (Atari) -> TwoHeadPolicy; "
    "Dict with 'image' (MiniGrid/BabyAI) -> MiniGridPolicy; "
    "Dict with any of 'glyphs', 'glyphs_crop', 'blstats' (MiniHack/NLE) -> MiniHackPolicy; "
    "a 1-D float Box (bandits, vector tasks) -> VectorPolicy"
)


def _family(observation_space: gym.spaces.Space) -> str:
    """'frames', 'minigrid', 'minihack' or 'vector'; ConfigError naming the space and what is supported."""
    return network_family(observation_space, SUPPORTED_SPACES)


def make_policy(
    observation_space: gym.spaces.Space, num_actions: int, network: str = "default", **kwargs: Any
) -> nn.Module:
    """The policy for an observation space (one env's); kwargs go to the chosen class (e.g. use_lstm).

    `network="compact"` selects CompactMiniGridPolicy for MiniGrid/BabyAI observations.
    """
    family = _family(observation_space)
    check_network(network, family)
    if network == "compact":
        return CompactMiniGridPolicy(observation_space, num_actions, **kwargs)
    if family == "frames":
        if kwargs.pop("use_lstm", False):
            raise ConfigError(
                "--use-lstm is supported by the MiniGrid and MiniHack policies, not the Atari frame policy"
            )
        return TwoHeadPolicy(observation_space.shape[0], num_actions, **kwargs)
    if family == "minigrid":
        return MiniGridPolicy(observation_space, num_actions, **kwargs)
    if family == "vector":
        return VectorPolicy(observation_space, num_actions, **kwargs)
    return MiniHackPolicy(observation_space, num_actions, **kwargs)
