"""The `explore` command: train, list-envs, bandits, go-explore, text, bench."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence

from explore.errors import close_matches

USAGE = """usage: explore <command> [options]

commands:
  train       train PPO with an intrinsic bonus (`explore train --help` lists every flag)
  list-envs   list every registered environment id
  bandits     every bandit baseline on a suite: Markdown table, CSV, regret plots
  go-explore  Go-Explore's exploration phase on Atari (`explore go-explore --help`)
  text        train a language-model agent on a text game with token-level credit (POAD, ...)
  bench       tasks x bonuses x seeds of `train` or `text` in parallel, resumable; IQM tables, curves
  judge-reward fit   captions from a random policy, judge preferences, a Bradley-Terry reward model
              (`--bonus judge` of `explore train` loads it: --judge-reward-model DIR)

examples:
  explore train --preset quick                      # PPO+RND on a CPU: about 3 min on 2 idle cores
  explore train --env-id MontezumaRevenge-v5 --num-envs 128 --device cuda
  explore train --resume runs/<name>                # continue from the last checkpoint
  explore text --credit poad --env-id TWX-CoinCollector-v0   # tiny LM built on the fly, cpu
"""


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of `--flag X` or `--flag=X` in argv, without consuming it (tyro parses it again)."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def parse_train_config(argv: Sequence[str], prog: str = "explore train", default_preset: str = "paper"):
    """Config from flags. Defaults come from `--preset`, or from the saved config of `--resume DIR`;
    flags given on the command line override either (explore.checkpoint.resolve_resume)."""
    import tyro

    from agents.ppo import PRESETS, Config
    from explore.checkpoint import given_fields, resolve_resume
    from explore.errors import ConfigError

    preset = _flag_value(argv, "--preset") or default_preset
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r} is invalid: valid presets: {', '.join(PRESETS)}")
    config = tyro.cli(Config, default=PRESETS[preset], args=list(argv), prog=prog)
    return resolve_resume(config, given=given_fields(argv, Config))


def train_main(argv: Sequence[str], prog: str = "explore train", default_preset: str = "paper") -> None:
    from agents.ppo import train, validate
    from explore.distributed import env_world_size

    config = parse_train_config(argv, prog=prog, default_preset=default_preset)
    validate(config)  # a bad value is reported before anything is printed or started
    if os.environ.get("RANK", "0") == "0":
        print(
            train_size(
                config.env_id, config.num_envs, config.num_steps, config.total_timesteps, env_world_size()
            )
        )
    result = train(config)
    if result.get("rank", 0) != 0:  # under torchrun only rank 0 reports
        return
    print(train_summary(result))


def train_size(env_id: str, num_envs: int, num_steps: int, total_timesteps: int, world_size: int = 1) -> str:
    """The job up front: the bar advances once per update, which on a CPU with a large preset
    (--preset minihack: 32 envs x 128 steps) can take minutes."""
    per_update = num_envs * num_steps * world_size
    updates = total_timesteps // per_update
    ranks = f" x {world_size} ranks" if world_size > 1 else ""
    return (
        f"{env_id}: {updates:,} updates of {per_update:,} steps ({num_envs} envs x {num_steps} steps{ranks}), "
        f"{updates * per_update:,} steps in all; the progress bar advances once per update"
    )


def train_summary(result: dict) -> str:
    """The last line of `explore train`: steps, the run's own folder (a default one holds a time
    stamp the user cannot guess) and the latest episodic return, if any episode finished."""
    latest = result["latest_return"]
    ret = f"latest episodic return {latest}" if math.isfinite(latest) else "no episode finished yet"
    return f"finished {result['global_step']} steps; run directory: {result['run_dir']}; {ret}"


def list_envs_main(argv: Sequence[str]) -> None:
    """Every suite: its ids, or, when its optional dependencies are missing, the extra to install."""
    import envs
    from explore.errors import MissingDependencyError

    for suite in envs.registration.SUITES:
        try:
            ids = suite.list_ids()
        except MissingDependencyError as exc:
            print(f"# {suite.name} (not installed): {exc}")
            continue
        print(f"# {suite.name} ({len(ids)} ids; also as {envs.NAMESPACE}/<id>)")
        for env_id in ids:
            print(env_id)


def bandits_main(argv: Sequence[str]) -> None:
    from explore.bandit_report import bandits_main as run_bandits

    run_bandits(argv)


def go_explore_main(argv: Sequence[str]) -> None:
    from explore.archive.go_explore import main as run_go_explore

    run_go_explore(argv)


def bench_main(argv: Sequence[str]) -> None:
    from explore.bench import main as run_bench

    run_bench(argv)


def text_main(argv: Sequence[str]) -> None:
    from agents.llm.ppo import main as run_text

    run_text(list(argv), prog="explore text")


def judge_reward_main(argv: Sequence[str]) -> None:
    from explore.judge_reward import main as run_judge_reward

    run_judge_reward(argv)


COMMANDS = {
    "train": train_main,
    "list-envs": list_envs_main,
    "bandits": bandits_main,
    "go-explore": go_explore_main,
    "text": text_main,
    "bench": bench_main,
    "judge-reward": judge_reward_main,
}


def main(argv: Sequence[str] | None = None) -> int:
    from explore.errors import CheckpointError, ConfigError, MissingDependencyError, UnknownEnvError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        hint = close_matches(command, COMMANDS)
        print(
            f"explore: unknown command {command!r}." + (f" Did you mean {hint[0]!r}?" if hint else ""),
            file=sys.stderr,
        )
        print(USAGE, file=sys.stderr)
        return 2
    try:
        COMMANDS[command](rest)
    except (ConfigError, UnknownEnvError, MissingDependencyError, FileNotFoundError, CheckpointError) as exc:
        print(f"explore {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the last checkpoint stays loadable, so say how to continue
        print(
            f"explore {command}: interrupted; a run resumes from its last checkpoint with "
            "`explore train --resume <run dir>`",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
