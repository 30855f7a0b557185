"""Reading training runs and aggregating their scores: the statistics every study shares.

- `read_curves`: a run's success-rate and return curves from its TensorBoard events, each point
  weighted by the episodes behind it;
- `final_score`: the mean of a curve's last fraction;
- `interval_estimates` / `aggregate`: the IQM over seeds with rliable's stratified-bootstrap 95 % CIs
  (rliable is the `analysis` extra, imported lazily);
- `binned_curves`: mean and std over runs in equal bins of steps, for plots.

Used by `explore bench` (explore/bench.py) and the scripts in benchmarks/.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

SUCCESS_TAG = "charts/success_rate"
RETURN_TAG = "charts/episodic_return"
ALL_TASKS = "all tasks"

Curve = tuple[np.ndarray, np.ndarray, np.ndarray]  # steps, value at each step, episodes behind it


def read_curves(path: Path, extra_tags: Sequence[str] = ()) -> dict[str, Curve]:
    """{metric: (steps, values, episodes)} of a run, from its TensorBoard events.

    `charts/episodic_return` is logged once per finished episode: its values at one step are averaged
    and counted. `charts/success_rate` is logged once per update as the mean over the episodes that
    finished in it, so it is weighted by that update's episode count (read off the returns): an
    update where one early success alone finished must not count as much as one where 16 episodes did.
    Each of `extra_tags` (e.g. charts/SPS) comes back under its tag, averaged per step.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(path), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])

    def scalars(tag: str) -> tuple[list[int], list[float]]:
        if tag not in tags:
            return [], []
        return [e.step for e in events.Scalars(tag)], [e.value for e in events.Scalars(tag)]

    ret_steps, ret_values, ret_counts = per_step_mean(*scalars(RETURN_TAG))
    episodes_at = dict(zip(ret_steps.tolist(), ret_counts.tolist(), strict=True))
    succ_steps, succ_values, _ = per_step_mean(*scalars(SUCCESS_TAG))
    succ_counts = np.array([episodes_at.get(int(s), 1) for s in succ_steps], dtype=np.int64)
    curves = {
        "success": (succ_steps, succ_values, succ_counts),
        "return": (ret_steps, ret_values, ret_counts),
    }
    return curves | {tag: per_step_mean(*scalars(tag)) for tag in extra_tags}


def per_step_mean(steps: Sequence[int], values: Sequence[float]) -> Curve:
    """Values logged at the same step averaged: (unique steps, means, number of values at each)."""
    steps_arr, values_arr = np.asarray(steps, dtype=np.int64), np.asarray(values, dtype=np.float64)
    unique, inverse = np.unique(steps_arr, return_inverse=True)
    sums = np.bincount(inverse, weights=values_arr, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    return unique, sums / np.maximum(counts, 1), counts


def final_score(
    values: Sequence[float], fraction: float = 0.2, weights: Sequence[float] | None = None
) -> float:
    """Mean of the last `fraction` of the logged points (at least one point), weighted by `weights`
    (episodes per point) when given; NaN if there is no point."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan")
    k = max(1, int(round(fraction * values.size)))
    w = np.ones(values.size) if weights is None else np.asarray(weights, dtype=np.float64)
    return float(np.average(values[-k:], weights=w[-k:]))


def _iqm(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores)])


def interval_estimates(
    score_dict: Mapping[str, np.ndarray], reps: int = 2000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """{bonus: (IQM, CI low, CI high)} of (num_seeds, num_tasks) score matrices, stratified bootstrap."""
    from rliable import library as rly

    # rliable 1.2's StratifiedBootstrap draws its resamples from NumPy's global RNG (np.random.choice)
    # whatever random_state says: seed that, and put its state back afterwards
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        point, intervals = rly.get_interval_estimates(
            dict(score_dict), _iqm, reps=reps, confidence_interval_size=0.95
        )
    finally:
        np.random.set_state(saved)
    return {
        name: (float(point[name][0]), float(intervals[name][0, 0]), float(intervals[name][1, 0]))
        for name in score_dict
    }


def aggregate(
    scores: Mapping[str, Mapping[str, Sequence[float]]], reps: int = 2000, seed: int = 0
) -> list[dict]:
    """Rows of IQM and 95 % CI per (task, bonus) and over all tasks.

    `scores[task][bonus]` holds one final score per seed. The "all tasks" row bootstraps seeds within
    each task (rliable's stratified bootstrap over a (num_seeds, num_tasks) matrix), so every bonus
    needs the same number of seeds on every task; tasks with a missing bonus are left out of it.
    """
    rows = []
    tasks = list(scores)
    bonuses = list(dict.fromkeys(b for t in tasks for b in scores[t]))
    for task in tasks:
        score_dict = {b: np.asarray(s, dtype=np.float64).reshape(-1, 1) for b, s in scores[task].items()}
        for bonus, (iqm, low, high) in interval_estimates(score_dict, reps, seed).items():
            rows.append(_row(task, bonus, iqm, low, high, score_dict[bonus][:, 0]))
    if len(tasks) > 1:
        complete = {b: [t for t in tasks if b in scores[t]] for b in bonuses}
        score_dict = {
            b: np.stack([np.asarray(scores[t][b], dtype=np.float64) for t in tasks], axis=1)
            for b in bonuses
            if len(complete[b]) == len(tasks)
        }
        for bonus, (iqm, low, high) in interval_estimates(score_dict, reps, seed).items():
            rows.append(_row(ALL_TASKS, bonus, iqm, low, high, score_dict[bonus].ravel()))
    return rows


def _row(task: str, bonus: str, iqm: float, low: float, high: float, per_seed: np.ndarray) -> dict:
    return {
        "task": task,
        "bonus": bonus,
        "iqm": iqm,
        "ci_low": low,
        "ci_high": high,
        "n": int(per_seed.size),
        "scores": " ".join(f"{x:.3f}" for x in per_seed),
    }


def binned_curves(
    curves: Sequence[Curve], total_steps: int, bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over runs of each run's episode-weighted mean in `bins` equal bins of steps
    (a bin where a run logged nothing leaves that run out of it; NaN where no run logged)."""
    edges = np.linspace(0, total_steps, bins + 1)
    per_run = np.full((len(curves), bins), np.nan)
    for i, (steps, values, weights) in enumerate(curves):
        which = np.clip(np.digitize(steps, edges[1:-1], right=True), 0, bins - 1)
        for b in range(bins):
            inside = which == b
            if np.any(inside) and weights[inside].sum() > 0:
                per_run[i, b] = np.average(values[inside], weights=weights[inside])
    centers = (edges[:-1] + edges[1:]) / 2
    with warnings.catch_warnings():  # a bin no run logged in: NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return centers, np.nanmean(per_run, axis=0), np.nanstd(per_run, axis=0)


def write_csv(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]]],
    total_steps: int,
    bins: int,
    ylabel: str,
    out: Path,
    title: str,
    band_limits: tuple[float, float] | None = None,
    task_label: Callable[[str], str] = str,
) -> None:
    """One panel per task: per method the mean +- std over its runs of the binned curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for bonus, runs in curves[task].items():
            x, mean, std = binned_curves(runs, total_steps, bins)
            ok = ~np.isnan(mean)
            ax.plot(x[ok], mean[ok], label=f"{bonus} ({len(runs)} seeds)")
            low, high = mean - std, mean + std
            if band_limits is not None:  # e.g. a success rate's band stays in [0, 1]
                low, high = np.clip(low, *band_limits), np.clip(high, *band_limits)
            ax.fill_between(x[ok], low[ok], high[ok], alpha=0.2)
        ax.set_title(task_label(task))
        ax.set_xlabel("agent steps")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
