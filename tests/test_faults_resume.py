"""Nothing is lost on resume: every scalar logged up to the checkpoint survives exactly once, temp
files are cleaned up, and (slow) a tiny run killed with SIGKILL at random moments resumes each time
from its saved step until it finishes with every scalar intact."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import agents.ppo as ppo
from explore.checkpoint import CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
NUM_ENVS, NUM_STEPS = 4, 16
BATCH = NUM_ENVS * NUM_STEPS
PER_UPDATE_TAGS = (
    "charts/SPS",
    "charts/learning_rate",
    "losses/policy_loss",
    "losses/value_loss",
    "rnd/obs_mean",
)


def tiny_config(run_dir: Path, updates: int) -> ppo.Config:
    return ppo.Config(
        env_id="MiniGrid-Empty-5x5-v0",
        bonus="rnd",
        num_envs=NUM_ENVS,
        env_groups=1,
        num_steps=NUM_STEPS,
        num_minibatches=2,
        update_epochs=1,
        rnd_warmup_iterations=1,
        total_timesteps=updates * BATCH,
        checkpoint_interval=1,
        device="cpu",
        progress=False,
        torch_threads=1,
        run_dir=str(run_dir),
    )


def scalar_steps(run_dir: Path) -> dict[str, list[int]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_resume_keeps_every_scalar_logged_up_to_the_checkpoint_once(tmp_path):
    """The checkpoint's own step was logged before the checkpoint was written; a resume that
    purged it (SummaryWriter's purge_step = the checkpoint's step) lost it for good."""
    run_dir = tmp_path / "run"
    ppo.train(tiny_config(run_dir, updates=3))
    # as if killed after logging update 3 but before its checkpoint landed: the newest readable
    # checkpoint is update 2's, and update 3's scalars are on disk
    (run_dir / CHECKPOINT_NAME).unlink()
    (run_dir / f".{CHECKPOINT_NAME}.killed.tmp").write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match=PREVIOUS_CHECKPOINT_NAME):
        result = ppo.train(ppo.Config(resume=str(run_dir), total_timesteps=4 * BATCH))
    assert result["global_step"] == 4 * BATCH
    steps = scalar_steps(run_dir)
    for tag in PER_UPDATE_TAGS:  # step 2B kept, 3B's first copy purged and logged again, 4B new
        assert steps[tag] == [BATCH, 2 * BATCH, 3 * BATCH, 4 * BATCH], tag
    assert not list(run_dir.glob(".*.tmp"))  # the killed save's temp file is gone


def run_cli(run_dir: Path, total: int, resume: bool) -> subprocess.Popen:
    flags = ["--resume", str(run_dir), "--total-timesteps", str(total)]
    if not resume:
        config = tiny_config(run_dir, total // BATCH)
        flags = [
            *("--env-id", config.env_id, "--bonus", config.bonus, "--num-envs", str(NUM_ENVS)),
            *("--env-groups", "1", "--num-steps", str(NUM_STEPS), "--num-minibatches", "2"),
            *("--update-epochs", "1", "--rnd-warmup-iterations", "1", "--checkpoint-interval", "1"),
            *("--device", "cpu", "--no-progress", "--torch-threads", "1", "--preset", "minigrid"),
            *("--total-timesteps", str(total), "--run-dir", str(run_dir), "--seed", "3"),
        ]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [sys.executable, "-m", "explore", "train", *flags],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_loses_nothing(tmp_path):
    run_dir = tmp_path / "run"
    updates = 40
    rng = random.Random(0)
    saved_steps: list[int] = []
    kills = 0
    process = run_cli(run_dir, updates * BATCH, resume=False)
    while True:
        # kill once the run has saved at least one checkpoint, at a random moment after that
        while process.poll() is None and not (run_dir / CHECKPOINT_NAME).exists():
            time.sleep(0.2)
        if process.poll() is None and kills < 8:
            time.sleep(rng.uniform(0.0, 3.0))
        if process.poll() is None and kills < 8:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        else:
            _, err = process.communicate()
            assert process.returncode == 0, err.decode()[-3000:]
            break
        checkpoint = load_checkpoint(run_dir)  # a kill at any moment leaves a loadable checkpoint
        assert checkpoint["global_step"] == checkpoint["update"] * BATCH
        assert not saved_steps or checkpoint["global_step"] >= saved_steps[-1]  # never goes back
        saved_steps.append(checkpoint["global_step"])
        process = run_cli(run_dir, updates * BATCH, resume=True)
    assert kills >= 1
    final = load_checkpoint(run_dir)
    assert (final["update"], final["global_step"]) == (updates, updates * BATCH)
    steps = scalar_steps(run_dir)
    for tag in PER_UPDATE_TAGS:  # every update's scalars, each exactly once, across all the kills
        assert steps[tag] == [BATCH * (u + 1) for u in range(updates)], tag
    assert not list(run_dir.glob(".*.tmp"))
