"""`explore bench` (explore/bench.py): method parsing, planning errors, skip and resume on tiny DeepSea runs,
and `--trainer text` on tiny BabyAI-Text runs (the tiny GPT-2-style model built on the fly, cpu)."""

from __future__ import annotations

import dataclasses
import importlib.util
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


def record_killed_run(run: bench.Run, args: bench.Args) -> None:
    """The start of a run killed before its result: its directory and recorded command (its trainer then
    writes a checkpoint)."""
    run.path.mkdir(parents=True)
    (run.path / bench.RUN_FILE).write_text(json.dumps({"command": run.command(args)}))


def assert_a_rerun_skips_and_the_analysis_is_written(args: bench.Args, first: bench.Run, method: str) -> None:
    """The same grid again (two seeds of one method, both finished) trains nothing; the analysis covers both."""
    log_size = (first.path / bench.LOG_FILE).stat().st_size
    counts = bench.run_grid(args, log=print)
    assert counts == {"skipped": 2, "resumed": 0, "started": 0, "failed": 0}
    assert (first.path / bench.LOG_FILE).stat().st_size == log_size  # nothing was trained
    assert len(bench.read_rows(Path(f"{args.out}_runs.csv"))) == 2

    summary = bench.analyze(args, log=print)
    assert [(s["method"], s["n"]) for s in summary] == [(method, 2)]
    assert Path(f"{args.out}.md").is_file() and Path(f"{args.out}_success.png").is_file()


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
    record_killed_run(second, args)
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
    assert_a_rerun_skips_and_the_analysis_is_written(args, first, "ppo")


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


# --- --trainer text ---------------------------------------------------------------------------------

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="the text trainer's policy is a transformers model",
)
TEXT_TASK = "BabyAI-Text-UnlockLocal-v0"
# 2 envs x 4 turns a rollout (8 turns an update), a checkpoint per update; 2-turn episodes, which cannot
# succeed on UnlockLocal (picking up the key leaves the agent facing the empty cell, not the door)
TEXT_TINY = (
    "--num-envs 2 --num-turns 4 --num-minibatches 1 --checkpoint-interval 1 --max-episode-steps 2 "
    "--tiny-corpus-episodes 4 --device cpu"
)


def tiny_text_args(tmp_path: Path, **overrides) -> bench.Args:
    text_grid = {
        "trainer": "text",
        "tasks": (TEXT_TASK,),
        "preset": None,
        "common": TEXT_TINY,
        "total_timesteps": 24,
    }
    return tiny_args(tmp_path, **(text_grid | overrides))


@needs_transformers
def test_a_text_run_is_an_explore_text_command_without_a_preset(tmp_path):
    args = tiny_text_args(tmp_path, methods=("count=count_e --int-coef 0.5",), seeds=(3,))
    (run,) = bench.plan(args)
    assert run.path == tmp_path / "runs" / "BabyAI-Text-UnlockLocal__count__3"
    assert run.command(args) == [
        "-m", "explore", "text", "--env-id", TEXT_TASK, "--bonus", "count_e", "--seed", "3",
        "--total-timesteps", "24", "--torch-threads", "1", "--run-dir", str(run.path), "--no-progress",
        *TEXT_TINY.split(), "--int-coef", "0.5",
    ]  # fmt: skip
    # the default trainer keeps its command: `explore train --preset minigrid ...`
    train_args = tiny_text_args(tmp_path, trainer="train", tasks=("DeepSea-N5-v0",), common="")
    (train_run,) = bench.plan(train_args)
    assert train_run.command(train_args)[:5] == ["-m", "explore", "train", "--preset", "minigrid"]


@needs_transformers
def test_what_the_text_trainer_cannot_do_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="--preset 'minigrid' is invalid with --trainer text"):
        bench.plan(tiny_text_args(tmp_path, preset="minigrid"))
    with pytest.raises(ConfigError, match="--budget-episodes 10 is invalid with --trainer text"):
        bench.plan(tiny_text_args(tmp_path, total_timesteps=None, budget_episodes=10))
    with pytest.raises(ConfigError, match="--trainer 'go-explore' is invalid: choose one of train, text"):
        bench.plan(tiny_text_args(tmp_path, trainer="go-explore"))
    # the text trainer's own validation, naming the method: rnd's networks do not read text
    with pytest.raises(ConfigError, match="method 'rnd' on BabyAI-Text-UnlockLocal-v0.*rnd"):
        bench.plan(tiny_text_args(tmp_path, methods=("ppo=none", "rnd")))
    with pytest.raises(ConfigError, match="--int-coef -1"):
        bench.plan(tiny_text_args(tmp_path, methods=("ppo=none --int-coef -1",)))
    # a flag of `explore train` that `explore text` does not have
    with pytest.raises(ConfigError, match="does not take these flags"):
        bench.plan(tiny_text_args(tmp_path, common=TEXT_TINY + " --num-steps 16"))
    with pytest.raises(ConfigError, match="method 'ppo' on DeepSea-N5-v0.*unknown env id 'DeepSea-N5-v0'"):
        bench.plan(tiny_text_args(tmp_path, tasks=("DeepSea-N5-v0",)))
    assert not tmp_path.joinpath("runs").exists() and not tmp_path.joinpath("out").exists()


@needs_transformers
def test_text_runs_write_their_rows_skip_when_finished_and_resume_when_killed(tmp_path):
    from agents.llm.ppo import parse_config, train

    args = tiny_text_args(tmp_path, seeds=(1, 2), methods=("count_e",))
    first, second = bench.plan(args)
    # seed 2 was "killed" after 1 of its 3 updates: its command recorded, a checkpoint, no result
    record_killed_run(second, args)
    killed = parse_config(second.command(args)[3:] + ["--total-timesteps", "8"])
    train(killed)
    assert load_checkpoint(second.path)["update"] == 1
    assert bench.run_state(second, args) == "partial"

    counts = bench.run_grid(args, log=print)
    assert counts == {"skipped": 0, "resumed": 1, "started": 1, "failed": 0}
    resumed = load_checkpoint(second.path)
    assert (resumed["update"], resumed["global_step"]) == (3, 24)  # continued to the planned budget
    rows = bench.read_rows(Path(f"{args.out}_runs.csv"))
    assert sorted((r["seed"], r["method"], r["steps"]) for r in rows) == [
        ("1", "count_e", "24"),
        ("2", "count_e", "24"),
    ]
    # 12 turns per env in 2-turn episodes: 6 episodes per env, 12 per run; the resumed run restarted its
    # games at turn 4, where its episodes had just ended, so it lost none and logged none twice
    assert [r["episodes"] for r in rows] == ["12", "12"]
    # no 2-turn episode can succeed on UnlockLocal (above), and every episode's return is 0
    assert all(float(r["final_success"]) == 0.0 and float(r["success_auc"]) == 0.0 for r in rows)
    assert all(float(r["final_return"]) == 0.0 and float(r["sps"]) > 0 for r in rows)
    assert all(r["command"].startswith("python -m explore text --env-id") for r in rows)

    assert_a_rerun_skips_and_the_analysis_is_written(args, first, "count_e")
