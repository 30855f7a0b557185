"""`explore bench --trainer text`: grids of `explore text` runs, refused combinations, and write, skip and
resume on tiny real BabyAI-Text runs (the tiny GPT-2-style model built on the fly, cpu)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore import bench
from explore.checkpoint import load_checkpoint
from explore.errors import ConfigError

pytest.importorskip("rliable", reason="the bench aggregates with rliable (the analysis extra)")
pytest.importorskip("transformers", reason="the text trainer's policy is a transformers model")

TASK = "BabyAI-Text-UnlockLocal-v0"
# 2 envs x 4 turns a rollout (8 turns an update), a checkpoint per update; 2-turn episodes, which cannot
# succeed on UnlockLocal (picking up the key leaves the agent facing the empty cell, not the door)
TINY = (
    "--num-envs 2 --num-turns 4 --num-minibatches 1 --checkpoint-interval 1 --max-episode-steps 2 "
    "--tiny-corpus-episodes 4 --device cpu"
)


def tiny_args(tmp_path: Path, **overrides) -> bench.Args:
    values = {
        "trainer": "text",
        "tasks": (TASK,),
        "methods": ("ppo=none",),
        "seeds": (1,),
        "common": TINY,
        "total_timesteps": 24,
        "jobs": 1,
        "root": tmp_path / "runs",
        "out": tmp_path / "out" / "grid",
        "reps": 200,
    }
    return bench.Args(**(values | overrides))


def test_a_text_run_is_an_explore_text_command_without_a_preset(tmp_path):
    args = tiny_args(tmp_path, methods=("count=count_e --int-coef 0.5",), seeds=(3,))
    (run,) = bench.plan(args)
    assert run.path == tmp_path / "runs" / "BabyAI-Text-UnlockLocal__count__3"
    assert run.command(args) == [
        "-m", "explore", "text", "--env-id", TASK, "--bonus", "count_e", "--seed", "3",
        "--total-timesteps", "24", "--torch-threads", "1", "--run-dir", str(run.path), "--no-progress",
        *TINY.split(), "--int-coef", "0.5",
    ]  # fmt: skip
    # the default trainer keeps its command: `explore train --preset minigrid ...`
    train_args = tiny_args(tmp_path, trainer="train", tasks=("DeepSea-N5-v0",), common="")
    (train_run,) = bench.plan(train_args)
    assert train_run.command(train_args)[:5] == ["-m", "explore", "train", "--preset", "minigrid"]


def test_what_the_text_trainer_cannot_do_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="--preset 'minigrid' is invalid with --trainer text"):
        bench.plan(tiny_args(tmp_path, preset="minigrid"))
    with pytest.raises(ConfigError, match="--budget-episodes 10 is invalid with --trainer text"):
        bench.plan(tiny_args(tmp_path, total_timesteps=None, budget_episodes=10))
    with pytest.raises(ConfigError, match="--trainer 'go-explore' is invalid: choose one of train, text"):
        bench.plan(tiny_args(tmp_path, trainer="go-explore"))
    # the text trainer's own validation, naming the method: rnd's networks do not read text
    with pytest.raises(ConfigError, match="method 'rnd' on BabyAI-Text-UnlockLocal-v0.*rnd"):
        bench.plan(tiny_args(tmp_path, methods=("ppo=none", "rnd")))
    with pytest.raises(ConfigError, match="--int-coef -1"):
        bench.plan(tiny_args(tmp_path, methods=("ppo=none --int-coef -1",)))
    # a flag of `explore train` that `explore text` does not have
    with pytest.raises(ConfigError, match="does not take these flags"):
        bench.plan(tiny_args(tmp_path, common=TINY + " --num-steps 16"))
    with pytest.raises(ConfigError, match="method 'ppo' on DeepSea-N5-v0.*unknown env id 'DeepSea-N5-v0'"):
        bench.plan(tiny_args(tmp_path, tasks=("DeepSea-N5-v0",)))
    assert not tmp_path.joinpath("runs").exists() and not tmp_path.joinpath("out").exists()


def test_text_runs_write_their_rows_skip_when_finished_and_resume_when_killed(tmp_path):
    from agents.llm.ppo import parse_config, train

    args = tiny_args(tmp_path, seeds=(1, 2), methods=("count_e",))
    first, second = bench.plan(args)
    # seed 2 was "killed" after 1 of its 3 updates: its command recorded, a checkpoint, no result
    second.path.mkdir(parents=True)
    (second.path / bench.RUN_FILE).write_text(json.dumps({"command": second.command(args)}))
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

    log_size = (first.path / bench.LOG_FILE).stat().st_size
    counts = bench.run_grid(args, log=print)
    assert counts == {"skipped": 2, "resumed": 0, "started": 0, "failed": 0}
    assert (first.path / bench.LOG_FILE).stat().st_size == log_size  # nothing was trained
    assert len(bench.read_rows(Path(f"{args.out}_runs.csv"))) == 2

    summary = bench.analyze(args, log=print)
    assert [(s["method"], s["n"]) for s in summary] == [("count_e", 2)]
    assert Path(f"{args.out}.md").is_file() and Path(f"{args.out}_success.png").is_file()
