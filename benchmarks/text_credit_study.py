"""Token-level vs action-level credit for a language-model agent: POAD, NTPO and action-level PPO on the
TextWorldExpress coin collector, same model, same budget, several seeds, aggregated with rliable.

Every (credit, seed) is one run of runs/text_poad.py (agents.llm.ppo.train) in its own process, `--jobs` at
a time. All credits of a seed start from the same tiny GPT-2-style model (built once per seed from coin
collector text, in <root>/models/seed<s>), decode under the same settings and see the same games. The final
score of a run is the episode-weighted mean of its last `final_fraction` of logged points; the IQM over
seeds with stratified-bootstrap 95 % CIs comes from rliable (benchmarks/novelty_study.py's helpers).

    python benchmarks/text_credit_study.py --jobs 15 --publish        # the full study (16 cores, ~10 min)
    python benchmarks/text_credit_study.py --seeds 1 2 --total-timesteps 4096 --jobs 2   # a smoke version
    python benchmarks/text_credit_study.py --analyze-only             # re-aggregate the runs in --root

The study is resumable: a finished run is skipped, an interrupted one resumes from its checkpoint.
Outputs: <out>.md (the table and the settings), <out>.png (success rate and return against environment
steps, mean ± std over seeds), <root>/summary.csv and <root>/runs.csv. <out> is
results/text_credit_study/text_credit_study, or benchmarks/text_credit_study with --publish.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tyro
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: study_output
from study_output import output_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _novelty_study():
    """benchmarks/novelty_study.py's scoring, bootstrap and binning helpers (one implementation)."""
    spec = importlib.util.spec_from_file_location("novelty_study", REPO / "benchmarks" / "novelty_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("novelty_study", module)
    spec.loader.exec_module(module)
    return module


@dataclass
class Args:
    """POAD vs NTPO vs action-level PPO on a small coin collector (constrained decoding, tiny model)."""

    credits: list[str] = field(default_factory=lambda: ["poad", "ntpo", "action"])
    """credit options of agents.llm.ppo.Config to compare"""
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    """seeds of every credit"""
    total_timesteps: int = 36_864
    """environment steps per run"""
    env_kwargs: str = "numLocations=8,includeDoors=0,numDistractorItems=0"
    """coin-collector parameters (agents.llm.ppo.Config.env_kwargs)"""
    max_episode_steps: int = 20
    """episode cut in turns"""
    num_envs: int = 16
    """parallel games per run"""
    num_turns: int = 16
    """turns per env per rollout"""
    constrained: bool = True
    """constrain decoding to the admissible commands (a random tiny model cannot spell commands yet)"""
    learning_rate: float = 3e-4
    """AdamW learning rate"""
    gamma: float = 0.95
    """discount per turn"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    bc_episodes: int = 0
    """gold-path episodes to clone before RL (0: RL from the random tiny model)"""
    extra: str = ""
    """further flags for runs/text_poad.py in one string, given with '=':
    --extra='--ent-coef 0.01 --update-epochs 4'"""
    jobs: int = 2
    """runs in parallel (one process each, one torch thread each)"""
    device: str = "cpu"
    """device of every run (cuda: the runs share the GPU)"""
    root: Path = Path("runs/text_credit_study")
    """folder of the run directories, the shared models and the CSVs"""
    out: Path | None = None
    """prefix of the Markdown table (<out>.md) and the plot (<out>.png); None:
    results/text_credit_study/text_credit_study, or benchmarks/text_credit_study with --publish"""
    publish: bool = False
    """write the table and plot into benchmarks/, over the tracked results"""
    final_fraction: float = 0.2
    """the final score is the mean over this last fraction of a run's logged points"""
    reps: int = 2000
    """bootstrap resamples"""
    curve_bins: int = 12
    """learning curves: episode-weighted means in this many bins of environment steps"""
    analyze_only: bool = False
    """do not train; aggregate the runs already in --root"""


def run_dir(args: Args, credit: str, seed: int) -> Path:
    return args.root / f"{credit}__{seed}"


def model_dir(args: Args, seed: int) -> Path:
    return args.root / "models" / f"seed{seed}" / "base_model"


def base_flags(args: Args) -> list[str]:
    flags = [
        "--env-kwargs", args.env_kwargs,
        "--max-episode-steps", str(args.max_episode_steps),
        "--num-envs", str(args.num_envs),
        "--num-turns", str(args.num_turns),
        "--learning-rate", str(args.learning_rate),
        "--gamma", str(args.gamma),
        "--gae-lambda", str(args.gae_lambda),
        "--bc-episodes", str(args.bc_episodes),
        "--device", args.device,
        "--torch-threads", "1",
        "--no-progress",
    ]  # fmt: skip
    flags += ["--constrained"] if args.constrained else ["--no-constrained"]
    return flags + shlex.split(args.extra)


def build_models(args: Args) -> None:
    """One tiny base model per seed, shared by every credit of that seed."""
    import torch

    from agents.llm.ppo import Config, build_policy, make_envs

    for seed in args.seeds:
        if (model_dir(args, seed) / "config.json").is_file():
            continue
        config = Config(
            env_kwargs=args.env_kwargs, max_episode_steps=args.max_episode_steps, seed=seed, num_envs=4
        )
        envs = make_envs(config, seed)
        try:
            build_policy(config, model_dir(args, seed).parent, torch.device("cpu"), envs)
        finally:
            envs.close()


def run_state(path: Path, total: int) -> str:
    from explore.checkpoint import CHECKPOINT_NAME, load_checkpoint

    if not (path / CHECKPOINT_NAME).is_file():
        return "new"
    return "done" if load_checkpoint(path)["global_step"] >= total else "partial"


def run_one(args: Args, credit: str, seed: int) -> str:
    path = run_dir(args, credit, seed)
    state = run_state(path, args.total_timesteps)
    if state == "done":
        return "skipped (complete)"
    cmd = [sys.executable, str(REPO / "runs" / "text_poad.py")]
    if state == "partial":
        cmd += ["--resume", str(path), "--total-timesteps", str(args.total_timesteps), "--no-progress"]
    else:
        cmd += base_flags(args) + [
            "--credit", credit,
            "--seed", str(seed),
            "--total-timesteps", str(args.total_timesteps),
            "--model-path", str(model_dir(args, seed)),
            "--run-dir", str(path),
        ]  # fmt: skip
    start = time.time()
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **env})
    path.mkdir(parents=True, exist_ok=True)
    (path / "study_log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        return f"FAILED (exit {proc.returncode}): " + " / ".join(tail)
    wall = time.time() - start
    (path / "study_run.json").write_text(json.dumps({"wall_s": wall}) + "\n")
    return f"trained in {wall:.0f} s"


# --- analysis --------------------------------------------------------------------------------------


def analyze(args: Args) -> list[dict]:
    ns = _novelty_study()
    scores: dict[str, dict[str, list[float]]] = {m: {} for m in ns.METRICS}
    curves: dict[str, dict[str, list]] = {m: {} for m in ns.METRICS}
    run_rows = []
    for credit in args.credits:
        for seed in args.seeds:
            path = run_dir(args, credit, seed)
            if run_state(path, args.total_timesteps) != "done":
                print(f"{path}: missing or unfinished, left out")
                continue
            row = {"credit": credit, "seed": seed}
            for metric, curve in ns.read_curves(path).items():
                steps, values, episodes = curve
                score = ns.final_score(values, args.final_fraction, episodes)
                scores[metric].setdefault(credit, []).append(score)
                curves[metric].setdefault(credit, []).append(curve)
                row[f"final_{metric}"] = round(score, 4)
            record = path / "study_run.json"
            if record.is_file():
                row["wall_s"] = round(json.loads(record.read_text())["wall_s"], 1)
            run_rows.append(row)
    if not run_rows:
        raise SystemExit(f"no finished runs under {args.root}")
    n = min(len(v) for v in scores["success"].values())
    rows = []
    estimates = {
        m: ns.interval_estimates(
            {c: np.asarray(v[:n], dtype=np.float64).reshape(-1, 1) for c, v in scores[m].items()}, args.reps
        )
        for m in ns.METRICS
    }
    for credit in scores["success"]:
        row = {"credit": credit, "n": n}
        for m in ns.METRICS:
            iqm, low, high = estimates[m][credit]
            row.update({f"{m}_iqm": iqm, f"{m}_ci_low": low, f"{m}_ci_high": high})
            row[f"{m}_scores"] = " ".join(f"{x:.3f}" for x in scores[m][credit][:n])
        rows.append(row)
    args.root.mkdir(parents=True, exist_ok=True)
    for name, data in (("runs.csv", run_rows), ("summary.csv", rows)):
        with (args.root / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in data for k in r)))
            writer.writeheader()
            writer.writerows(data)
    table = markdown(args, rows)
    Path(f"{out_prefix(args)}.md").write_text(table)
    plot(args, curves, ns)
    print(table)
    return rows


def out_prefix(args: Args) -> Path:
    """<out> of the table and plot: --out, else results/text_credit_study/ or, with --publish, benchmarks/."""
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        return args.out
    return output_folder("text_credit_study", args.publish) / "text_credit_study"


def markdown(args: Args, rows: list[dict]) -> str:
    lines = [
        "# Token-level credit on TextWorldExpress coin collector",
        "",
        f"`python benchmarks/text_credit_study.py` with: {args.env_kwargs}, "
        f"max {args.max_episode_steps} turns, {args.num_envs} envs x {args.num_turns} turns per rollout, "
        f"{args.total_timesteps:,} environment steps per run, "
        f"{'constrained' if args.constrained else 'free-text'} decoding, gamma {args.gamma}, lambda "
        f"{args.gae_lambda}, lr {args.learning_rate}, BC episodes {args.bc_episodes}"
        + (f", extra flags `{args.extra}`" if args.extra else "")
        + ". Tiny GPT-2-style model per seed, shared by the credits.",
        "",
        f"Final score: mean of the last {args.final_fraction:.0%} of logged points (episode-weighted); "
        "IQM over "
        "seeds with stratified-bootstrap 95% CIs (rliable).",
        "",
        "| credit | seeds | success IQM [95% CI] | return IQM [95% CI] | per-seed success |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['credit']} | {r['n']} | {r['success_iqm']:.3f} [{r['success_ci_low']:.3f}, "
            f"{r['success_ci_high']:.3f}] | {r['return_iqm']:.3f} [{r['return_ci_low']:.3f}, "
            f"{r['return_ci_high']:.3f}] | {r['success_scores']} |"
        )
    return "\n".join(lines) + "\n"


def plot(args: Args, curves: dict, ns) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    for ax, (metric, label) in zip(
        axes, (("success", "success rate"), ("return", "episodic return")), strict=True
    ):
        for credit, runs in curves[metric].items():
            x, mean, std = ns.binned_curves(runs, args.total_timesteps, args.curve_bins)
            ok = ~np.isnan(mean)
            ax.plot(x[ok], mean[ok], label=f"{credit} ({len(runs)} seeds)")
            ax.fill_between(x[ok], (mean - std)[ok], (mean + std)[ok], alpha=0.2)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"coin collector ({args.env_kwargs}): mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(f"{out_prefix(args)}.png", dpi=110)
    plt.close(fig)


# the constrained study of benchmarks/RESULTS.md: 15 runs of 16,384 steps, 2 at a time, took 44 min
# on the 2-core development VM (one torch thread per run): seconds per env step of one run
REFERENCE_SECONDS_PER_STEP = 44 * 60 * 2 / (15 * 16_384)


def study_size(args: Args, runs: int) -> str:
    """The job up front: runs, steps, and how long a run of that size took on the reference machine."""
    jobs = max(1, args.jobs)
    per_run = args.total_timesteps * REFERENCE_SECONDS_PER_STEP / 60
    return (
        f"{runs} runs ({len(args.credits)} credits x {len(args.seeds)} seeds) of {args.total_timesteps:,} "
        f"env steps, {jobs} at a time. A run that size took about {per_run:.1f} min on the 2-core "
        f"development VM, two at a time (benchmarks/RESULTS.md): about {math.ceil(runs / jobs) * per_run:.0f} "
        "min for the study with a core per job, plus building the models; longer on a busy machine"
    )


def main(args: Args) -> None:
    from agents.llm.ppo import CREDITS

    unknown = [c for c in args.credits if c not in CREDITS]
    if unknown:
        raise SystemExit(f"--credits {unknown}: choose from {', '.join(CREDITS)}")
    if not args.analyze_only:
        start = time.time()
        build_models(args)
        grid = [(c, s) for s in args.seeds for c in args.credits]
        print(study_size(args, len(grid)), flush=True)
        with (
            ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool,
            tqdm(total=len(grid), unit="run", dynamic_ncols=True) as bar,
        ):
            futures = {pool.submit(run_one, args, c, s): (c, s) for c, s in grid}
            for future in as_completed(futures):
                c, s = futures[future]
                bar.write(f"[{time.time() - start:6.0f} s] {c} seed {s}: {future.result()}")
                bar.update(1)
        print(f"study trained in {time.time() - start:.0f} s", flush=True)
    analyze(args)


if __name__ == "__main__":
    main(tyro.cli(Args))
