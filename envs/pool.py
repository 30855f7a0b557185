"""One pool of worker processes, under every env that steps outside this process.

MiniHack (NLE has no batched stepper), the text games (TextWorld's interpreter, TextWorldExpress's
JVM) and Go-Explore's ALE emulators each run their envs in worker processes. What is the same for
all three lives here, once:

- start: forkserver where available (else spawn; never fork: a parent with torch, envpool or a
  JVM gateway must not fork), each worker building its share of the envs from a picklable
  `build(*args)` and answering "ready" with `describe()`. A worker that cannot build raises in
  the parent: a `ConfigError` (bad settings) with its own type, anything else as
  WorkerCrashedError with the worker's traceback. Startup waits at most `startup_timeout`.
- requests: `send(worker, command, payload)` queues a request; the worker answers each in order
  with `handle(command, payload)`; `pump(done, ...)` delivers the replies to `on_reply` until
  `done()` holds.
- crashes: a worker that dies (segfault, OOM kill, SIGKILL), closes its pipe or raises is
  restarted: what it answered before dying is delivered first, the process is reaped, a new one
  builds the same envs (its `generation` counts the restarts), and `on_restart(worker, lost)`
  gets the requests it never answered, for the owner to redo or report. After `max_restarts`
  restarts of one worker the next fault raises WorkerCrashedError naming it.
- timeouts: every wait is bounded. A worker that owes a reply and has said nothing for `timeout`
  seconds is hung (stopped, or stuck inside a game): it is killed, and `pump` raises
  TimeoutError naming it. The next `pump` restarts it like any crash.
- exit: `close()` (also run when the pool is garbage-collected, at interpreter exit, or when a
  `with` block raises) asks each worker to stop, then SIGTERM, then SIGKILL, joins them, and
  unlinks every shared-memory block the pool created (`create_block`).

Workers are named the same way in every message: "<label> worker <i> (pid <p>, envs <ids>)".
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing as mp
import select
import signal
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from explore.errors import ConfigError

logger = logging.getLogger(__name__)

Request = tuple[str, Any]  # (command, payload)


class WorkerCrashedError(RuntimeError):
    """A worker died or raised more often than `max_restarts` allows, or could not start."""


class WorkerHandler(Protocol):
    """What a worker process runs: built from `build(*args)` inside the worker."""

    def describe(self) -> Any:
        """Sent to the parent with "ready" (e.g. the envs' spaces)."""

    def handle(self, command: str, payload: Any) -> Any:
        """Answer one request; the return value is the reply."""

    def close(self) -> None:
        """Release the envs (best effort: the process ends right after)."""


# --- process plumbing -------------------------------------------------------------------------


def worker_context(start_method: str | None, preload: Sequence[str] = ()) -> Any:
    """The multiprocessing context for env workers: forkserver where available, else spawn.

    With forkserver, `preload` modules are imported once in the server instead of in every worker
    (NLE or the JVM bridge take seconds). The preload list is global to the process and only its
    first use counts, so it is extended, never replaced.
    """
    if start_method is None:
        start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"start_method must be 'forkserver' or 'spawn', got {start_method!r}")
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        from multiprocessing import forkserver

        current = list(getattr(forkserver._forkserver, "_preload_modules", ["__main__"]))
        wanted = [m for m in preload if m not in current]
        if wanted:
            ctx.set_forkserver_preload(current + wanted)
    return ctx


def exit_reason(process: Any) -> str:
    """How a worker process ended, for error messages: exit code, or the signal that killed it."""
    code = process.exitcode
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


def span(ids: Iterable[int]) -> str:
    """'0-3' for consecutive ids, else '0,2,5'."""
    ids = list(ids)
    if len(ids) > 1 and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}"
    return ",".join(str(i) for i in ids)


# --- the worker side --------------------------------------------------------------------------


def _send_error(conn: Connection, exc: BaseException) -> None:
    text = traceback.format_exc()
    try:
        conn.send(("error", exc, text))
    except Exception:  # noqa: BLE001 - the exception itself may not pickle
        with contextlib.suppress(OSError):
            conn.send(("error", None, text))


def _serve(conn: Connection, build: Callable[..., WorkerHandler], args: tuple) -> None:
    """A worker: build the handler, say "ready", then answer requests in order until "close".

    An exception is sent back as ("error", exception, traceback) and ends the worker: the parent
    treats it like a crash.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes us
    handler: WorkerHandler | None = None
    try:
        handler = build(*args)
        conn.send(("ready", handler.describe()))
        while True:
            command, payload = conn.recv()
            if command == "close":
                break
            conn.send(("ok", handler.handle(command, payload)))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):  # the parent went away: no one to tell
        pass
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which restarts us or raises
        _send_error(conn, exc)
    finally:
        if handler is not None:
            with contextlib.suppress(Exception):  # best effort at exit: the process ends anyway
                handler.close()
        conn.close()


# --- the parent side --------------------------------------------------------------------------


@dataclass
class Worker:
    """One worker process as the parent sees it."""

    index: int
    env_ids: list[int]  # the envs it holds (for messages and for the owner's bookkeeping)
    process: BaseProcess | None = None
    pid: int | None = None
    conn: Connection | None = None
    pending: deque[Request] = field(default_factory=deque)  # sent and not yet answered, in order
    restarts: int = 0
    heard: float = 0.0  # when it last answered (or was first asked, when it was idle)
    hung: str = ""  # why it was killed for not answering ("" while it is not)
    fds: tuple[int, ...] = ()  # what the poller watches: the pipe and the process sentinel


def _has_answer(worker: Worker) -> bool:
    """Whether a message (or the end of the pipe) waits to be read from `worker`."""
    try:
        return worker.conn is not None and worker.conn.poll()
    except (EOFError, OSError):  # the pipe is gone: the event loop restarts the worker
        return True


def _stop(workers: Sequence[Worker], timeout: float) -> None:
    """Ask every worker to stop, then SIGTERM, then SIGKILL (which also ends a stopped one); reap."""
    for worker in workers:
        if worker.conn is not None:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(("close", None))
    deadline = time.monotonic() + timeout
    for worker in workers:
        if worker.process is not None:
            with contextlib.suppress(ValueError):
                if worker.process.pid is None:  # its start() failed: nothing to wait for, nor to raise
                    continue
                worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
    for worker in workers:
        process = worker.process
        if process is not None:
            with contextlib.suppress(ValueError):  # ValueError: already closed
                if process.is_alive():
                    process.terminate()
                    process.join(timeout=1.0)
                if process.is_alive():
                    process.kill()
                    process.join()
                process.close()
        if worker.conn is not None:
            with contextlib.suppress(OSError):
                worker.conn.close()


def _release(workers: list[Worker], blocks: list[shared_memory.SharedMemory], timeout: float = 2.0) -> None:
    """Stop the workers and unlink the shared memory: close(), the finalizer and atexit all run this."""
    _stop(workers, timeout)
    while blocks:
        block = blocks.pop()
        with contextlib.suppress(BufferError):  # a view still alive somewhere: unlink anyway
            block.close()
        with contextlib.suppress(FileNotFoundError):
            block.unlink()


class WorkerPool:
    """Worker processes that each hold some envs; see the module docstring.

    Args:
        label: names the workers in every message (e.g. the env id).
        build: picklable; `build(*worker_args(index, env_ids, generation))` runs in each worker and
            returns its WorkerHandler.
        worker_args: the build arguments of a worker (called again at each restart, so a
            restarted worker can continue its seed streams or attach to shared memory).
        env_ids: the env ids each worker holds, one list per worker.
        on_reply: `on_reply(worker, command, payload, reply)` for every answered request.
        on_restart: `on_restart(worker, lost)` after a restart, with the requests it never answered.
        timeout: seconds a worker that owes a reply may stay silent before it counts as hung.
        startup_timeout: seconds a worker may take to build its envs.
        max_restarts: restarts allowed per worker before a fault raises WorkerCrashedError.
        start_method, preload: see `worker_context`.
    """

    def __init__(
        self,
        label: str,
        build: Callable[..., WorkerHandler],
        worker_args: Callable[[int, list[int], int], tuple],
        env_ids: Sequence[Sequence[int]],
        *,
        on_reply: Callable[[Worker, str, Any, Any], None],
        on_restart: Callable[[Worker, list[Request]], None],
        timeout: float = 60.0,
        startup_timeout: float = 120.0,
        max_restarts: int = 3,
        start_method: str | None = None,
        preload: Sequence[str] = (),
    ):
        for name, value in (("timeout", timeout), ("startup_timeout", startup_timeout)):
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(max_restarts, int) or max_restarts < 0:
            raise ConfigError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
        self.label = label
        self.timeout, self.startup_timeout, self.max_restarts = (
            float(timeout),
            float(startup_timeout),
            max_restarts,
        )
        self._build, self._worker_args = build, worker_args
        self._on_reply, self._on_restart = on_reply, on_restart
        self._ctx = worker_context(start_method, preload)
        self.workers = [Worker(i, [int(e) for e in ids]) for i, ids in enumerate(env_ids)]
        self._blocks: list[shared_memory.SharedMemory] = []
        self._finalizer = weakref.finalize(self, _release, self.workers, self._blocks)
        # One poll object for the pool's life: multiprocessing.connection.wait builds a selector per
        # call, which costs as much as the IPC itself at MiniHack's step rates.
        self._poller = select.poll()
        self._watched: dict[int, tuple[Worker, bool]] = {}  # fd -> (worker, the fd is its sentinel)
        self.descriptions: list[Any] = []
        try:
            for worker in self.workers:
                self._spawn(worker, generation=0)
            self.descriptions = [self._await_ready(worker) for worker in self.workers]
        except BaseException:
            self.close()
            raise
        for worker in self.workers:
            self._watch(worker)

    # --- introspection ----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    @property
    def pids(self) -> list[int | None]:
        return [w.pid for w in self.workers]

    @property
    def restarts(self) -> list[int]:
        return [w.restarts for w in self.workers]

    @property
    def busy(self) -> bool:
        """Some worker owes a reply."""
        return any(w.pending for w in self.workers)

    def where(self, worker: Worker) -> str:
        return f"{self.label} worker {worker.index} (pid {worker.pid}, envs {span(worker.env_ids)})"

    # --- shared memory ----------------------------------------------------------------------

    def create_block(self, size: int) -> shared_memory.SharedMemory:
        """A shared-memory block the workers can attach to by name; unlinked when the pool closes."""
        block = shared_memory.SharedMemory(create=True, size=size)
        self._blocks.append(block)
        return block

    # --- requests ---------------------------------------------------------------------------

    def send(self, worker: Worker, command: str, payload: Any = None) -> None:
        """Queue a request; a worker found dead here is restarted (and the request reported lost)."""
        if self.closed:
            raise RuntimeError(f"{self.label}: the worker pool is closed")
        if not worker.pending:
            worker.heard = time.monotonic()  # its silence counts from now
        worker.pending.append((command, payload))
        assert worker.conn is not None
        try:
            worker.conn.send((command, payload))
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            self._restart(worker, "died")

    def pump(self, done: Callable[[], bool], what: str, max_wait: float | None = None) -> bool:
        """Deliver replies until `done()`; False if `max_wait` seconds passed first.

        Restarts workers that die or raise; raises TimeoutError when a worker that owes a reply has
        been silent for `timeout` seconds (it is killed first; the next pump restarts it).
        """
        start = time.monotonic()
        while not done():
            busy = [w for w in self.workers if w.pending]
            if not busy:
                raise RuntimeError(
                    f"{self.label} {what}: waiting for replies no worker owes (internal error)"
                )
            now = time.monotonic()
            # silent for `timeout`: hung, unless its answer is waiting unread (this process, not the
            # worker, was slow: descheduled on a loaded machine, or busy restarting another worker)
            hung = [w for w in busy if not w.hung and now - w.heard >= self.timeout and not _has_answer(w)]
            if hung:
                self._kill_hung(hung, what)
            if max_wait is not None and now - start >= max_wait:
                return False
            # wake when the next worker would count as hung (a killed one wakes us through its sentinel)
            wake = min((w.heard + self.timeout for w in busy if not w.hung), default=now + 1.0)
            if max_wait is not None:
                wake = min(wake, start + max_wait)
            events = self._poller.poll(max(1, math.ceil((wake - now) * 1000)))
            handled: set[int] = set()
            for fd, _ in events:
                entry = self._watched.get(fd)
                if entry is None:
                    continue
                worker, is_sentinel = entry
                if worker.index in handled:  # stale events, or a reused fd number: poll again
                    continue
                if is_sentinel:  # the process ended
                    handled.add(worker.index)
                    self._restart(worker, "died")
                elif not self._take_one(worker):
                    handled.add(worker.index)
        return True

    def _kill_hung(self, hung: list[Worker], what: str) -> None:
        names = "; ".join(self.where(w) for w in hung)
        for worker in hung:
            command = worker.pending[0][0]
            worker.hung = f"hung: no reply to {command!r} for timeout={self.timeout:g}s, so it was killed"
            assert worker.process is not None
            worker.process.kill()  # SIGKILL also ends a stopped (SIGSTOP) process
        raise TimeoutError(
            f"{what}: no reply for timeout={self.timeout:g}s from {names}. It was alive but hung "
            "(stopped, or stuck inside the game); it has been killed, and the next call restarts it "
            "and reports its envs' episodes as cut short."
        )

    def _take_one(self, worker: Worker) -> bool:
        """Read one message from a readable pipe; False if the worker had to be restarted."""
        assert worker.conn is not None
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._restart(worker, "died")
            return False
        if message[0] == "error":
            self._restart(worker, f"raised an exception:\n{message[2]}")
            return False
        self._deliver(worker, message[1])
        return True

    def _deliver(self, worker: Worker, reply: Any) -> None:
        command, payload = worker.pending.popleft()
        worker.heard = time.monotonic()
        self._on_reply(worker, command, payload, reply)

    # --- start and restart ------------------------------------------------------------------

    def _spawn(self, worker: Worker, generation: int) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        args = self._worker_args(worker.index, worker.env_ids, generation)
        process = self._ctx.Process(
            target=_serve,
            args=(child, self._build, args),
            name=f"{self.label}-worker-{worker.index}",
            daemon=True,
        )
        worker.process, worker.conn = process, parent  # before start: close() reaps it whatever happens
        process.start()
        worker.pid = process.pid
        child.close()

    def _await_ready(self, worker: Worker) -> Any:
        """The worker's "ready" description, or an error saying why it could not build its envs."""
        assert worker.process is not None and worker.conn is not None
        deadline = time.monotonic() + self.startup_timeout
        while not wait([worker.conn, worker.process.sentinel], timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{self.where(worker)} did not start within startup_timeout={self.startup_timeout:g}s"
                )
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(timeout=1.0)
            raise WorkerCrashedError(
                f"{self.where(worker)} died while starting ({exit_reason(worker.process)}); its error, if "
                "any, is on stderr. (A script that builds envs at import time, without the "
                "`if __name__ == '__main__':` guard, fails this way.)"
            ) from None
        if message[0] == "ready":
            return message[1]
        _, exc, text = message
        if isinstance(exc, ConfigError):  # bad settings: the user's to fix, with its own type
            exc.add_note(f"raised in {self.where(worker)} while building its envs:\n{text}")
            raise exc
        raise WorkerCrashedError(f"{self.where(worker)} could not build its envs:\n{text}")

    def _restart(self, worker: Worker, reason: str) -> None:
        """Replace a dead (or failed) worker; `on_restart` gets the requests it never answered."""
        assert worker.process is not None and worker.conn is not None
        with contextlib.suppress(EOFError, OSError):  # what it answered before dying is still good
            while worker.pending and worker.conn.poll():
                message = worker.conn.recv()
                if message[0] != "ok":
                    break
                self._deliver(worker, message[1])
        self._unwatch(worker)
        process = worker.process
        process.join(timeout=1.0)
        if process.is_alive():
            process.kill()
            process.join(timeout=5.0)
        detail = f"{worker.hung or reason.strip()} ({exit_reason(process)})"
        where = self.where(worker)
        with contextlib.suppress(OSError):
            worker.conn.close()
        if worker.restarts >= self.max_restarts:
            raise WorkerCrashedError(
                f"{where} failed after {worker.restarts} restart(s) (max_restarts={self.max_restarts}): {detail}"
            )
        worker.restarts += 1
        logger.warning(
            "%s failed, restarting it (restart %d of %d): %s",
            where,
            worker.restarts,
            self.max_restarts,
            detail,
        )
        lost, worker.hung = list(worker.pending), ""
        worker.pending.clear()
        with contextlib.suppress(ValueError):
            process.close()
        self._spawn(worker, generation=worker.restarts)
        self._await_ready(worker)
        self._watch(worker)
        self._on_restart(worker, lost)

    def _watch(self, worker: Worker) -> None:
        assert worker.process is not None and worker.conn is not None
        worker.fds = (worker.conn.fileno(), worker.process.sentinel)
        for fd, is_sentinel in zip(worker.fds, (False, True), strict=True):
            self._poller.register(fd, select.POLLIN)
            self._watched[fd] = (worker, is_sentinel)

    def _unwatch(self, worker: Worker) -> None:
        for fd in worker.fds:
            if self._watched.pop(fd, None) is not None:
                self._poller.unregister(fd)
        worker.fds = ()

    # --- closing ----------------------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> None:
        """Stop every worker (asked, then SIGTERM, then SIGKILL), reap them, unlink shared memory.

        Idempotent. `timeout` bounds the polite phase."""
        if self._finalizer.alive:
            self._finalizer.detach()
            _release(self.workers, self._blocks, timeout)
        for worker in self.workers:
            self._unwatch(worker)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
