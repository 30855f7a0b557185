"""DeepSea scaling (bsuite's deep-exploration probe): episodes to solve against size, per method.

The runs come from `explore bench` (benchmarks/deepsea_study.md has the exact commands); this script
only reads its CSV and writes the study's table and log-log plot:

    python benchmarks/deepsea_study.py --runs benchmarks/deepsea_n10_runs.csv benchmarks/deepsea_n20_runs.csv \
        benchmarks/deepsea_n30_runs.csv --out benchmarks/deepsea_study

Outputs: <out>_table.md (per method and size: seeds solved, median and range of episodes to solve;
the largest size every seed solved) and <out>.png (episodes to solve against size, log-log: one
point per solved seed, the median where every seed solved, an open marker at the budget for each
seed that did not). "Solved" is the bench's: the first update whose success rate reached its
--solve-threshold (0.5 in the study); episodes are counted at the end of that update. "At the end"
counts the seeds whose final success rate (the last fifth of training) is still >= 0.5.
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

SIZE = re.compile(r"DeepSea-N(\d+)-v0")
SOLVE_THRESHOLD = 0.5  # the study's --solve-threshold: "at the end" applies it to the final success rate


@dataclass
class Args:
    runs: tuple[Path, ...] = (Path("benchmarks/deepsea_n20_runs.csv"),)
    """the `explore bench` CSVs of the study (one per size in the study)"""
    out: Path = Path("benchmarks/deepsea_study")
    """prefix of <out>_table.md and <out>.png"""
    methods: tuple[str, ...] = ()
    """methods to show, in this order (default: as they appear in the CSV)"""


def load(paths: tuple[Path, ...]) -> dict[str, dict[int, list[dict]]]:
    """{method: {size: [rows]}} of the CSVs' DeepSea runs (the files that exist)."""
    table: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for path in paths:
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                match = SIZE.search(row["task"])
                if match:
                    table[row["method"]][int(match.group(1))].append(row)
    return table


def solve_episodes(rows: list[dict]) -> np.ndarray:
    """Episodes to solve per seed, NaN where the seed did not solve within its budget."""
    return np.array(
        [float(r["solve_episode"]) if r["solve_episode"] not in ("", "None") else math.nan for r in rows]
    )


def largest_solved_everywhere(by_size: dict[int, list[dict]]) -> int | None:
    """The largest size at which every seed solved, counting only sizes where all smaller ones were solved too."""
    best = None
    for size in sorted(by_size):
        if not np.isfinite(solve_episodes(by_size[size])).all():
            break
        best = size
    return best


def markdown(table: dict[str, dict[int, list[dict]]], methods: list[str]) -> str:
    sizes = sorted({s for m in methods for s in table[m]})
    lines = [
        "| method | " + " | ".join(f"N={s}" for s in sizes) + " | largest N solved by every seed |",
        "|" + " --- |" * (len(sizes) + 2),
    ]
    for method in methods:
        cells = []
        for size in sizes:
            rows = table[method].get(size, [])
            if not rows:
                cells.append("not run")
                continue
            episodes = solve_episodes(rows)
            solved = np.isfinite(episodes)
            cell = f"{solved.sum()}/{len(rows)}"
            if solved.any():
                done = episodes[solved]
                cell += f": median {np.median(done):,.0f} [{done.min():,.0f}, {done.max():,.0f}]"
            held = sum(float(r["final_success"]) >= SOLVE_THRESHOLD for r in rows)
            budget = max(int(r["episodes"]) for r in rows)
            cells.append(cell + f" (of {budget:,}); {held}/{len(rows)} at the end")
        largest = largest_solved_everywhere(table[method])
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {largest if largest else '-'} |")
    return "\n".join(lines) + "\n"


def plot(table: dict[str, dict[int, list[dict]]], methods: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, method in enumerate(methods):
        color = f"C{i}"
        sizes = sorted(table[method])
        medians = []
        for size in sizes:
            rows = table[method][size]
            episodes = solve_episodes(rows)
            solved = np.isfinite(episodes)
            jitter = size * (1 + 0.025 * (i - len(methods) / 2))
            ax.scatter([jitter] * solved.sum(), episodes[solved], color=color, s=14, alpha=0.7)
            budgets = np.array([float(r["episodes"]) for r in rows])[~solved]
            ax.scatter(
                [jitter] * len(budgets), budgets, facecolors="none", edgecolors=color, s=30, marker="o"
            )
            medians.append(np.median(episodes) if solved.all() else math.nan)
        ok = np.isfinite(medians)
        ax.plot(np.array(sizes)[ok], np.array(medians)[ok], color=color, label=method, marker="s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("DeepSea size N")
    ax.set_ylabel("episodes to solve (success rate >= 0.5)")
    ax.set_title("DeepSea: filled = a seed solved; open = unsolved at the budget")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(args: Args) -> str:
    table = load(args.runs)
    methods = list(args.methods) or list(table)
    text = markdown(table, methods)
    Path(f"{args.out}_table.md").write_text(text)
    plot(table, methods, Path(f"{args.out}.png"))
    print(text)
    return text


if __name__ == "__main__":
    main(tyro.cli(Args))
