"""Global vs episodic novelty on MiniGrid (Henaff et al. 2023), scaled down to a CPU.

Runs a grid of (task, bonus, seed) one after another in this process with `agents.ppo.train`,
then aggregates the final success rates with rliable (IQM over seeds, stratified-bootstrap 95 %
CIs) per task and over all tasks, and plots the learning curves.

    python benchmarks/novelty_study.py --publish        # the study as in benchmarks/novelty_study.md
    python benchmarks/novelty_study.py --analyze-only   # only re-read the runs and re-aggregate

Each run lives in <root>/<task>__<bonus>__<seed> (e.g. runs/novelty_study/DoorKey-5x5__e3b*rnd__1).
The study is resumable: a run whose checkpoint already holds its last update is skipped, one
that stopped half-way resumes from its checkpoint, one with no checkpoint starts over.

Outputs: <root>/summary.csv (one row per task/bonus/metric, with the per-seed scores),
<root>/runs.csv (one row per run), <root>/table.md (the Markdown table), and
<plots>_success.png / <plots>_return.png (mean +- std over seeds per bonus, one panel per task),
<plots> being results/novelty_study/novelty, or benchmarks/novelty with --publish.

Aggregation needs rliable (`pip install rliable`); the final score of a run is the mean of its
last `final_fraction` of logged points (one point per update that finished episodes), weighted
by the episodes behind each point: the success rate and return over those episodes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from explore.study import (  # noqa: F401 (re-exported: the study's tests read them here)
    ALL_TASKS,
    RETURN_TAG,
    SUCCESS_TAG,
    Curve,
    aggregate,
    binned_curves,
    final_score,
    interval_estimates,
    per_step_mean,
    plot_curves,
    read_curves,
    write_csv,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: study_output
from study_output import output_folder  # noqa: E402

METRICS = {"success": SUCCESS_TAG, "return": RETURN_TAG}
STUDY_FILE = "study_run.json"


@dataclass
class Args:
    """Global (RND), episodic (E3B) and combined (E3B x RND) bonuses on MiniGrid, on a CPU."""

    tasks: tuple[str, ...] = ("MiniGrid-Empty-16x16-v0@256", "MiniGrid-DoorKey-5x5-v0")
    """MiniGrid ids, each optionally with '@N' for an N-step episode limit (envpool regenerates a random
    layout every episode; Empty-NxN keeps one fixed layout)"""
    bonuses: tuple[str, ...] = ("none", "e3b", "rnd", "e3b*rnd")
    """bonus expressions (agents.ppo.Config.bonus)"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """seeds of every (task, bonus)"""
    total_timesteps: int = 73_728
    """agent steps per run"""
    num_envs: int = 16
    """parallel environments per run"""
    num_steps: int = 128
    """steps per env per rollout"""
    rnd_warmup_iterations: int = 1
    """random-agent rollouts that initialize RND's observation statistics"""
    checkpoint_interval: int = 4
    """updates between checkpoints (the study resumes from the last one)"""
    torch_threads: int = 1
    """torch.set_num_threads for the runs (0: torch's default). One thread: on the shared 2-core machine,
    torch's two OpenMP threads ran 3-8x slower than one whenever other processes were busy"""
    root: Path = Path("runs/novelty_study")
    """folder of the run directories and of summary.csv, runs.csv and table.md"""
    plots: Path | None = None
    """prefix of the learning-curve PNGs (<plots>_success.png, <plots>_return.png); None:
    results/novelty_study/novelty, or benchmarks/novelty with --publish"""
    publish: bool = False
    """write the plots into benchmarks/, over the tracked ones"""
    final_fraction: float = 0.2
    """the final score is the mean over this last fraction of a run's logged points"""
    reps: int = 2000
    """bootstrap resamples"""
    bootstrap_seed: int = 0
    """seed of the bootstrap (NumPy's global RNG, which rliable resamples from, restored afterwards)"""
    curve_bins: int = 12
    """learning curves: episode-weighted means in this many equal bins of steps (a bin shorter than an
    episode limit spikes where one seed alone finished an episode)"""
    stop_after_min: float | None = None
    """start no new run after this many minutes (the study stays resumable; the analysis keeps the first
    seeds that every task and bonus completed)"""
    analyze_only: bool = False
    """do not train; aggregate and plot the runs already in --root"""


# --- runs ---------------------------------------------------------------------------------------


def parse_task(spec: str) -> tuple[str, int | None]:
    """'MiniGrid-Empty-16x16-v0@256' -> ('MiniGrid-Empty-16x16-v0', 256); no '@': the task's own limit."""
    env_id, _, limit = spec.partition("@")
    if limit and not (limit.isdigit() and int(limit) > 0):
        raise SystemExit(f"task {spec!r}: the episode limit after '@' must be a positive integer")
    return env_id, int(limit) if limit else None


def short_task(spec: str) -> str:
    """'MiniGrid-Empty-16x16-v0@256' -> 'Empty-16x16@256'."""
    env_id, limit = parse_task(spec)
    name = env_id.removeprefix("Explore/").removeprefix("MiniGrid-").removesuffix("-v0")
    return f"{name}@{limit}" if limit else name


def run_dir(args: Args, task: str, bonus: str, seed: int) -> Path:
    return args.root / f"{short_task(task)}__{bonus}__{seed}"


def make_config(args: Args, task: str, bonus: str, seed: int):
    """PRESETS["minigrid"] (lr 3e-4, gamma 0.99, ent 0.01, clip 0.2, int_episodic) at CPU scale."""
    from agents.ppo import PRESETS

    env_id, limit = parse_task(task)
    return dataclasses.replace(
        PRESETS["minigrid"],
        env_id=env_id,
        max_episode_steps=limit,
        bonus=bonus,
        seed=seed,
        total_timesteps=args.total_timesteps,
        num_envs=args.num_envs,
        num_steps=args.num_steps,
        rnd_warmup_iterations=args.rnd_warmup_iterations,
        checkpoint_interval=args.checkpoint_interval,
        device="cpu",
        progress=False,
        run_dir=str(run_dir(args, task, bonus, seed)),
    )


# the settings that must match for a saved run to count as a run of this study
IDENTITY_FIELDS = (
    "env_id",
    "max_episode_steps",
    "bonus",
    "seed",
    "total_timesteps",
    "num_envs",
    "num_steps",
    "learning_rate",
    "gamma",
    "ent_coef",
    "clip_coef",
    "int_episodic",
    "rnd_warmup_iterations",
)


def run_state(config) -> str:
    """'done', 'partial' (a checkpoint short of the last update), or 'new'; raises on a foreign run."""
    from explore.checkpoint import CHECKPOINT_NAME, CONFIG_NAME, load_checkpoint

    path = Path(config.run_dir)
    if not (path / CHECKPOINT_NAME).is_file():
        return "new"
    saved = json.loads((path / CONFIG_NAME).read_text())
    mismatched = [f for f in IDENTITY_FIELDS if saved.get(f) != getattr(config, f)]
    if mismatched:
        diffs = ", ".join(f"{f}: saved {saved.get(f)!r} != {getattr(config, f)!r}" for f in mismatched)
        raise SystemExit(f"{path} holds a different run ({diffs}); delete it or choose another --root")
    done = load_checkpoint(path)["update"] >= config.num_updates
    return "done" if done else "partial"


def run_one(args: Args, task: str, bonus: str, seed: int) -> str:
    """Train one run unless its checkpoint shows it complete; returns what happened."""
    from agents.ppo import train

    config = make_config(args, task, bonus, seed)
    state = run_state(config)
    if state == "done":
        return "skipped (complete)"
    path = Path(config.run_dir)
    if state == "new" and path.exists():  # killed before its first checkpoint: start clean
        shutil.rmtree(path)
    if state == "partial":
        config = dataclasses.replace(config, resume=str(path))
    start = time.time()
    logged = train(config)
    wall = time.time() - start
    record = {
        "wall_s": wall,
        "resumed": state == "partial",
        "steady_sps": logged.get("steady_sps"),
        "global_step": logged.get("global_step"),
    }
    (path / STUDY_FILE).write_text(json.dumps(record, indent=2) + "\n")
    sps = logged.get("steady_sps")
    return f"trained in {wall:.0f} s" + (f", {sps:.0f} SPS" if sps else "")


# --- reading and scoring --------------------------------------------------------------------------


# --- aggregation with rliable ----------------------------------------------------------------------


# --- curves and plots -----------------------------------------------------------------------------


# --- reports --------------------------------------------------------------------------------------


def plots_prefix(args: Args) -> Path:
    """<plots> of the PNGs: --plots, else results/novelty_study/novelty or, with --publish, benchmarks/novelty."""
    if args.plots is not None:
        args.plots.parent.mkdir(parents=True, exist_ok=True)
        return args.plots
    return output_folder("novelty_study", args.publish) / "novelty"


def markdown_table(rows: Sequence[dict], columns: Mapping[str, str]) -> str:
    """One line per (task, bonus); `columns` maps a metric to the key prefix of its IQM/CI in a row."""
    header = "| task | bonus | " + " | ".join(f"{m} IQM [95% CI]" for m in columns) + " | per-seed success |"
    lines = [header, "|" + " --- |" * (3 + len(columns))]
    for row in rows:
        cells = [
            f"{row[f'{p}iqm']:.3f} [{row[f'{p}ci_low']:.3f}, {row[f'{p}ci_high']:.3f}]"
            for p in columns.values()
        ]
        lines.append(
            f"| {short_task(row['task'])} | {row['bonus']} | "
            + " | ".join(cells)
            + f" | {row['success_scores']} |"
        )
    return "\n".join(lines) + "\n"


def merge_metric_rows(by_metric: Mapping[str, Sequence[dict]]) -> list[dict]:
    """Rows of several metrics side by side: keys prefixed '<metric>_' (e.g. success_iqm)."""
    merged: dict[tuple[str, str], dict] = {}
    for metric, rows in by_metric.items():
        for row in rows:
            key = (row["task"], row["bonus"])
            out = merged.setdefault(key, {"task": row["task"], "bonus": row["bonus"], "n": row["n"]})
            for k in ("iqm", "ci_low", "ci_high", "scores"):
                out[f"{metric}_{k}"] = row[k]
    return list(merged.values())


def analyze(args: Args, log: Callable[[str], None] = print) -> list[dict]:
    scores: dict[str, dict[str, dict[str, list[float]]]] = {m: {} for m in METRICS}
    curves: dict[str, dict[str, dict[str, list]]] = {m: {} for m in METRICS}
    run_rows = []
    for task in args.tasks:
        for bonus in args.bonuses:
            for seed in args.seeds:
                path = run_dir(args, task, bonus, seed)
                if not path.is_dir() or run_state(make_config(args, task, bonus, seed)) != "done":
                    log(f"{path}: missing or unfinished, left out")
                    continue
                row = {"task": task, "bonus": bonus, "seed": seed}
                for metric, curve in read_curves(path).items():
                    steps, values, episodes = curve
                    score = final_score(values, args.final_fraction, episodes)
                    if np.isnan(score):
                        raise SystemExit(f"{path}: no {METRICS[metric]} logged (did any episode finish?)")
                    scores[metric].setdefault(task, {}).setdefault(bonus, []).append(score)
                    curves[metric].setdefault(task, {}).setdefault(bonus, []).append(curve)
                    row[f"final_{metric}"] = round(score, 4)
                    row[f"logged_points_{metric}"] = int(values.size)
                    row[f"final_episodes_{metric}"] = int(
                        episodes[-max(1, int(round(args.final_fraction * values.size))) :].sum()
                    )
                record = path / STUDY_FILE
                if record.is_file():
                    info = json.loads(record.read_text())
                    row["wall_s"] = round(info["wall_s"], 1)
                    row["steady_sps"] = round(info["steady_sps"] or 0.0)
                run_rows.append(row)
    if not run_rows:
        raise SystemExit(f"no runs under {args.root}")
    # a task/bonus needs the same seed count everywhere for the stratified bootstrap: drop stragglers
    counts = {len(s) for t in scores["success"].values() for s in t.values()}
    if len(counts) > 1:
        n = min(counts)
        log(f"unequal seed counts {sorted(counts)}: aggregating the first {n} seeds of each")
        for metric in METRICS:
            for t in scores[metric].values():
                for b in t:
                    t[b] = t[b][:n]
    by_metric = {m: aggregate(scores[m], args.reps, args.bootstrap_seed) for m in METRICS}
    rows = merge_metric_rows(by_metric)
    write_csv(args.root / "runs.csv", run_rows)
    write_csv(args.root / "summary.csv", rows)
    table = markdown_table(rows, {"success": "success_", "return": "return_"})
    (args.root / "table.md").write_text(table)
    for metric, label, limits in (
        ("success", "success rate", (0.0, 1.0)),
        ("return", "episodic return", None),
    ):
        plot_curves(
            curves[metric],
            args.total_timesteps,
            args.curve_bins,
            label,
            Path(f"{plots_prefix(args)}_{metric}.png"),
            f"{label}: mean ± std over seeds ({args.total_timesteps:,} steps per run)",
            limits,
            task_label=short_task,
        )
    log(table)
    return rows


def main(args: Args) -> None:
    if not 0 < args.final_fraction <= 1:
        raise SystemExit("--final-fraction must lie in (0, 1]")
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    if not args.analyze_only:
        # seed-major: stopped early, the study still has whole seeds of every (task, bonus)
        grid = [(t, b, s) for s in args.seeds for t in args.tasks for b in args.bonuses]
        start = time.time()
        for i, (task, bonus, seed) in enumerate(grid, 1):
            if args.stop_after_min is not None and time.time() - start > 60 * args.stop_after_min:
                print(
                    f"--stop-after-min {args.stop_after_min}: {len(grid) - i + 1} runs not started",
                    flush=True,
                )
                break
            what = run_one(args, task, bonus, seed)
            print(
                f"[{i}/{len(grid)} {time.time() - start:6.0f} s] {short_task(task)} {bonus} seed {seed}: {what}",
                flush=True,
            )
        print(f"study trained in {time.time() - start:.0f} s", flush=True)
    analyze(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main(tyro.cli(Args))
