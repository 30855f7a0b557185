"""`explore bench` (explore/bench.py): method parsing, planning errors, skip and resume on tiny DeepSea runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from explore import bench
from explore.checkpoint import load_checkpoint
from explore.errors import ConfigError, UnknownEnvError

pytest.importorskip("rliable", reason="the bench aggregates with rliable (the analysis extra)")

TINY = "--num-envs 4 --num-steps 16 --checkpoint-interval 1"  # a batch of 64 steps, a checkpoint per update


def tiny_args(tmp_path: Path, **overrides) -> bench.Args:
    values = {
        "tasks": ("DeepSea-N5-v0",),
        "methods": ("ppo=none",),
        "seeds": (1,),
        "preset": "deepsea",
        "common": TINY,
        "total_timesteps": 256,
        "jobs": 1,
        "root": tmp_path / "runs",
        "out": tmp_path / "out" / "grid",
        "reps": 200,
    }
    return bench.Args(**(values | overrides))


def test_methods_parse_with_and_without_labels():
    assert bench.parse_method("rnd0.5=rnd --int-coef 0.5") == bench.Method(
        "rnd0.5", "rnd", ("--int-coef", "0.5")
    )
    assert bench.parse_method("e3b*rnd") == bench.Method("e3b*rnd", "e3b*rnd", ())
    assert bench.parse_method("ppo=none") == bench.Method("ppo", "none", ())
    with pytest.raises(ConfigError, match="LABEL"):
        bench.parse_method("x=--int-coef 1")
    with pytest.raises(ConfigError):
        bench.parse_method("rnd+")  # the bonus expression's own error


def test_bad_grids_fail_before_anything_is_written(tmp_path):
    with pytest.raises(UnknownEnvError):
        bench.plan(tiny_args(tmp_path, tasks=("DeepSea-N7-v0",)))
    with pytest.raises(ConfigError, match="unique"):
        bench.plan(tiny_args(tmp_path, methods=("a=none", "a=count")))
    with pytest.raises(ConfigError, match="not both"):
        bench.plan(tiny_args(tmp_path, budget_episodes=10))
    with pytest.raises(ConfigError, match="--preset"):
        bench.plan(tiny_args(tmp_path, preset="fast"))
    assert not (tmp_path / "runs").exists()


def test_budget_in_episodes_is_episodes_times_the_length(tmp_path):
    runs = bench.plan(
        tiny_args(tmp_path, tasks=("DeepSea-N10-v0",), total_timesteps=None, budget_episodes=30)
    )
    assert [r.total_timesteps for r in runs] == [30 * (10 + 1)]  # each episode and its NEXT_STEP dummy step


def test_finished_runs_are_skipped_and_killed_runs_resume(tmp_path):
    from agents.ppo import train
    from explore.cli import parse_train_config

    args = tiny_args(tmp_path, seeds=(1, 2))
    first, second = bench.plan(args)
    # seed 2 was "killed" after 2 of its 4 updates: its command recorded, a checkpoint, no result
    second.path.mkdir(parents=True)
    (second.path / bench.RUN_FILE).write_text(json.dumps({"command": second.command(args)}))
    config = parse_train_config(second.command(args)[3:])
    train(dataclasses.replace(config, total_timesteps=128))
    assert load_checkpoint(second.path)["update"] == 2
    assert bench.run_state(second, args) == "partial"

    counts = bench.run_grid(args, log=print)
    assert counts == {"skipped": 0, "resumed": 1, "started": 1, "failed": 0}
    assert load_checkpoint(second.path)["update"] == 4  # continued to the planned budget
    rows = bench.read_rows(Path(f"{args.out}_runs.csv"))
    assert sorted((r["seed"], r["steps"]) for r in rows) == [("1", "256"), ("2", "256")]
    # an episode is 5 steps and a NEXT_STEP dummy step: in 64 steps per env, episodes end at steps
    # 5, 11, ..., 59, 10 per env. The resumed run restarted its envs at step 32 (its episode in flight
    # was lost) and again ended 5 before and 5 after: each run logged 40 episodes, none twice
    assert [r["episodes"] for r in rows] == ["40", "40"]

    log_size = (first.path / bench.LOG_FILE).stat().st_size
    counts = bench.run_grid(args, log=print)
    assert counts == {"skipped": 2, "resumed": 0, "started": 0, "failed": 0}
    assert (first.path / bench.LOG_FILE).stat().st_size == log_size  # nothing was trained
    assert len(bench.read_rows(Path(f"{args.out}_runs.csv"))) == 2

    summary = bench.analyze(args, log=print)
    assert {s["method"] for s in summary} == {"ppo"} and summary[0]["n"] == 2
    assert Path(f"{args.out}.md").is_file() and Path(f"{args.out}_success.png").is_file()


def test_a_directory_of_another_run_is_an_error(tmp_path):
    args = tiny_args(tmp_path)
    (run,) = bench.plan(args)
    run.path.mkdir(parents=True)
    (run.path / bench.RUN_FILE).write_text(json.dumps({"command": ["-m", "explore", "train", "--seed", "9"]}))
    with pytest.raises(ConfigError, match="different run"):
        bench.run_grid(args)


def test_summary_iqm_by_hand():
    rows = [
        {"task": "T", "method": "m", "seed": str(i), "final_success": str(v), "success_auc": str(v / 2),
         "solve_episode": str(100 * (i + 1)), "first_success_episode": "7", "sps": "1000"}
        for i, v in enumerate([0.0, 0.2, 0.4, 0.6, 1.0])
    ]  # fmt: skip
    (s,) = bench.summarize(rows, reps=200)
    # rliable's IQM trims 25 % at each end: of 5 values the middle 3
    assert s["final_success"] == pytest.approx(0.4) and s["success_auc"] == pytest.approx(0.2)
    assert s["final_success_low"] <= 0.4 <= s["final_success_high"]
    assert s["solved"] == 5 and s["median_solve_episode"] == 300 and s["median_first_success_episode"] == 7
    rows[0]["solve_episode"] = ""  # a seed that never solved: no median over the solved ones alone
    (s,) = bench.summarize(rows, reps=200)
    assert s["solved"] == 4 and np.isnan(s["median_solve_episode"])


def test_solved_pools_updates_until_enough_episodes_by_hand():
    steps = np.array([10, 20, 30, 40])
    rates, counts = np.array([1.0, 0.0, 0.5, 0.6]), np.array([1, 30, 10, 40])
    # cumulative episodes 1, 31, 41, 81. Update 1: 1 episode < 20, no verdict. Update 2: its own 30
    # episodes, 0 / 30. Update 3: updates 2-3 (40 episodes), 5 / 40. Update 4: its own 40, 24 / 40 = 0.6.
    assert bench.first_solved(steps, rates, counts, 0.5, 20) == 40
    # one episode per window: the lone success of update 1 decides (the rule before pooling)
    assert bench.first_solved(steps, rates, counts, 0.5, 1) == 10
    # two updates of 10 episodes, all successes: the verdict waits for the second
    assert bench.first_solved(np.array([5, 6]), np.array([1.0, 1.0]), np.array([10, 10]), 0.5, 20) == 6
    assert bench.first_solved(steps, rates, counts, 0.7, 20) is None
    with pytest.raises(ConfigError, match="--solve-min-episodes 0"):
        bench.plan(tiny_args(Path("unused"), solve_min_episodes=0))
