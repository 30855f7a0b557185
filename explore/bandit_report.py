"""`explore bandits`: every baseline on a whole bandit suite, as one table and one plot per task.

    explore bandits --suite core --out-dir runs/bandits            # the "core" suite, 1000 instances
    explore bandits --env-ids Bandit-Bernoulli-K5-Hard-v0 --agents ucb thompson_beta
    explore bandits --suite full --num-instances 200 --device cuda

For each task, every applicable baseline (agents.bandits.agent_names_for) plays the same B
instances with the same reward draws (the bandit is rebuilt from one seed per task: common random
numbers, so agents are compared on identical problems). Written into `--out-dir`:

- `results.md`: the settings, the metric definitions and the table (rows agent x task; each cell
  the mean over instances and its bootstrap CI),
- `results.csv`: the same numbers, with the CI bounds as columns,
- `regret_<task>.png`: cumulative regret vs round per agent, the mean and a bootstrap band.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from explore.bandit_metrics import (
    ResultRow,
    bootstrap_curve,
    cumulative_regret,
    markdown_table,
    summarize,
    write_table,
)
from explore.errors import ConfigError, UnknownEnvError, check_writable_dir, close_matches

CURVE_POINTS = 200  # time points per regret curve (the band is bootstrapped at each)


@dataclass
class BanditsConfig:
    """Run every baseline on a bandit suite and write the table, CSV and regret plots."""

    suite: str = "core"
    """preset suite (envs.bandits.BANDIT_SUITES: core, hard-core, full); ignored with --env-ids"""
    env_ids: list[str] = field(default_factory=list)
    """explicit task ids instead of a suite"""
    agents: list[str] = field(default_factory=list)
    """baselines to run (default: every applicable one); see agents.bandits.AGENTS"""
    num_instances: int = 1000
    """instances per task (B); the CIs are over these"""
    horizon: int | None = None
    """rounds per task (default: each task's own horizon)"""
    seed: int = 0
    """seeds the instances, the reward draws and the agents"""
    device: str = "cpu"
    """torch device of bandits and agents"""
    out_dir: str = "runs/bandits"
    """where results.md, results.csv and the PNGs go"""
    num_resamples: int = 2000
    """bootstrap resamples per CI"""
    confidence: float = 0.95
    """CI level"""
    plots: bool = True
    """write the regret-curve PNGs (needs matplotlib)"""
    threads: int | None = 1
    """torch intra-op threads (None: torch's default, one per core). The tensors (instances x arms)
    are too small for more than one to pay: on a loaded 2-core machine, 2 threads took 259 s where
    1 took 13 s (the core suite at horizon 100)"""


@dataclass
class Curve:
    """Mean cumulative regret of one agent at `rounds`, with its bootstrap band."""

    agent: str
    rounds: Tensor
    mean: Tensor
    low: Tensor
    high: Tensor


@dataclass
class SuiteResult:
    """Everything a report needs: the table rows and, per task, the regret curves."""

    config: BanditsConfig
    rows: list[ResultRow]
    curves: dict[str, list[Curve]]
    seconds: float = 0.0


def resolve_tasks(config: BanditsConfig) -> list[str]:
    """The task ids of the config (validated), from --env-ids or the suite."""
    from envs.bandits import BANDIT_SUITES, get_spec

    if config.env_ids:
        try:
            return [get_spec(env_id).id for env_id in config.env_ids]
        except UnknownEnvError as exc:  # it lists close ids; say which flag held the id too
            exc.args = (f"--env-ids: {exc}",)
            raise
    if config.suite not in BANDIT_SUITES:
        hint = close_matches(config.suite, BANDIT_SUITES)
        raise ConfigError(
            f"--suite {config.suite!r} is invalid."
            + (f" Did you mean: {', '.join(hint)}?" if hint else "")
            + f" Valid suites: {', '.join(BANDIT_SUITES)}"
        )
    return list(BANDIT_SUITES[config.suite])


def validate(config: BanditsConfig) -> None:
    """Check every value before anything runs; errors name the flag and what is valid."""
    from agents.bandits import AGENTS

    for name in config.agents:
        if name not in AGENTS:
            hint = close_matches(name, AGENTS)
            raise ConfigError(
                f"--agents: unknown agent {name!r}."
                + (f" Did you mean: {', '.join(hint)}?" if hint else "")
                + f" Valid agents: {', '.join(AGENTS)}"
            )
    if config.num_instances < 1:
        raise ConfigError(f"--num-instances must be >= 1, got {config.num_instances}")
    if config.horizon is not None and config.horizon < 2:
        raise ConfigError(f"--horizon must be >= 2 (GreedyFrac needs two rounds), got {config.horizon}")
    if config.num_resamples < 1:
        raise ConfigError(f"--num-resamples must be >= 1, got {config.num_resamples}")
    if not 0.0 < config.confidence < 1.0:
        raise ConfigError(f"--confidence must lie in (0, 1), got {config.confidence}")
    if config.threads is not None and config.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {config.threads}")
    if config.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {config.seed}")
    try:
        device = torch.device(config.device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {config.device!r} is invalid: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no CUDA device; use --device cpu")
    check_writable_dir(config.out_dir, flag="--out-dir")  # last: it touches the disk


def _curve_rounds(horizon: int) -> Tensor:
    """Up to CURVE_POINTS rounds (0-based) spread over the run, always including the last."""
    points = torch.linspace(0, horizon - 1, min(horizon, CURVE_POINTS)).round().long()
    return torch.unique(points)


def evaluate_suite(config: BanditsConfig, log: bool = True) -> SuiteResult:
    """Play every applicable baseline on every task of the config; summarize and keep the curves."""
    from agents.bandits import agent_names_for, make_agent, run
    from envs.bandits import BatchedBandit, get_spec

    validate(config)
    specs = [get_spec(task) for task in resolve_tasks(config)]
    plan = [(spec, agent_names_for(spec, config.agents or None)) for spec in specs]
    total_rounds = sum(len(names) * (config.horizon or spec.horizon) for spec, names in plan)
    if log:  # the size of the job up front; the bar below estimates the time from the first rounds
        print(
            f"{len(plan)} tasks, {sum(len(names) for _, names in plan)} agent runs, {total_rounds:,} rounds "
            f"of {config.num_instances:,} instances on {config.device} with {torch.get_num_threads()} "
            "torch thread(s)",
            flush=True,
        )
    bar = tqdm(total=total_rounds, unit="round", disable=not log, dynamic_ncols=True)
    start = time.perf_counter()
    rows: list[ResultRow] = []
    curves: dict[str, list[Curve]] = {}
    for spec, names in plan:
        task = spec.id
        horizon = config.horizon or spec.horizon
        bandit = BatchedBandit(spec, config.num_instances, seed=config.seed, device=config.device)
        curves[task] = []
        for name in names:
            tick = time.perf_counter()
            bar.set_postfix_str(f"{task} {name}", refresh=False)
            agent = make_agent(name, spec, seed=config.seed)
            traj = run(bandit, agent, horizon=horizon, on_round=bar.update).cpu()
            metrics = summarize(traj, config.num_resamples, config.confidence, seed=config.seed)
            rows.append(ResultRow(task, name, horizon, config.num_instances, metrics))
            rounds = _curve_rounds(horizon)
            mean, low, high = bootstrap_curve(
                cumulative_regret(traj)[rounds],
                min(config.num_resamples, 1000),
                config.confidence,
                config.seed,
            )
            curves[task].append(Curve(name, rounds + 1, mean, low, high))  # after t + 1 pulls
            if log:
                bar.write(
                    f"{task:32s} {name:18s} regret {metrics['regret'].format(2):28s} "
                    f"({time.perf_counter() - tick:.1f}s)"
                )
    bar.close()
    return SuiteResult(config, rows, curves, time.perf_counter() - start)


def plot_regret_curves(
    task: str, curves: Sequence[Curve], path: str | Path, confidence: float = 0.95
) -> Path:
    """One PNG: mean cumulative regret vs round per agent, with its bootstrap band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for curve in curves:
        x = curve.rounds.numpy()
        (line,) = ax.plot(x, curve.mean.numpy(), label=curve.agent, linewidth=1.6)
        ax.fill_between(
            x, curve.low.numpy(), curve.high.numpy(), color=line.get_color(), alpha=0.2, linewidth=0
        )
    ax.set_xlabel("round t")
    ax.set_ylabel("cumulative regret")
    ax.set_title(f"{task} ({100 * confidence:g}% bootstrap band over instances)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _preamble(result: SuiteResult) -> str:
    config = result.config
    source = f"tasks {', '.join(config.env_ids)}" if config.env_ids else f"suite `{config.suite}`"
    lines = [
        "# Bandit baselines",
        "",
        f"{source}; B = {config.num_instances} instances per task (the same instances and reward draws "
        f"for every agent), seed {config.seed}, device {config.device}; "
        f"{100 * config.confidence:g}% percentile-bootstrap CIs over instances ({config.num_resamples} resamples); "
        f"{result.seconds:.0f} s.",
        "",
        "- regret: cumulative pseudo-regret sum_t (best expected - chosen expected reward) at round T.",
        "- SuffFailFreq(T/2): fraction of instances that never pull an optimal arm in rounds t >= T/2.",
        "- K*MinFrac: K x the least-pulled arm's fraction of the T pulls (1 = even exploration).",
        "- GreedyFrac: fraction of rounds 1..T-1 whose arm has the best empirical mean so far "
        "(over arms already pulled; ties count as greedy).",
        "",
    ]
    return "\n".join(lines) + "\n"


def write_report(result: SuiteResult, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write results.md, results.csv and one regret_<task>.png per task; returns the paths."""
    out = Path(out_dir if out_dir is not None else result.config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = write_table(result.rows, out, result.config.confidence, preamble=_preamble(result))
    paths = {"markdown": md, "csv": csv_path}
    if result.config.plots:
        for task, curves in result.curves.items():
            paths[f"plot:{task}"] = plot_regret_curves(
                task, curves, out / f"regret_{task}.png", result.config.confidence
            )
    return paths


def bandit_report(config: BanditsConfig) -> tuple[SuiteResult, dict[str, Path]]:
    """The one function: evaluate the suite and write the report."""
    result = evaluate_suite(config)
    return result, write_report(result)


def parse_config(argv: Sequence[str], prog: str = "explore bandits") -> BanditsConfig:
    import tyro

    return tyro.cli(BanditsConfig, args=list(argv), prog=prog)


def bandits_main(argv: Sequence[str], prog: str = "explore bandits") -> None:
    """The `explore bandits` command."""
    config = parse_config(argv, prog)
    validate(config)  # before --threads is applied: torch aborts on a bad thread count
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    result, paths = bandit_report(config)
    print()
    print(markdown_table(result.rows, config.confidence))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")


__all__ = [
    "BanditsConfig",
    "Curve",
    "SuiteResult",
    "bandit_report",
    "bandits_main",
    "evaluate_suite",
    "plot_regret_curves",
    "resolve_tasks",
    "validate",
    "write_report",
]
