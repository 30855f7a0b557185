"""Data-parallel scaling: SPS of 1 vs N torchrun processes, and the communication share of the update.

    python benchmarks/bench_distributed.py                        # CPU ranks, tiny settings
    python benchmarks/bench_distributed.py --device cuda          # N processes sharing the one GPU
    python benchmarks/bench_distributed.py --procs 1 2 4 --num-envs 32 --num-steps 128 --updates 6

For each process count it launches `torchrun --standalone --nproc-per-node N` on this file in
worker mode; the worker runs the real trainer (`agents.ppo.train`, PPO + RND by default) and rank
0 writes what it measured. Reported per process count:
- SPS: steady-state env steps per second of the whole job (all ranks' envs; the first update,
  which allocates and warms up, is left out);
- update s: seconds per PPO update (ppo_update: epochs x minibatches, on rank 0);
- comm s and comm %: seconds per update spent in the collectives of the update (the gradient
  all-reduce of one flat buffer, the count/advantage all-reduces of each minibatch, the stats
  all-reduce), and their share of the update time. The worker sets EXPLORE_PROFILE_COMM=1, so
  on a GPU every collective is bracketed by a device synchronization: the time is real, not
  the time to enqueue (this adds syncs; the SPS of an unprofiled run can be a little higher).

`num_envs` is per process (weak scaling: N processes step N times the envs) unless
`--same-total-envs`, which divides it by N (strong scaling: the same global batch).
Several processes on one GPU use gloo (NCCL refuses two ranks on one device); see
docs/distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def worker(args: argparse.Namespace) -> None:
    """One rank of the job: train, and let rank 0 write its measurements to args.json."""
    os.environ["EXPLORE_PROFILE_COMM"] = "1"
    import torch

    from agents.ppo import Config, train
    from explore import distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    world = distributed.env_world_size()
    num_envs = args.num_envs // world if args.same_total_envs else args.num_envs
    config = Config(
        env_id=args.env_id,
        bonus=args.bonus,
        num_envs=num_envs,
        env_groups=1,
        num_steps=args.num_steps,
        num_minibatches=args.num_minibatches,
        update_epochs=args.update_epochs,
        total_timesteps=args.updates * num_envs * args.num_steps * world,
        rnd_warmup_iterations=1,
        checkpoint_interval=10**9,  # only the final checkpoint
        device=args.device,
        progress=False,
        run_dir=args.run_dir,
    )
    result = train(config)
    if result["rank"] == 0:
        updates = args.updates
        figures = {
            "procs": world,
            "device": result["device"],
            "num_envs_per_proc": num_envs,
            "sps": result.get("steady_sps", float("nan")),
            "update_s": result["update_seconds"] / updates,
            "comm_s": result["comm_seconds"] / updates,
        }
        figures["comm_fraction"] = figures["comm_s"] / figures["update_s"] if figures["update_s"] else 0.0
        Path(args.json).write_text(json.dumps(figures))


def launch(args: argparse.Namespace, procs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        command = [
            shutil.which("torchrun") or "torchrun",
            "--standalone",
            "--nproc-per-node",
            str(procs),
            __file__,
            "--worker",
            "--json",
            str(out),
            "--run-dir",
            str(Path(tmp) / "run"),
            *passthrough(args),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or 1)}
        result = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"torchrun with {procs} processes failed:\n{result.stderr[-4000:]}")
        return json.loads(out.read_text())


def passthrough(args: argparse.Namespace) -> list[str]:
    flags = [
        "--env-id", args.env_id, "--bonus", args.bonus, "--device", args.device,
        "--num-envs", str(args.num_envs), "--num-steps", str(args.num_steps),
        "--num-minibatches", str(args.num_minibatches), "--update-epochs", str(args.update_epochs),
        "--updates", str(args.updates), "--threads", str(args.threads),
    ]  # fmt: skip
    return flags + (["--same-total-envs"] if args.same_total_envs else [])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--env-id", default="MontezumaRevenge-v5")
    parser.add_argument("--bonus", default="rnd")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (every process on the visible GPUs)")
    parser.add_argument("--num-envs", type=int, default=4, help="envs per process (see --same-total-envs)")
    parser.add_argument("--num-steps", type=int, default=64)
    parser.add_argument("--num-minibatches", type=int, default=4)
    parser.add_argument("--update-epochs", type=int, default=2)
    parser.add_argument(
        "--updates", type=int, default=4, help="updates per run (the first is not timed for SPS)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per process (0: torch's default)"
    )
    parser.add_argument(
        "--same-total-envs", action="store_true", help="divide --num-envs by the process count"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    rows = [launch(args, procs) for procs in args.procs]
    base = rows[0]["sps"]
    print(
        f"# {args.env_id}, bonus {args.bonus}, {args.num_envs} envs"
        f"{' in total' if args.same_total_envs else ' per process'} x {args.num_steps} steps, "
        f"{args.update_epochs} epochs x {args.num_minibatches} minibatches, {args.updates} updates, "
        f"{args.threads or 'default'} torch thread(s) per process"
    )
    print("| processes | device | envs/proc | SPS (all ranks) | scaling | update s | comm s | comm % |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['procs']} | {row['device']} | {row['num_envs_per_proc']} | {row['sps']:.0f} | "
            f"{row['sps'] / base:.2f}x | {row['update_s']:.3f} | {row['comm_s']:.4f} | "
            f"{100 * row['comm_fraction']:.1f}% |"
        )


if __name__ == "__main__":
    main()
