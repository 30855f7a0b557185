"""The fast grid-world path: training SPS of `--preset minigrid-fast` against raw envpool MiniGrid, in one run.

    python benchmarks/bench_grid.py                                   # MultiRoom-N4-S5, 64 envs, 1 torch thread
    python benchmarks/bench_grid.py --baseline                        # also the old `minigrid` preset

Prints steps/s of: envpool stepping the same env ids with random actions (sync: all envs per call;
async: two half batches, as the trainer's two env groups step), PPO without a bonus, and PPO+RND
(non-episodic intrinsic stream, as the RND paper), each with the preset's settings, then each
training figure over raw sync. Targets (issue 12, a 2-core CPU, 1 torch thread): PPO >= 5,000 SPS,
PPO+RND >= 3,000 SPS. Training SPS is the trainer's steady-state figure (the first update, which
allocates, is left out).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import raw_sps  # noqa: E402

from agents.ppo import PRESETS, train  # noqa: E402

TARGETS = {"ppo": 5000, "ppo+rnd": 3000}


@dataclass
class Bench:
    env_id: str = "MiniGrid-MultiRoom-N4-S5-v0"
    """MiniGrid/BabyAI id"""
    num_envs: int = 64
    """envs for the raw and the training measurements"""
    updates: int = 4
    """PPO updates timed per training measurement (after one warm-up update)"""
    raw_steps: int = 1000
    """random-action steps per env for the raw measurements"""
    torch_threads: int = 1
    """torch threads of the training runs"""
    baseline: bool = False
    """also time the `minigrid` preset (the default MiniGrid network) with the same envs"""
    json_out: str | None = None
    """also write the figures as JSON here"""


def train_sps(bench: Bench, preset: str, bonus: str, **overrides) -> float:
    base = PRESETS[preset]
    with tempfile.TemporaryDirectory() as run_dir:
        config = dataclasses.replace(
            base,
            env_id=bench.env_id,
            bonus=bonus,
            num_envs=bench.num_envs,
            total_timesteps=(bench.updates + 1) * bench.num_envs * base.num_steps,
            device="cpu",
            torch_threads=bench.torch_threads,
            rnd_warmup_iterations=1,
            checkpoint_interval=10**9,
            run_dir=run_dir,
            progress=False,
            **overrides,
        )
        return float(train(config)["steady_sps"])


def main(bench: Bench) -> dict:
    figures: dict[str, float] = {
        "raw_sync": raw_sps(bench.env_id, bench.num_envs, bench.raw_steps, asynchronous=False),
        "raw_async": raw_sps(bench.env_id, bench.num_envs, bench.raw_steps, asynchronous=True),
        "ppo": train_sps(bench, "minigrid-fast", "none"),
        "ppo+rnd": train_sps(bench, "minigrid-fast", "rnd", int_episodic=False),
    }
    if bench.baseline:
        figures["minigrid preset ppo"] = train_sps(bench, "minigrid", "none", env_groups=2)
    print(f"{bench.env_id}, {bench.num_envs} envs, {bench.torch_threads} torch thread(s)")
    print(f"{'measurement':<24} {'steps/s':>9} {'/ raw sync':>10} {'target':>8}")
    for name, sps in figures.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("hit" if sps >= target else "missed") + f" ({target})"
        ratio = sps / figures["raw_sync"]
        print(f"{name:<24} {sps:>9,.0f} {ratio:>10.3f} {verdict:>8}")
    if bench.json_out:
        Path(bench.json_out).write_text(json.dumps({"bench": dataclasses.asdict(bench), **figures}, indent=2))
    return figures


if __name__ == "__main__":
    main(tyro.cli(Bench))
