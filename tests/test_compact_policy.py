"""The compact MiniGrid policy (`--network compact`, `--preset minigrid-fast`): architecture and dispatch."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.grid_networks import CompactMiniGridPolicy, MiniGridPolicy, make_policy
from explore.errors import ConfigError

SPACE = gym.spaces.Dict(
    {
        "image": gym.spaces.Box(0, 10, (7, 7, 3), dtype=np.uint8),
        "direction": gym.spaces.Discrete(4),
        "mission": gym.spaces.Box(0, 255, (96,), dtype=np.uint8),
    }
)


def test_architecture_is_rl_starter_files_by_hand():
    policy = make_policy(SPACE, 7, network="compact")
    assert isinstance(policy, CompactMiniGridPolicy)
    # conv 3->16 (2x2), 16->32, 32->64: weights + biases; tanh layer (64 conv features + 4 directions) -> 64;
    # heads: 7 logits, two values
    expected = (
        (3 * 16 * 4 + 16) + (16 * 32 * 4 + 32) + (32 * 64 * 4 + 64) + (68 * 64 + 64) + (64 * 7 + 7) + 2 * 65
    )
    assert sum(p.numel() for p in policy.parameters()) == expected == 15_545
    obs = {
        "image": torch.randint(0, 11, (5, 7, 7, 3), dtype=torch.uint8),
        "direction": torch.tensor([0, 1, 2, 3, 0], dtype=torch.int32),
        "mission": torch.zeros(5, 96, dtype=torch.uint8),
    }
    logits, v_ext, v_int = policy(obs)
    assert logits.shape == (5, 7) and v_ext.shape == (5,) and v_int.shape == (5,)
    # the image reaches the 1x1 map: 7 -> 6 (conv) -> 3 (pool) -> 2 -> 1
    assert policy.torso.conv(obs["image"].permute(0, 3, 1, 2).float()).shape == (5, 64)
    # the direction is read: same image, another direction, other features
    same_image = {**obs, "image": obs["image"][:1].expand(2, -1, -1, -1), "direction": torch.tensor([0, 1])}
    features = policy.torso(same_image)
    assert not torch.allclose(features[0], features[1])


def test_default_network_and_bad_choices():
    assert isinstance(make_policy(SPACE, 7), MiniGridPolicy)
    with pytest.raises(ConfigError, match="valid networks"):
        make_policy(SPACE, 7, network="tiny")
    with pytest.raises(ConfigError, match="MiniGrid"):
        make_policy(gym.spaces.Box(0.0, 1.0, (25,), dtype=np.float32), 2, network="compact")


def test_minigrid_fast_preset_trains(tmp_path):
    pytest.importorskip("envpool")
    from agents.ppo import PRESETS, train, validate

    config = dataclasses.replace(
        PRESETS["minigrid-fast"],
        env_id="MiniGrid-Empty-5x5-v0",
        num_envs=4,
        num_steps=8,
        total_timesteps=64,
        rnd_warmup_iterations=1,
        run_dir=str(tmp_path / "run"),
        progress=False,
    )
    assert config.network == "compact" and config.bonus == "none"
    result = train(config)
    assert result["global_step"] == 64
    with pytest.raises(ConfigError, match="--network"):
        validate(dataclasses.replace(config, network="tiny"))


def test_e3b_builds_the_policys_network():
    """E3B's encoder is the policy's architecture: the compact torso under --network compact (its cost)."""
    from explore.bonus import BonusContext
    from explore.combine import build_bonus
    from explore.networks import CompactMiniGridTorso, MiniGridTorso, make_encoder

    def e3b(network: str):
        context = BonusContext(
            num_envs=2, observation_space=SPACE, action_space=gym.spaces.Discrete(7), network=network
        )
        (module,) = build_bonus("e3b", context).bonuses  # alone, E3B is wrapped for its normalization
        return module

    compact, default = e3b("compact"), e3b("default")
    assert type(compact.encoder) is CompactMiniGridTorso and type(default.encoder) is MiniGridTorso
    assert compact.encoder.out_dim == default.encoder.out_dim == 128  # --e3b-dim's default
    # conv as in the policy's torso (by hand above), then the tanh layer (64 + 4 directions) -> 128
    conv_params = (3 * 16 * 4 + 16) + (16 * 32 * 4 + 32) + (32 * 64 * 4 + 64)
    assert sum(p.numel() for p in compact.encoder.parameters()) == conv_params + 68 * 128 + 128
    obs = {
        "image": torch.randint(0, 11, (3, 2, 7, 7, 3), dtype=torch.uint8),
        "direction": torch.randint(0, 4, (3, 2), dtype=torch.int32),
        "mission": torch.zeros(3, 2, 96, dtype=torch.uint8),
    }
    batch = {"next_obs": obs, "valid": torch.ones(3, 2, dtype=torch.bool), "dones": torch.zeros(3, 2).bool()}
    assert compact.bonus(batch).shape == (3, 2)
    with pytest.raises(ConfigError, match="MiniGrid"):
        make_encoder(gym.spaces.Box(0.0, 1.0, (25,), dtype=np.float32), 8, network="compact")
    with pytest.raises(ConfigError, match="valid networks"):
        make_encoder(SPACE, 8, network="tiny")
