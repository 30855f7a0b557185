"""Go-Explore against PPO+RND at equal frames: rooms visited (both) and cells found (Go-Explore).

    python benchmarks/plot_go_explore_vs_rnd.py --go-explore runs/go_explore_mr --ppo runs/montezuma_h100 \
        --out benchmarks/go_explore_vs_rnd.png --csv benchmarks/go_explore_vs_rnd.csv

Go-Explore's progress.csv counts emulator frames; PPO's TensorBoard step counts agent steps, each
`frameskip` (4) frames. The CSV holds both curves on the frame axis.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@dataclass
class Args:
    go_explore: str
    """Go-Explore run directory (with progress.csv)"""
    ppo: str
    """PPO+RND run directory (TensorBoard events with exploration/rooms_visited)"""
    out: str = "benchmarks/go_explore_vs_rnd.png"
    """PNG to write"""
    csv: str | None = None
    """also write both curves here"""
    frameskip: int = 4
    """emulator frames per PPO agent step"""


def read_go_explore(run_dir: str) -> dict[str, list[float]]:
    with open(Path(run_dir) / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) for r in rows] for key in ("frames", "cells", "rooms", "best_score")}


def read_ppo(run_dir: str, frameskip: int) -> dict[str, list[float]]:
    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    rooms = events.Scalars("exploration/rooms_visited")
    returns = events.Scalars("charts/episodic_return")
    best, best_so_far = [], 0.0
    by_step = {e.step: e.value for e in returns}
    for e in rooms:  # best episodic return seen up to each logged step
        best_so_far = max([best_so_far] + [v for s, v in by_step.items() if s <= e.step])
        best.append(best_so_far)
    return {
        "frames": [e.step * frameskip for e in rooms],
        "rooms": [e.value for e in rooms],
        "best_score": best,
    }


def main(args: Args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ge, ppo = read_go_explore(args.go_explore), read_ppo(args.ppo, args.frameskip)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(ge["frames"], ge["rooms"], label="Go-Explore (random exploration, restore)")
    axes[0].plot(ppo["frames"], ppo["rooms"], label="PPO+RND")
    axes[0].set_ylabel("rooms visited")
    axes[1].plot(ge["frames"], ge["cells"], label="Go-Explore")
    axes[1].set_ylabel("cells in archive (11x8, 8 levels)")
    axes[2].plot(ge["frames"], ge["best_score"], label="Go-Explore")
    axes[2].plot(ppo["frames"], ppo["best_score"], label="PPO+RND")
    axes[2].set_ylabel("best score")
    for ax in axes:
        ax.set_xlabel("emulator frames")
        ax.legend()
    fig.suptitle("MontezumaRevenge: Go-Explore vs PPO+RND")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["method", "frames", "rooms", "cells", "best_score"])
            for i, frames in enumerate(ge["frames"]):
                writer.writerow(
                    ["go_explore", int(frames), int(ge["rooms"][i]), int(ge["cells"][i]), ge["best_score"][i]]
                )
            for i, frames in enumerate(ppo["frames"]):
                writer.writerow(["ppo_rnd", int(frames), int(ppo["rooms"][i]), "", ppo["best_score"][i]])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
