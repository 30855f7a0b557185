"""Text-game steps per second with N worker processes against one worker, in one run.

    python benchmarks/bench_text_envs.py                                   # TWX coin collector, N = 1, 2, 4, ... CPUs
    python benchmarks/bench_text_envs.py --env-id TextWorld-v0 --game-kwargs '{"world_size": 3, "nb_objects": 5, "quest_length": 3}'
    python benchmarks/bench_text_envs.py --max-workers 16 --num-envs-per-worker 8 --steps 400

For each N (1, 2, 4, ... up to --max-workers, default the CPUs this process may use; the last is
--max-workers itself), a `TextVecEnv` with N workers and N * --num-envs-per-worker games steps
--steps times with a random admissible command per game (the agent's side, chosen in the main
process, is part of the timed loop, as it would be in training). Episodes end and auto-reset
inside the timed steps (SAME_STEP), so resets and gold-path planning are counted too.
Steps/s = games * steps / seconds after --warmup untimed steps (JVM start and JIT, game
generation). The scaling ratio is speedup / N = (steps/s with N workers) / (N * steps/s with 1);
the target is >= 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.core import available_cpus  # noqa: E402
from envs.text import make_text_vec_env  # noqa: E402


def worker_counts(max_workers: int) -> list[int]:
    counts, n = [], 1
    while n < max_workers:
        counts.append(n)
        n *= 2
    return counts + [max_workers]


def measure(env_id: str, num_workers: int, per_worker: int, steps: int, warmup: int, kwargs: dict) -> float:
    num_envs = num_workers * per_worker
    rng = np.random.default_rng(0)
    with make_text_vec_env(env_id, num_envs=num_envs, num_workers=num_workers, seed=0, **kwargs) as vec:
        _, infos = vec.reset()

        def choose(infos) -> list[str]:
            return [a[rng.integers(len(a))] if a else "look" for a in infos["admissible_commands"]]

        for _ in range(warmup):
            _, _, _, _, infos = vec.step(choose(infos))
        start = time.perf_counter()
        for _ in range(steps):
            _, _, _, _, infos = vec.step(choose(infos))
        elapsed = time.perf_counter() - start
    return num_envs * steps / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="TWX-CoinCollector-v0", help="a text env id (TWX-*, TextWorld-v0)")
    parser.add_argument("--num-envs-per-worker", type=int, default=8, help="games per worker process")
    parser.add_argument("--max-workers", type=int, default=available_cpus(), help="largest N (default: the CPUs)")
    parser.add_argument("--steps", type=int, default=300, help="timed vector steps per N")
    parser.add_argument("--warmup", type=int, default=30, help="untimed vector steps per N")
    parser.add_argument("--game-kwargs", default="{}", help="JSON keyword arguments for every game")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    kwargs = json.loads(args.game_kwargs)

    print(f"# {args.env_id} {kwargs or ''}: {args.num_envs_per_worker} games per worker, {args.steps} timed steps, "
          f"{available_cpus()} CPUs available (os.cpu_count() = {os.cpu_count()})")
    print(f"{'workers':>7} {'games':>6} {'steps/s':>10} {'speedup':>8} {'speedup/N':>10}")
    results = []
    base = None
    for n in worker_counts(args.max_workers):
        sps = measure(args.env_id, n, args.num_envs_per_worker, args.steps, args.warmup, kwargs)
        base = base or sps
        speedup = sps / base
        results.append({"workers": n, "games": n * args.num_envs_per_worker, "steps_per_s": sps,
                        "speedup": speedup, "ratio": speedup / n})
        print(f"{n:>7} {n * args.num_envs_per_worker:>6} {sps:>10.0f} {speedup:>8.2f} {speedup / n:>10.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"env_id": args.env_id, "game_kwargs": kwargs, "results": results}, indent=2))


if __name__ == "__main__":
    main()
