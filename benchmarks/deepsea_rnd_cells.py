"""RND's novelty signal per DeepSea cell, read from a finished run's checkpoint (benchmarks/deepsea_study.md).

Loads the RND bonus of an `explore train --bonus rnd` run on `Explore/DeepSea-N<N>-v0`, scores every
one-hot position with it (the raw prediction error, and divided by the running std of the intrinsic
return as training divides it) and groups the reachable cells by how often the run visited them. The
visit counts are the bonus's own observation statistics: the running mean of a one-hot coordinate
times the number of observations is that cell's visit count.

    python benchmarks/deepsea_rnd_cells.py runs/bench/deepsea_sweep/DeepSea-N20__rnd1__1/checkpoint.pt --size 20
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import gymnasium as gym
import numpy as np
import torch
import tyro

from explore.rnd import RND, make_rnd

VISIT_BINS = (0, 1, 3, 10, 30, 100, 300, 1000, float("inf"))


@dataclass
class Args:
    checkpoint: Annotated[Path, tyro.conf.Positional]
    """checkpoint.pt of an RND run on DeepSea"""
    size: int = 20
    """N of the run's DeepSea-N<N>-v0"""
    grids: bool = False
    """also print the per-cell grids (rows: depth, columns: column)"""


def cell_scores(rnd: RND, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(visits, errors) per cell of an N x N DeepSea, row-major: the visit count of each one-hot
    coordinate (its running mean times the number of observations the statistics saw) and RND's raw
    prediction error on that cell's one-hot observation."""
    n_cells = size * size
    with torch.no_grad():
        errors = rnd.prediction_error(torch.eye(n_cells).view(n_cells, 1, 1, n_cells)).numpy()
    visits = rnd.obs_rms.mean.view(-1).numpy() * float(rnd.obs_rms.count)
    return visits, errors


def main(args: Args) -> None:
    n_cells = args.size * args.size
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    rnd = make_rnd(1, gym.spaces.Box(0.0, 1.0, (n_cells,), dtype=np.float32))
    del state["bonus"]["return_filter.returns"]  # per-env state of the run's envs, unused here
    rnd.load_state_dict(state["bonus"], strict=False)
    visits, errors = cell_scores(rnd, args.size)
    return_std = float(rnd.reward_rms.std)
    row, column = np.divmod(np.arange(n_cells), args.size)
    reachable = column <= row  # the agent starts at column 0 and moves at most one column per row
    unvisited = reachable & (visits < 0.5)
    novel = errors[unvisited].mean() if unvisited.any() else errors[~reachable].mean()
    print(f"{args.checkpoint}: {state['global_step']:,} steps, intrinsic-return std {return_std:.3f}")
    print(f"reachable cells {reachable.sum()}, never visited {unvisited.sum()}")
    print(
        "| visits | cells | raw error | error / return std | error / unvisited error | 1/sqrt(median visits) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for low, high in zip(VISIT_BINS[:-1], VISIT_BINS[1:], strict=True):
        cells = reachable & (visits >= low - 0.5) & (visits < high - 0.5)
        if cells.any():
            mean = errors[cells].mean()
            count_ratio = 1 / np.sqrt(max(np.median(visits[cells]), 1.0))
            print(
                f"| [{low:g}, {high:g}) | {cells.sum()} | {mean:.4f} | {mean / return_std:.4f} "
                f"| {mean / novel:.3f} | {count_ratio:.3f} |"
            )
    if args.grids:
        np.set_printoptions(linewidth=250, precision=2, suppress=True)
        print("visits:\n", visits.reshape(args.size, args.size).round())
        print("error / return std:\n", (errors / return_std).reshape(args.size, args.size))


if __name__ == "__main__":
    main(tyro.cli(Args))
