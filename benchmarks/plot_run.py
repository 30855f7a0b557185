"""Plot a run's learning curves (episodic return and rooms visited against steps) from its TensorBoard events.

python benchmarks/plot_run.py runs/<name> --out benchmarks/montezuma_rnd.png
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CURVES = ("charts/episodic_return", "exploration/rooms_visited", "charts/intrinsic_reward", "charts/SPS")


@dataclass
class Args:
    run_dir: tyro.conf.Positional[str]
    """run directory holding TensorBoard event files"""
    out: str = "learning_curve.png"
    """PNG to write"""
    smooth: int = 20
    """moving-average window over episodes for the return curve"""


def read_scalars(run_dir: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    return {
        tag: ([e.step for e in events.Scalars(tag)], [e.value for e in events.Scalars(tag)])
        for tag in CURVES
        if tag in tags
    }


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def main(args: Args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(args.run_dir)
    fig, axes = plt.subplots(1, len(scalars), figsize=(4.5 * len(scalars), 3.4), squeeze=False)
    for ax, (tag, (steps, values)) in zip(axes[0], scalars.items(), strict=True):
        if tag == "charts/episodic_return":
            ax.plot(steps, values, ".", alpha=0.25, markersize=3, label="episodes")
            ax.plot(steps, moving_average(values, args.smooth), label=f"mean of {args.smooth}")
            ax.legend(fontsize=7)
        else:
            ax.plot(steps, values)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("agent steps")
        ax.grid(alpha=0.3)
    fig.suptitle(Path(args.run_dir).name, fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
