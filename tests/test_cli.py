"""End to end: the `explore` command, the run script, resuming a run and atomic checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import agents.ppo as ppo
import envs
import explore.checkpoint as checkpoint_module
from envs.core import available_cpus
from explore.checkpoint import CHECKPOINT_NAME, CONFIG_NAME, atomic_write_bytes, load_checkpoint
from explore.cli import main, parse_train_config

REPO = Path(__file__).resolve().parents[1]

NUM_ENVS, NUM_STEPS = 2, 32
BATCH = NUM_ENVS * NUM_STEPS
TINY_FLAGS = [
    "--env-id",
    "MontezumaRevenge-v5",
    "--num-envs",
    str(NUM_ENVS),
    "--env-groups",
    "2",
    "--num-steps",
    str(NUM_STEPS),
    "--num-minibatches",
    "2",
    "--update-epochs",
    "1",
    "--rnd-warmup-iterations",
    "1",
    "--max-episode-steps",
    "20",
    "--device",
    "cpu",
    "--no-progress",
]

EXPECTED_SCALARS = [
    "charts/SPS",
    "charts/intrinsic_reward",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/rnd_loss",
    "exploration/rooms_visited",
    "charts/episodic_return",
    "charts/episodic_length",
]


def run_explore(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run python with `args` in `cwd`, importing this checkout's packages. No timeout: a busy machine
    may take long, and a hang is what the code's own timeouts are tested for elsewhere."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


def test_cli_smoke_run_writes_logs_config_and_checkpoint(tmp_path):
    updates = 4
    result = run_explore(
        "-m", "explore", "train", *TINY_FLAGS, "--total-timesteps", str(updates * BATCH), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    # the default run directory, runs/<env>__<bonus>__<seed>__<time>, is the one the last line names
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith("MontezumaRevenge-v5__rnd__1__")
    assert result.stdout.startswith(
        "MontezumaRevenge-v5: 4 updates of 64 steps (2 envs x 32 steps), 256 steps"
    )
    last_line = result.stdout.splitlines()[-1]
    assert last_line.startswith(f"finished {updates * BATCH} steps; run directory: runs/{run_dir.name}; ")
    assert last_line.endswith("latest episodic return 0.0")  # 20-step episodes of Montezuma score 0
    # the default thread count: usable CPUs less the two one-env envpool pools' threads, logged once
    threads_line = f"torch threads: {max(1, available_cpus() - NUM_ENVS)} ("
    assert result.stdout.count(threads_line) == 1, result.stdout

    # --- TensorBoard scalars, one point per update ---
    event_files = list(run_dir.glob("events.out.tfevents.*"))
    assert len(event_files) == 1
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    missing = [t for t in EXPECTED_SCALARS if t not in tags]
    assert not missing, f"missing scalars {missing}; logged: {sorted(tags)}"
    assert "system/torch_threads/text_summary" in events.Tags()["tensors"]

    update_steps = [BATCH * (u + 1) for u in range(updates)]
    for tag in EXPECTED_SCALARS[:-2]:
        points = events.Scalars(tag)
        assert [p.step for p in points] == update_steps, tag
        assert all(math.isfinite(p.value) for p in points), tag
    assert all(p.value > 0 for p in events.Scalars("charts/SPS"))
    assert all(p.value >= 0 for p in events.Scalars("losses/value_loss"))
    assert all(p.value > 0 for p in events.Scalars("losses/entropy"))
    assert all(p.value >= 0 for p in events.Scalars("losses/rnd_loss"))
    assert all(p.value >= 1 for p in events.Scalars("exploration/rooms_visited"))  # room 1 at least

    # episodes are cut at 20 steps: every env finishes at least one episode per 32-step rollout,
    # and the autoreset dummy step is not counted in an episode's length
    returns = events.Scalars("charts/episodic_return")
    lengths = events.Scalars("charts/episodic_length")
    assert len(returns) == len(lengths) >= NUM_ENVS * updates
    assert all(math.isfinite(p.value) for p in returns)
    assert all(p.value == 20 for p in lengths), [p.value for p in lengths]

    # --- config.json: the config that ran, with the flags given ---
    saved = json.loads((run_dir / CONFIG_NAME).read_text())
    assert saved["num_envs"] == NUM_ENVS
    assert saved["env_groups"] == 2
    assert saved["max_episode_steps"] == 20
    assert saved["total_timesteps"] == updates * BATCH
    assert saved["run_dir"] == str(Path("runs") / run_dir.name)
    assert saved["bonus"] == "rnd"

    # --- checkpoint.pt: the final state, loadable ---
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["update"] == updates
    assert checkpoint["global_step"] == updates * BATCH
    assert {"agent", "optimizer", "bonus", "info_metrics", "torch_rng", "numpy_rng"} <= set(checkpoint)
    assert checkpoint["info_metrics"]["rooms_visited"][1]  # Montezuma starts in room 1
    assert temp_files(run_dir) == []


def test_run_script_help(tmp_path):
    result = run_explore(str(REPO / "runs" / "atari_rnd.py"), "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "runs/atari_rnd.py" in result.stdout
    for flag in ("--env-id", "--num-envs", "--resume", "--preset", "--total-timesteps"):
        assert flag in result.stdout
    assert not list(tmp_path.iterdir())  # --help starts no run
    run_dir_help = result.stdout.split("--run-dir", 1)[1].split("--preset", 1)[0]
    assert run_dir_help.count("(default") == 1, run_dir_help  # tyro's own, not a second from the docstring


def test_list_envs(tmp_path):
    result = run_explore("-m", "explore", "list-envs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "MontezumaRevenge-v5" in lines
    assert "Pong-v5" in lines
    assert lines[0].startswith("# atari (")


def test_list_envs_names_the_extra_of_a_suite_that_is_not_installed(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "envpool", None)  # TEST DOUBLE: envpool not installed
    monkeypatch.setitem(sys.modules, "envpool.registration", None)
    assert main(["list-envs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    headers = [line for line in lines if line.startswith("# ")]
    # every suite has its header, in lookup order; the two envpool suites say what to install
    assert [h[2:].split(" ", 1)[0] for h in headers] == [s.name for s in envs.registration.SUITES]
    assert headers[0].startswith("# atari (not installed): ")
    assert headers[0].endswith("pip install 'explore-rl[atari]'")
    assert headers[1].startswith("# minigrid (not installed): ")
    assert headers[1].endswith("pip install 'explore-rl[minigrid]'")
    assert "MontezumaRevenge-v5" not in lines
    assert "Bandit-Bernoulli-K5-Hard-v0" in lines  # the bandits need no extra


def adam_steps(optimizer_state: dict) -> set[float]:
    return {float(s["step"]) for s in optimizer_state["state"].values()}


def test_resume_continues_the_run(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    epochs, minibatches = 1, 2
    first = ppo.Config(
        seed=7,
        num_envs=NUM_ENVS,
        env_groups=1,
        num_steps=NUM_STEPS,
        num_minibatches=minibatches,
        update_epochs=epochs,
        total_timesteps=2 * BATCH,
        rnd_warmup_iterations=1,
        learning_rate=3e-4,
        checkpoint_interval=1,
        device="cpu",
        progress=False,
        run_dir=str(run_dir),
    )
    saves: list[tuple[int, int]] = []
    real_save = checkpoint_module.save_checkpoint

    def recording_save(folder, state):
        saves.append((state["update"], state["global_step"]))
        path = real_save(folder, state)
        assert temp_files(Path(folder)) == []  # the save is atomic: no temp file left behind
        return path

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", recording_save)

    result = ppo.train(first)
    assert result["global_step"] == 2 * BATCH
    assert saves == [(1, BATCH), (2, 2 * BATCH)]
    checkpoint = load_checkpoint(run_dir)
    assert (checkpoint["update"], checkpoint["global_step"]) == (2, 2 * BATCH)
    assert adam_steps(checkpoint["optimizer"]) == {2 * epochs * minibatches}

    # --- resume with only --total-timesteps: the saved config, not a preset, supplies the rest ---
    config = parse_train_config(["--resume", str(run_dir), "--total-timesteps", str(4 * BATCH)])
    paper = ppo.PRESETS["paper"]
    assert (paper.num_envs, paper.seed, paper.device) != (NUM_ENVS, 7, "cpu")  # so the check below bites
    assert config.resume == str(run_dir)
    assert config.total_timesteps == 4 * BATCH  # the flag overrides the saved value
    assert config.num_envs == NUM_ENVS
    assert config.seed == 7
    assert config.device == "cpu"
    assert config.learning_rate == pytest.approx(3e-4)
    assert config.checkpoint_interval == 1
    assert config.progress is False
    assert dataclasses.replace(config, resume=None, total_timesteps=first.total_timesteps) == first

    def no_warmup(*args, **kwargs):
        raise AssertionError("a resumed run keeps its observation statistics: no RND warmup")

    monkeypatch.setattr("explore.rnd.RND.warmup", no_warmup)
    saves.clear()
    result = ppo.train(config)

    assert result["global_step"] == 4 * BATCH
    assert saves == [(3, 3 * BATCH), (4, 4 * BATCH)]  # continues from update 2, not from 0
    checkpoint = load_checkpoint(run_dir)
    assert (checkpoint["update"], checkpoint["global_step"]) == (4, 4 * BATCH)
    # Adam continued from the saved state: 4 updates' worth of steps, not 2
    assert adam_steps(checkpoint["optimizer"]) == {4 * epochs * minibatches}
    assert json.loads((run_dir / CONFIG_NAME).read_text())["total_timesteps"] == 4 * BATCH
    assert temp_files(run_dir) == []


@pytest.mark.parametrize("interruption", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path, interruption):
    path = tmp_path / CHECKPOINT_NAME
    atomic_write_bytes(path, lambda f: f.write(b"old checkpoint"))
    assert path.read_bytes() == b"old checkpoint"

    def failing_writer(f):
        f.write(b"half of a new check")
        raise interruption

    with pytest.raises(type(interruption)):
        atomic_write_bytes(path, failing_writer)
    assert path.read_bytes() == b"old checkpoint"
    assert temp_files(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]

    # a failed first write creates nothing
    fresh = tmp_path / "sub" / "new.pt"
    with pytest.raises(type(interruption)):
        atomic_write_bytes(fresh, failing_writer)
    assert list(fresh.parent.iterdir()) == []

    # and a successful write replaces the file whole
    atomic_write_bytes(path, lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    assert temp_files(tmp_path) == []


def test_ctrl_c_exits_130_with_a_resume_hint_instead_of_a_traceback(monkeypatch, capsys):
    from explore import cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "train", interrupted)
    assert cli.main(["train"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
