"""The PPO update replays the rollout exactly: before the first gradient step the new log-probs equal
the recorded ones (ratio 1, approx_kl 0, clipfrac 0), for feed-forward and LSTM policies alike.

An LSTM replay that mishandled the episode starts (the obs after an autoreset dummy step), the
rollout's initial core state or the time-major order of env sequences would break this."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents.ppo import Config, minibatch_indices, train


def _scalars(run_dir) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("use_lstm", [False, True])
def test_first_minibatch_reproduces_the_rollout_log_probs(tmp_path, use_lstm):
    config = Config(
        env_id="MiniGrid-Empty-5x5-v0",
        bonus="none",
        num_envs=4,
        env_groups=2,
        num_steps=40,  # Empty-5x5 episodes are cut at 12 steps: several autoresets inside the rollout
        max_episode_steps=12,
        total_timesteps=3 * 160,  # 3 updates; a large step makes the policy far from uniform after the first
        learning_rate=0.05,
        max_grad_norm=100.0,
        num_minibatches=1,
        update_epochs=1,
        use_lstm=use_lstm,
        device="cpu",
        run_dir=str(tmp_path / "run"),
        progress=False,
        gamma=0.99,
    )
    train(config)
    scalars = _scalars(tmp_path / "run")
    assert scalars["losses/approx_kl"] == [pytest.approx(0.0, abs=1e-6)] * 3
    assert scalars["losses/clipfrac"] == [0.0] * 3
    assert max(scalars["losses/entropy"]) - min(scalars["losses/entropy"]) > 0.05  # the policy did move
    assert len(scalars["charts/episodic_length"]) >= 4  # episodes did end inside the rollout


def test_recurrent_minibatches_hold_whole_env_sequences_time_major():
    config = Config(num_envs=6, num_steps=5, num_minibatches=3, use_lstm=True)
    seen = []
    for index, envs in minibatch_indices(config, torch.device("cpu")):
        assert envs.shape == (2,)
        expected = (torch.arange(5)[:, None] * 6 + envs[None, :]).reshape(-1)
        assert torch.equal(index, expected)  # t-major: all chosen envs at t=0, then t=1, ...
        seen.append(index)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(30))


def test_feed_forward_minibatches_are_a_permutation():
    config = Config(num_envs=4, num_steps=8, num_minibatches=4)
    chunks = [index for index, envs in minibatch_indices(config, torch.device("cpu"))]
    assert all(c.shape == (8,) for c in chunks)
    assert torch.equal(torch.cat(chunks).sort().values, torch.arange(32))
