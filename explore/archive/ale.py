"""Atari emulators driven through ale-py directly, with clone/restore, for Go-Explore.

envpool cannot save or restore emulator state, so Go-Explore on Atari steps `ale_py.ALEInterface`
emulators itself. Settings (`ALESettings`):
- `repeat_action_probability` 0 by default: Go-Explore's exploration phase is deterministic (the
  RND training settings use sticky actions 0.25; pass 0.25 here to explore under them).
- the full 18-action space, frame skip 4 (each agent step repeats the action for 4 emulator
  frames and sums the rewards), the observation is the max over the last 2 frames' grayscale
  screens (210 x 160 uint8), as the standard Atari wrappers do.
- states are cloned with the RNG included (`cloneState(include_rng=True)`) and serialized to bytes,
  so a restored emulator continues exactly as the original, sticky actions included.

`ALEBatch` holds N emulators, in this process (`num_workers=0`, for tests and small runs) or in
worker processes that each own a share of them. It offers a lockstep batch API (`reset`, `step`,
`clone_states`, `restore_states`) for exploring with a policy, and `explore(tasks)` /
`submit`+`receive` that run whole random explorations inside the workers (one message per batch of
tasks, no per-step traffic), which is what keeps every core busy.

Random exploration (`explore_random`): from the restored state, up to `steps` agent steps; the
first action is uniform over the 18 actions, and at each later step the previous action is
repeated with probability `repeat_prob` (0.95: run lengths are geometric with mean
1 / (1 - 0.95) = 20 agent steps = 80 frames, as in Go-Explore), else a new uniform action is drawn.
The exploration stops early at game over or, with `end_on_life_loss` (default), when a life is
lost; the state that lost the life is not archived (Go-Explore's treatment of deaths). Each step's
cell is computed in the worker; a state is cloned only when the trajectory reaches a cell it has
not reached before, or reaches it again with a higher score, so few states travel back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from envs.pool import Request, Worker, WorkerCrashedError, WorkerPool
from explore.archive.cells import Downscale
from explore.errors import ConfigError, close_matches, require

MONTEZUMA_ROOM_RAM_INDEX = 3
SCREEN_SHAPE = (210, 160)


def rom_id(env_id: str) -> str:
    """ale-py ROM id of an env id: 'MontezumaRevenge-v5', 'ALE/MontezumaRevenge-v5' -> 'montezuma_revenge'."""
    require("ale_py", extra="atari", purpose="Go-Explore on Atari")
    from ale_py import roms

    name = env_id.split("/")[-1]
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    rom = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    known = roms.get_all_rom_ids()
    if rom not in known:
        hint = close_matches(rom, known)
        raise ConfigError(
            f"env id {env_id!r} has no ale-py ROM (looked for {rom!r})."
            + (
                f" Did you mean: {', '.join(hint)}?"
                if hint
                else " Run `python -c 'from ale_py import roms; print(roms.get_all_rom_ids())'` for the list."
            )
        )
    return rom


@dataclass(frozen=True)
class ALESettings:
    """How each emulator is configured (see the module docstring)."""

    env_id: str = "MontezumaRevenge-v5"
    frameskip: int = 4
    repeat_action_probability: float = 0.0
    full_action_space: bool = True
    max_pool: bool = True
    max_episode_frames: int = 0
    """ALE's cap on frames per episode (0: none)"""
    end_on_life_loss: bool = True
    """random exploration stops when a life is lost (and does not archive that state)"""
    ram_index: int | None = None
    """RAM byte recorded as a 'room' during exploration (None: Montezuma's byte 3 for Montezuma, else off)"""

    def room_index(self) -> int | None:
        if self.ram_index is not None:
            return self.ram_index
        return MONTEZUMA_ROOM_RAM_INDEX if "MontezumaRevenge" in self.env_id else None


class Emulator:
    """One ALEInterface with frame skip and max-pooling; states as bytes."""

    def __init__(self, settings: ALESettings, seed: int = 0):
        from ale_py import ALEInterface, LoggerMode, roms

        ALEInterface.setLoggerMode(LoggerMode.Error)
        if settings.frameskip < 1:
            raise ConfigError(f"frameskip {settings.frameskip!r} is invalid: it must be >= 1")
        self.settings = settings
        ale = ALEInterface()
        ale.setInt("random_seed", int(seed) % (2**31))
        ale.setFloat("repeat_action_probability", float(settings.repeat_action_probability))
        ale.setInt("frame_skip", 1)
        ale.setInt("max_num_frames_per_episode", int(settings.max_episode_frames))
        ale.loadROM(roms.get_rom_path(rom_id(settings.env_id)))
        self.ale = ale
        full = settings.full_action_space
        self.actions = list(ale.getLegalActionSet() if full else ale.getMinimalActionSet())
        self._screens = np.zeros((2, *SCREEN_SHAPE), np.uint8)
        self.frame = np.zeros(SCREEN_SHAPE, np.uint8)
        self.frames = 0  # emulator frames stepped
        self.reset()

    @property
    def num_actions(self) -> int:
        return len(self.actions)

    def reset(self) -> np.ndarray:
        self.ale.reset_game()
        self.ale.getScreenGrayscale(self.frame)
        return self.frame

    def step(self, action: int) -> float:
        """One agent step (frameskip frames); updates `frame` (max of the last two screens)."""
        ale, skip = self.ale, self.settings.frameskip
        act = self.actions[action]
        reward = 0.0
        screens = self._screens
        for i in range(skip):
            reward += ale.act(act)
            self.frames += 1
            if i >= skip - 2:
                ale.getScreenGrayscale(screens[i - skip + 2])
            if ale.game_over():
                ale.getScreenGrayscale(screens[1])
                screens[0] = screens[1]
                break
        if self.settings.max_pool and skip > 1:
            np.maximum(screens[0], screens[1], out=self.frame)
        else:
            self.frame[:] = screens[1]
        return reward

    def clone(self) -> bytes:
        return bytes(self.ale.cloneState(include_rng=True).serialize())

    def restore(self, state: bytes | Any | None) -> np.ndarray:
        """Restore a state from `clone()` (None: reset the game); returns the current frame.

        The frame is re-rendered by stepping nothing: ALE's screen is not part of its state, so the
        returned frame is the restored emulator's last screen only after the next step; callers that
        need the frame of a state keep it with the state."""
        if state is None:
            return self.reset()
        from ale_py import ALEState

        self.ale.restoreState(state if isinstance(state, ALEState) else ALEState(state))
        return self.frame

    def ram(self) -> np.ndarray:
        return self.ale.getRAM()

    def lives(self) -> int:
        return self.ale.lives()

    def game_over(self) -> bool:
        return self.ale.game_over()


@dataclass
class ExploreTask:
    """Explore from `state` (None: the reset state) whose best trajectory has `length` steps and `score`."""

    state: bytes | None
    score: float = 0.0
    length: int = 0
    steps: int = 100
    seed: int = 0
    repeat_prob: float = 0.95
    cell: Downscale = Downscale()
    keep_frames: bool = False
    """return each new cell's frame (zlib-compressed bytes), for dynamic re-keying"""
    sample_frame: bool = False
    """return one uniformly chosen frame of the trajectory (for choosing a dynamic representation)"""


@dataclass
class ExploreResult:
    actions: np.ndarray  # uint8, the actions taken (the new cells' trajectories are prefixes of it)
    frames: int  # emulator frames used
    cells: list[tuple[int, float, int, bytes, Any]] = field(default_factory=list)
    """(key, score, steps into this exploration, state, frame) for each cell reached first or better"""
    visited: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """the distinct cell keys the trajectory passed through"""
    rooms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    died: bool = False
    sample: np.ndarray | None = None


def _compress(frame: np.ndarray) -> bytes:
    import zlib

    return zlib.compress(frame.tobytes(), 1)


def decompress_frame(data: bytes) -> np.ndarray:
    import zlib

    return np.frombuffer(zlib.decompress(data), np.uint8).reshape(SCREEN_SHAPE)


def explore_random(emu: Emulator, task: ExploreTask) -> ExploreResult:
    """Restore `task.state`, take up to `task.steps` random repeated actions, report the cells reached."""
    rng = np.random.default_rng(task.seed)
    settings = emu.settings
    emu.restore(task.state)
    start_frames = emu.frames
    lives = emu.lives()
    room_at = settings.room_index()
    num_actions = emu.num_actions
    steps = task.steps
    # pre-draw the random numbers: whether to repeat, and the new actions
    repeat = rng.random(steps) < task.repeat_prob
    fresh = rng.integers(0, num_actions, steps)
    sample_at = int(rng.integers(0, steps)) if task.sample_frame else -1
    actions = np.zeros(steps, np.uint8)
    best: dict[int, float] = {}
    cells: list[tuple[int, float, int, bytes, Any]] = []
    rooms: set[int] = set()
    order: list[int] = []
    score = task.score
    died = False
    sample = None
    cell = task.cell
    frame_batch = emu.frame[None]  # a view: the emulator writes each step's frame into it
    a = int(fresh[0])
    t = 0
    for t in range(steps):
        if t and not repeat[t]:
            a = int(fresh[t])
        actions[t] = a
        score += emu.step(a)
        if emu.game_over() or (settings.end_on_life_loss and emu.lives() < lives):
            died = True
            break
        if room_at is not None:
            rooms.add(int(emu.ale.getRAM()[room_at]))
        key = int(cell(frame_batch)[0])
        if t == sample_at:
            sample = emu.frame.copy()
        prev = best.get(key)
        if prev is None:
            order.append(key)
        if prev is None or score > prev:
            best[key] = score
            frame = _compress(emu.frame) if task.keep_frames else None
            cells.append((key, score, t + 1, emu.clone(), frame))
    taken = t + 1  # the action that lost a life was taken too (its frames count)
    return ExploreResult(
        actions=actions[:taken],
        frames=emu.frames - start_frames,
        cells=cells,
        visited=np.asarray(order, np.int64),
        rooms=np.asarray(sorted(rooms), np.int64),
        died=died,
        sample=sample,
    )


# --- worker processes ---------------------------------------------------------------------------


class _Emulators:
    """What an ALE worker process runs (an envs.pool WorkerHandler): its share of the emulators."""

    def __init__(self, settings: ALESettings, seeds: list[int]):
        self.emus = [Emulator(settings, s) for s in seeds]

    def describe(self) -> int:
        return self.emus[0].num_actions

    def handle(self, command: str, payload: Any) -> Any:
        emus = self.emus
        if command == "explore":
            return [explore_random(emus[0], task) for task in payload]
        if command == "reset":
            return np.stack([e.reset() for e in emus])
        if command == "step":
            return _step_all(emus, payload)
        if command == "clone":
            return [e.clone() for e in emus]
        if command == "restore":
            return np.stack([e.restore(s).copy() for e, s in zip(emus, payload, strict=True)])
        raise ValueError(f"unknown command {command!r}")

    def close(self) -> None:
        self.emus = []


# Requests a restarted worker can simply redo: each carries the whole state it starts from.
_REDOABLE = ("explore", "reset", "restore")


def _step_all(emus: list[Emulator], actions) -> tuple[np.ndarray, ...]:
    rewards = np.array([e.step(int(a)) for e, a in zip(emus, actions, strict=True)], np.float64)
    frames = np.stack([e.frame for e in emus])
    over = np.array([e.game_over() for e in emus])
    lives = np.array([e.lives() for e in emus], np.int64)
    ram = np.stack([e.ram() for e in emus])
    return frames, rewards, over, lives, ram


class ALEBatch:
    """`num_envs` emulators, in-process (`num_workers=0`) or spread over `num_workers` processes.

    The processes are envs.pool's (shared with MiniHack and the text games): a worker that dies is
    restarted and an exploration batch it held is run again (its tasks carry their start states and
    seeds, so the results are the same); a reset or restore is redone; a lockstep step or clone
    lost with its worker raises WorkerCrashedError (the emulator states it held are gone). A worker
    silent for `timeout` seconds while it owes a reply raises TimeoutError naming it.
    """

    def __init__(
        self,
        settings: ALESettings,
        num_envs: int,
        num_workers: int = 0,
        seed: int = 0,
        start_method: str | None = None,
        timeout: float = 300.0,
        max_restarts: int = 3,
    ):
        if num_envs < 1:
            raise ConfigError(f"num_envs {num_envs!r} is invalid: it must be >= 1")
        if num_workers < 0:
            raise ConfigError(f"num_workers {num_workers!r} is invalid: it must be >= 0")
        rom_id(settings.env_id)  # a clear error before any process starts
        self.settings = settings
        self.num_envs = num_envs
        self.num_workers = min(num_workers, num_envs)
        seeds = [seed + i for i in range(num_envs)]
        self._local: list[Emulator] = []
        self._pool: WorkerPool | None = None
        self._pending: set[int] = set()  # workers with a submitted exploration batch
        self._finished: list[tuple[int, list[ExploreResult]]] = []
        self._replies: dict[int, Any] = {}  # worker index -> its reply to the lockstep call
        if self.num_workers == 0:
            self._local = [Emulator(settings, s) for s in seeds]
            self.slices = [slice(0, num_envs)]
        else:
            bounds = np.linspace(0, num_envs, self.num_workers + 1).astype(int)
            self.slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            self._pool = WorkerPool(
                f"ALE {settings.env_id}",
                _Emulators,
                lambda index, env_ids, generation: (settings, [seeds[i] for i in env_ids]),
                [list(range(sl.start, sl.stop)) for sl in self.slices],
                on_reply=self._on_reply,
                on_restart=self._on_restart,
                timeout=timeout,
                max_restarts=max_restarts,
                start_method=start_method,
                preload=(__name__,),
            )

    @property
    def worker_pids(self) -> list[int | None]:
        return self._pool.pids if self._pool is not None else []

    @property
    def worker_restarts(self) -> list[int]:
        return self._pool.restarts if self._pool is not None else []

    def _on_reply(self, worker: Worker, command: str, payload: Any, reply: Any) -> None:
        if command == "explore":
            self._finished.append((worker.index, reply))
        else:
            self._replies[worker.index] = reply

    def _on_restart(self, worker: Worker, lost: list[Request]) -> None:
        assert self._pool is not None
        for command, payload in lost:
            if command not in _REDOABLE:
                raise WorkerCrashedError(
                    f"{self._pool.where(worker)} was lost during {command!r}: the emulator states it "
                    "held are gone, so the lockstep batch cannot go on"
                )
            self._pool.send(worker, command, payload)

    @property
    def num_actions(self) -> int:
        return 18 if self.settings.full_action_space else len(Emulator(self.settings).actions)

    # --- lockstep batch API (policy exploration) ---

    def _all(self, cmd: str, args: list | None = None) -> list:
        """Send `cmd` to every worker (with its slice of `args`) and return the replies in order."""
        pool = self._pool
        assert pool is not None
        self._replies.clear()
        for worker, sl in zip(pool.workers, self.slices, strict=True):
            pool.send(worker, cmd, None if args is None else args[sl])
        pool.pump(lambda: len(self._replies) == len(pool.workers), cmd)
        return [self._replies[w] for w in range(len(pool.workers))]

    def reset(self) -> np.ndarray:
        if self._local:
            return np.stack([e.reset().copy() for e in self._local])
        return np.concatenate(self._all("reset"))

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every emulator once: (frames (N, 210, 160), rewards, game_over, lives, ram (N, 128))."""
        actions = [int(a) for a in np.asarray(actions).reshape(-1)]
        if self._local:
            return _step_all(self._local, actions)
        parts = self._all("step", actions)
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(5))

    def clone_states(self) -> list[bytes]:
        if self._local:
            return [e.clone() for e in self._local]
        return [s for part in self._all("clone") for s in part]

    def restore_states(self, states: list[bytes | None]) -> np.ndarray:
        """Restore each emulator (None: reset); returns the frames they hold (see Emulator.restore)."""
        if len(states) != self.num_envs:
            raise ValueError(f"restore_states got {len(states)} states for {self.num_envs} emulators")
        if self._local:
            return np.stack([e.restore(s).copy() for e, s in zip(self._local, states, strict=True)])
        return np.concatenate(self._all("restore", list(states)))

    # --- random exploration inside the workers ---

    def explore(self, tasks: list[ExploreTask]) -> list[ExploreResult]:
        """Run every task (split evenly over the workers) and return the results in task order."""
        if self._local:
            return [explore_random(self._local[i % len(self._local)], t) for i, t in enumerate(tasks)]
        pool = self._pool
        assert pool is not None
        if self._pending:
            raise RuntimeError(f"explore() while batches are submitted to workers {sorted(self._pending)}")
        bounds = np.linspace(0, len(tasks), len(pool.workers) + 1).astype(int)
        used = [w for w in range(len(pool.workers)) if bounds[w + 1] > bounds[w]]
        self._finished.clear()
        for w in used:
            pool.send(pool.workers[w], "explore", tasks[bounds[w] : bounds[w + 1]])
        pool.pump(lambda: len(self._finished) == len(used), "explore")
        results = dict(self._finished)
        self._finished.clear()
        return [r for w in used for r in results[w]]

    def idle_workers(self) -> list[int]:
        """Workers with no explore batch in flight (in-process: [0])."""
        if self._local:
            return [0]
        return [w for w in range(len(self.slices)) if w not in self._pending]

    def submit(self, worker: int, tasks: list[ExploreTask]) -> None:
        """Start `tasks` on `worker` without waiting (collect with `receive`)."""
        if self._local:
            self._finished.append((0, self.explore(tasks)))
            return
        if worker in self._pending:
            raise RuntimeError(f"ALE worker {worker} already has a batch in flight")
        assert self._pool is not None
        self._pool.send(self._pool.workers[worker], "explore", tasks)
        self._pending.add(worker)

    def receive(self, timeout: float | None = None) -> list[tuple[int, list[ExploreResult]]]:
        """The finished batches, [(worker, results)], waiting for at least one (up to `timeout` s)."""
        if self._pool is not None and self._pending and not self._finished:
            self._pool.pump(lambda: bool(self._finished), "receive", max_wait=timeout)
        out, self._finished = sorted(self._finished, key=lambda item: item[0]), []
        self._pending.difference_update(w for w, _ in out)
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self._local = []

    def __enter__(self) -> ALEBatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
