"""Observations as a Tensor or a dict of Tensors (Atari frames; MiniHack/MiniGrid dicts), handled alike."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Union

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

Obs = Union[Tensor, dict[str, Tensor]]  # noqa: UP007 (an alias, evaluated at runtime)


def map_obs(fn: Callable[[Tensor], Tensor], obs: Obs) -> Obs:
    """Apply `fn` to the tensor, or to every entry of a dict observation."""
    return {key: fn(value) for key, value in obs.items()} if isinstance(obs, dict) else fn(obs)


def obs_to_tensor(obs: Any, device: torch.device) -> Obs:
    """numpy observation (array or dict of arrays) -> tensor(s) on `device`."""
    return map_obs(lambda x: torch.as_tensor(np.asarray(x), device=device), obs)


def allocate_obs(space: gym.Space, leading: tuple[int, ...], device: torch.device) -> Obs:
    """Zero buffers of shape leading + the space's shape, in the space's dtype."""
    if isinstance(space, gym.spaces.Dict):
        return {key: allocate_obs(sub, leading, device) for key, sub in space.spaces.items()}
    dtype = torch.from_numpy(np.zeros((), dtype=space.dtype)).dtype
    return torch.zeros((*leading, *space.shape), dtype=dtype, device=device)


def write_obs(buffer: Obs, index: Any, value: Obs) -> None:
    """buffer[index] = value, entry by entry for dicts."""
    if isinstance(buffer, dict):
        for key in buffer:
            buffer[key][index] = value[key]
    else:
        buffer[index] = value


def cat_obs(first: Obs, second: Obs) -> Obs:
    """Concatenate along dim 0, entry by entry for dicts."""
    if isinstance(first, dict):
        return {key: torch.cat([first[key], second[key]]) for key in first}
    return torch.cat([first, second])


# --- observation kinds ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ObservationKind:
    """A family of observations that suites declare (`EnvSuite.observation_kind`) and bonuses read.

    `dict_keys` are the entries every observation of the kind has (None: a single tensor, or text);
    empty for dicts whose entries each env configures (MiniHack's observation_keys).
    """

    name: str
    description: str
    dict_keys: tuple[str, ...] | None


OBSERVATION_KINDS: dict[str, ObservationKind] = {
    kind.name: kind
    for kind in (
        ObservationKind("frames", "(C, 84, 84) uint8 frame stacks (Atari)", None),
        ObservationKind(
            "minigrid",
            "dicts of image, direction and mission, plus the position agent_pos for bonuses (MiniGrid, BabyAI)",
            ("image", "direction", "mission", "agent_pos"),
        ),
        ObservationKind("minihack", "dicts of NetHack entries such as glyphs and blstats (MiniHack)", ()),
        ObservationKind("vector", "flat float vectors (bandits)", None),
        ObservationKind("text", "strings (text games)", None),
    )
}
PRIVILEGED_KEYS = ("agent_pos",)
"""Dict entries that a suite adds from the simulator's state for bonuses to key on, not part of what the
agent observes: MiniGrid's `agent_pos` (envs.minigrid), which the count baselines of RIDE and NovelD get
through their count on the full state. The networks read their own entries by name and so skip them, and
the whole-observation state key "obs" (explore.counts) leaves them out; a bonus reads one only when named
(e.g. `--state-key agent_pos`)."""


def observed_keys(keys: Iterable[str]) -> list[str]:
    """The entries of a dict observation that the agent observes (all but `PRIVILEGED_KEYS`), sorted."""
    return sorted(k for k in keys if k not in PRIVILEGED_KEYS)


NLE_KEYS = ("glyphs", "glyphs_crop", "blstats")
"""The entries that mark a dict observation as NetHack's (any one of them)."""


def observation_kind(space: gym.Space) -> str | None:
    """The kind of one env's observation space ('frames', 'minigrid', 'minihack', 'vector'), None if none fits."""
    if isinstance(space, gym.spaces.Box):
        shape = space.shape
        if len(shape) == 3 and shape[1:] == (84, 84) and space.dtype == np.uint8:
            return "frames"
        if len(shape) == 1 and np.issubdtype(space.dtype, np.floating):
            return "vector"
    elif isinstance(space, gym.spaces.Dict):
        if "image" in space.spaces:
            return "minigrid"
        if any(k in space.spaces for k in NLE_KEYS):
            return "minihack"
    elif isinstance(space, gym.spaces.Text):
        return "text"
    return None


# --- text observations ------------------------------------------------------------------------------


def text_key(text: str) -> int:
    """A stable non-negative int64 key of a string (blake2b: unlike hash(), the same in every process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def text_keys(texts: Sequence[str], device: torch.device | str = "cpu") -> Tensor:
    """(len(texts), 1) int64 keys of text observations: how strings enter a bonus batch as tensors.

    A text game's bonus batch holds these as "obs"/"next_obs" (T, N, 1), so a bonus that hashes
    observations (the counts) counts each distinct string, and the strings themselves as
    "obs_text"/"next_obs_text" (see explore.bonus).
    """
    distinct = {text: text_key(text) for text in dict.fromkeys(texts)}
    return torch.tensor([distinct[text] for text in texts], dtype=torch.int64, device=device).view(-1, 1)
