"""End to end: a count bonus makes PPO solve DeepSea-N20, where PPO alone never finds the treasure.

A random policy reaches the treasure of DeepSea-N20 with probability 2^-20 per episode (its action
mapping is random per cell), and the move cost pushes an undirected learner to the left: plain PPO
gets no learning signal in this budget. With the global count bonus (1/sqrt(N(s')), non-episodic
intrinsic stream) the agent is driven to the rarely visited right-hand cells and solves the task.
The assertions are on success rates read back from the runs' TensorBoard logs, never on timing.
Runs with one torch thread, so each seed is one deterministic run.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from agents.ppo import PRESETS, train
from explore.study import final_score, read_curves

BUDGET = 120_000  # agent steps: about 5,700 episodes of DeepSea-N20 (each 20 steps and a dummy step)


def success_curve(tmp_path, bonus: str, seed: int, **overrides) -> tuple[np.ndarray, np.ndarray]:
    run_dir = tmp_path / f"{bonus}_{seed}"
    config = dataclasses.replace(
        PRESETS["deepsea"],
        env_id="DeepSea-N20-v0",
        bonus=bonus,
        seed=seed,
        total_timesteps=BUDGET,
        run_dir=str(run_dir),
        progress=False,
        torch_threads=1,
        **overrides,
    )
    train(config)
    _, values, weights = read_curves(run_dir)["success"]
    return values, weights


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_count_bonus_solves_deepsea_20(tmp_path, seed):
    values, weights = success_curve(tmp_path, "count", seed, int_coef=0.3)
    assert final_score(values, 0.2, weights) >= 0.5  # solved (the bench's threshold) over the last fifth


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_ppo_alone_never_finds_the_treasure(tmp_path, seed):
    values, _ = success_curve(tmp_path, "none", seed)
    assert values.size > 0 and values.max() == 0.0
