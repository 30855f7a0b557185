"""The default torch thread count: usable CPUs less the env threads, and an explicit flag wins."""

from __future__ import annotations

import pytest
import torch

from envs.core import available_cpus
from explore.system import choose_torch_threads, env_threads, set_torch_threads


@pytest.mark.parametrize(
    ("cpus", "env", "processes", "expected"),
    [
        (2, 8, 1, 1),  # the quick preset on 2 cores: envpool's threads already fill them
        (2, 0, 1, 2),  # bandits, in-process games: every core for torch
        (16, 4, 1, 12),
        (16, 4, 2, 4),  # two torchrun ranks share 16 cores: 8 each, less 4 env threads
        (4, 4, 1, 1),  # never 0
        (1, 0, 4, 1),  # more processes than cores: still 1
    ],
)
def test_default_is_usable_cpus_less_env_threads(cpus, env, processes, expected):
    threads, why = choose_torch_threads(0, env, cpus=cpus, processes=processes)
    assert threads == expected
    assert why.startswith(f"torch threads: {expected} ({cpus} usable CPUs")
    assert "--torch-threads N overrides" in why


def test_an_explicit_thread_count_is_respected():
    assert choose_torch_threads(3, env_threads=8, cpus=2, processes=1) == (
        3,
        "torch threads: 3 (--torch-threads)",
    )


def test_local_world_size_sets_the_share(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert choose_torch_threads(0, 0, cpus=8)[0] == 4


class WorkerPoolDouble:
    """A test double with the attribute MiniHack's and the text games' worker pools expose."""

    num_workers = 3


class InProcessDouble:
    """A test double of an env that steps in the caller's thread (bandits)."""


def test_env_threads_counts_workers_and_envpool_threads():
    import envs

    atari = envs.make("MontezumaRevenge-v5", num_envs=3, seed=0)
    try:
        # envpool's default num_threads=0 runs one thread per env of the batch, up to the cores
        assert atari.num_threads == min(3, available_cpus())
        assert env_threads([atari, WorkerPoolDouble(), InProcessDouble()]) == atari.num_threads + 3
    finally:
        atari.close()
    explicit = envs.make("MontezumaRevenge-v5", num_envs=3, seed=0, num_threads=1)
    try:
        assert env_threads([explicit]) == 1
    finally:
        explicit.close()


def test_set_torch_threads_applies_and_prints_once(capsys):
    before = torch.get_num_threads()
    try:
        line = set_torch_threads(2, env_threads=5)
        assert torch.get_num_threads() == 2
        assert capsys.readouterr().out == line + "\n"
        set_torch_threads(0, env_threads=0, log=False)
        assert torch.get_num_threads() == available_cpus()
        assert capsys.readouterr().out == ""
    finally:
        torch.set_num_threads(before)
