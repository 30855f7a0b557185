"""Arm pulls per second of batched UCB on Bernoulli K=5, agent included, in one run.

    python benchmarks/bench_bandits.py                                  # cpu: B = 1e4, 1e5, 1e6
    python benchmarks/bench_bandits.py --threads 1                      # one intra-op thread
    python benchmarks/bench_bandits.py --device cuda                    # cuda: up to B = 1e8

Instances are Bandit-Bernoulli-K5-Hard-v0's (means 0.4, and 0.6 for one random arm). Timed, per
instance count B, for `--rounds` rounds of act + pull + update:

- straightforward: `agents.bandits.ucb_bernoulli_straightforward`, the library's `UCB` agent
  (int64 counts, float32 sums, eager ops) and a Bernoulli step, one round at a time;
- optimized: `agents.bandits.ucb_bernoulli_fused`, one torch.compile'd kernel per round over int32
  per-arm columns, random bits drawn in bulk, a CUDA graph per block of rounds on cuda;
- library (information): `agents.bandits.run(BatchedBandit, UCB)`, the path the suite report uses
  (it also draws a reward for every arm and records the (T, B) trajectory), at fewer rounds and
  only up to B = 1e7.

Pulls/s = B * rounds / the best of `--repeats` timed runs (the machine may be shared); the first
call of each path (compilation, CUDA graph capture, allocation) is not timed. Before timing, the
optimized path must give exactly the straightforward path's arms on a small B (cpu).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.bandits import UCB, run, ucb_bernoulli_fused, ucb_bernoulli_straightforward  # noqa: E402
from benchmarks.timing import best_time  # noqa: E402
from envs.bandits import BatchedBandit  # noqa: E402

TASK = "Bandit-Bernoulli-K5-Hard-v0"
LIBRARY_MAX_INSTANCES = 10_000_000  # run() keeps (T, B) trajectories: 20 B of memory per pull


@dataclass
class Bench:
    sizes: list[int] = field(default_factory=list)
    """instance counts B to time (default: 1e4, 1e5, 1e6; and 1e7, 1e8 on cuda)"""
    rounds: int = 100
    """rounds timed per run"""
    library_rounds: int = 20
    """rounds for the library path (it records (T, B) tensors: memory grows with rounds)"""
    library: bool = True
    """also time run(BatchedBandit, UCB)"""
    device: str = "cpu"
    """torch device"""
    threads: int | None = None
    """torch intra-op threads (default: torch's own)"""
    repeats: int = 3
    """timed runs per path (the best is kept)"""
    seed: int = 0
    """instances and agent/reward streams"""
    check_instances: int = 512
    """B of the equality check before timing (0: skip)"""
    json_out: str | None = None
    """also write the figures here"""


def check_same_arms(num_instances: int, rounds: int, device: torch.device, seed: int) -> None:
    """The optimized path's arms equal the straightforward path's (cpu: same random stream)."""
    means = BatchedBandit(TASK, num_instances, seed=seed, device="cpu").means
    reference = ucb_bernoulli_straightforward(means, rounds, seed=seed)
    fused = ucb_bernoulli_fused(means, rounds, seed=seed)
    assert reference is not None and fused is not None
    if not torch.equal(reference, fused.long()):
        mismatch = (reference != fused.long()).nonzero()[0].tolist()
        raise AssertionError(
            f"optimized UCB differs from the straightforward one first at (round, instance) {mismatch}"
        )
    print(f"check: optimized == straightforward arms for B={num_instances}, T={rounds} (cpu)", flush=True)


def main(bench: Bench) -> list[dict]:
    if bench.threads is not None:
        torch.set_num_threads(bench.threads)
    device = torch.device(bench.device)
    if bench.check_instances:
        check_same_arms(bench.check_instances, 300, device, bench.seed)
    sizes = bench.sizes or [10_000, 100_000, 1_000_000] + (
        [10_000_000, 100_000_000] if device.type == "cuda" else []
    )
    results = []
    for b in sizes:
        means = BatchedBandit(TASK, b, seed=bench.seed, device=device).means.clone()

        def straightforward(means: torch.Tensor = means) -> None:
            ucb_bernoulli_straightforward(means, bench.rounds, seed=bench.seed, record=False)

        def optimized(means: torch.Tensor = means) -> None:
            ucb_bernoulli_fused(means, bench.rounds, seed=bench.seed, record=False)

        t_plain = best_time(straightforward, bench.repeats, device)
        t_fused = best_time(optimized, bench.repeats, device)
        row = {
            "num_instances": b,
            "rounds": bench.rounds,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "straightforward_pulls_per_s": b * bench.rounds / t_plain,
            "optimized_pulls_per_s": b * bench.rounds / t_fused,
            "ratio_optimized_over_straightforward": t_plain / t_fused,
        }
        if bench.library and b <= LIBRARY_MAX_INSTANCES:
            bandit = BatchedBandit(TASK, b, seed=bench.seed, device=device)
            t_lib = best_time(
                lambda bandit=bandit: run(bandit, UCB(), bench.library_rounds), bench.repeats, device
            )
            row["library_run_pulls_per_s"] = b * bench.library_rounds / t_lib
            del bandit
        results.append(row)
        print(
            f"B={b:>11,d}  straightforward {row['straightforward_pulls_per_s']:.3g} pulls/s  "
            f"optimized {row['optimized_pulls_per_s']:.3g} pulls/s  "
            f"ratio {row['ratio_optimized_over_straightforward']:.1f}x"
            + (
                f"  (library run(): {row['library_run_pulls_per_s']:.3g} pulls/s)"
                if "library_run_pulls_per_s" in row
                else ""
            ),
            flush=True,
        )
    print(json.dumps(results, indent=2))
    if bench.json_out:
        Path(bench.json_out).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(tyro.cli(Bench))
