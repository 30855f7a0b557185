"""The machine a run gets: how many torch threads fit beside the threads and processes the envs use.

torch's default intra-op thread count is the number of physical cores, which ignores both the
env threads a run starts (envpool's pool threads, MiniHack and text-game worker processes) and a
container's CPU share. On a small or busy CPU the two then fight for the same cores: a quick run
on 2 cores went at 32 steps/s with torch's default and at 152 with one thread (issue 17).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch

from envs.core import available_cpus


def env_threads(vec_envs: Iterable[Any]) -> int:
    """Threads or worker processes the vector envs step on besides this process's main thread.

    Reads `num_workers` (worker processes: MiniHack, text games) or `num_threads` (envpool's pool
    threads); an env without either (bandits, in-process games) steps in the caller's thread.
    """
    total = 0
    for vec in vec_envs:
        total += int(getattr(vec, "num_workers", 0) or getattr(vec, "num_threads", 0) or 0)
    return total


def local_processes() -> int:
    """Training processes on this machine: torchrun's LOCAL_WORLD_SIZE, else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def choose_torch_threads(
    requested: int, env_threads: int, cpus: int | None = None, processes: int | None = None
) -> tuple[int, str]:
    """(threads, why): `requested` when > 0; otherwise the CPUs this process may use (its share
    of them under torchrun) less the env threads it starts, and at least 1."""
    if requested > 0:
        return requested, f"torch threads: {requested} (--torch-threads)"
    cpus = available_cpus() if cpus is None else cpus
    processes = local_processes() if processes is None else processes
    share = max(1, cpus // processes)
    threads = max(1, share - env_threads)
    per = f" / {processes} processes" if processes > 1 else ""
    return threads, (
        f"torch threads: {threads} ({cpus} usable CPUs{per}, {env_threads} env threads or workers; "
        "--torch-threads N overrides)"
    )


def set_torch_threads(requested: int, env_threads: int, log: bool = True) -> str:
    """Choose (see choose_torch_threads) and apply the torch thread count; print the choice once.
    Returns the line, for the run's TensorBoard text."""
    threads, why = choose_torch_threads(requested, env_threads)
    torch.set_num_threads(threads)
    if log:
        print(why, flush=True)
    return why
