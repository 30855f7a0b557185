"""How training cost grows with the env count: SPS and peak memory at 8, 16, 32 and 64 envs (issue 16).

    python benchmarks/bench_scaling.py                 # presets paper (Montezuma PPO+RND) and minigrid-fast
    python benchmarks/bench_scaling.py --presets paper minigrid --env-counts 8 16 32 64 --updates 4

Each point is a fresh process that trains the preset (its env, bonus and hyperparameters; only the
env count, the rollout length if given, the update count and the device change) with one
untimed update and `--updates` timed ones; its SPS is the steady state. Peak memory, two ways:
- peak_rss_mb: the process's own peak resident set (getrusage's ru_maxrss, exact);
- peak_tree_rss_mb: the peak of the summed resident sets of the process and its children,
  sampled every `--sample-interval` seconds with psutil (env worker processes count too, e.g.
  MiniHack's; a peak shorter than the interval can be missed).
Writes one CSV row per point and a PNG with SPS and peak memory against the env count, a line
per preset.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIELDS = (
    "preset",
    "device",
    "env_id",
    "bonus",
    "num_envs",
    "num_steps",
    "updates",
    "torch_threads",
    "steady_sps",
    "sps_all_updates",
    "update_seconds_per_update",
    "peak_rss_mb",
    "peak_tree_rss_mb",
    "process_seconds",
)


@dataclass
class Bench:
    presets: tuple[str, ...] = ("paper", "minigrid-fast")
    """training presets (agents.ppo.PRESETS), one line each in the plot"""
    env_counts: tuple[int, ...] = (8, 16, 32, 64)
    """env counts to measure"""
    num_steps: int | None = None
    """steps per env per rollout (default: the preset's)"""
    updates: int = 3
    """timed updates per point, after one untimed"""
    torch_threads: int = 1
    """torch CPU threads (1: the advice for a small shared CPU)"""
    device: str = "cpu"
    """training device"""
    csv_out: str = "benchmarks/scaling_cpu.csv"
    """CSV of the points"""
    png_out: str = "benchmarks/scaling_cpu.png"
    """plot of SPS and peak memory against the env count"""
    sample_interval: float = 0.05
    """seconds between samples of the process tree's memory"""


def train_point(bench: Bench, preset_name: str, num_envs: int) -> dict[str, Any]:
    """Train `preset_name` at `num_envs` envs in this process; its SPS and its own peak memory."""
    from agents.ppo import PRESETS, train

    preset = PRESETS[preset_name]
    num_steps = bench.num_steps or preset.num_steps
    with tempfile.TemporaryDirectory() as run_dir:
        config = dataclasses.replace(
            preset,
            num_envs=num_envs,
            num_steps=num_steps,
            total_timesteps=(bench.updates + 1) * num_envs * num_steps,
            device=bench.device,
            torch_threads=bench.torch_threads,
            rnd_warmup_iterations=1,
            run_dir=run_dir,
            progress=False,
            checkpoint_interval=10**9,
        )
        result = train(config)
    return {
        "preset": preset_name,
        "env_id": config.env_id,
        "bonus": config.bonus,
        "num_envs": num_envs,
        "num_steps": num_steps,
        "updates": bench.updates + 1,
        "torch_threads": bench.torch_threads,
        "steady_sps": round(result["steady_sps"], 1),
        "sps_all_updates": result["charts/SPS"],
        "update_seconds_per_update": round(result["update_seconds"] / (bench.updates + 1), 4),
        # ru_maxrss is in KiB on Linux
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def tree_rss(process: Any) -> int:
    """Summed resident set of a psutil process and its descendants (those that end meanwhile count 0)."""
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def measure_point(bench: Bench, preset_name: str, num_envs: int) -> dict[str, Any]:
    """One point in a fresh process, sampling its process tree's memory while it runs."""
    import psutil

    settings = json.dumps(dataclasses.asdict(bench))
    command = [sys.executable, __file__, "_point", preset_name, str(num_envs), settings]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True)
        watched, peak = psutil.Process(child.pid), 0
        while child.poll() is None:
            try:
                peak = max(peak, tree_rss(watched))
            except psutil.NoSuchProcess:
                break
            time.sleep(bench.sample_interval)
        child.wait()
        seconds = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"{preset_name} at {num_envs} envs failed:\n{stderr.read()[-3000:]}")
        point = json.loads(stdout.read().strip().splitlines()[-1])
    point["peak_tree_rss_mb"] = round(peak / 2**20, 1)
    point["process_seconds"] = round(seconds, 1)
    return point


def plot(points: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax_sps, ax_mem) = plt.subplots(1, 2, figsize=(10, 4))
    for preset in dict.fromkeys(p["preset"] for p in points):
        rows = sorted((p for p in points if p["preset"] == preset), key=lambda p: p["num_envs"])
        label = f"{preset} ({rows[0]['env_id']}, {rows[0]['bonus']})"
        envs = [p["num_envs"] for p in rows]
        ax_sps.plot(envs, [p["steady_sps"] for p in rows], "o-", label=label)
        ax_mem.plot(envs, [p["peak_tree_rss_mb"] for p in rows], "o-", label=label)
    for ax, ylabel in (
        (ax_sps, "training steps / s (steady)"),
        (ax_mem, "peak memory of the process tree (MB)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({p["num_envs"] for p in points}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("envs")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_sps.legend(fontsize=8)
    threads = points[0]["torch_threads"]
    fig.suptitle(
        f"PPO training cost against the env count (device {points[0]['device']}, "
        f"{threads} torch thread{'s' if threads != 1 else ''})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(bench: Bench) -> list[dict[str, Any]]:
    from agents.ppo import PRESETS

    unknown = [name for name in bench.presets if name not in PRESETS]
    if unknown:
        raise SystemExit(f"--presets {' '.join(unknown)}: unknown; valid presets: {', '.join(PRESETS)}")
    points = []
    for preset_name in bench.presets:
        for num_envs in bench.env_counts:
            point = measure_point(bench, preset_name, num_envs)
            point["device"] = bench.device
            points.append(point)
            print(
                f"{preset_name} {num_envs} envs: {point['steady_sps']} SPS, peak {point['peak_rss_mb']} MB "
                f"(tree {point['peak_tree_rss_mb']} MB)",
                flush=True,
            )
    with Path(bench.csv_out).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(points)
    plot(points, Path(bench.png_out))
    return points


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "_point":
        _, _, preset_name, num_envs, settings = sys.argv
        values = json.loads(settings)
        bench = Bench(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        print(json.dumps(train_point(bench, preset_name, int(num_envs))))
    else:
        import tyro

        main(tyro.cli(Bench))
