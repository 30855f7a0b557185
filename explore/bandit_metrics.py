"""Bandit metrics over B instances, with bootstrap confidence intervals, and the suite table.

Every metric is first a per-instance value (B,), then a mean over instances with a percentile
bootstrap CI (instances resampled with replacement): instances are the independent units, so this
is the interval the comparison between agents needs. Definitions (Krishnamurthy et al. 2024, "Can
large language models explore in-context?", made exact here):

- **regret**: cumulative pseudo-regret sum_t (best_expected_t - chosen_expected_t), on expected
  rewards, so reward noise does not enter it. For contextual tasks the best arm is the round's.
- **SuffFailFreq(T/2)**: 1 if the instance never pulls an optimal arm in rounds t >= T // 2
  (0-based), else 0. An arm is optimal in a round if its expected reward is within 1e-6 of the
  best (so exact ties count); the mean is the fraction of instances that failed.
- **K*MinFrac**: K * min_a N_a(T) / T, N_a the pulls of arm a over the whole run: 1 for perfectly
  even exploration, 0 if some arm is never tried.
- **GreedyFrac**: the fraction of rounds t = 1 .. T-1 in which the pulled arm has the highest
  empirical mean so far, the means taken over rounds < t and over the arms pulled at least once
  before t (an arm never pulled has no mean and is never greedy; a tie for the highest mean counts
  as greedy). Round 0 has no empirical mean and is left out. 1 means purely greedy play.

The trajectory is anything with (T, B) tensors `arms`, `rewards`, `chosen_expected`,
`best_expected` and an int `num_arms`, i.e. agents.bandits.Trajectory.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

OPTIMAL_ATOL = 1e-6
# per-chunk element budget of the (T, b, K) tensors GreedyFrac builds, and of the bootstrap weights
_CHUNK_ELEMENTS = 1 << 22


class TrajectoryLike(Protocol):
    arms: Tensor
    rewards: Tensor
    chosen_expected: Tensor
    best_expected: Tensor
    num_arms: int


# --- per-instance metrics ------------------------------------------------------------------------------


def cumulative_regret(traj: TrajectoryLike) -> Tensor:
    """Cumulative regret curve per instance (T, B), float64."""
    return (traj.best_expected.double() - traj.chosen_expected.double()).cumsum(dim=0)


def total_regret(traj: TrajectoryLike) -> Tensor:
    """Cumulative regret at the last round (B,), float64."""
    return (traj.best_expected.double() - traj.chosen_expected.double()).sum(dim=0)


def optimal_pulls(traj: TrajectoryLike, atol: float = OPTIMAL_ATOL) -> Tensor:
    """(T, B) bool: whether the pulled arm was optimal in that round."""
    return (traj.best_expected.double() - traj.chosen_expected.double()) <= atol


def suffix_failure(traj: TrajectoryLike, start_frac: float = 0.5) -> Tensor:
    """(B,) float64: 1 where no optimal arm is pulled in rounds t >= floor(start_frac * T)."""
    horizon = traj.arms.shape[0]
    start = min(int(math.floor(start_frac * horizon)), horizon - 1)
    return (~optimal_pulls(traj)[start:].any(dim=0)).double()


def arm_counts(traj: TrajectoryLike) -> Tensor:
    """Pulls per arm (B, K), int64."""
    arms = traj.arms.long()
    counts = torch.zeros((arms.shape[1], traj.num_arms), dtype=torch.long, device=arms.device)
    return counts.scatter_add_(1, arms.T, torch.ones_like(arms.T))


def min_frac(traj: TrajectoryLike) -> Tensor:
    """K * MinFrac (B,), float64: K times the least-pulled arm's share of the T pulls."""
    horizon = traj.arms.shape[0]
    return traj.num_arms * arm_counts(traj).amin(dim=1).double() / horizon


def greedy_frac(traj: TrajectoryLike) -> Tensor:
    """GreedyFrac (B,), float64 (see the module docstring); NaN when T < 2 (no round to judge).

    Vectorized over time with exclusive cumulative sums of one-hot pulls, in chunks of instances
    so the (T, b, K) tensors stay small. Sums are float64 and a sum of zeros is exact, so the
    empirical means are exactly those of a round-by-round count.
    """
    arms, rewards = traj.arms.long(), traj.rewards.double()
    horizon, b = arms.shape
    k = traj.num_arms
    if horizon < 2:
        return torch.full((b,), math.nan, dtype=torch.float64, device=arms.device)
    chunk = max(1, _CHUNK_ELEMENTS // (horizon * k))
    out = []
    for lo in range(0, b, chunk):
        a = arms[:, lo : lo + chunk]
        onehot = torch.nn.functional.one_hot(a, k).double()  # (T, b, K)
        counts = onehot.cumsum(dim=0)
        sums = (onehot * rewards[:, lo : lo + chunk, None]).cumsum(dim=0)
        # statistics before round t: shift by one round (rounds 1 .. T-1 are judged)
        counts_before, sums_before = counts[:-1], sums[:-1]
        tried = counts_before > 0
        means = torch.where(tried, sums_before / counts_before.clamp_min(1), -math.inf)
        best = means.amax(dim=2)
        chosen = a[1:, :, None]
        greedy = tried.gather(2, chosen).squeeze(2) & (means.gather(2, chosen).squeeze(2) == best)
        out.append(greedy.double().mean(dim=0))
    return torch.cat(out)


# name -> (per-instance function, column title, digits)
METRICS: dict[str, tuple[Callable[[TrajectoryLike], Tensor], str, int]] = {
    "regret": (total_regret, "regret", 2),
    "suff_fail_freq": (suffix_failure, "SuffFailFreq(T/2)", 3),
    "k_min_frac": (min_frac, "K*MinFrac", 3),
    "greedy_frac": (greedy_frac, "GreedyFrac", 3),
}


# --- bootstrap -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A mean over instances and its bootstrap confidence interval [low, high]."""

    mean: float
    low: float
    high: float

    def format(self, digits: int = 3) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _resample_means(values: Tensor, num_resamples: int, generator: torch.Generator) -> Tensor:
    """Means of `values` (P, B) over `num_resamples` resamples of the B instances: (R, P).

    A resample is a vector of multinomial counts over instances, so all P rows (e.g. every point
    of a regret curve) are resampled together and the mean is one matrix product.
    """
    p, b = values.shape
    chunk = max(1, _CHUNK_ELEMENTS // b)
    out = []
    for lo in range(0, num_resamples, chunk):
        r = min(chunk, num_resamples - lo)
        idx = torch.randint(b, (r, b), generator=generator)
        weights = torch.zeros((r, b), dtype=torch.float64).scatter_add_(
            1, idx, torch.ones((r, b), dtype=torch.float64)
        )
        out.append(weights @ values.T / b)
    return torch.cat(out)


def _check_ci_args(num_resamples: int, confidence: float) -> None:
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def bootstrap_ci(
    values: Tensor, num_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """Mean of per-instance `values` (B,) and its percentile bootstrap CI over instances."""
    _check_ci_args(num_resamples, confidence)
    x = values.detach().double().cpu().reshape(1, -1)
    if x.shape[1] == 0:
        raise ValueError("bootstrap_ci needs at least one instance")
    means = _resample_means(x, num_resamples, torch.Generator().manual_seed(seed))[:, 0]
    tail = (1.0 - confidence) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return Estimate(float(x.mean()), low, high)


def bootstrap_curve(
    curves: Tensor, num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and pointwise percentile-bootstrap band of per-instance curves (P, B): three (P,)."""
    _check_ci_args(num_resamples, confidence)
    x = curves.detach().double().cpu()
    means = _resample_means(x, num_resamples, torch.Generator().manual_seed(seed))
    tail = (1.0 - confidence) / 2
    q = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64), dim=0)
    return x.mean(dim=1), q[0], q[1]


def summarize(
    traj: TrajectoryLike, num_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict[str, Estimate]:
    """Every metric of METRICS as an Estimate, bootstrapped over the instances."""
    return {
        name: bootstrap_ci(fn(traj), num_resamples, confidence, seed) for name, (fn, _, _) in METRICS.items()
    }


# --- the suite table -------------------------------------------------------------------------------------


@dataclass
class ResultRow:
    """One (task, agent) line of the suite table."""

    task: str
    agent: str
    horizon: int
    num_instances: int
    metrics: dict[str, Estimate] = field(default_factory=dict)


def markdown_table(rows: Sequence[ResultRow], confidence: float = 0.95) -> str:
    """The suite table in Markdown: mean [CI] per metric, one row per agent x task."""
    pct = f"{100 * confidence:g}%"
    titles = [METRICS[name][1] for name in METRICS]
    lines = [
        f"| task | agent | T | B | {' | '.join(f'{t} (mean [{pct} CI])' for t in titles)} |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in titles) + " |",
    ]
    for row in rows:
        cells = [
            row.metrics[name].format(METRICS[name][2]) if name in row.metrics else "" for name in METRICS
        ]
        lines.append(
            f"| {row.task} | {row.agent} | {row.horizon} | {row.num_instances} | {' | '.join(cells)} |"
        )
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[ResultRow]) -> str:
    """The suite table as CSV: mean, low and high columns per metric, full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["task", "agent", "horizon", "num_instances"]
    for name in METRICS:
        header += [f"{name}_mean", f"{name}_low", f"{name}_high"]
    writer.writerow(header)
    for row in rows:
        line: list[object] = [row.task, row.agent, row.horizon, row.num_instances]
        for name in METRICS:
            est = row.metrics.get(name)
            line += [repr(est.mean), repr(est.low), repr(est.high)] if est else ["", "", ""]
        writer.writerow(line)
    return buffer.getvalue()


def write_table(
    rows: Sequence[ResultRow], out_dir: str | Path, confidence: float = 0.95, preamble: str = ""
) -> tuple[Path, Path]:
    """Write `results.md` (`preamble`, then the table) and `results.csv` into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / "results.md", out / "results.csv"
    md.write_text(preamble + markdown_table(rows, confidence))
    csv_path.write_text(csv_text(rows))
    return md, csv_path


__all__ = [
    "METRICS",
    "Estimate",
    "ResultRow",
    "arm_counts",
    "bootstrap_ci",
    "bootstrap_curve",
    "csv_text",
    "cumulative_regret",
    "greedy_frac",
    "markdown_table",
    "min_frac",
    "optimal_pulls",
    "suffix_failure",
    "summarize",
    "total_regret",
    "write_table",
]
