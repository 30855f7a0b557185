"""Where a DeepSea run's exploration stands, read from its checkpoint (benchmarks/deepsea_study.md).

For a run of `explore train` on `Explore/DeepSea-N<N>-v0` (any bonus; visit counts need the global
`count` bonus, whose table holds them), prints per row r of the grid:
- the visits of the diagonal cell (r, r), the one cell of row r that only r rights in a row reach
  (the treasure path), and the deepest column any visit reached in that row;
- the policy's probability of moving right in (r, r) and the product of those probabilities down to
  row r: the probability that the current policy follows the treasure path that far.

The action mapping is bsuite's draw for the run's seed (`envs.deepsea.bsuite_action_mapping`), as the
trainer's envs use it.

    python benchmarks/deepsea_frontier.py runs/bench/ds30_sweep20k/DeepSea-N30__count0.1__2
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import gymnasium as gym
import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's agents/ and envs/

from agents.grid_networks import make_policy  # noqa: E402
from envs.deepsea import NUM_ACTIONS, bsuite_action_mapping, parse_size  # noqa: E402
from explore.counts import hash_rows  # noqa: E402


@dataclass
class Args:
    run_dir: Annotated[Path, tyro.conf.Positional]
    """a run directory (config.json and checkpoint.pt) of a DeepSea run"""
    every: int = 1
    """print every this many rows (the last row always)"""
    summary: bool = False
    """one line instead of the table: steps, P(treasure path), P(right) in the first rows, the deepest
    diagonal cell visited and the treasure cell's visits"""


def cell_visits(bonus_state: dict, size: int) -> np.ndarray | None:
    """(N, N) visit counts from a global count bonus's table (keys: the hash of each one-hot cell)."""
    if bonus_state is None or "table_keys" not in bonus_state:
        return None
    keys, counts = bonus_state["table_keys"], bonus_state["table_counts"]
    cells = hash_rows(torch.eye(size * size))
    pos = torch.searchsorted(keys, cells).clamp(max=max(keys.shape[0] - 1, 0))
    found = keys.shape[0] > 0 and (keys[pos] == cells)
    visits = torch.where(found, counts[pos], 0) if keys.shape[0] else torch.zeros_like(cells)
    return visits.view(size, size).numpy()


def right_probabilities(agent: torch.nn.Module, size: int, seed: int) -> np.ndarray:
    """(N, N) probability that the policy moves right in each cell (bsuite's mapping for `seed`)."""
    mapping = torch.as_tensor(bsuite_action_mapping(size, seed)).view(-1)
    with torch.no_grad():
        logits = agent(torch.eye(size * size))[0]
    probs = torch.softmax(logits.float(), -1)
    return probs.gather(1, mapping.view(-1, 1)).view(size, size).numpy()


def main(args: Args) -> None:
    config = json.loads((args.run_dir / "config.json").read_text())
    size = parse_size(config["env_id"])
    state = torch.load(args.run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    space = gym.spaces.Box(0.0, 1.0, (size * size,), dtype=np.float32)
    agent = make_policy(space, NUM_ACTIONS)
    agent.load_state_dict(state["agent"])
    p_right = right_probabilities(agent, size, config["seed"])
    visits = cell_visits(state.get("bonus"), size)
    diagonal = np.diagonal(p_right)
    path = np.cumprod(diagonal)
    if args.summary:
        reached = np.flatnonzero(np.diagonal(visits) > 0) if visits is not None else np.array([])
        deepest = int(reached.max()) if reached.size else "-"
        treasure_cell = visits[-1, -1] if visits is not None else "-"
        print(
            f"{args.run_dir.name} {state['global_step']:>9,} steps  P(path) {path[-1]:.3g}  "
            f"P(right) rows 0-2 {np.round(diagonal[:3], 3)}  deepest diagonal cell {deepest}  "
            f"visits of ({size - 1}, {size - 1}) {treasure_cell}"
        )
        return
    print(f"{args.run_dir}: {state['global_step']:,} steps; P(treasure path) = {path[-1]:.3g}")
    print("| row r | visits of (r, r) | deepest column visited | P(right at (r, r)) | P(rights to row r) |")
    print("| --- | --- | --- | --- | --- |")
    for r in range(size):
        if r % args.every and r != size - 1:
            continue
        if visits is None:
            seen, deepest = "-", "-"
        else:
            seen = f"{visits[r, r]:,}"
            columns = np.flatnonzero(visits[r] > 0)
            deepest = str(columns.max()) if columns.size else "-"
        print(f"| {r} | {seen} | {deepest} | {diagonal[r]:.3f} | {path[r]:.3g} |")


if __name__ == "__main__":
    main(tyro.cli(Args))
