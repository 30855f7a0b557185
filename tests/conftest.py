"""Settings for the whole test session.

Tiers: `pytest -q` runs the fast tier (pyproject's addopts deselect `slow`); `pytest -q -m slow` runs
the long tests left out of it (torch.compile, torchrun, extra worker pools), and
`pytest -q -m "slow or not slow"` runs both.
"""

from __future__ import annotations

import os

import torch

# One intra-op thread for the tests, and for the processes they start (unless those choose their
# own): the tests' tensors are small, so more threads gain nothing on an idle machine, while on a
# busy 2-core machine torch's default (a thread per core) spins against the other processes:
# tests/test_llm_agent.py took 266 s at load 14 with it and 26 s with one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
