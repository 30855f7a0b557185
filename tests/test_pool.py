"""The worker pool under MiniHack, the text games and Go-Explore's ALE emulators (envs/pool.py).

The workers here run `Tally`, a small real handler (it adds numbers, or raises when asked), so that
crashes, hangs and exits are tested on the pool alone; the suites' own tests check what their
envs report after a restart (tests/test_minihack.py, tests/test_text_envs.py).
"""

from __future__ import annotations

import errno
import gc
import logging
import multiprocessing.process
import os
import signal
import time

import pytest

from envs.pool import WorkerCrashedError, WorkerPool, span
from explore.errors import ConfigError


class Tally:
    """A worker handler for these tests: a running total that starts at `start`."""

    def __init__(self, start: int, fail: str = ""):
        if fail == "config":
            raise ConfigError("tally: start must be even, got 7")
        if fail == "crash":
            raise RuntimeError("tally cannot build")
        self.total = start

    def describe(self) -> dict:
        return {"pid": os.getpid(), "total": self.total}

    def handle(self, command: str, payload):
        if command == "add":
            self.total += payload
            return self.total
        if command == "raise":
            raise ValueError(payload)
        raise ValueError(f"unknown command {command!r}")

    def close(self) -> None:
        pass


class Recorder:
    """What the pool told its owner."""

    def __init__(self):
        self.replies: list[tuple] = []
        self.restarts: list[tuple] = []

    def on_reply(self, worker, command, payload, reply):
        self.replies.append((worker.index, command, payload, reply))

    def on_restart(self, worker, lost):
        self.restarts.append((worker.index, lost))


def make_pool(fail: str = "", **kwargs) -> tuple[WorkerPool, Recorder]:
    """Two workers holding envs 0-1 and 2-3; worker i starts its total at 100 * i + its generation."""
    seen = Recorder()
    pool = WorkerPool(
        "tally",
        Tally,
        lambda index, env_ids, generation: (100 * index + generation, fail),
        [[0, 1], [2, 3]],
        on_reply=seen.on_reply,
        on_restart=seen.on_restart,
        preload=("envs.pool",),  # envs (and torch) imported once, in the forkserver
        **kwargs,
    )
    return pool, seen


def gone(pid: int, wait: float = 10.0) -> bool:
    """True once `pid` has exited and been reaped."""
    deadline = time.monotonic() + wait
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name.lstrip('/')}")


def test_span_names_ranges_and_lists():
    assert span([2, 3]) == "2-3" and span([0, 1, 2, 3]) == "0-3"
    assert span([1]) == "1" and span([0, 2, 5]) == "0,2,5" and span([]) == ""


def test_replies_come_back_in_order_per_worker():
    pool, seen = make_pool()
    try:
        assert [d["total"] for d in pool.descriptions] == [0, 100]
        first, second = pool.workers
        pool.send(first, "add", 1)
        pool.send(first, "add", 2)
        pool.send(second, "add", 5)
        assert pool.busy
        assert pool.pump(lambda: len(seen.replies) == 3, "test")
        assert not pool.busy
        assert sorted(seen.replies) == [(0, "add", 1, 1), (0, "add", 2, 3), (1, "add", 5, 105)]
        assert seen.restarts == []
    finally:
        pool.close()


def test_a_sigkilled_worker_is_restarted_and_its_unanswered_request_reported(caplog):
    pool, seen = make_pool(max_restarts=2)
    try:
        worker = pool.workers[1]
        old_pid = worker.pid
        os.kill(old_pid, signal.SIGSTOP)  # it cannot answer before it dies
        pool.send(worker, "add", 7)
        os.kill(old_pid, signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="envs.pool"):
            assert pool.pump(lambda: bool(seen.restarts), "test")
        assert seen.restarts == [(1, [("add", 7)])] and seen.replies == []
        assert pool.restarts == [0, 1] and worker.pid != old_pid and gone(old_pid)
        assert (
            f"tally worker 1 (pid {old_pid}, envs 2-3) failed, restarting it (restart 1 of 2)" in caplog.text
        )
        assert "killed by SIGKILL" in caplog.text
        pool.send(worker, "add", 0)  # the new worker is generation 1: its total starts at 101
        pool.pump(lambda: bool(seen.replies), "test")
        assert seen.replies == [(1, "add", 0, 101)]
    finally:
        pool.close()


def test_a_worker_that_raises_is_restarted_with_its_traceback_logged(caplog):
    pool, seen = make_pool()
    try:
        with caplog.at_level(logging.WARNING, logger="envs.pool"):
            pool.send(pool.workers[0], "raise", "boom")
            pool.pump(lambda: bool(seen.restarts), "test")
        assert seen.restarts == [(0, [("raise", "boom")])]
        assert "raised an exception" in caplog.text and "ValueError: boom" in caplog.text
    finally:
        pool.close()


def test_too_many_restarts_raise_naming_the_worker_and_its_envs():
    pool, _ = make_pool(max_restarts=0)
    try:
        worker = pool.workers[1]
        pid = worker.pid
        os.kill(pid, signal.SIGSTOP)
        pool.send(worker, "add", 1)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(
            WorkerCrashedError,
            match=rf"tally worker 1 \(pid {pid}, envs 2-3\) failed after 0 restart\(s\) \(max_restarts=0\): "
            r"died \(killed by SIGKILL\)",
        ):
            pool.pump(lambda: False, "test")
    finally:
        pool.close()
    assert gone(pid)


def test_a_hung_worker_raises_timeout_error_naming_it_and_is_restarted_at_the_next_call(caplog):
    pool, seen = make_pool(timeout=1.0)
    try:
        worker = pool.workers[0]
        pid = worker.pid
        os.kill(pid, signal.SIGSTOP)
        pool.send(worker, "add", 3)
        with pytest.raises(
            TimeoutError, match=rf"no reply for timeout=1s from tally worker 0 \(pid {pid}, envs 0-1\)"
        ):
            pool.pump(lambda: bool(seen.replies), "recv")
        assert gone(pid)  # killed, not left stopped
        with caplog.at_level(logging.WARNING, logger="envs.pool"):
            pool.pump(lambda: bool(seen.restarts), "recv")
        assert seen.restarts == [(0, [("add", 3)])] and pool.restarts == [1, 0]
        assert "hung: no reply to 'add' for timeout=1s, so it was killed (killed by SIGKILL)" in caplog.text
    finally:
        pool.close()


def test_a_bad_setting_in_a_worker_keeps_its_type_and_names_the_worker():
    with pytest.raises(ConfigError, match="start must be even") as info:
        make_pool(fail="config")
    assert any("raised in tally worker 0" in note for note in info.value.__notes__)


def test_a_worker_that_cannot_build_raises_worker_crashed_error_with_its_traceback():
    with pytest.raises(WorkerCrashedError, match=r"tally worker 0 \(pid \d+, envs 0-1\) could not build"):
        make_pool(fail="crash")


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), None])
def test_timeouts_must_be_positive_and_finite(value):
    with pytest.raises(ConfigError, match=rf"timeout must be a positive number of seconds, got {value}"):
        make_pool(timeout=value)


# --- no shared memory or process is left behind, whatever the exit -----------------------------


def test_close_unlinks_shared_memory_and_reaps_every_worker():
    pool, _ = make_pool()
    name, pids = pool.create_block(4096).name, pool.pids
    assert shm_exists(name)
    pool.close()
    pool.close()  # idempotent
    assert pool.closed and not shm_exists(name) and all(gone(p) for p in pids)
    with pytest.raises(RuntimeError, match="closed"):
        pool.send(pool.workers[0], "add", 1)


def test_an_exception_inside_with_leaves_no_shared_memory():
    with pytest.raises(KeyError), make_pool()[0] as pool:
        name, pids = pool.create_block(4096).name, pool.pids
        raise KeyError("the trainer failed")
    assert not shm_exists(name) and all(gone(p) for p in pids)


def test_a_timeout_then_close_leaves_no_shared_memory():
    pool, seen = make_pool(timeout=1.0)
    name, pids = pool.create_block(4096).name, pool.pids
    os.kill(pids[1], signal.SIGSTOP)
    pool.send(pool.workers[1], "add", 1)
    try:
        with pytest.raises(TimeoutError):
            pool.pump(lambda: bool(seen.replies), "recv")
    finally:
        pool.close()
    assert not shm_exists(name) and all(gone(p) for p in pids)


def test_a_pool_dropped_without_close_is_cleaned_up_by_the_garbage_collector():
    pool, _ = make_pool()
    name, pids = pool.create_block(4096).name, pool.pids
    del pool
    gc.collect()
    assert not shm_exists(name) and all(gone(p) for p in pids)


# --- Go-Explore's emulators on the pool ---------------------------------------------------------


def summary(result) -> tuple:
    cells = [(key, score, steps) for key, score, steps, _, _ in result.cells]
    return (result.actions.tolist(), result.frames, cells, result.visited.tolist(), result.died)


def test_an_ale_exploration_lost_with_its_worker_runs_again_with_the_same_results():
    pytest.importorskip("ale_py")
    from explore.archive.ale import ALEBatch, ALESettings, ExploreTask

    tasks = [ExploreTask(None, steps=60, seed=s) for s in (11, 12)]
    with ALEBatch(ALESettings(), num_envs=2, num_workers=0) as local:
        expected = [summary(r) for r in local.explore(tasks)]
    with ALEBatch(ALESettings(), num_envs=2, num_workers=2) as batch:
        pid = batch.worker_pids[1]
        os.kill(pid, signal.SIGSTOP)  # it cannot answer before it dies
        batch.submit(0, tasks[:1])
        batch.submit(1, tasks[1:])
        os.kill(pid, signal.SIGKILL)
        got: dict[int, list] = {}
        while len(got) < 2:
            got.update(batch.receive(timeout=None))
        assert batch.worker_restarts == [0, 1] and gone(pid)
        assert [summary(r) for r in got[0] + got[1]] == expected


def test_an_ale_lockstep_step_lost_with_its_worker_raises_naming_it():
    pytest.importorskip("ale_py")
    import numpy as np

    from explore.archive.ale import ALEBatch, ALESettings

    with ALEBatch(ALESettings(), num_envs=2, num_workers=2) as batch:
        batch.reset()
        pid = batch.worker_pids[0]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(
            WorkerCrashedError,
            match=r"ALE MontezumaRevenge-v5 worker 0 \(pid \d+, envs 0\) was lost during 'step'",
        ):
            batch.step(np.zeros(2, dtype=np.int64))
    assert gone(pid)


def test_a_worker_that_cannot_be_started_raises_that_error_alone(monkeypatch):
    """A fork that fails (here a stand-in for EAGAIN: the process limit) is the error the caller sees;
    the cleanup that follows must not raise its own (join() of a process that never started)."""

    def fork_fails(process):  # test double of the OS refusing a new process
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", fork_fails)
    with pytest.raises(OSError, match="Resource temporarily unavailable"):
        make_pool()


def test_a_reply_that_waits_unread_while_the_caller_was_descheduled_is_not_a_hang():
    """On a loaded machine the caller may not run for longer than `timeout` after sending; a worker that
    answered in that time is not hung, and must not be killed for the caller's delay."""
    pool, seen = make_pool(timeout=1.0)
    try:
        worker = pool.workers[0]
        pid = worker.pid
        pool.send(worker, "add", 3)
        deadline = time.monotonic() + 60
        while not worker.conn.poll() and time.monotonic() < deadline:  # the answer has arrived ...
            time.sleep(0.01)
        time.sleep(1.5)  # ... and the caller comes back after more than `timeout`
        pool.pump(lambda: bool(seen.replies), "recv")
        assert seen.replies == [(0, "add", 3, 3)]
        assert worker.pid == pid and pool.restarts == [0, 0]
    finally:
        pool.close()
