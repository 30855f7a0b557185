"""benchmarks/deepsea_rnd_cells.py: per-cell visit counts and RND errors, checked against DeepSea's own
observations and hand-counted visits."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.deepsea import BatchedDeepSea
from explore.rnd import make_rnd

TOOL_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "deepsea_rnd_cells.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("deepsea_rnd_cells", TOOL_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_cell_scores_count_visits_and_score_the_env_observation_of_each_cell():
    torch.manual_seed(0)
    size = 3
    rnd = make_rnd(1, gym.spaces.Box(0.0, 1.0, (size * size,), dtype=np.float32))
    # every action is "right" (mapping 1 everywhere, action 1) or "left" (action 0): two instances
    # walk the diagonal (0,0) (1,1) (2,2), one walks the left edge (0,0) (1,0) (2,0), then the null obs
    sea = BatchedDeepSea(size, np.ones((1, size, size), dtype=np.int64), 3)
    actions = torch.tensor([1, 1, 0])
    observations = [sea.observe()]
    for _ in range(size):
        sea.step(actions, torch.ones(3, dtype=torch.bool))
        observations.append(sea.observe())
    frames = torch.stack(observations).view(size + 1, 3, 1, 1, size * size)
    rnd.obs_rms.update(frames)

    visits, errors = load_tool().cell_scores(rnd, size)

    expected = np.zeros((size, size))
    expected[0, 0] = 3  # the start cell, all three instances
    expected[1, 1] = expected[2, 2] = 2  # the two diagonal walkers
    expected[1, 0] = expected[2, 0] = 1  # the left walker; the null observations count nowhere
    np.testing.assert_allclose(visits.reshape(size, size), expected, atol=1e-6)
    # the error of cell (row, column) is RND's error on the observation DeepSea gives there
    at_diagonal = observations[2][0].view(1, 1, 1, -1)  # instance 0 after two right moves: (2, 2)
    at_left_edge = observations[1][2].view(1, 1, 1, -1)  # instance 2 after one left move: (1, 0)
    with torch.no_grad():
        assert errors[2 * size + 2] == pytest.approx(rnd.prediction_error(at_diagonal).item(), rel=1e-5)
        assert errors[1 * size + 0] == pytest.approx(rnd.prediction_error(at_left_edge).item(), rel=1e-5)
