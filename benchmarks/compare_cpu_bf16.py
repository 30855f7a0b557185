"""Does bf16 autocast on the CPU (`--cpu-bf16`) learn like float32? Loss curves at fixed seeds (issue 16).

    python benchmarks/compare_cpu_bf16.py                         # 3 seeds x 12 updates, PPO+RND Montezuma
    python benchmarks/compare_cpu_bf16.py --seeds 1 2 3 4 --updates 16 --out /tmp/bf16.json

Each seed trains twice from the same seed, float32 and bf16 (the quick preset's sizes: 8 envs x 128
steps, 4 x 4 minibatches, one warm-up rollout, 1 torch thread), and every per-update loss is read
back from TensorBoard. Per metric the table gives the mean over updates of |mean_bf16 - mean_fp32|
(the means over seeds at each update) next to the seed-to-seed standard deviation of float32 at the
same updates: "within noise" when the gap is smaller than the spread that a change of seed alone
makes. Speeds are not compared here (benchmarks/bench_vs_cleanrl.py does that, paired).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = (
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/rnd_loss",
    "charts/intrinsic_reward",
)


@dataclass
class Compare:
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    """training seeds; each trains in float32 and in bf16"""
    updates: int = 12
    """PPO updates per run"""
    env_id: str = "MontezumaRevenge-v5"
    """Atari environment"""
    out: str | None = None
    """also write the curves and the table as JSON here"""


def curves(run_dir: str) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [event.value for event in events.Scalars(tag)] for tag in METRICS}


def train_curves(compare: Compare, seed: int, cpu_bf16: bool) -> dict[str, list[float]]:
    from agents.ppo import PRESETS, train

    with tempfile.TemporaryDirectory() as run_dir:
        train(
            dataclasses.replace(
                PRESETS["quick"],
                env_id=compare.env_id,
                seed=seed,
                cpu_bf16=cpu_bf16,
                total_timesteps=compare.updates * 8 * 128,
                rnd_warmup_iterations=1,
                torch_threads=1,
                run_dir=run_dir,
                progress=False,
                checkpoint_interval=10**9,
            )
        )
        return curves(run_dir)


def gap_and_spread(fp32: list[list[float]], bf16: list[list[float]]) -> tuple[float, float]:
    """(mean over updates of |seed-mean bf16 - seed-mean fp32|, mean over updates of fp32's seed std)."""
    gaps, spreads = [], []
    for at_update_fp32, at_update_bf16 in zip(zip(*fp32, strict=True), zip(*bf16, strict=True), strict=True):
        gaps.append(abs(statistics.fmean(at_update_bf16) - statistics.fmean(at_update_fp32)))
        spreads.append(statistics.stdev(at_update_fp32))
    return statistics.fmean(gaps), statistics.fmean(spreads)


def main(compare: Compare) -> dict:
    if len(compare.seeds) < 2 or compare.updates < 2:
        raise SystemExit(f"--seeds {compare.seeds} needs >= 2 seeds and --updates {compare.updates} >= 2")
    runs = {
        precision: [train_curves(compare, seed, precision == "bf16") for seed in compare.seeds]
        for precision in ("fp32", "bf16")
    }
    rows = []
    for metric in METRICS:
        gap, spread = gap_and_spread(
            [run[metric] for run in runs["fp32"]], [run[metric] for run in runs["bf16"]]
        )
        rows.append({"metric": metric, "gap": gap, "spread": spread, "within_noise": gap < spread})
    print(f"{len(compare.seeds)} seeds x {compare.updates} updates, {compare.env_id}")
    print("| metric | mean gap bf16 - fp32 | fp32 seed std | within noise |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['metric']} | {row['gap']:.3g} | {row['spread']:.3g} | {'yes' if row['within_noise'] else 'NO'} |"
        )
    report = {"compare": dataclasses.asdict(compare), "runs": runs, "table": rows}
    if compare.out:
        Path(compare.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    import tyro

    main(tyro.cli(Compare))
