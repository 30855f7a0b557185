"""`explore bench`: tasks x methods x seeds of `explore train` (or `explore text`), in parallel processes,
resumable, aggregated.

    python -m explore bench --tasks DeepSea-N10-v0 DeepSea-N20-v0 --preset deepsea \\
        --methods ppo=none "count=count --int-coef 0.5" --seeds 1 2 3 4 5 \\
        --budget-episodes 10000 --root runs/bench/deepsea --out benchmarks/deepsea_bench

A method is `[LABEL=]BONUS [FLAGS...]`: a bonus expression (agents.ppo.Config.bonus) and flags that
only its runs get (e.g. a coefficient); `--common` flags go to every run. Each run is one
`python -m explore train` process in <root>/<task>__<label>__<seed>, its output in train.log there;
`--jobs` of them run at once (default: the CPUs this process may use).

`--trainer text` runs `python -m explore text` instead (a language-model agent on text games,
agents.llm.ppo): the same grid, directories, resume and rows. The text trainer has no presets and no
fixed episode length, so --preset and --budget-episodes are refused with it, and every run's flags are
checked by the text trainer's own validation before anything is written (a bonus that cannot read
text, a flag it does not have).

Resumable, so a long study can be killed and continued with the same command:
- a run whose result is recorded (bench_result.json) is skipped;
- a run with a checkpoint but no result (killed) continues with the trainer's `--resume`;
- a run without a checkpoint starts over;
- a directory whose recorded command differs from the new one is an error (delete it or change --root).

Outputs, written as runs land: <out>_runs.csv, one row per run (appended when the run finishes):
task, method, seed, steps and episodes trained, final success (the episode-weighted success rate of
the last `final_fraction` of the logged points), steps and episodes to the first success and to
"solved" (the first update at which the success rate over the latest `solve_min_episodes` or more
episodes reached `solve_threshold`), the success AUC (the
fraction of all training episodes that succeeded: the area under success-vs-episodes divided by the
episodes), the final return, SPS and the command. At the end (or with --analyze-only):
<out>.md, IQM over seeds with rliable's 95 % stratified-bootstrap CIs per task and method, and
<out>_success.png, learning curves (mean +- std over seeds).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from explore.errors import ConfigError, check_seed, check_writable_dir

RUN_FILE = "bench_run.json"  # the command of the run, written when it first starts
RESULT_FILE = "bench_result.json"  # its CSV row, written when it finished
LOG_FILE = "train.log"
CSV_FIELDS = (
    "task",
    "method",
    "bonus",
    "seed",
    "steps",
    "episodes",
    "final_success",
    "first_success_step",
    "first_success_episode",
    "solve_step",
    "solve_episode",
    "success_auc",
    "final_return",
    "sps",
    "wall_s",
    "command",
)
_LABEL = re.compile(r"^([A-Za-z0-9_.:-]+)=(.*)$")
Trainer = Literal["train", "text"]  # the `explore` command each run is
TRAINERS: tuple[str, ...] = get_args(Trainer)
DEFAULT_PRESET = "minigrid"  # the preset of `--trainer train` runs when --preset is not given


@dataclass
class Args:
    """A grid of tasks x methods x seeds of `explore train` (or `explore text`) in parallel processes, resumable,
    aggregated."""

    trainer: Trainer = "train"
    """each run is `explore train` (PPO) or `explore text` (text games; no --preset or --budget-episodes)"""
    tasks: tuple[str, ...] = ("DeepSea-N10-v0",)
    """environment ids"""
    methods: tuple[str, ...] = ("none", "count")
    """'[LABEL=]BONUS [FLAGS...]', e.g. 'ppo=none' or 'rnd0.5=rnd --int-coef 0.5' (flags for that method's runs)"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """seeds of every (task, method)"""
    preset: str | None = None
    """the training preset every run starts from (agents.ppo.PRESETS; default: minigrid); --trainer train only"""
    common: str = ""
    """flags for every run, one string, e.g. '--num-envs 16 --env-groups 1'"""
    total_timesteps: int | None = None
    """steps per run (default: the preset's); see also --budget-episodes"""
    budget_episodes: int | None = None
    """steps per run = this many episodes of the task's maximum length, each plus its NEXT_STEP dummy step
    (exact for fixed-length tasks such as DeepSea)"""
    torch_threads: int = 1
    """--torch-threads of every run: one per process, so --jobs processes share the cores without oversubscribing"""
    jobs: int = 0
    """training processes at once (0: the CPUs this process may use)"""
    root: Path = Path("runs/bench")
    """folder of the run directories"""
    out: Path = Path("runs/bench/bench")
    """prefix of the outputs: <out>_runs.csv, <out>.md, <out>_success.png"""
    solve_threshold: float = 0.5
    """a run counts as solved at the first update whose success rate reaches this"""
    solve_min_episodes: int = 20
    """the success rate that decides "solved" pools the latest updates until it covers this many episodes
    (one lucky episode in an update where few episodes ended is not a solve)"""
    final_fraction: float = 0.2
    """the final score is the episode-weighted mean of this last fraction of a run's logged points"""
    reps: int = 2000
    """bootstrap resamples"""
    curve_bins: int = 20
    """learning curves: means in this many equal bins of steps"""
    analyze_only: bool = False
    """train nothing: read the runs already in --root and write the table and plots"""


@dataclass(frozen=True)
class Method:
    label: str
    bonus: str
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    task: str
    method: Method
    seed: int
    total_timesteps: int | None
    path: Path

    def command(self, args: Args) -> list[str]:
        """The `explore train` (or `explore text`) command of a fresh start (also the run's identity)."""
        steps = [] if self.total_timesteps is None else ["--total-timesteps", str(self.total_timesteps)]
        preset = [] if args.trainer == "text" else ["--preset", args.preset or DEFAULT_PRESET]
        return [
            "-m",
            "explore",
            args.trainer,
            *preset,
            "--env-id",
            self.task,
            "--bonus",
            self.method.bonus,
            "--seed",
            str(self.seed),
            *steps,
            "--torch-threads",
            str(args.torch_threads),
            "--run-dir",
            str(self.path),
            "--no-progress",
            *shlex.split(args.common),
            *self.method.flags,
        ]


def parse_method(spec: str) -> Method:
    """'rnd0.5=rnd --int-coef 0.5' -> Method('rnd0.5', 'rnd', ('--int-coef', '0.5')); no label: the bonus."""
    match = _LABEL.match(spec.strip())
    label, rest = (match.group(1), match.group(2)) if match else (None, spec)
    words = shlex.split(rest)
    if not words or words[0].startswith("-"):
        raise ConfigError(f"--methods {spec!r} is invalid: write '[LABEL=]BONUS [FLAGS...]', e.g. 'ppo=none'")
    from explore.combine import parse_bonus

    if words[0] != "none":
        try:
            parse_bonus(words[0])
        except ConfigError as exc:
            raise ConfigError(f"--methods {spec!r}: {exc}") from exc
    return Method(label or words[0], words[0], tuple(words[1:]))


def short_task(task: str) -> str:
    return task.removeprefix("Explore/").removesuffix("-v0")


def episode_length(task: str) -> int:
    """The task's maximum episode length (exact for fixed-length tasks), read off one env."""
    import envs

    env = envs.make(task, num_envs=1)
    try:
        length = getattr(env, "max_episode_steps", None)
    finally:
        env.close()
    if not length:
        raise ConfigError(
            f"--budget-episodes: {task} does not state its episode length; use --total-timesteps"
        )
    return int(length)


def plan(args: Args, check_runs: bool = True) -> list[Run]:
    """Every run of the grid; ConfigError on bad arguments, before anything is written.

    `check_runs`: for --trainer text, validate every run's flags as the text trainer does (off when only
    reading finished runs: a grid trained with --device cuda is analysed on a machine without one)."""
    if args.trainer not in TRAINERS:
        raise ConfigError(f"--trainer {args.trainer!r} is invalid: choose one of {', '.join(TRAINERS)}")
    if not args.tasks or not args.methods or not args.seeds:
        raise ConfigError("--tasks, --methods and --seeds each need at least one value")
    if args.total_timesteps is not None and args.budget_episodes is not None:
        raise ConfigError("give --total-timesteps or --budget-episodes, not both")
    for name in ("total_timesteps", "budget_episodes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {value} is invalid: it must be >= 1")
    if not 0 < args.solve_threshold <= 1:
        raise ConfigError(f"--solve-threshold {args.solve_threshold} is invalid: it must lie in (0, 1]")
    if args.solve_min_episodes < 1:
        raise ConfigError(f"--solve-min-episodes {args.solve_min_episodes} is invalid: it must be >= 1")
    if not 0 < args.final_fraction <= 1:
        raise ConfigError(f"--final-fraction {args.final_fraction} is invalid: it must lie in (0, 1]")
    for name in ("reps", "curve_bins"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)} is invalid: it must be >= 1")
    if args.torch_threads < 0:
        raise ConfigError(
            f"--torch-threads {args.torch_threads} is invalid: it must be >= 0 (0: the trainer's own choice)"
        )
    for seed in args.seeds:
        check_seed(seed, flag="--seeds")
    if args.trainer == "text":
        if args.preset is not None:
            raise ConfigError(
                f"--preset {args.preset!r} is invalid with --trainer text: the text trainer has no presets; "
                "give its flags in --common or a method's flags (`explore text --help` lists them)"
            )
        if args.budget_episodes is not None:
            raise ConfigError(
                f"--budget-episodes {args.budget_episodes} is invalid with --trainer text: a text game's episode "
                "ends at a success or at --max-episode-steps, so no fixed length converts episodes to turns; "
                "use --total-timesteps (turns over all envs)"
            )
    else:
        from agents.ppo import PRESETS

        preset = args.preset or DEFAULT_PRESET
        if preset not in PRESETS:
            raise ConfigError(f"--preset {preset!r} is invalid: valid presets: {', '.join(PRESETS)}")
    import envs

    for task in args.tasks:
        envs.find_suite(task)  # unknown ids with close matches, or a missing extra
    methods = [parse_method(m) for m in args.methods]
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--methods: labels must be unique, got {labels}")
    # last, as they touch the disk (a probe, nothing left behind): the folders the runs and outputs go in
    check_writable_dir(args.root, flag="--root")
    check_writable_dir(Path(args.out).parent, flag="--out")
    runs = []
    for task in args.tasks:
        steps = args.total_timesteps
        if args.budget_episodes is not None:
            steps = args.budget_episodes * (episode_length(task) + 1)  # + the autoreset dummy step
        for method in methods:
            for seed in args.seeds:
                path = args.root / f"{short_task(task)}__{method.label}__{seed}"
                runs.append(Run(task, method, seed, steps, path))
    if args.trainer == "text" and check_runs:
        check_text_runs(runs, args)
    return runs


def check_text_runs(runs: Sequence[Run], args: Args) -> None:
    """Every `explore text` run parsed and validated as the text trainer will (agents.llm.ppo.validate):
    a flag it does not take, a bonus that cannot read text or a bad value fails here, naming the method,
    not in every run's process. Writes nothing (the run directories are probed, not created)."""
    from agents.llm.ppo import parse_config, validate

    for run in runs:
        argv = run.command(args)[3:]  # after "-m explore text"
        where = f"method {run.method.label!r} on {run.task} (seed {run.seed})"
        try:
            config = parse_config(argv, prog="explore text")
        except SystemExit as exc:  # tyro printed which flag it refused
            raise ConfigError(
                f"{where}: `explore text` does not take these flags (its error is above): {shlex.join(argv)}"
            ) from exc
        try:
            validate(config)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from exc


def run_state(run: Run, args: Args) -> str:
    """'done' (its result is recorded), 'partial' (a checkpoint, no result) or 'new'."""
    from explore.checkpoint import CHECKPOINT_NAME

    recorded = run.path / RUN_FILE
    if recorded.is_file():
        saved = json.loads(recorded.read_text())["command"]
        if saved != run.command(args):
            raise ConfigError(
                f"{run.path} holds a different run (command {shlex.join(saved)}); delete it or choose another --root"
            )
    if (run.path / RESULT_FILE).is_file():
        return "done"
    return "partial" if (run.path / CHECKPOINT_NAME).is_file() else "new"


def _child_env() -> dict[str, str]:
    """The environment of a training process: this checkout's packages first on its path."""
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def train_run(run: Run, args: Args) -> tuple[str, float, int]:
    """Start or resume one run in a child process; returns (state it was in, wall seconds, exit code)."""
    state = run_state(run, args)
    if state == "done":
        return state, 0.0, 0
    if state == "new":
        if run.path.exists():  # killed before its first checkpoint: start clean
            shutil.rmtree(run.path)
        run.path.mkdir(parents=True)
        (run.path / RUN_FILE).write_text(json.dumps({"command": run.command(args)}, indent=1) + "\n")
        argv = run.command(args)
    else:  # the saved config has every setting; the budget is restated so the run ends where planned
        steps = [] if run.total_timesteps is None else ["--total-timesteps", str(run.total_timesteps)]
        argv = ["-m", "explore", args.trainer, "--resume", str(run.path), *steps, "--no-progress"]
    start = time.time()
    with (run.path / LOG_FILE).open("a") as log:
        code = subprocess.run(
            [sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=_child_env(), check=False
        ).returncode
    return state, time.time() - start, code


# --- scoring one run ------------------------------------------------------------------------------


def _first_at_least(steps: np.ndarray, values: np.ndarray, threshold: float) -> int | None:
    hits = np.flatnonzero(values >= threshold)
    return int(steps[hits[0]]) if hits.size else None


def first_solved(
    steps: np.ndarray, rates: np.ndarray, counts: np.ndarray, threshold: float, min_episodes: int
) -> int | None:
    """The step of the first update at which the success rate over the fewest latest updates that hold
    at least `min_episodes` episodes (`counts` per update) reaches `threshold`; None if none does."""
    successes = np.concatenate([[0.0], np.cumsum(np.asarray(rates, np.float64) * counts)])
    episodes = np.concatenate([[0], np.cumsum(counts)])
    # start[i]: the latest update boundary that leaves >= min_episodes episodes in (start, i]; -1: too few yet
    start = np.searchsorted(episodes, episodes[1:] - min_episodes, side="right") - 1
    enough = start >= 0
    start = np.maximum(start, 0)
    pooled = (successes[1:] - successes[start]) / np.maximum(episodes[1:] - episodes[start], 1)
    hits = np.flatnonzero(enough & (pooled >= threshold))
    return int(steps[hits[0]]) if hits.size else None


def score_run(run: Run, args: Args, wall_s: float) -> dict:
    """The CSV row of a finished run, from its TensorBoard events. Both trainers log through
    explore.logger.Logger: charts/episodic_return and charts/success_rate per update's finished episodes,
    charts/SPS per update (the text trainer's steps are turns over all envs)."""
    from explore.study import final_score, read_curves

    curves = read_curves(run.path, extra_tags=("charts/SPS",))
    ret_steps, ret_values, ret_counts = curves["return"]
    succ_steps, succ_values, succ_counts = curves["success"]
    sps_steps, sps_values, _ = curves["charts/SPS"]
    episodes_by = dict(zip(ret_steps.tolist(), np.cumsum(ret_counts).tolist(), strict=True))
    first = _first_at_least(succ_steps, succ_values, 1e-9)
    solved = first_solved(succ_steps, succ_values, succ_counts, args.solve_threshold, args.solve_min_episodes)
    total_episodes = int(ret_counts.sum())
    successes = float((succ_values * succ_counts).sum())
    return {
        "task": run.task,
        "method": run.method.label,
        "bonus": run.method.bonus,
        "seed": run.seed,
        "steps": int(sps_steps[-1]) if sps_steps.size else 0,
        "episodes": total_episodes,
        "final_success": final_score(succ_values, args.final_fraction, succ_counts),
        "first_success_step": first,
        "first_success_episode": None if first is None else episodes_by.get(first),
        "solve_step": solved,
        "solve_episode": None if solved is None else episodes_by.get(solved),
        "success_auc": successes / total_episodes if total_episodes else math.nan,
        "final_return": final_score(ret_values, args.final_fraction, ret_counts),
        "sps": float(sps_values[-1]) if sps_values.size else math.nan,
        "wall_s": round(wall_s, 1),
        "command": "python " + shlex.join(run.command(args)),
    }


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict) -> None:
    """Append one run's row (with the header if the file is new); a row of the same run is replaced."""
    rows = [r for r in read_rows(path) if (r["task"], r["method"], r["seed"]) != _key(row)]
    rows.append({k: row[k] for k in CSV_FIELDS})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_FIELDS))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _key(row: dict) -> tuple[str, str, str]:
    return row["task"], row["method"], str(row["seed"])


# --- the grid -------------------------------------------------------------------------------------


def run_grid(args: Args, log: Callable[[str], None] = print) -> dict[str, int]:
    """Train every run not yet done, `jobs` at once; returns how many were skipped, resumed, started, failed."""
    from tqdm import tqdm

    from envs.core import available_cpus

    runs = plan(args)
    states = {run: run_state(run, args) for run in runs}  # a foreign directory fails before any training
    csv_path = Path(f"{args.out}_runs.csv")
    for run in runs:  # a result the CSV lost (e.g. a fresh --out) is added back
        if states[run] == "done" and not any(
            _key(r) == (run.task, run.method.label, str(run.seed)) for r in read_rows(csv_path)
        ):
            append_row(csv_path, json.loads((run.path / RESULT_FILE).read_text()))
    counts = {"skipped": sum(s == "done" for s in states.values()), "resumed": 0, "started": 0, "failed": 0}
    todo = [run for run in runs if states[run] != "done"]
    jobs = args.jobs or available_cpus()
    progress = tqdm(total=len(runs), initial=counts["skipped"], unit="run", dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(train_run, run, args): run for run in todo}
        for future in as_completed(futures):
            run = futures[future]
            state, wall_s, code = future.result()
            name = f"{short_task(run.task)} {run.method.label} seed {run.seed}"
            if code != 0:
                counts["failed"] += 1
                log(f"{name}: failed (exit code {code}); see {run.path / LOG_FILE}")
            else:
                counts["resumed" if state == "partial" else "started"] += 1
                row = score_run(run, args, wall_s)
                (run.path / RESULT_FILE).write_text(json.dumps(row, indent=1) + "\n")
                append_row(csv_path, row)
                progress.set_postfix_str(f"{name}: success {row['final_success']:.2f}", refresh=False)
            progress.update(1)
    progress.close()
    return counts


# --- aggregation ----------------------------------------------------------------------------------


def _float(value: str) -> float:
    return float(value) if value not in ("", "None", None) else math.nan


def summarize(rows: Sequence[dict], reps: int = 2000) -> list[dict]:
    """Per (task, method): IQM and 95 % CI of final success and success AUC, solved seeds, median episodes."""
    from explore.study import interval_estimates

    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"]), []).append(row)
    out = []
    for (task, method), members in groups.items():
        entry = {"task": task, "method": method, "n": len(members)}
        for metric in ("final_success", "success_auc"):
            scores = np.array([_float(r[metric]) for r in members]).reshape(-1, 1)
            iqm, low, high = interval_estimates({method: scores}, reps=reps)[method]
            entry |= {metric: iqm, f"{metric}_low": low, f"{metric}_high": high}
        solve = np.array([_float(r["solve_episode"]) for r in members])
        first = np.array([_float(r["first_success_episode"]) for r in members])
        entry["solved"] = int(np.isfinite(solve).sum())
        entry["median_solve_episode"] = float(np.median(solve)) if np.isfinite(solve).all() else math.nan
        entry["median_first_success_episode"] = (
            float(np.median(first)) if np.isfinite(first).all() else math.nan
        )
        entry["sps"] = float(np.nanmean([_float(r["sps"]) for r in members]))
        out.append(entry)
    return out


def markdown_table(summary: Sequence[dict]) -> str:
    def episodes(x: float) -> str:
        return "-" if math.isnan(x) else f"{x:,.0f}"

    lines = [
        "| task | method | seeds | final success IQM [95% CI] | success AUC IQM [95% CI] | solved | "
        "median episodes to first success | median episodes to solve | SPS |",
        "|" + " --- |" * 9,
    ]
    for s in summary:
        lines.append(
            f"| {short_task(s['task'])} | {s['method']} | {s['n']} "
            f"| {s['final_success']:.2f} [{s['final_success_low']:.2f}, {s['final_success_high']:.2f}] "
            f"| {s['success_auc']:.3f} [{s['success_auc_low']:.3f}, {s['success_auc_high']:.3f}] "
            f"| {s['solved']}/{s['n']} | {episodes(s['median_first_success_episode'])} "
            f"| {episodes(s['median_solve_episode'])} | {s['sps']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def analyze(args: Args, log: Callable[[str], None] = print) -> list[dict]:
    """Write <out>.md and <out>_success.png from <out>_runs.csv and the run directories."""
    from explore.study import plot_curves, read_curves

    runs = plan(args, check_runs=False)
    rows = read_rows(Path(f"{args.out}_runs.csv"))
    keys = {(run.task, run.method.label, str(run.seed)) for run in runs}
    rows = [r for r in rows if _key(r) in keys]
    if not rows:
        log(f"no finished runs of this grid in {args.out}_runs.csv yet")
        return []
    summary = summarize(rows, args.reps)
    table = markdown_table(summary)
    Path(f"{args.out}.md").write_text(
        f"Success IQM over seeds with rliable's 95 % stratified-bootstrap CIs; solved = the success rate of "
        f"the latest >= {args.solve_min_episodes} episodes reached {args.solve_threshold} at an update. "
        f"Runs: {args.out}_runs.csv.\n\n" + table
    )
    curves: dict[str, dict[str, list]] = {}
    done = {(r["task"], r["method"], r["seed"]) for r in rows}
    for run in runs:
        if (run.task, run.method.label, str(run.seed)) in done:
            success = read_curves(run.path)["success"]
            curves.setdefault(run.task, {}).setdefault(run.method.label, []).append(success)
    longest = max(int(_float(r["steps"])) for r in rows)
    plot_curves(
        curves,
        longest,
        args.curve_bins,
        "success rate",
        Path(f"{args.out}_success.png"),
        "success rate: mean ± std over seeds",
        (0.0, 1.0),
        task_label=short_task,
    )
    log(table)
    return summary


def main(argv: Sequence[str]) -> None:
    import tyro

    args = tyro.cli(Args, args=list(argv), prog="explore bench")
    if args.jobs < 0:
        raise ConfigError(f"--jobs {args.jobs} is invalid: it must be >= 0 (0: one per CPU)")
    if not args.analyze_only:
        counts = run_grid(args)
        print(", ".join(f"{k} {v}" for k, v in counts.items()))
    analyze(args)
