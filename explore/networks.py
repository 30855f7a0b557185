"""Networks that bonuses and agents share: the Nature CNN, the policies' torsos, and `make_encoder`.

This module sits below both the bonus modules (explore/rnd.py, explore/e3b.py, ...) and the agents
(agents/networks.py, agents/grid_networks.py): it imports neither. Each torso here (observation ->
(B, features)) is the single definition of its architecture; the agents' policies put heads on
them, and `make_encoder` gives a fresh torso with its own weights to bonuses that learn an
embedding of the same shape (E3B's inverse-dynamics encoder).

Ids are embedded, never scaled as intensities: MiniGrid's image channels are object/colour/state
ids and MiniHack's glyphs are ids into NetHack's ~6000 glyphs, so a learned table per id is the
right inductive bias (neighbouring ids mean unrelated things).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from explore.errors import ConfigError
from explore.obs import NLE_KEYS, observation_kind


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def nature_cnn(in_channels: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """The DQN Nature torso: 84x84 input -> 64 x 7 x 7 = 3136 features."""
    return nn.Sequential(
        layer_init(nn.Conv2d(in_channels, 32, 8, stride=4)),
        activation(),
        layer_init(nn.Conv2d(32, 64, 4, stride=2)),
        activation(),
        layer_init(nn.Conv2d(64, 64, 3, stride=1)),
        activation(),
        nn.Flatten(),
    )


def frame_torso(in_channels: int, hidden: int = 448) -> nn.Sequential:
    """RND's policy torso: the Nature CNN and two dense layers, [0, 1]-scaled frames -> (B, hidden)."""
    return nn.Sequential(
        nature_cnn(in_channels),
        layer_init(nn.Linear(64 * 7 * 7, 256)),
        nn.ReLU(),
        layer_init(nn.Linear(256, hidden)),
        nn.ReLU(),
    )


Obs = Mapping[str, Tensor]

NLE_MAX_GLYPH = 5976  # nle.nethack.MAX_GLYPH in nle 1.x, used when nle is not installed
MINIHACK_KEYS = NLE_KEYS

# Divisors for NLE's 27 bottom-line stats (nle 1.x order), chosen as typical upper bounds so a
# MiniHack agent sees values of order 1; the result is clipped to +-BLSTATS_CLIP so that a long
# NetHack game's score, gold or turn counter cannot saturate the MLP.
NLE_BLSTATS_SCALE: tuple[float, ...] = (
    79.0,  # x
    21.0,  # y
    25.0,  # strength (3..25)
    125.0,  # strength percentage
    25.0,  # dexterity
    25.0,  # constitution
    25.0,  # intelligence
    25.0,  # wisdom
    25.0,  # charisma
    1000.0,  # score
    100.0,  # hit points
    100.0,  # max hit points
    50.0,  # depth
    1000.0,  # gold
    100.0,  # energy
    100.0,  # max energy
    10.0,  # armor class (10 is unarmored, lower is better, can go negative)
    30.0,  # monster level (polymorphed)
    30.0,  # experience level
    10000.0,  # experience points
    10000.0,  # time (turns)
    6.0,  # hunger state (0..6)
    5.0,  # carrying capacity (0..5)
    10.0,  # dungeon number
    50.0,  # level number
    4096.0,  # condition bitmask
    1.0,  # alignment (-1, 0, 1)
)
BLSTATS_CLIP = 5.0


def max_glyph() -> int:
    """NetHack's glyph count from nle when it is installed (imported lazily), else nle 1.x's 5976."""
    try:
        from nle import nethack
    except ImportError:
        return NLE_MAX_GLYPH
    return int(nethack.MAX_GLYPH)


def _id_count(space: gym.spaces.Space) -> int:
    """How many ids an integer Box or Discrete can hold: its bound + 1 (the size of an embedding table)."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.start + space.n)
    return int(np.max(space.high)) + 1


class FrameTorso(nn.Module):
    """TwoHeadPolicy's torso (Nature CNN + two dense layers) on uint8 frames, as a standalone encoder.

    `frame_torso` is the one definition of that architecture; TwoHeadPolicy builds on it too.
    """

    def __init__(self, in_channels: int, out_dim: int):
        super().__init__()
        self.net = frame_torso(in_channels, out_dim)
        self.out_dim = out_dim

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs.float() / 255.0)


class MiniGridTorso(nn.Module):
    """MiniGrid/BabyAI observation -> (B, out_dim).

    The (7, 7, 3) image's object, colour and state ids each get a learned `embedding_dim` vector
    (one table with a per-channel offset); the three are concatenated into 3 * embedding_dim
    channels for a three-layer conv net (7x7 -> 7x7 -> 4x4 -> 4x4). The facing direction, which
    the egocentric view does not show, gets its own embedding. BabyAI's mission can be read by a
    GRU over its bytes (`use_mission`); MiniGrid tasks have a fixed mission, so it is off by
    default.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        out_dim: int = 256,
        embedding_dim: int = 16,
        direction_dim: int = 8,
        use_mission: bool = False,
        mission_dim: int = 128,
    ):
        super().__init__()
        image_space = observation_space["image"]
        height, width, channels = image_space.shape
        self.ids_per_channel = _id_count(image_space)
        self.register_buffer(
            "channel_offset", torch.arange(channels) * self.ids_per_channel, persistent=False
        )
        self.image_embed = nn.Embedding(channels * self.ids_per_channel, embedding_dim)
        self.conv = nn.Sequential(
            layer_init(nn.Conv2d(channels * embedding_dim, 32, 3, padding=1)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 3, stride=2, padding=1)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, padding=1)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            features = self.conv(torch.zeros(1, channels * embedding_dim, height, width)).shape[1]

        self.direction_embed = None
        if "direction" in observation_space.spaces:
            self.direction_embed = nn.Embedding(_id_count(observation_space["direction"]), direction_dim)
            features += direction_dim

        self.use_mission = use_mission
        if use_mission:
            if "mission" not in observation_space.spaces:
                raise ConfigError(f"use_mission=True needs a 'mission' key; the space is {observation_space}")
            self.mission_embed = nn.Embedding(256, 32, padding_idx=0)
            self.mission_gru = nn.GRU(32, mission_dim, batch_first=True)
            features += mission_dim

        self.fc = nn.Sequential(layer_init(nn.Linear(features, out_dim)), nn.ReLU())
        self.out_dim = out_dim

    def encode_mission(self, mission: Tensor) -> Tensor:
        """(B, L) zero-padded bytes -> (B, mission_dim): the GRU state after the last byte."""
        mission = mission.long()
        lengths = (mission != 0).sum(1).clamp(min=1)
        longest = int(lengths.max())  # one host sync; BabyAI pads to 512 bytes, missions are short
        outputs, _ = self.mission_gru(self.mission_embed(mission[:, :longest]))
        return outputs[torch.arange(len(mission), device=mission.device), lengths - 1]

    def forward(self, obs: Obs) -> Tensor:
        image = obs["image"].long() + self.channel_offset  # (B, H, W, C) ids, one id range per channel
        embedded = self.image_embed(image).flatten(3)  # (B, H, W, C * E)
        parts = [self.conv(embedded.permute(0, 3, 1, 2))]
        if self.direction_embed is not None:
            parts.append(self.direction_embed(obs["direction"].long().reshape(-1)))
        if self.use_mission:
            parts.append(self.encode_mission(obs["mission"]))
        return self.fc(torch.cat(parts, dim=1))


class CompactMiniGridTorso(nn.Module):
    """MiniGrid/BabyAI observation -> (B, out_dim) with a few small convolutions, for speed on a CPU.

    The architecture of rl-starter-files' ACModel (the torch-ac baseline NovelD's MiniGrid code also
    builds on): the (7, 7, 3) image ids as float planes through Conv(3->16, 2x2), max-pool 2x2,
    Conv(16->32, 2x2), Conv(32->64, 2x2) -> 64 features (7x7 -> 6x6 -> 3x3 -> 2x2 -> 1x1), about 25k
    multiply-adds per observation against MiniGridTorso's ~1.8M. The facing direction is appended
    one-hot, then one tanh layer of `out_dim` units. The mission is not read (fixed in MiniGrid tasks).
    """

    def __init__(self, observation_space: gym.spaces.Dict, out_dim: int = 64):
        super().__init__()
        height, width, channels = observation_space["image"].shape
        self.conv = nn.Sequential(
            nn.Conv2d(channels, 16, 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 2),
            nn.ReLU(),
            nn.Conv2d(32, 64, 2),
            nn.ReLU(),
            nn.Flatten(),
        )
        # the (B, H, W, C) image permuted to (B, C, H, W) is already channels-last in memory: weights in the
        # same layout spare oneDNN a reorder per call (measured ~25 % off forward + backward on 1 thread)
        self.conv.to(memory_format=torch.channels_last)
        with torch.no_grad():
            features = self.conv(torch.zeros(1, channels, height, width)).shape[1]
        self.num_directions = (
            _id_count(observation_space["direction"]) if "direction" in observation_space.spaces else 0
        )
        self.fc = nn.Sequential(layer_init(nn.Linear(features + self.num_directions, out_dim)), nn.Tanh())
        self.out_dim = out_dim

    def forward(self, obs: Obs) -> Tensor:
        parts = [self.conv(obs["image"].permute(0, 3, 1, 2).float())]
        if self.num_directions:
            direction = obs["direction"].long().reshape(-1)
            parts.append(torch.nn.functional.one_hot(direction, self.num_directions).float())
        return self.fc(torch.cat(parts, dim=1))


def _glyph_conv(
    embedding_dim: int, num_layers: int, hidden_channels: int = 16, out_channels: int = 8
) -> nn.Sequential:
    """NLE baseline's glyph conv: `num_layers` 3x3 same-padding convs with ELU, keeping the map size."""
    widths = [embedding_dim] + [hidden_channels] * (num_layers - 1) + [out_channels]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ELU()]
    return nn.Sequential(*layers, nn.Flatten())


class MiniHackTorso(nn.Module):
    """MiniHack/NLE observation -> (B, out_dim), the architecture of the NLE baseline and E3B.

    One glyph embedding table (`num_glyphs` ids, default nle's MAX_GLYPH) feeds two conv nets
    with separate weights: one over the full glyph map ("glyphs", 21x79) for the layout, one over
    the egocentric crop ("glyphs_crop", 9x9) for the agent's surroundings; an MLP reads the
    bottom-line stats ("blstats", 27), normalized by fixed per-stat scales. The features are
    concatenated and go through a two-layer MLP. Any subset of the three keys works (MiniHack's
    observation_keys decide which are present).
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        out_dim: int = 1024,
        embedding_dim: int = 64,
        num_layers: int = 5,
        num_glyphs: int | None = None,
        blstats_scale: Sequence[float] | None = None,
    ):
        super().__init__()
        spaces = observation_space.spaces
        self.keys = [k for k in MINIHACK_KEYS if k in spaces]
        if not self.keys:
            raise ConfigError(f"MiniHackTorso needs one of {MINIHACK_KEYS}; the space is {observation_space}")
        features = 0
        self.glyph_convs = nn.ModuleDict()
        glyph_keys = [k for k in ("glyphs", "glyphs_crop") if k in spaces]
        if glyph_keys:
            if num_glyphs is None:  # NLE's glyph spaces are Box(0, MAX_GLYPH): cover their bound too
                num_glyphs = max([max_glyph()] + [_id_count(spaces[k]) for k in glyph_keys])
            self.glyph_embed = nn.Embedding(num_glyphs, embedding_dim)
            for key in glyph_keys:
                self.glyph_convs[key] = _glyph_conv(embedding_dim, num_layers)
                features += 8 * math.prod(spaces[key].shape)

        self.blstats_mlp = None
        if "blstats" in spaces:
            size = spaces["blstats"].shape[0]
            if blstats_scale is None:
                if size != len(NLE_BLSTATS_SCALE):
                    raise ConfigError(
                        f"blstats of size {size} (nle 1.x has {len(NLE_BLSTATS_SCALE)}): pass blstats_scale"
                    )
                blstats_scale = NLE_BLSTATS_SCALE
            if len(blstats_scale) != size:
                raise ConfigError(f"blstats_scale has {len(blstats_scale)} entries; blstats has {size}")
            self.register_buffer("blstats_scale", torch.tensor(blstats_scale, dtype=torch.float32))
            self.blstats_mlp = nn.Sequential(
                nn.Linear(size, embedding_dim), nn.ReLU(), nn.Linear(embedding_dim, embedding_dim), nn.ReLU()
            )
            features += embedding_dim

        self.fc = nn.Sequential(
            nn.Linear(features, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim), nn.ReLU()
        )
        self.out_dim = out_dim

    def normalize_blstats(self, blstats: Tensor) -> Tensor:
        return (blstats.float() / self.blstats_scale).clamp(-BLSTATS_CLIP, BLSTATS_CLIP)

    def forward(self, obs: Obs) -> Tensor:
        parts = []
        for key, conv in self.glyph_convs.items():
            embedded = self.glyph_embed(obs[key].long())  # (B, H, W, E)
            parts.append(conv(embedded.permute(0, 3, 1, 2)))
        if self.blstats_mlp is not None:
            parts.append(self.blstats_mlp(self.normalize_blstats(obs["blstats"])))
        return self.fc(torch.cat(parts, dim=1))


class VectorTorso(nn.Module):
    """A flat float observation (bandits' previous action, reward and context) -> (B, out_dim) by an MLP."""

    def __init__(self, observation_space: gym.spaces.Box, out_dim: int = 128, hidden: int = 128):
        super().__init__()
        features = int(np.prod(observation_space.shape))
        self.net = nn.Sequential(
            layer_init(nn.Linear(features, hidden)),
            nn.Tanh(),
            layer_init(nn.Linear(hidden, out_dim)),
            nn.Tanh(),
        )
        self.out_dim = out_dim

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs.reshape(obs.shape[0], -1).float())


ENCODER_SPACES = (
    "Box uint8 (C, 84, 84) stacked frames (Atari) -> FrameTorso; "
    "Dict with 'image' (MiniGrid/BabyAI) -> MiniGridTorso; "
    "Dict with any of 'glyphs', 'glyphs_crop', 'blstats' (MiniHack/NLE) -> MiniHackTorso; "
    "a 1-D float Box (bandits, vector tasks) -> VectorTorso"
)


def network_family(observation_space: gym.spaces.Space, supported: str = ENCODER_SPACES) -> str:
    """'frames', 'minigrid', 'minihack' or 'vector'; ConfigError naming the space and `supported`."""
    kind = observation_kind(observation_space)
    if kind is None:
        raise ConfigError(
            f"no network for observation space {observation_space}. Supported: {supported} "
            "(pass one env's space, e.g. vec.single_observation_space)"
        )
    return kind


NETWORKS = ("default", "compact")
"""The architectures a run picks with `--network`: each family's default torso, or CompactMiniGridTorso
(MiniGrid/BabyAI only; `--preset minigrid-fast`)."""


def check_network(network: str, family: str) -> None:
    """ConfigError unless `network` (`NETWORKS`) has an architecture for observation family `family`."""
    if network not in NETWORKS:
        raise ConfigError(f"--network {network!r} is invalid: valid networks: {', '.join(NETWORKS)}")
    if network == "compact" and family != "minigrid":
        raise ConfigError(f"--network compact is for MiniGrid/BabyAI observations; this space is {family}")


def make_encoder(
    observation_space: gym.spaces.Space, embed_dim: int, network: str = "default", **kwargs: Any
) -> nn.Module:
    """A torso of the policy's architecture, with its own weights, mapping observations to (B, embed_dim).

    For bonuses that learn their own embedding (E3B's inverse-dynamics encoder); feed-forward
    (no LSTM). `network` is the policy's (`NETWORKS`), so that a bonus under `--network compact` costs
    what the compact policy costs rather than the default torso's ~70x more multiply-adds. kwargs go to
    the torso class.
    """
    family = network_family(observation_space)
    check_network(network, family)
    if network == "compact":
        return CompactMiniGridTorso(observation_space, out_dim=embed_dim, **kwargs)
    if family == "frames":
        return FrameTorso(observation_space.shape[0], embed_dim, **kwargs)
    if family == "minigrid":
        return MiniGridTorso(observation_space, out_dim=embed_dim, **kwargs)
    if family == "vector":
        return VectorTorso(observation_space, out_dim=embed_dim, **kwargs)
    return MiniHackTorso(observation_space, out_dim=embed_dim, **kwargs)
