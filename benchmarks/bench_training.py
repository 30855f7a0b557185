"""Training SPS of PPO + a bonus against the raw throughput of the same vector env, in one run.

    python benchmarks/bench_training.py --num-envs 8 --device cpu                     # Atari PPO+RND, CPU
    python benchmarks/bench_training.py --num-envs 128 --device cuda --updates 20     # GPU, paper settings
    python benchmarks/bench_training.py --preset minihack --env-id MiniHack-MultiRoom-N4-Locked-v0 \
        --bonus e3b --num-envs 16 --device cpu                                          # MiniHack PPO+E3B

Prints steps/s for: the raw vector env with random actions (sync, and async with two half
batches), and training with the preset's hyperparameters except the env count, then the ratios.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402
from agents.ppo import PRESETS, train  # noqa: E402


@dataclass
class Bench:
    env_id: str = "MontezumaRevenge-v5"
    """environment id"""
    preset: str = "paper"
    """training hyperparameters to start from (agents.ppo.PRESETS)"""
    bonus: str | None = None
    """bonus expression (default: the preset's)"""
    num_envs: int = 8
    """envs for both the raw and the training measurement"""
    device: str = "auto"
    """training device"""
    updates: int = 4
    """PPO updates to time (each num_envs * num_steps steps)"""
    num_steps: int = 128
    """steps per env per rollout"""
    raw_steps: int = 2000
    """random-action steps per env for the raw measurement"""
    env_groups: int = 2
    """env groups for training (async overlap)"""
    amp: bool = True
    """bf16 autocast on cuda"""
    compile: bool = False
    """torch.compile the policy"""
    json_out: str | None = None
    """also write the figures as JSON here"""


def raw_sps(env_id: str, num_envs: int, steps: int, asynchronous: bool) -> float:
    """Random-action steps per second of the vector env alone."""
    batch = num_envs // 2 if asynchronous else num_envs
    venv = envs.make(env_id, num_envs=num_envs, seed=0, batch_size=batch)
    rng = np.random.default_rng(0)
    n = int(venv.single_action_space.n)
    venv.async_reset()
    total = steps * num_envs // batch
    for _ in range(10):  # warm the thread pool
        _, _, _, _, info = venv.recv()
        venv.send(rng.integers(n, size=batch), info["env_id"])
    start = time.perf_counter()
    for _ in range(total):
        _, _, _, _, info = venv.recv()
        venv.send(rng.integers(n, size=batch), info["env_id"])
    elapsed = time.perf_counter() - start
    venv.close()
    return total * batch / elapsed


def main(bench: Bench) -> dict:
    sync = raw_sps(bench.env_id, bench.num_envs, bench.raw_steps, asynchronous=False)
    asyn = raw_sps(bench.env_id, bench.num_envs, bench.raw_steps, asynchronous=True)
    with tempfile.TemporaryDirectory() as run_dir:
        config = dataclasses.replace(
            PRESETS[bench.preset],
            env_id=bench.env_id,
            bonus=bench.bonus or PRESETS[bench.preset].bonus,
            num_steps=bench.num_steps,
            num_envs=bench.num_envs,
            env_groups=bench.env_groups,
            total_timesteps=(bench.updates + 1) * bench.num_envs * bench.num_steps,
            device=bench.device,
            run_dir=run_dir,
            rnd_warmup_iterations=1,
            progress=False,
            amp=bench.amp,
            compile=bench.compile,
            checkpoint_interval=10**9,
        )
        result = train(config)
    figures = {
        "env_id": bench.env_id,
        "bonus": config.bonus,
        "num_envs": bench.num_envs,
        "device": result["device"],
        "raw_sync_sps": round(sync),
        "raw_async_sps": round(asyn),
        "train_sps": round(result["steady_sps"]),
        "train_over_raw_sync": round(result["steady_sps"] / sync, 3),
        "train_over_raw_async": round(result["steady_sps"] / asyn, 3),
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k not in ("run_dir", "resume")},
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "config"}, indent=2))
    if bench.json_out:
        Path(bench.json_out).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":  # the guard matters: MiniHack workers start with forkserver
    main(tyro.cli(Bench))
