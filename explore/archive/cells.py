"""Cell functions: map a batch of observations to stable integer (or text) cell keys.

Every function here is vectorized over a leading batch dimension and takes numpy arrays or torch
tensors (the result has the same kind and, for torch, the same device). Keys are stable: the same
observation gives the same key in every process and every run, because keys are computed from the
observation's values with fixed integer arithmetic, never with Python's salted `hash()`.

- `atari_cell(frames)`: Go-Explore's "domain-agnostic" cell. The grayscale frame is downscaled
  to 11 x 8 (width x height) by an exact area average (each output pixel is the mean of the input
  area it covers, fractional pixels weighted by their overlap, as OpenCV's INTER_AREA), and the
  mean intensity is quantized to 8 levels: level = floor(mean * levels / 256). RGB frames are
  converted to grayscale first (ITU-R 601 luma, as ALE's grayscale screen). Frame stacks
  (..., C, H, W) use the newest frame with `stacked=True`.
- `DynamicDownscale`: Go-Explore's dynamic representation: from a sample of recent frames pick the
  (width, height, levels) whose cell partition of the sample has about `target_cells` distinct
  cells and spreads the frames most evenly; the runner re-keys its archive when it changes.
- `minihack_cell(obs)`: (dungeon level, x, y) from NLE's blstats plus the key items held (from the
  "inv_glyphs" observation when it is requested: skeleton key, lock pick, credit card).
- `minigrid_cell(obs)`: the egocentric view and facing direction of MiniGrid/BabyAI observations.
- `text_cell(text) -> str`: the normalized observation text (for text games and IGE).
- Custom: any callable that maps a batch of observations to keys (`make_cell_fn(callable)`).

Keys: the quantized cell (e.g. 88 values of 3 bits for 11 x 8 x 8 levels) is hashed to one int64
with a fixed multilinear hash: key = sum_i (v_i + 1) * a_i + c (mod 2^64), where the odd 64-bit
constants a_i come from splitmix64 (pure integer arithmetic, identical in numpy and torch, on
cpu and cuda) and c encodes the representation (width, height, levels). Two different cells
collide with probability about 2^-61; with a million cells the chance of any collision is below
1e-6. `cell_levels` returns the quantized cell itself, for tests and plots.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One splitmix64 output for the integer `x` (pure Python ints, the same everywhere)."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _to_signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


@lru_cache(maxsize=64)
def _coefficients(size: int, salt: int) -> np.ndarray:
    """`size` odd 64-bit multipliers (as int64) for the multilinear hash, fixed by `salt`."""
    return np.array(
        [_to_signed(_splitmix64((salt << 20) + i) | 1) for i in range(size)], dtype=np.int64
    )


@lru_cache(maxsize=256)
def _representation_salt(*parts: int) -> int:
    salt = 0x5EED
    for p in parts:
        salt = _splitmix64(salt ^ int(p))
    return salt & ((1 << 40) - 1)


def hash_rows(values, salt: int = 0):
    """int64 key of each row of a (B, D) integer array/tensor: sum_i (v_i + 1) a_i + c mod 2^64."""
    d = values.shape[-1]
    coeff = _coefficients(d, salt)
    offset = _to_signed(_splitmix64(salt ^ 0xC0FFEE))
    if isinstance(values, torch.Tensor):
        c = torch.from_numpy(coeff).to(values.device)
        return ((values.to(torch.int64) + 1) * c).sum(-1) + offset
    with np.errstate(over="ignore"):
        return ((values.astype(np.int64) + 1) * coeff).sum(-1) + np.int64(offset)


# --- Atari frames -------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def area_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) float64 matrix of an exact area average: row i averages the input
    interval [i * size_in / size_out, (i + 1) * size_in / size_out), fractional pixels weighted by overlap."""
    scale = size_in / size_out
    w = np.zeros((size_out, size_in))
    for i in range(size_out):
        lo, hi = i * scale, (i + 1) * scale
        for j in range(int(math.floor(lo)), min(size_in, int(math.ceil(hi)))):
            w[i, j] = min(hi, j + 1) - max(lo, j)
    return w / w.sum(1, keepdims=True)


_LUMA = (0.299, 0.587, 0.114)


def to_grayscale(frames):
    """(..., H, W, 3) RGB -> (..., H, W) float grayscale; (..., H, W) frames are returned as they are."""
    if frames.shape[-1] != 3:
        return frames
    if isinstance(frames, torch.Tensor):
        return frames.float() @ torch.tensor(_LUMA, device=frames.device)
    return frames.astype(np.float32) @ np.asarray(_LUMA, dtype=np.float32)


@lru_cache(maxsize=256)
def _plan(h_in: int, w_in: int, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 row and column area weights, (height, h_in) and (w_in, width)."""
    wy = area_weights(h_in, height).astype(np.float32)
    return wy, area_weights(w_in, width).astype(np.float32).T.copy()


def downscale(frames, width: int = 11, height: int = 8):
    """Area-average (B, H, W) frames to (B, height, width) float32 means (numpy or torch)."""
    wy, wx = _plan(frames.shape[-2], frames.shape[-1], width, height)
    if isinstance(frames, torch.Tensor):
        dev = frames.device
        return torch.from_numpy(wy).to(dev) @ frames.float() @ torch.from_numpy(wx).to(dev)
    return wy @ frames.astype(np.float32) @ wx


# a mean that is an exact multiple of 256 / levels can come out of the float matmul a hair low
_LEVEL_EPS = 1e-3


def cell_levels(frames, width: int = 11, height: int = 8, levels: int = 8, stacked: bool = False):
    """Quantized downscaled frames, (B, height, width) integers in [0, levels): floor(mean * levels / 256).

    `frames`: (B, H, W) grayscale, (B, H, W, 3) RGB, or with `stacked` (B, C, H, W) frame stacks
    (the newest frame, index -1, is used). numpy in, numpy out; torch in, torch out.
    """
    if stacked:
        frames = frames[:, -1]
    small = downscale(to_grayscale(frames), width, height)
    scaled = small * (levels / 256.0) + _LEVEL_EPS
    if isinstance(small, torch.Tensor):
        return scaled.floor().clamp_(0, levels - 1).to(torch.uint8)
    return np.clip(np.floor(scaled), 0, levels - 1).astype(np.uint8)


def atari_cell(frames, width: int = 11, height: int = 8, levels: int = 8, stacked: bool = False):
    """int64 cell key of each frame of a batch (see `cell_levels` for the accepted shapes)."""
    q = cell_levels(frames, width, height, levels, stacked)
    return hash_rows(q.reshape(q.shape[0], -1), _representation_salt(1, width, height, levels))


@dataclass(frozen=True)
class Downscale:
    """A frame-cell representation: `width` x `height` pixels of `levels` intensity levels."""

    width: int = 11
    height: int = 8
    levels: int = 8

    def __call__(self, frames, stacked: bool = False):
        return atari_cell(frames, self.width, self.height, self.levels, stacked)

    def levels_of(self, frames, stacked: bool = False):
        return cell_levels(frames, self.width, self.height, self.levels, stacked)


@dataclass
class DynamicDownscale:
    """Go-Explore's dynamic downscaling: pick a (width, height, levels) from recent frames.

    `choose(frames, rng)` scores `num_candidates` random representations (plus the current one)
    on a sample of recent frames by

        objective = H / log(n) - |log(n / target_cells)|

    with n the number of distinct cells the sample falls into and H the entropy of the sample's
    distribution over them: the frames should be spread evenly (normalized entropy near 1) over
    about `target_cells` cells. Coarser representations merge cells, finer ones split them. This
    follows the paper's idea (a target cell count and an evenness term); the exact objective is ours.
    """

    target_cells: int = 64
    width_range: tuple[int, int] = (4, 20)
    height_range: tuple[int, int] = (3, 16)
    levels_range: tuple[int, int] = (2, 16)
    num_candidates: int = 48
    current: Downscale = Downscale()

    def objective(self, frames: np.ndarray, rep: Downscale) -> float:
        keys = rep(frames)
        _, counts = np.unique(keys, return_counts=True)
        n = counts.shape[0]
        if n <= 1:
            return -math.inf
        p = counts / counts.sum()
        entropy = float(-(p * np.log(p)).sum())
        return entropy / math.log(n) - abs(math.log(n / self.target_cells))

    def choose(self, frames: np.ndarray, rng: np.random.Generator) -> Downscale:
        """The best representation for `frames` (B, H, W); also stored as `current`."""
        candidates = {self.current}
        for _ in range(self.num_candidates):
            candidates.add(
                Downscale(
                    int(rng.integers(self.width_range[0], self.width_range[1] + 1)),
                    int(rng.integers(self.height_range[0], self.height_range[1] + 1)),
                    int(rng.integers(self.levels_range[0], self.levels_range[1] + 1)),
                )
            )
        ordered = sorted(candidates, key=lambda r: (r.width, r.height, r.levels))  # deterministic ties
        scores = [self.objective(frames, rep) for rep in ordered]
        self.current = ordered[int(np.argmax(scores))]
        return self.current


# --- MiniHack -----------------------------------------------------------------------------------

BLSTATS_X, BLSTATS_Y, BLSTATS_DEPTH = 0, 1, 12
# nle 1.3.0: GLYPH_OBJ_OFF (1906) + object index of skeleton key (196), lock pick (197), credit card (198)
_FALLBACK_KEY_GLYPHS = (2102, 2103, 2104)


@lru_cache(maxsize=1)
def key_glyphs() -> tuple[int, ...]:
    """Glyph ids of the unlocking tools (skeleton key, lock pick, credit card) in the installed NLE."""
    try:
        import nle.nethack as nh
    except ImportError:
        return _FALLBACK_KEY_GLYPHS
    wanted = {"skeleton key", "lock pick", "credit card"}
    return tuple(
        nh.GLYPH_OBJ_OFF + i for i in range(nh.NUM_OBJECTS) if nh.objdescr.from_idx(i).oc_name in wanted
    )


def minihack_cell(obs: dict[str, Any], inventory: str = "keys"):
    """int64 cell key of (dungeon level, x, y) plus the key items held, for a batch of NLE observations.

    obs: a dict with "blstats" (B, 27) and, for the inventory part, "inv_glyphs" (B, 55) (request it
    with `observation_keys=(..., "inv_glyphs")`); without "inv_glyphs" the inventory part is left out.
    inventory: "keys" (a flag per unlocking tool held), "all" (every inventory glyph), or "none".
    """
    if inventory not in ("keys", "all", "none"):
        raise ValueError(f"inventory {inventory!r} is invalid: use 'keys', 'all' or 'none'")
    blstats = obs["blstats"]
    is_torch = isinstance(blstats, torch.Tensor)
    parts = [blstats[:, [BLSTATS_DEPTH, BLSTATS_X, BLSTATS_Y]]]
    inv = obs.get("inv_glyphs") if inventory != "none" else None
    if inv is not None:
        if inventory == "keys":
            flags = [(inv == g).any(-1, keepdims=True) if not is_torch else (inv == g).any(-1, keepdim=True)
                     for g in key_glyphs()]
            parts.extend(f.to(blstats.dtype) if is_torch else f.astype(blstats.dtype) for f in flags)
        else:  # the inventory as a set: sorted glyphs, so the order of the letters does not matter
            parts.append(torch.sort(inv, -1).values.to(blstats.dtype) if is_torch else np.sort(inv, -1))
    cat = torch.cat if is_torch else np.concatenate
    rows = cat([p.to(torch.int64) if is_torch else p.astype(np.int64) for p in parts], -1)
    mode = {"keys": 1, "all": 2, "none": 3}[inventory]
    return hash_rows(rows, _representation_salt(2, rows.shape[-1], mode))


# --- MiniGrid -----------------------------------------------------------------------------------


def minigrid_cell(obs: dict[str, Any]):
    """int64 cell key of a batch of MiniGrid/BabyAI observations: the egocentric view and the facing.

    obs: a dict with "image" (B, 7, 7, 3) object/colour/state ids and, when observed, "direction" (B,).
    MiniGrid observations do not hold the agent's position, so the cell is what the agent sees,
    which changes with position and with the world (a door opened, a key picked up).
    """
    image = obs["image"]
    is_torch = isinstance(image, torch.Tensor)
    rows = image.reshape(image.shape[0], -1)
    rows = rows.to(torch.int64) if is_torch else rows.astype(np.int64)
    direction = obs.get("direction")
    if direction is not None:
        facing = direction.reshape(-1, 1)
        facing = facing.to(torch.int64) if is_torch else facing.astype(np.int64)
        rows = torch.cat([rows, facing], -1) if is_torch else np.concatenate([rows, facing], -1)
    return hash_rows(rows, _representation_salt(3, rows.shape[-1]))


# --- text ---------------------------------------------------------------------------------------

# Volatile parts of text-game observations: status counters that change every turn without the
# state changing (TextWorld's "Score: 1/5  Moves: 12", Zork-style "Turns: 7"), and prompt marks.
_VOLATILE = re.compile(
    r"\b(?:score|moves|turns|time|steps)\s*[:=]?\s*-?\d+(?:\s*/\s*\d+)?|(?:^|\s)>\s*(?=\s|$)",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")


def text_cell(text: str) -> str:
    """The normalized observation text: volatile counters and prompt marks removed, lowercase,
    whitespace collapsed to single spaces, stripped. Numbers elsewhere are kept (Game of 24 needs them)."""
    return _SPACE.sub(" ", _VOLATILE.sub(" ", text)).strip().lower()


def text_cells(texts: Sequence[str]) -> list[str]:
    """`text_cell` over a batch."""
    return [text_cell(t) for t in texts]


def text_key(text: str) -> int:
    """A stable int64 key of `text_cell(text)` (blake2b, not Python's salted hash)."""
    import hashlib

    digest = hashlib.blake2b(text_cell(text).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def text_keys(texts: Sequence[str]) -> torch.Tensor:
    """`text_key` over a batch of strings, as an int64 tensor (B,)."""
    return torch.tensor([text_key(t) for t in texts], dtype=torch.int64)


# --- by name and by observation kind --------------------------------------------------------------

CellFn = Callable[[Any], Any]

CELLS_BY_KIND: dict[str, CellFn] = {}
"""The archive's cell function for each observation kind (`explore.obs.OBSERVATION_KINDS`): a batch
of observations with one flat leading dim -> (B,) int64 keys."""


def register_cell(kind: str) -> Callable[[CellFn], CellFn]:
    """Decorator: the cell function of observation kind `kind` (replaces an earlier one)."""

    def register(fn: CellFn) -> CellFn:
        CELLS_BY_KIND[kind] = fn
        return fn

    return register


@register_cell("frames")
def frame_cell(frames):
    """Go-Explore's frame cell of (B, C, H, W) frame stacks (newest frame) or (B, H, W) frames."""
    return atari_cell(frames, stacked=frames.ndim == 4)


register_cell("minihack")(minihack_cell)
register_cell("minigrid")(minigrid_cell)
register_cell("text")(text_keys)


def make_cell_fn(spec: str | CellFn, **kwargs: Any) -> CellFn:
    """A batch cell function by name ("atari", "atari_stacked", "minihack", "text") or a user callable."""
    if callable(spec):
        return spec
    if spec == "atari":
        rep = Downscale(**kwargs)
        return rep
    if spec == "atari_stacked":
        rep = Downscale(**kwargs)
        return lambda frames: rep(frames, stacked=True)
    if spec == "minihack":
        return lambda obs: minihack_cell(obs, **kwargs)
    if spec == "text":
        return text_cells
    raise ValueError(
        f"cell function {spec!r} is invalid: use atari, atari_stacked, minihack, text or a callable"
    )
