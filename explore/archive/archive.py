"""The Go-Explore archive: for each cell, the best trajectory found to it and how to get back.

    archive = Archive(weight_power=0.5, weight_count="visits")
    archive.add(key, score=0.0, trajectory=[], state=ale_state_bytes)   # -> True (new cell)
    archive.visit(keys)                                                 # count visits
    keys = archive.select(16, np.random.default_rng(0))                 # cells to return to
    record = archive.cell(keys[0])   # .key .score .trajectory .state .visits .times_chosen .length

Storage: a dict key -> row plus growable numpy columns (score, trajectory length, visits, times
chosen, the step the cell was found), and Python lists for the per-cell payloads (the action
trajectory as a uint8/int array, the restore state, optionally a frame). Insertion and lookup are
O(1) amortized; `lookup(keys)`, `visit(keys)` and `update(...)` take batches.

Keys are any hashable, stable value: the int64 keys of `explore.archive.cells`, text from
`text_cell`, tuples. They are stored as Python ints/strs (numpy ints are converted), so a saved
archive loads in any process.

Better cell: a higher score, or the same score with a shorter trajectory (Go-Explore's rule).
Selection weight of a cell: w = 1 / (count + 1) ** weight_power, where count is the cell's
`visits` (weight_count="visits", the default: how many exploration trajectories passed through
it, the Nature paper's C_seen) or its `times_chosen` (weight_count="chosen": how often it was
selected to return to). `select(n, rng)` draws n cells independently with probability
w / sum(w) (with replacement, all n from the same weights) and then adds 1 to their times_chosen.
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np

from explore.checkpoint import atomic_write_bytes

FORMAT_VERSION = 1


@dataclass
class CellRecord:
    """One archived cell (a snapshot: changing it does not change the archive)."""

    key: Hashable
    score: float
    trajectory: np.ndarray
    state: Any
    visits: int
    times_chosen: int
    length: int
    frame: Any = None
    found_at: int = 0  # archive.step when the cell (or its current best trajectory) was found


def _plain_key(key: Any) -> Hashable:
    """numpy scalars -> Python ints/strs (stable pickles, equal to their Python values in a dict)."""
    if isinstance(key, np.generic):
        return key.item()
    return key


def _key_list(keys: Any) -> list[Hashable]:
    if isinstance(keys, np.ndarray):
        return keys.tolist()
    if hasattr(keys, "tolist"):  # torch tensors
        return keys.tolist()
    return [_plain_key(k) for k in keys]


@dataclass
class Archive:
    """Go-Explore cell archive. See the module docstring for the rules."""

    weight_power: float = 0.5
    weight_count: Literal["visits", "chosen"] = "visits"
    capacity: int = 1024
    meta: dict[str, Any] = field(default_factory=dict)
    """free-form run state saved with the archive (the runner keeps its counters here)"""

    def __post_init__(self) -> None:
        if self.weight_count not in ("visits", "chosen"):
            raise ValueError(f"weight_count {self.weight_count!r} is invalid: use 'visits' or 'chosen'")
        if not self.weight_power >= 0:
            raise ValueError(f"weight_power {self.weight_power!r} is invalid: it must be >= 0")
        cap = max(1, int(self.capacity))
        self._index: dict[Hashable, int] = {}
        self._keys: list[Hashable] = []
        self._trajectories: list[np.ndarray] = []
        self._states: list[Any] = []
        self._frames: list[Any] = []
        self._score = np.zeros(cap, np.float64)
        self._length = np.zeros(cap, np.int64)
        self._visits = np.zeros(cap, np.int64)
        self._chosen = np.zeros(cap, np.int64)
        self._found_at = np.zeros(cap, np.int64)
        self.step = 0  # a counter the user may advance (the runner: frames); recorded in found_at

    # --- size and lookup ---

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: Hashable) -> bool:
        return _plain_key(key) in self._index

    def __iter__(self):
        return iter(list(self._keys))

    def keys(self) -> list[Hashable]:
        return list(self._keys)

    def index(self, key: Hashable) -> int:
        """Row of `key`; KeyError when it is not archived."""
        return self._index[_plain_key(key)]

    def lookup(self, keys: Any) -> np.ndarray:
        """Rows of a batch of keys (array, tensor or sequence), -1 for keys not in the archive."""
        keys = _key_list(keys)
        return np.fromiter(map(self._index.get, keys, repeat(-1, len(keys))), np.int64, len(keys))

    def _grow(self, needed: int) -> None:
        cap = self._score.shape[0]
        if needed <= cap:
            return
        new_cap = max(needed, 2 * cap)
        for name in ("_score", "_length", "_visits", "_chosen", "_found_at"):
            old = getattr(self, name)
            new = np.zeros(new_cap, old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)

    # --- insertion ---

    @staticmethod
    def better(score: float, length: int, old_score: float, old_length: int) -> bool:
        """Go-Explore's order: higher score wins; on a tie the shorter trajectory wins."""
        return score > old_score or (score == old_score and length < old_length)

    def add(
        self,
        key: Hashable,
        score: float,
        trajectory: Sequence[int] | np.ndarray,
        state: Any = None,
        frame: Any = None,
        length: int | None = None,
    ) -> bool:
        """Archive `key` reached with `score` by `trajectory` (its actions from the reset), restorable
        from `state`. Returns True when the cell is new or this trajectory is better (then the stored
        trajectory, state, frame and score are replaced; visits and times chosen are kept).
        `length` defaults to len(trajectory) (pass it when the trajectory is not stored)."""
        key = _plain_key(key)
        traj = np.asarray(trajectory)
        if traj.dtype == object or traj.ndim != 1:
            traj = np.asarray(list(trajectory), dtype=np.int64)
        length = int(traj.shape[0]) if length is None else int(length)
        row = self._index.get(key)
        if row is None:
            row = len(self._keys)
            self._grow(row + 1)
            self._index[key] = row
            self._keys.append(key)
            self._trajectories.append(traj)
            self._states.append(state)
            self._frames.append(frame)
        elif self.better(float(score), length, float(self._score[row]), int(self._length[row])):
            self._trajectories[row] = traj
            self._states[row] = state
            self._frames[row] = frame
        else:
            return False
        self._score[row] = score
        self._length[row] = length
        self._found_at[row] = self.step
        return True

    def update(
        self,
        keys: Any,
        scores: Sequence[float],
        trajectories: Sequence[Any],
        states: Sequence[Any] | None = None,
        frames: Sequence[Any] | None = None,
    ) -> np.ndarray:
        """`add` over a batch; returns a bool array, True where the cell was new or improved."""
        keys = _key_list(keys)
        states = states if states is not None else [None] * len(keys)
        frames = frames if frames is not None else [None] * len(keys)
        return np.fromiter(
            (self.add(k, s, t, st, f) for k, s, t, st, f in zip(keys, scores, trajectories, states, frames,
                                                                    strict=True)),
            bool,
            len(keys),
        )

    def visit(self, keys: Any, counts: Any = None) -> int:
        """Add 1 (or `counts`) to the visit count of each archived key of a batch (repeats count
        repeatedly); keys not in the archive are ignored. Returns how many keys were archived."""
        rows = self.lookup(keys)
        found = rows >= 0
        inc = np.ones(rows.shape[0], np.int64) if counts is None else np.asarray(counts, np.int64)
        np.add.at(self._visits, rows[found], inc[found])
        return int(found.sum())

    # --- selection ---

    def counts(self) -> np.ndarray:
        """The count the weights use (visits or times chosen), one per row."""
        n = len(self)
        return (self._visits if self.weight_count == "visits" else self._chosen)[:n]

    def weights(self) -> np.ndarray:
        """Selection weight of each row: 1 / (count + 1) ** weight_power (float64)."""
        return 1.0 / np.power(self.counts() + 1.0, self.weight_power)

    def probabilities(self) -> np.ndarray:
        w = self.weights()
        return w / w.sum()

    def select(self, n: int, rng: np.random.Generator, count: bool = True, rows: bool = False) -> list:
        """Draw `n` cells with probability proportional to their weights (with replacement).

        Returns keys (or rows with `rows=True`); with `count` each draw adds 1 to times_chosen."""
        if not len(self):
            raise ValueError("cannot select from an empty archive: add a cell first (e.g. the start state)")
        w = self.weights()
        cdf = np.cumsum(w)
        picked = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        picked = np.minimum(picked, len(self) - 1)
        if count:
            np.add.at(self._chosen, picked, 1)
        if rows:
            return picked.tolist()
        return [self._keys[i] for i in picked]

    # --- records ---

    def cell(self, key: Hashable) -> CellRecord:
        """The record of `key` (KeyError when it is not archived)."""
        return self.record(self.index(key))

    def record(self, row: int) -> CellRecord:
        return CellRecord(
            key=self._keys[row],
            score=float(self._score[row]),
            trajectory=self._trajectories[row],
            state=self._states[row],
            visits=int(self._visits[row]),
            times_chosen=int(self._chosen[row]),
            length=int(self._length[row]),
            frame=self._frames[row],
            found_at=int(self._found_at[row]),
        )

    def records(self) -> Iterable[CellRecord]:
        return (self.record(i) for i in range(len(self)))

    def best(self) -> CellRecord | None:
        """The cell with the highest score (shortest trajectory on ties)."""
        if not len(self):
            return None
        n = len(self)
        order = np.lexsort((self._length[:n], -self._score[:n]))
        return self.record(int(order[0]))

    @property
    def scores(self) -> np.ndarray:
        return self._score[: len(self)]

    @property
    def lengths(self) -> np.ndarray:
        return self._length[: len(self)]

    @property
    def visits(self) -> np.ndarray:
        return self._visits[: len(self)]

    @property
    def times_chosen(self) -> np.ndarray:
        return self._chosen[: len(self)]

    # --- re-keying (dynamic cell representations) ---

    def rekey(self, new_keys: Sequence[Hashable]) -> Archive:
        """A new archive with row i under new_keys[i]: cells that now share a key merge, keeping the
        best trajectory (score, then length) and summing visits and times chosen."""
        out = Archive(self.weight_power, self.weight_count, max(1, len(self)), dict(self.meta))
        out.step = self.step
        for row, key in enumerate(_key_list(new_keys)):
            r = self.record(row)
            out.step = r.found_at
            out.add(key, r.score, r.trajectory, r.state, r.frame, r.length)
            j = out._index[key]
            out._visits[j] += r.visits
            out._chosen[j] += r.times_chosen
        out.step = self.step
        return out

    # --- save / load ---

    def state_dict(self) -> dict[str, Any]:
        n = len(self)
        return {
            "version": FORMAT_VERSION,
            "weight_power": self.weight_power,
            "weight_count": self.weight_count,
            "meta": self.meta,
            "step": self.step,
            "keys": self._keys,
            "trajectories": self._trajectories,
            "states": [_state_to_bytes(s) for s in self._states],
            "frames": self._frames,
            "score": self._score[:n].copy(),
            "length": self._length[:n].copy(),
            "visits": self._visits[:n].copy(),
            "chosen": self._chosen[:n].copy(),
            "found_at": self._found_at[:n].copy(),
        }

    @classmethod
    def from_state_dict(cls, d: dict[str, Any]) -> Archive:
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"archive format {d.get('version')!r} is not supported (expected {FORMAT_VERSION})"
            )
        n = len(d["keys"])
        out = cls(d["weight_power"], d["weight_count"], max(1, n), d["meta"])
        out.step = d["step"]
        out._keys = list(d["keys"])
        out._index = {k: i for i, k in enumerate(out._keys)}
        out._trajectories = list(d["trajectories"])
        out._states = [_state_from_bytes(s) for s in d["states"]]
        out._frames = list(d["frames"])
        for name, col in (("_score", "score"), ("_length", "length"), ("_visits", "visits"),
                          ("_chosen", "chosen"), ("_found_at", "found_at")):
            getattr(out, name)[:n] = d[col]
        return out

    def save(self, path: str | Path) -> Path:
        """Write the archive (with its states and `meta`) atomically: temp file, fsync, rename."""
        data = pickle.dumps(self.state_dict(), protocol=pickle.HIGHEST_PROTOCOL)
        atomic_write_bytes(Path(path), lambda f: f.write(data))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Archive:
        """Read an archive written by `save` (a pickle: load only files you trust, as with torch.load)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no archive at {path}")
        with open(path, "rb") as f:
            return cls.from_state_dict(pickle.load(f))


# ALE states are serialized to bytes explicitly (ale-py's ALEState pickles too, but bytes keep the
# file readable without ale-py and make the payload independent of its pickle support).
_ALE_TAG = "ale-state"


def _state_to_bytes(state: Any) -> Any:
    if type(state).__name__ == "ALEState" and hasattr(state, "serialize"):
        return (_ALE_TAG, bytes(state.serialize()))
    return state


def _state_from_bytes(state: Any) -> Any:
    if isinstance(state, tuple) and len(state) == 2 and state[0] == _ALE_TAG:
        from ale_py import ALEState

        return ALEState(state[1])
    return state
