"""`TextVecEnv`: N text games stepped in worker processes (or in this process), SAME_STEP autoreset.

Each worker process runs several games (the N envs are split into `num_workers` contiguous
blocks); a step sends each worker its block's commands and gathers one list of rows per worker
(strings and small lists: pickling them through a pipe costs far less than a game step).
`num_workers=0` runs every game in this process (tests, debugging).

- Processes: envs.pool's worker pool (shared with MiniHack and Go-Explore's emulators): forkserver
  where available (the server imports this module once), else spawn; never fork (a parent with a
  JVM gateway, torch or envpool threads must not fork).
- TextWorldExpress workers start one JVM each, shared by the worker's games (envs.text.twx).
- Seeds: env i of a vector env made with `seed=s` (or reset with `seed=s`) plays the seed stream
  s + i (see envs.text.core: game seed s + i first, then derived seeds); a list gives one seed
  per env. `make_text_env(env_id, seed=s + i)` replays env i's episodes.
- Faults: a worker that dies (crash, kill) or raises is restarted with fresh games, at most
  `max_restarts` times per worker, then WorkerCrashedError names the env id, the worker and its env
  indices. The episodes it held are reported as cut short on the step that lost them: truncated,
  `final_obs` the last observation seen, `episode_length` -1 (unknown), `obs` the first
  observation of the next episode of each env's seed stream. A worker that fails while it is
  being built with bad settings raises their ConfigError at once.
- Every wait is bounded: a worker silent for `timeout` seconds (60 by default) while it owes a
  reply is hung; it is killed and `recv` raises TimeoutError naming it. Calling `recv()` again
  restarts it and returns the step, that worker's episodes cut short as above.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from envs.core import available_cpus
from envs.pool import Request, Worker, WorkerPool
from envs.pool import WorkerCrashedError as WorkerCrashedError  # re-exported: what TextVecEnv raises
from envs.text.vector import AutoresetEnv, TextStepResult, TextVecEnvBase


def _make_env(env_id: str, seed: int, kwargs: dict[str, Any]) -> Any:
    from envs.text import make_text_env

    return make_text_env(env_id, seed=seed, **kwargs)


class _TextGames:
    """What a worker process runs (an envs.pool WorkerHandler): its games, answering with rows.

    Requests: ("reset", seeds) and ("step", commands), one entry per game of the worker.
    """

    def __init__(self, env_id: str, kwargs: dict[str, Any], streams: list[tuple[int, int]]):
        self.envs: list[AutoresetEnv] = []
        try:
            for base, next_episode in streams:
                env = _make_env(env_id, base, kwargs)
                env.set_seed_stream(base, next_episode)
                self.envs.append(AutoresetEnv(env))
        except BaseException:
            self.close()
            raise

    def describe(self) -> None:
        return None

    def handle(self, command: str, payload: list[Any]) -> list[dict[str, Any]]:
        if command == "step":
            return [e.step(c) for e, c in zip(self.envs, payload, strict=True)]
        if command == "reset":
            return [e.reset(seed=s) for e, s in zip(self.envs, payload, strict=True)]
        raise ValueError(f"unknown command {command!r}")

    def close(self) -> None:
        for e in self.envs:
            with contextlib.suppress(Exception):
                e.env.close()


class TextVecEnv(TextVecEnvBase):
    """`num_envs` copies of a text game (TextWorldExpress, TextWorld) in worker processes.

    Args:
        env_id: a text env id ('TWX-CoinCollector-v0', 'TextWorld-v0').
        num_envs: how many games.
        num_workers: worker processes (None: min(num_envs, CPUs); 0: every game in this process).
        seed: env i plays the seed stream seed + i.
        start_method: 'forkserver' (default where available) or 'spawn'.
        max_restarts: restarts allowed per worker before WorkerCrashedError.
        timeout: seconds a worker may stay silent while it owes a reply before TimeoutError.
        startup_timeout: seconds a worker may take to build its games (TextWorld may generate them).
        **kwargs: passed to every game (make_text_env), e.g. max_episode_steps, numLocations.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        num_workers: int | None = None,
        seed: int = 0,
        start_method: str | None = None,
        max_restarts: int = 3,
        timeout: float = 60.0,
        startup_timeout: float = 300.0,
        **kwargs: Any,
    ):
        super().__init__(env_id, num_envs)
        self.kwargs = kwargs
        self._bases = [int(seed) + i for i in range(num_envs)]
        self._started = np.zeros(num_envs, dtype=np.int64)  # episodes started per env (seed stream index)
        self._last_rows: list[dict[str, Any] | None] = [None] * num_envs
        self._ep_return = np.zeros(num_envs, dtype=np.float64)
        self._pending: tuple[str, list[Any]] | None = None
        self._replies: dict[int, list[dict[str, Any]]] = {}  # worker index -> its rows of the pending call
        self._lost_steps: set[int] = set()  # workers whose next reset answers a step they lost
        self._idle_restarted: set[int] = set()  # workers restarted between calls (games fresh)
        self.num_workers = min(num_envs, available_cpus()) if num_workers is None else int(num_workers)
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self._local: list[AutoresetEnv] | None = None
        self._pool: WorkerPool | None = None
        if self.num_workers == 0:
            self._local = []
            try:
                for i in range(num_envs):
                    self._local.append(AutoresetEnv(_make_env(env_id, self._bases[i], kwargs)))
            except BaseException:
                self.close()
                raise
            return
        self.num_workers = min(self.num_workers, num_envs)
        blocks = [[int(i) for i in block] for block in np.array_split(np.arange(num_envs), self.num_workers)]
        self._pool = WorkerPool(
            env_id,
            _TextGames,
            self._worker_args,
            blocks,
            on_reply=self._on_reply,
            on_restart=self._on_restart,
            timeout=timeout,
            startup_timeout=startup_timeout,
            max_restarts=max_restarts,
            start_method=start_method,
            preload=(__name__,),
        )

    # --- workers ---------------------------------------------------------------------------

    def _worker_args(self, index: int, env_ids: list[int], generation: int) -> tuple:
        """A worker's games continue each env's seed stream (a restarted one too)."""
        return (self.env_id, self.kwargs, [(self._bases[i], int(self._started[i])) for i in env_ids])

    @property
    def max_restarts(self) -> int:
        return self._pool.max_restarts if self._pool is not None else 0

    @max_restarts.setter
    def max_restarts(self, value: int) -> None:
        if self._pool is not None:
            self._pool.max_restarts = int(value)

    def _on_reply(self, worker: Worker, command: str, payload: Any, rows: list[dict[str, Any]]) -> None:
        if command == "reset" and worker.index in self._lost_steps:
            self._lost_steps.discard(worker.index)
            rows = [self._lost_row(i, row) for i, row in zip(worker.env_ids, rows, strict=True)]
        self._replies[worker.index] = rows

    def _on_restart(self, worker: Worker, lost: list[Request]) -> None:
        """Redo a lost reset on the new games; a lost step ends its episodes (truncated)."""
        if not lost:  # it died between calls: its episodes end (truncated) on the next step
            self._idle_restarted.add(worker.index)
        for command, payload in lost:
            if command == "reset" and worker.index not in self._lost_steps:
                self._pool.send(worker, "reset", payload)
            else:
                self._send_lost_step(worker)

    def _send_lost_step(self, worker: Worker) -> None:
        """The worker's episodes are gone: each env starts the next episode of its seed stream."""
        self._lost_steps.add(worker.index)
        self._pool.send(worker, "reset", [None] * len(worker.env_ids))

    # --- protocol --------------------------------------------------------------------------

    def async_reset(self, seed: int | list[int] | None = None) -> None:
        self._check_open()
        seeds = self.seeds_for(seed)
        for i, s in enumerate(seeds):
            if s is not None:
                self._bases[i], self._started[i] = s, 0
        self._dispatch("reset", seeds)

    def send(self, commands: list[str], env_ids: np.ndarray | None = None) -> None:
        self._check_open()
        if env_ids is not None:
            raise ValueError("text vector envs step every env at once: env_ids must be None")
        self._dispatch("step", self.check_commands(commands))

    def _dispatch(self, kind: str, args: list[Any]) -> None:
        if self._pending is not None:
            raise RuntimeError(f"{self.env_id}: call recv() before sending again")
        self._pending = (kind, args)
        self._replies.clear()
        if self._pool is not None:
            for worker in self._pool.workers:
                if worker.index in self._idle_restarted:
                    self._idle_restarted.discard(worker.index)
                    if kind == "step":
                        self._send_lost_step(worker)
                        continue
                self._pool.send(worker, kind, [args[i] for i in worker.env_ids])

    def recv(self) -> TextStepResult:
        self._check_open()
        if self._pending is None:
            raise RuntimeError(f"{self.env_id}: recv() without a pending reset or send()")
        kind, args = self._pending
        if self._local is not None:
            if kind == "reset":
                rows = [e.reset(seed=s) for e, s in zip(self._local, args, strict=True)]
            else:
                rows = [e.step(c) for e, c in zip(self._local, args, strict=True)]
        else:
            pool = self._pool
            assert pool is not None
            # a TimeoutError leaves the call pending: recv() again restarts the hung worker
            pool.pump(lambda: len(self._replies) == len(pool.workers) and not pool.busy, "recv")
            rows = [{}] * self.num_envs
            for worker in pool.workers:
                for i, row in zip(worker.env_ids, self._replies[worker.index], strict=True):
                    rows[i] = row
        self._pending = None
        return self._finish(kind, rows)

    def _lost_row(self, i: int, reset_row: dict[str, Any]) -> dict[str, Any]:
        last = self._last_rows[i] or {}
        row = dict(reset_row)
        row.update(
            reward=0.0,
            terminated=False,
            truncated=True,
            success=False,
            final_obs=last.get("obs", ""),
            final_score=last.get("score", 0.0),
            final_success=False,
            episode_return=float(self._ep_return[i]),
            episode_length=-1,
        )
        return row

    def _finish(self, kind: str, rows: list[dict[str, Any]]) -> TextStepResult:
        out = self._batch.collate(rows, reset=kind == "reset")
        self._last_rows = rows
        ended = np.array([r.get("final_obs") is not None for r in rows], dtype=bool)
        if kind == "reset":
            self._started += 1
            self._ep_return[:] = 0.0
        else:
            self._started += ended
            self._ep_return = np.where(ended, 0.0, self._ep_return + out[1])
        return out

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"this TextVecEnv ({self.env_id}) is closed")

    # --- introspection and closing ---------------------------------------------------------

    @property
    def worker_pids(self) -> list[int | None]:
        return self._pool.pids if self._pool is not None else []

    @property
    def worker_restarts(self) -> list[int]:
        return self._pool.restarts if self._pool is not None else []

    def close_extras(self, **kwargs: Any) -> None:
        for env in getattr(self, "_local", None) or []:
            with contextlib.suppress(Exception):
                env.env.close()
        if getattr(self, "_pool", None) is not None:
            self._pool.close()
