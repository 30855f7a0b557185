"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued device work, so a wall-clock interval covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best wall time of `repeats` calls after one untimed warm-up call (allocation, first dispatch)."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)
