"""benchmarks/deepsea_frontier.py: per-cell visits read back from a count bonus's table and the policy's
probability of moving right under bsuite's mapping, checked against hand-counted walks and a hand-set policy."""

from __future__ import annotations

import runpy
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from agents.grid_networks import make_policy
from envs.deepsea import BatchedDeepSea, bsuite_action_mapping
from explore.counts import GlobalCount

TOOL_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "deepsea_frontier.py"


def load_tool() -> dict:
    """The script's functions by name (run as a module, not as __main__)."""
    return runpy.run_path(str(TOOL_PATH), run_name="deepsea_frontier")


def test_cell_visits_are_the_count_tables_visits_of_each_cell():
    size = 3
    count = GlobalCount(observation_space=gym.spaces.Box(0.0, 1.0, (size * size,), dtype=np.float32))
    # mapping 1 everywhere: action 1 is "right". Two instances walk the diagonal, one the left edge;
    # the count table sees the next observations (s'), so the start cell is never counted
    sea = BatchedDeepSea(size, np.ones((1, size, size), dtype=np.int64), 3)
    next_obs = []
    for _ in range(size - 1):  # the last step's s' is the null observation: leave it out
        sea.step(torch.tensor([1, 1, 0]), torch.ones(3, dtype=torch.bool))
        next_obs.append(sea.observe())
    keys = count.state_key(torch.stack(next_obs), batch_dims=2)
    count.update_counts(keys, torch.ones_like(keys, dtype=torch.bool))

    visits = load_tool()["cell_visits"](count.state_dict(), size)

    expected = np.zeros((size, size), dtype=np.int64)
    expected[1, 1] = expected[2, 2] = 2
    expected[1, 0] = expected[2, 0] = 1
    np.testing.assert_array_equal(visits, expected)
    assert load_tool()["cell_visits"](None, size) is None  # a run without a count bonus has no visits


def test_right_probabilities_follow_bsuites_mapping():
    size, seed = 4, 7
    agent = make_policy(gym.spaces.Box(0.0, 1.0, (size * size,), dtype=np.float32), 2)
    mapping = bsuite_action_mapping(size, seed).reshape(-1)
    # a policy that takes action 1 with probability sigmoid(2) in every cell, set by hand: zero every
    # weight, bias the logits (0, 2)
    with torch.no_grad():
        for parameter in agent.parameters():
            parameter.zero_()
        last = [m for m in agent.modules() if isinstance(m, torch.nn.Linear)]
        actor = next(m for m in last if m.out_features == 2)
        actor.bias.copy_(torch.tensor([0.0, 2.0]))
    p_right = load_tool()["right_probabilities"](agent, size, seed)

    p_one = 1 / (1 + np.exp(-2.0))
    expected = np.where(mapping == 1, p_one, 1 - p_one).reshape(size, size)
    np.testing.assert_allclose(p_right, expected, rtol=1e-6)
