"""A seeded CPU run is bit-for-bit reproducible: the same seed logs the same scalars, to the last bit."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import agents.ppo as ppo

TIMING = ("charts/SPS",)  # wall-clock figures differ between runs by nature


def tiny_run(run_dir: Path, seed: int) -> dict[str, list[tuple[int, float]]]:
    ppo.train(
        ppo.Config(
            env_id="MiniGrid-DoorKey-5x5-v0",
            bonus="e3b*rnd",
            int_episodic=True,
            num_envs=4,
            env_groups=2,
            num_steps=32,
            num_minibatches=2,
            update_epochs=2,
            total_timesteps=3 * 128,
            rnd_warmup_iterations=1,
            device="cpu",
            progress=False,
            torch_threads=1,
            seed=seed,
            run_dir=str(run_dir),
        )
    )
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag not in TIMING
    }


def test_the_same_seed_logs_the_same_scalars_and_another_seed_does_not(tmp_path):
    first = tiny_run(tmp_path / "a", seed=3)
    assert tiny_run(tmp_path / "b", seed=3) == first  # exact float equality, every tag and step
    other = tiny_run(tmp_path / "c", seed=4)
    assert other.keys() == first.keys() and other["losses/policy_loss"] != first["losses/policy_loss"]
