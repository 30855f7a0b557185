"""Training SPS of two checkouts of this repository, paired: A and B alternate, each run a fresh process.

    git worktree add --detach /tmp/base <old commit>
    python benchmarks/bench_revisions.py --base /tmp/base --pairs 3              # PPO+RND quick, 1 thread
    python benchmarks/bench_revisions.py --base /tmp/base --threads 2 --num-envs 8

Each run imports `agents.ppo` from its own checkout (the process starts in that folder), trains
`--updates` + 1 updates of the quick preset (Montezuma, PPO+RND, 8 envs x 128 steps, 4 x 4 minibatches,
one warm-up rollout) and reports the trainer's steady SPS (the first update left out). The order
alternates pair by pair (AB, BA, AB, ...) so that a drift in machine load hits both sides alike; the
printout is the ratio new/base per pair with its min, median and max. Nothing is timed in a test.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

REPO = Path(__file__).resolve().parents[1]

# runs in the checkout's folder, so its own agents.ppo is imported; prints one JSON line
RUN = """
import dataclasses, json, sys, tempfile
from agents.ppo import PRESETS, train
args = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory() as run_dir:
    config = dataclasses.replace(
        PRESETS["quick"], env_id=args["env_id"], bonus=args["bonus"], num_envs=args["num_envs"],
        total_timesteps=(args["updates"] + 1) * args["num_envs"] * 128, rnd_warmup_iterations=1,
        torch_threads=args["threads"], run_dir=run_dir, progress=False, checkpoint_interval=10**9,
    )
    result = train(config)
print("RESULT " + json.dumps({"steady_sps": result["steady_sps"]}))
"""


@dataclass
class Bench:
    base: str
    """the other checkout (e.g. a `git worktree add --detach` of an older commit)"""
    new: str = str(REPO)
    """the checkout to compare with it (default: this one)"""
    pairs: int = 3
    """A/B pairs; the order alternates pair by pair"""
    updates: int = 4
    """timed PPO updates per run (plus one untimed)"""
    num_envs: int = 8
    """envs (the quick preset's 8 by default)"""
    threads: int = 1
    """torch threads, the same for both"""
    env_id: str = "MontezumaRevenge-v5"
    """environment id"""
    bonus: str = "rnd"
    """bonus expression"""


def run_once(checkout: str, bench: Bench) -> float:
    args = json.dumps(
        {
            "env_id": bench.env_id,
            "bonus": bench.bonus,
            "num_envs": bench.num_envs,
            "updates": bench.updates,
            "threads": bench.threads,
        }
    )
    out = subprocess.run(
        [sys.executable, "-c", RUN, args], cwd=checkout, capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    return float(json.loads(line[len("RESULT ") :])["steady_sps"])


def main(bench: Bench) -> dict:
    if bench.pairs < 1 or bench.updates < 1:
        raise SystemExit(f"--pairs {bench.pairs} and --updates {bench.updates} must be >= 1")
    ratios, rows = [], []
    for pair in range(bench.pairs):
        order = ("base", "new") if pair % 2 == 0 else ("new", "base")
        sps = {side: run_once(bench.base if side == "base" else bench.new, bench) for side in order}
        ratios.append(sps["new"] / sps["base"])
        rows.append({"pair": pair, "order": "".join(s[0].upper() for s in order), **sps, "ratio": ratios[-1]})
        print(
            f"pair {pair} ({rows[-1]['order']}): base {sps['base']:.0f} SPS, new {sps['new']:.0f} SPS, "
            f"new/base {ratios[-1]:.3f}",
            flush=True,
        )
    summary = {
        "min": min(ratios),
        "median": statistics.median(ratios),
        "max": max(ratios),
        "pairs": rows,
    }
    print(
        f"new/base over {bench.pairs} pairs: min {summary['min']:.3f}, median {summary['median']:.3f}, "
        f"max {summary['max']:.3f}"
    )
    return summary


if __name__ == "__main__":
    main(tyro.cli(Bench))
