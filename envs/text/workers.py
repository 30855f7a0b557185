"""`TextVecEnv`: N text games stepped in worker processes (or in this process), SAME_STEP autoreset.

Each worker process runs several games (the N envs are split into `num_workers` contiguous
blocks); a step sends each worker its block's commands and gathers one list of rows per worker
(strings and small lists: pickling them through a pipe costs far less than a game step).
`num_workers=0` runs every game in this process (tests, debugging).

- Start method: forkserver where available (the server imports this module once), else spawn;
  never fork (a parent with a JVM gateway, torch or envpool threads must not fork).
- TextWorldExpress workers start one JVM each, shared by the worker's games (envs.text.twx).
- Seeds: env i of a vector env made with `seed=s` (or reset with `seed=s`) plays the seed stream
  s + i (see envs.text.core: game seed s + i first, then derived seeds); a list gives one seed
  per env. `make_text_env(env_id, seed=s + i)` replays env i's episodes.
- Faults: a worker that dies (crash, kill) or raises is restarted with fresh games, at most
  `max_restarts` times per worker, then TextWorkerError names the env id, the worker and its env
  indices. The episodes it held are reported as cut short on the step that lost them: truncated,
  `final_obs` the last observation seen, `episode_length` -1 (unknown), `obs` the first
  observation of the next episode of each env's seed stream. A worker that fails while it is
  being built (bad arguments) raises at once, with its own exception type.
- `recv` waits for every worker, checking that they are alive; `timeout` (seconds without a
  reply) turns a hung worker into a TimeoutError naming it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from envs.pool import available_cpus, exit_reason, worker_context
from envs.text.vector import AutoresetEnv, TextStepResult, TextVecEnvBase

logger = logging.getLogger(__name__)


class TextWorkerError(RuntimeError):
    """A worker process of a TextVecEnv failed more often than `max_restarts` allows."""


def _make_env(env_id: str, seed: int, kwargs: dict[str, Any]) -> Any:
    from envs.text import make_text_env

    return make_text_env(env_id, seed=seed, **kwargs)


def _worker_main(conn: Connection, env_id: str, kwargs: dict[str, Any], streams: list[tuple[int, int]]) -> None:
    """A worker: builds its games, then answers ("reset", seeds) and ("step", commands) with rows."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    envs: list[AutoresetEnv] = []
    try:
        for base, next_episode in streams:
            env = _make_env(env_id, base, kwargs)
            env.set_seed_stream(base, next_episode)
            envs.append(AutoresetEnv(env))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which re-raises it
        _send_error(conn, exc)
        return
    conn.send(("ready", None))
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "step":
                conn.send(("rows", [e.step(c) for e, c in zip(envs, msg[1], strict=True)]))
            elif msg[0] == "reset":
                conn.send(("rows", [e.reset(seed=s) for e, s in zip(envs, msg[1], strict=True)]))
            else:  # "close"
                break
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass
    except BaseException as exc:  # noqa: BLE001 - the parent restarts this worker or raises
        _send_error(conn, exc)
    finally:
        for e in envs:
            with contextlib.suppress(Exception):
                e.env.close()


def _send_error(conn: Connection, exc: BaseException) -> None:
    text = traceback.format_exc()
    try:
        conn.send(("error", exc, text))
    except Exception:  # noqa: BLE001 - the exception itself may not pickle
        with contextlib.suppress(OSError):
            conn.send(("error", None, text))


class _Worker:
    def __init__(self, index: int, env_ids: list[int]):
        self.index = index
        self.env_ids = env_ids
        self.process: Any = None
        self.conn: Connection | None = None
        self.restarts = 0


class TextVecEnv(TextVecEnvBase):
    """`num_envs` copies of a text game (TextWorldExpress, TextWorld) in worker processes.

    Args:
        env_id: a text env id ('TWX-CoinCollector-v0', 'TextWorld-v0').
        num_envs: how many games.
        num_workers: worker processes (None: min(num_envs, CPUs); 0: every game in this process).
        seed: env i plays the seed stream seed + i.
        start_method: 'forkserver' (default where available) or 'spawn'.
        max_restarts: restarts allowed per worker before TextWorkerError.
        timeout: seconds to wait for a worker's reply before TimeoutError (None: no limit).
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
        timeout: float | None = None,
        **kwargs: Any,
    ):
        super().__init__(env_id, num_envs)
        self.kwargs = kwargs
        self.max_restarts = max_restarts
        self.timeout = timeout
        self._bases = [int(seed) + i for i in range(num_envs)]
        self._started = np.zeros(num_envs, dtype=np.int64)  # episodes started per env (seed stream index)
        self._last_rows: list[dict[str, Any] | None] = [None] * num_envs
        self._ep_return = np.zeros(num_envs, dtype=np.float64)
        self._pending: tuple[str, list[Any]] | None = None
        self.num_workers = min(num_envs, available_cpus()) if num_workers is None else int(num_workers)
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self._local: list[AutoresetEnv] | None = None
        self._workers: list[_Worker] = []
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
        self._ctx = worker_context(start_method, preload=(__name__,))
        blocks = np.array_split(np.arange(num_envs), self.num_workers)
        self._workers = [_Worker(w, [int(i) for i in block]) for w, block in enumerate(blocks)]
        try:
            for worker in self._workers:
                self._spawn(worker)
            for worker in self._workers:
                self._await_ready(worker)
        except BaseException:
            self.close()
            raise

    # --- workers ---------------------------------------------------------------------------

    def _spawn(self, worker: _Worker) -> None:
        streams = [(self._bases[i], int(self._started[i])) for i in worker.env_ids]
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(
            target=_worker_main,
            args=(child, self.env_id, self.kwargs, streams),
            name=f"text-worker-{worker.index}",
            daemon=True,
        )
        process.start()
        child.close()
        worker.process, worker.conn = process, parent

    def _where(self, worker: _Worker) -> str:
        ids = worker.env_ids
        span = f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])
        return f"{self.env_id} worker {worker.index} (envs {span}, pid {worker.process.pid})"

    def _receive(self, worker: _Worker) -> tuple[str, Any]:
        """The worker's next message, or ("failed", reason) when it died or raised."""
        assert worker.conn is not None
        while True:
            ready = wait([worker.conn, worker.process.sentinel], timeout=self.timeout)
            if not ready:
                raise TimeoutError(f"{self._where(worker)} sent nothing for {self.timeout} s")
            if worker.conn in ready or worker.conn.poll():
                try:
                    msg = worker.conn.recv()
                except (EOFError, OSError):
                    worker.process.join(timeout=1.0)
                    return "failed", f"died ({exit_reason(worker.process)})"
                if msg[0] == "error":
                    return "error", msg
                return msg
            worker.process.join(timeout=1.0)
            return "failed", f"died ({exit_reason(worker.process)})"

    def _await_ready(self, worker: _Worker) -> None:
        kind, payload = self._receive(worker)
        if kind == "ready":
            return
        if kind == "error":
            _, exc, text = payload
            if isinstance(exc, Exception):
                if hasattr(exc, "add_note"):  # Python >= 3.11
                    exc.add_note(f"raised in {self._where(worker)} while building its games:\n{text}")
                raise exc
            raise TextWorkerError(f"{self._where(worker)} failed while building its games:\n{text}")
        raise TextWorkerError(f"{self._where(worker)} failed while building its games: {payload}")

    def _stop(self, worker: _Worker, timeout: float = 2.0) -> None:
        if worker.conn is not None:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(("close",))
        if worker.process is not None:
            worker.process.join(timeout=timeout)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=1.0)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        if worker.conn is not None:
            with contextlib.suppress(OSError):
                worker.conn.close()

    def _restart(self, worker: _Worker, reason: str) -> None:
        where = self._where(worker)
        if worker.restarts >= self.max_restarts:
            raise TextWorkerError(f"{where} failed after {worker.restarts} restart(s) (max_restarts={self.max_restarts}): {reason}")
        worker.restarts += 1
        logger.warning("%s failed, restarting it (restart %d of %d): %s", where, worker.restarts, self.max_restarts, reason)
        self._stop(worker, timeout=0.5)
        self._spawn(worker)
        self._await_ready(worker)

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
        for worker in self._workers:
            part = [args[i] for i in worker.env_ids]
            with contextlib.suppress(OSError, ValueError):  # a dead worker: recv restarts it
                worker.conn.send((kind, part))

    def recv(self) -> TextStepResult:
        self._check_open()
        if self._pending is None:
            raise RuntimeError(f"{self.env_id}: recv() without a pending reset or send()")
        kind, args = self._pending
        self._pending = None
        rows: list[dict[str, Any]] = [{}] * self.num_envs
        if self._local is not None:
            if kind == "reset":
                rows = [e.reset(seed=s) for e, s in zip(self._local, args, strict=True)]
            else:
                rows = [e.step(c) for e, c in zip(self._local, args, strict=True)]
        else:
            for worker in self._workers:
                for i, row in zip(worker.env_ids, self._gather(worker, kind, args), strict=True):
                    rows[i] = row
        return self._finish(kind, rows)

    def _gather(self, worker: _Worker, kind: str, args: list[Any]) -> list[dict[str, Any]]:
        msg_kind, payload = self._receive(worker)
        if msg_kind == "rows":
            return payload
        reason = payload[2] if msg_kind == "error" else payload
        self._restart(worker, reason)
        if kind == "reset":  # redo the reset on the new games
            worker.conn.send(("reset", [args[i] for i in worker.env_ids]))
            return self._gather(worker, kind, args)
        # the episodes are lost: each env starts the next episode of its seed stream
        worker.conn.send(("reset", [None] * len(worker.env_ids)))
        fresh = self._gather(worker, "reset", [None] * self.num_envs)
        return [self._lost_row(i, row) for i, row in zip(worker.env_ids, fresh, strict=True)]

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
        return [w.process.pid for w in self._workers]

    @property
    def worker_restarts(self) -> list[int]:
        return [w.restarts for w in self._workers]

    def close_extras(self, **kwargs: Any) -> None:
        for env in getattr(self, "_local", None) or []:
            with contextlib.suppress(Exception):
                env.env.close()
        workers = getattr(self, "_workers", [])
        for worker in workers:
            with contextlib.suppress(OSError, ValueError):
                if worker.conn is not None:
                    worker.conn.send(("close",))
        for worker in workers:
            self._stop(worker)


