"""SB3 PPO with our RND wrapper against our PPO+RND and the raw env, in one run, same env and env count.

    python benchmarks/bench_sb3.py                                   # Montezuma, 8 envs, cpu
    python benchmarks/bench_sb3.py --num-envs 128 --device cuda --updates 10

Prints steps/s for:
- the raw vector env with random actions (sync, and async with two half batches: what our
  trainer's two env groups can use; SB3 steps all envs at once);
- the SB3VecEnv adapter with random actions (the adapter's own cost: info dicts, dummy steps);
- SB3 PPO (CnnPolicy) without a bonus, and with our RND through BonusVecEnvWrapper, both built by
  runs/sb3_rnd.py with its paper-like hyperparameters except the env count;
- our PPO+RND (agents.ppo.train, the paper preset except the env count, 2 env groups);
then the ratios. Training SPS is the steady state: the first PPO iteration (allocation, RND's
warm-up) is left out of both trainers' timing. The networks differ: SB3's NatureCNN with one
value head against our two-head policy; RND is the same module in both.
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
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "runs"))

from bench_training import raw_sps  # noqa: E402
from sb3_rnd import Args, make_env, make_model  # noqa: E402

import envs  # noqa: E402
from agents.ppo import PRESETS, train  # noqa: E402
from explore.sb3 import SB3VecEnv  # noqa: E402


@dataclass
class Bench:
    env_id: str = "MontezumaRevenge-v5"
    """environment id (Atari: SB3's CnnPolicy)"""
    num_envs: int = 8
    """envs for every measurement"""
    n_steps: int = 128
    """steps per env per rollout, both trainers"""
    updates: int = 4
    """timed PPO iterations per trainer, after one untimed"""
    raw_steps: int = 2000
    """random-action steps per env for the raw and adapter measurements"""
    device: str = "cpu"
    """training device of both trainers"""
    threads: int | None = None
    """torch threads (default: torch's own choice), the same for both trainers"""
    skip_no_bonus: bool = False
    """leave out SB3 PPO without a bonus"""
    json_out: str | None = None
    """also write the figures as JSON here"""


def adapter_sps(env_id: str, num_envs: int, steps: int) -> tuple[float, int]:
    """Random-action steps/s through SB3VecEnv, and how many dummy steps it performed."""
    venv = SB3VecEnv(envs.make(env_id, num_envs=num_envs, seed=0))
    rng = np.random.default_rng(0)
    n = int(venv.action_space.n)
    venv.reset()
    for _ in range(10):
        venv.step(rng.integers(n, size=num_envs))
    start = time.perf_counter()
    for _ in range(steps):
        venv.step(rng.integers(n, size=num_envs))
    elapsed = time.perf_counter() - start
    dummies = venv.dummy_steps
    venv.close()
    return steps * num_envs / elapsed, dummies


def sb3_sps(bench: Bench, bonus: bool) -> float:
    """Steady SPS of SB3 PPO (runs/sb3_rnd.py's setup), with our RND or with no bonus."""
    from stable_baselines3.common.vec_env import VecMonitor

    args = Args(
        env_id=bench.env_id,
        num_envs=bench.num_envs,
        n_steps=bench.n_steps,
        warmup_steps=bench.n_steps,  # one rollout of random steps, as our trainer's below
        device=bench.device,
        progress=False,
    )
    if bonus:
        venv = make_env(args)
    else:
        venv = VecMonitor(SB3VecEnv(envs.make(args.env_id, num_envs=args.num_envs, seed=args.seed)))
    model = make_model(args, venv)
    batch = args.num_envs * args.n_steps
    model.learn(batch)  # untimed: allocation, the RND warm-up, the first update
    start = time.perf_counter()
    model.learn(bench.updates * batch, reset_num_timesteps=False)
    elapsed = time.perf_counter() - start
    venv.close()
    return bench.updates * batch / elapsed


def ours_sps(bench: Bench) -> float:
    """Steady SPS of our PPO+RND (the paper preset except the env count and rollout length)."""
    with tempfile.TemporaryDirectory() as run_dir:
        config = dataclasses.replace(
            PRESETS["paper"],
            env_id=bench.env_id,
            num_envs=bench.num_envs,
            num_steps=bench.n_steps,
            total_timesteps=(bench.updates + 1) * bench.num_envs * bench.n_steps,
            device=bench.device,
            run_dir=run_dir,
            rnd_warmup_iterations=1,
            progress=False,
            checkpoint_interval=10**9,
        )
        return float(train(config)["steady_sps"])


def main(bench: Bench) -> dict:
    if bench.threads is not None:
        torch.set_num_threads(bench.threads)
    raw_sync = raw_sps(bench.env_id, bench.num_envs, bench.raw_steps, asynchronous=False)
    raw_async = raw_sps(bench.env_id, bench.num_envs, bench.raw_steps, asynchronous=True)
    adapter, dummies = adapter_sps(bench.env_id, bench.num_envs, bench.raw_steps)
    sb3_rnd = sb3_sps(bench, bonus=True)
    sb3_plain = None if bench.skip_no_bonus else sb3_sps(bench, bonus=False)
    ours = ours_sps(bench)
    figures = {
        "env_id": bench.env_id,
        "num_envs": bench.num_envs,
        "n_steps": bench.n_steps,
        "device": bench.device,
        "torch_threads": torch.get_num_threads(),
        "raw_sync_sps": round(raw_sync),
        "raw_async_sps": round(raw_async),
        "sb3_adapter_sps": round(adapter),
        "sb3_adapter_dummy_steps": dummies,
        "sb3_ppo_sps": None if sb3_plain is None else round(sb3_plain, 1),
        "sb3_ppo_rnd_sps": round(sb3_rnd, 1),
        "ours_ppo_rnd_sps": round(ours, 1),
        "sb3_rnd_over_ours": round(sb3_rnd / ours, 3),
        "sb3_rnd_over_raw_sync": round(sb3_rnd / raw_sync, 4),
        "ours_over_raw_sync": round(ours / raw_sync, 4),
        "ours_over_raw_async": round(ours / raw_async, 4),
        "adapter_over_raw_sync": round(adapter / raw_sync, 3),
    }
    print(json.dumps(figures, indent=2))
    if bench.json_out:
        Path(bench.json_out).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(tyro.cli(Bench))
