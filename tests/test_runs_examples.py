"""The written-out examples in runs/ train end to end at toy size."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from explore.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def load(script: str):
    spec = importlib.util.spec_from_file_location(script.replace("/", "_"), REPO / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("use_lstm", [False, True])
def test_minigrid_example_trains_with_a_product_bonus(tmp_path, use_lstm):
    run_dir = tmp_path / "run"
    flags = [
        "--env-id",
        "MiniGrid-Empty-5x5-v0",
        "--bonus",
        "e3b*rnd",
        "--num-envs",
        "4",
        "--num-steps",
        "16",
    ]
    flags += ["--num-minibatches", "2", "--update-epochs", "1", "--total-timesteps", "128", "--device", "cpu"]
    flags += ["--rnd-warmup-iterations", "1", "--no-progress", "--run-dir", str(run_dir)]
    result = load("runs/minigrid.py").main(flags + (["--use-lstm"] if use_lstm else []))
    assert result["global_step"] == 128
    events = EventAccumulator(str(run_dir))
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    for tag in (
        "losses/policy_loss",
        "losses/e3b_x_rnd_loss",
        "charts/bonus_episodic",
        "charts/bonus_global",
    ):
        assert steps[tag] == [64, 128], tag


def scalar_steps(run_dir: Path) -> dict[str, list[int]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_atari_example_trains_rnd_and_logs_montezumas_rooms(tmp_path):
    pytest.importorskip("envpool")
    run_dir = tmp_path / "run"
    flags = ["--preset", "quick", "--num-envs", "4", "--env-groups", "1", "--num-steps", "16"]
    flags += ["--num-minibatches", "2", "--update-epochs", "1", "--total-timesteps", "128"]
    flags += ["--rnd-warmup-iterations", "1", "--no-progress", "--run-dir", str(run_dir)]
    result = load("runs/atari_rnd.py").main(flags)
    assert result["global_step"] == 128
    steps = scalar_steps(run_dir)
    for tag in ("losses/policy_loss", "losses/rnd_loss", "exploration/rooms_visited"):
        assert steps[tag] == [64, 128], tag
    with pytest.raises(ConfigError, match="explore train --resume"):
        load("runs/atari_rnd.py").main(["--resume", str(run_dir)])


def test_minihack_example_trains_e3b_on_worker_processes(tmp_path):
    pytest.importorskip("minihack")
    run_dir = tmp_path / "run"
    flags = [
        "--env-id",
        "MiniHack-Room-Random-5x5-v0",
        "--bonus",
        "e3b",
        "--num-envs",
        "4",
        "--env-groups",
        "2",
    ]
    flags += [
        "--num-steps",
        "16",
        "--num-minibatches",
        "2",
        "--update-epochs",
        "1",
        "--total-timesteps",
        "128",
    ]
    flags += ["--device", "cpu", "--no-progress", "--run-dir", str(run_dir)]
    result = load("runs/minihack.py").main(flags)
    assert result["global_step"] == 128
    steps = scalar_steps(run_dir)
    for tag in ("losses/policy_loss", "losses/e3b_loss", "charts/bonus_episodic"):
        assert steps[tag] == [64, 128], tag
