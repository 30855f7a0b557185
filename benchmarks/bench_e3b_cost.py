"""The cost of the batched E3B bonus per step, against the vector env's own step time, in one run.

    python benchmarks/bench_e3b_cost.py --num-envs 256 --device cpu
    python benchmarks/bench_e3b_cost.py --num-envs 256 --device cuda

Times, for a (num_steps, num_envs) rollout: the encoder pass over every next observation, the
Sherman-Morrison recursion over time (batched over envs as one (N, d, d) tensor), and the whole
`bonus(batch)`; and the random-action step time of the same number of MiniHack envs. The bonus
sees real MiniHack observations collected by the random agent.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402
from benchmarks.timing import best_time  # noqa: E402
from explore.combine import BonusContext, BonusSettings, build_bonus  # noqa: E402
from explore.obs import obs_to_tensor  # noqa: E402


@dataclass
class Bench:
    env_id: str = "MiniHack-MultiRoom-N4-Locked-v0"
    """MiniHack task whose observations the bonus scores"""
    num_envs: int = 256
    """envs (the batch dim of C^-1)"""
    num_steps: int = 32
    """rollout length timed"""
    e3b_dim: int = 128
    """embedding size d"""
    device: str = "cpu"
    """device of the bonus"""
    repeats: int = 3
    """timed repetitions (the best is kept)"""


def main(bench: Bench) -> dict:
    device = torch.device(bench.device)
    vec = envs.make(bench.env_id, num_envs=bench.num_envs, seed=0)
    rng = np.random.default_rng(0)
    n_actions = int(vec.single_action_space.n)
    vec.reset()
    frames, dones = [], []
    start = time.perf_counter()
    for _ in range(bench.num_steps):
        obs, _, term, trunc, _ = vec.step(rng.integers(n_actions, size=bench.num_envs))
        frames.append(obs_to_tensor(obs, device))
        dones.append(torch.as_tensor(term | trunc, device=device))
    env_step_time = (time.perf_counter() - start) / bench.num_steps
    context = BonusContext(
        num_envs=bench.num_envs,
        observation_space=vec.single_observation_space,
        action_space=vec.single_action_space,
        device=device,
    )
    vec.close()
    e3b = build_bonus("e3b", context, BonusSettings(e3b_dim=bench.e3b_dim, reward_norm="none"))
    next_obs = {k: torch.stack([f[k] for f in frames]) for k in frames[0]}
    batch = {
        "next_obs": next_obs,
        "obs": next_obs,
        "actions": torch.zeros((bench.num_steps, bench.num_envs), dtype=torch.long, device=device),
        "valid": torch.ones((bench.num_steps, bench.num_envs), dtype=torch.bool, device=device),
        "dones": torch.stack(dones),
    }
    flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in next_obs.items()}
    with torch.no_grad():
        encoder_time = best_time(lambda: e3b.encoder(flat), bench.repeats, device)
        total_time = best_time(lambda: e3b.bonus(batch), bench.repeats, device)  # C^-1 carries on: same cost
    figures = {
        "env_id": bench.env_id,
        "num_envs": bench.num_envs,
        "num_steps": bench.num_steps,
        "e3b_dim": bench.e3b_dim,
        "device": str(device),
        "env_step_ms": round(env_step_time * 1e3, 3),
        "e3b_bonus_per_step_ms": round(total_time / bench.num_steps * 1e3, 3),
        "of_which_encoder_ms": round(encoder_time / bench.num_steps * 1e3, 3),
        "of_which_sherman_morrison_ms": round((total_time - encoder_time) / bench.num_steps * 1e3, 3),
        "bonus_over_env_step": round(total_time / bench.num_steps / env_step_time, 3),
    }
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":  # MiniHack workers start with forkserver
    main(tyro.cli(Bench))
