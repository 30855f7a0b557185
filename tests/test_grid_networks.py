"""Policies and encoders for dict observations: shapes, LSTM resets, dispatch, gradients, fitting.

MiniGrid observations come from real envpool envs. MiniHack observations are built to NLE 1.x's
spaces (glyphs (21, 79) int16 in [0, MAX_GLYPH], glyphs_crop (9, 9), blstats (27,) int64), so
these tests do not need nle installed.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.grid_networks import (
    NLE_MAX_GLYPH,
    FrameTorso,
    MiniGridPolicy,
    MiniGridTorso,
    MiniHackPolicy,
    MiniHackTorso,
    VectorPolicy,
    make_encoder,
    make_policy,
)
from agents.networks import TwoHeadPolicy
from envs.minigrid import MiniGridVecEnv
from explore.errors import ConfigError

INT64 = np.iinfo(np.int64)
MINIHACK_SPACE = gym.spaces.Dict(
    {
        "glyphs": gym.spaces.Box(0, NLE_MAX_GLYPH, (21, 79), np.int16),
        "glyphs_crop": gym.spaces.Box(0, NLE_MAX_GLYPH, (9, 9), np.int16),
        "blstats": gym.spaces.Box(INT64.min, INT64.max, (27,), np.int64),
    }
)
FRAMES_SPACE = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
SMALL_MINIHACK = {"hidden": 64, "embedding_dim": 8}  # the E3B defaults are 24M parameters: slow on a CPU


def minigrid_batch(env_id: str = "MiniGrid-DoorKey-8x8-v0", num_envs: int = 8, seed: int = 0):
    """Real observations as a dict of tensors with one leading dim, and the env's spaces."""
    vec = MiniGridVecEnv(env_id, num_envs=num_envs, seed=seed)
    try:
        obs, _ = vec.reset()
        return (
            {k: torch.as_tensor(v) for k, v in obs.items()},
            vec.single_observation_space,
            int(vec.single_action_space.n),
        )
    finally:
        vec.close()


def minihack_batch(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    blstats = torch.randint(0, 30, (batch, 27), generator=g)
    blstats[:, 9] = torch.randint(0, 10**7, (batch,), generator=g)  # a long game's score: clipped
    return {
        "glyphs": torch.randint(0, NLE_MAX_GLYPH, (batch, 21, 79), generator=g).to(torch.int16),
        "glyphs_crop": torch.randint(0, NLE_MAX_GLYPH, (batch, 9, 9), generator=g).to(torch.int16),
        "blstats": blstats,
    }


def check_outputs(out, batch: int, num_actions: int) -> None:
    logits, v_ext, v_int = out
    assert logits.shape == (batch, num_actions)
    assert v_ext.shape == (batch,) and v_int.shape == (batch,)
    for t in out:
        assert torch.isfinite(t).all()


def test_minigrid_policy_on_real_observations():
    obs, space, num_actions = minigrid_batch()
    policy = MiniGridPolicy(space, num_actions)
    check_outputs(policy(obs), 8, num_actions)


def test_minigrid_policy_reads_the_babyai_mission():
    obs, space, num_actions = minigrid_batch("BabyAI-GoToLocal-v0", num_envs=4)
    assert obs["mission"].shape == (4, 512)
    policy = MiniGridPolicy(space, num_actions, use_mission=True)
    check_outputs(policy(obs), 4, num_actions)

    # the same view with another mission gives other features
    torso = policy.torso
    same_view = {k: v[:1].repeat(2, *[1] * (v.dim() - 1)) for k, v in obs.items()}
    mission = torch.zeros(2, 512, dtype=torch.uint8)
    for row, text in enumerate((b"go to the red ball", b"go to the blue key")):
        mission[row, : len(text)] = torch.frombuffer(bytearray(text), dtype=torch.uint8)
    same_view["mission"] = mission
    features = torso(same_view)
    assert not torch.allclose(features[0], features[1])
    # zero padding past the text does not change the encoding
    longer = torch.zeros(1, 600, dtype=torch.uint8)
    longer[0, :512] = mission[0]
    torch.testing.assert_close(torso.encode_mission(longer), torso.encode_mission(mission[:1]))


def test_minigrid_direction_changes_the_features():
    obs, space, _ = minigrid_batch(num_envs=1)
    torso = MiniGridTorso(space)
    turned = dict(obs, direction=(obs["direction"] + 1) % 4)
    assert not torch.allclose(torso(obs), torso(turned))


@pytest.mark.parametrize("use_lstm", [False, True])
def test_minihack_policy_shapes(use_lstm):
    batch, num_actions = 5, 8
    policy = MiniHackPolicy(MINIHACK_SPACE, num_actions, use_lstm=use_lstm, **SMALL_MINIHACK)
    obs = minihack_batch(batch)
    if not use_lstm:
        check_outputs(policy(obs), batch, num_actions)
        return
    *out, (h, c) = policy(obs, policy.initial_state(batch), torch.zeros(batch, dtype=torch.bool))
    check_outputs(out, batch, num_actions)
    assert h.shape == c.shape == (1, batch, 64)


def test_minihack_policy_with_the_e3b_defaults():
    policy = MiniHackPolicy(MINIHACK_SPACE, 8, use_lstm=True)
    assert policy.torso.glyph_embed.num_embeddings == NLE_MAX_GLYPH + 1  # covers the space's bound
    assert policy.torso.glyph_embed.embedding_dim == 64
    assert policy.core.hidden_size == 1024
    *out, _ = policy(minihack_batch(2), None, torch.zeros(2, dtype=torch.bool))
    check_outputs(out, 2, 8)


def test_minihack_glyph_count_can_be_overridden_and_keys_are_optional():
    torso = MiniHackTorso(MINIHACK_SPACE, out_dim=16, embedding_dim=4, num_glyphs=7000)
    assert torso.glyph_embed.num_embeddings == 7000
    crop_only = gym.spaces.Dict({k: MINIHACK_SPACE[k] for k in ("glyphs_crop", "blstats")})
    torso = MiniHackTorso(crop_only, out_dim=16, embedding_dim=4)
    obs = minihack_batch(3)
    assert torso({k: obs[k] for k in ("glyphs_crop", "blstats")}).shape == (3, 16)


def test_blstats_are_scaled_and_clipped():
    torso = MiniHackTorso(MINIHACK_SPACE, out_dim=16, embedding_dim=4)
    blstats = torch.zeros(2, 27, dtype=torch.int64)
    blstats[0, 0], blstats[0, 1] = 79, 21  # x, y at the map's far corner
    blstats[1, 9] = 10**9  # score
    normalized = torso.normalize_blstats(blstats)
    assert normalized.dtype == torch.float32
    assert normalized[0, 0] == 1.0 and normalized[0, 1] == 1.0
    assert normalized[1, 9] == 5.0
    with pytest.raises(ConfigError, match="blstats of size 25"):
        MiniHackTorso(gym.spaces.Dict({"blstats": gym.spaces.Box(-1, 1, (25,), np.int64)}))
    MiniHackTorso(
        gym.spaces.Dict({"blstats": gym.spaces.Box(-1, 1, (25,), np.int64)}), blstats_scale=[1.0] * 25
    )


def test_lstm_state_is_reset_where_done():
    torch.manual_seed(0)
    batch = 4
    policy = MiniHackPolicy(MINIHACK_SPACE, 8, use_lstm=True, **SMALL_MINIHACK)
    obs = minihack_batch(batch)
    state = tuple(torch.randn_like(s) for s in policy.initial_state(batch))
    done = torch.tensor([True, False, True, False])

    logits, v_ext, v_int, (h, c) = policy(obs, state, done)
    fresh = policy(obs, policy.initial_state(batch), torch.zeros(batch, dtype=torch.bool))
    # done rows start from a zero state, the others carry theirs
    torch.testing.assert_close(logits[done], fresh[0][done])
    torch.testing.assert_close(v_ext[done], fresh[1][done])
    torch.testing.assert_close(h[:, done], fresh[3][0][:, done])
    assert not torch.allclose(logits[~done], fresh[0][~done])

    # a (T * B) time-major unroll equals stepping one t at a time
    steps = 3
    seq_obs = {k: torch.cat([minihack_batch(batch, seed=t)[k] for t in range(steps)]) for k in obs}
    seq_done = torch.tensor([[False, True, False, False], [True, False, False, True], [False] * 4])
    logits_seq, _, _, final = policy(seq_obs, state, seq_done)
    assert logits_seq.shape == (steps * batch, 8)
    step_state = state
    for t in range(steps):
        rows = slice(t * batch, (t + 1) * batch)
        logits_t, _, _, step_state = policy({k: v[rows] for k, v in seq_obs.items()}, step_state, seq_done[t])
        torch.testing.assert_close(logits_seq[rows], logits_t)
    torch.testing.assert_close(final[0], step_state[0])


def test_lstm_arguments_are_checked():
    plain = MiniHackPolicy(MINIHACK_SPACE, 8, **SMALL_MINIHACK)
    obs = minihack_batch(2)
    with pytest.raises(ValueError, match="without an LSTM"):
        plain(obs, None, torch.zeros(2, dtype=torch.bool))
    recurrent = MiniHackPolicy(MINIHACK_SPACE, 8, use_lstm=True, **SMALL_MINIHACK)
    with pytest.raises(ValueError, match="needs `done`"):
        recurrent(obs)


def test_make_policy_dispatches_on_the_space():
    _, minigrid_space, _ = minigrid_batch(num_envs=1)
    assert isinstance(make_policy(FRAMES_SPACE, 18), TwoHeadPolicy)
    assert isinstance(make_policy(minigrid_space, 7), MiniGridPolicy)
    assert isinstance(make_policy(MINIHACK_SPACE, 8, **SMALL_MINIHACK), MiniHackPolicy)
    recurrent = make_policy(MINIHACK_SPACE, 8, use_lstm=True, **SMALL_MINIHACK)
    assert recurrent.use_lstm
    vector = make_policy(gym.spaces.Box(-1.0, 1.0, (10,), np.float32), 4, use_lstm=True)
    assert isinstance(vector, VectorPolicy) and vector.use_lstm
    logits, v_ext, v_int, _ = vector(torch.zeros(3, 10), None, torch.ones(3, dtype=torch.bool))
    assert logits.shape == (3, 4) and v_ext.shape == v_int.shape == (3,)

    for unsupported in (
        gym.spaces.Box(-1.0, 1.0, (10, 3), np.float32),
        gym.spaces.Box(0, 255, (8, 4, 84, 84), np.uint8),  # a batched space, not one env's
        gym.spaces.Discrete(5),
        gym.spaces.Dict({"position": gym.spaces.Discrete(3)}),
    ):
        with pytest.raises(ConfigError) as excinfo:
            make_policy(unsupported, 4)
        message = str(excinfo.value)
        assert str(unsupported) in message
        assert "Supported" in message and "MiniGridPolicy" in message and "MiniHackPolicy" in message


def test_encoders_share_the_torso_architecture_with_separate_weights():
    obs, minigrid_space, num_actions = minigrid_batch(num_envs=3)
    encoder = make_encoder(minigrid_space, 32)
    assert isinstance(encoder, MiniGridTorso)
    assert encoder(obs).shape == (3, 32)
    policy = make_policy(minigrid_space, num_actions, hidden=32)
    assert encoder.state_dict().keys() == policy.torso.state_dict().keys()
    assert not {id(p) for p in encoder.parameters()} & {id(p) for p in policy.parameters()}

    minihack_encoder = make_encoder(MINIHACK_SPACE, 16, embedding_dim=4)
    assert isinstance(minihack_encoder, MiniHackTorso)
    assert minihack_encoder(minihack_batch(2)).shape == (2, 16)

    frames_encoder = make_encoder(FRAMES_SPACE, 24)
    assert isinstance(frames_encoder, FrameTorso)
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    assert frames_encoder(frames).shape == (2, 24)
    # the same layers as TwoHeadPolicy's torso
    reference = TwoHeadPolicy(4, 18, hidden=24).torso
    assert [type(m) for m in frames_encoder.net.modules()] == [type(m) for m in reference.modules()]


@pytest.mark.parametrize("family", ["minigrid", "minihack", "minihack_lstm"])
def test_gradients_reach_every_parameter(family):
    if family == "minigrid":
        obs, space, num_actions = minigrid_batch("BabyAI-GoToLocal-v0", num_envs=4)
        policy = MiniGridPolicy(space, num_actions, use_mission=True)
        out = policy(obs)
    else:
        num_actions = 8
        policy = MiniHackPolicy(
            MINIHACK_SPACE, num_actions, use_lstm=family.endswith("lstm"), **SMALL_MINIHACK
        )
        obs = minihack_batch(4)
        if policy.use_lstm:  # from a nonzero state, so the recurrent weights matter too
            state = tuple(torch.randn_like(s) for s in policy.initial_state(4))
            out = policy(obs, state, torch.zeros(4, dtype=torch.bool))[:3]
        else:
            out = policy(obs)
    logits, v_ext, v_int = out
    loss = logits.logsumexp(-1).mean() + v_ext.square().mean() + v_int.square().mean()
    loss.backward()
    for name, param in policy.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_minigrid_policy_fits_labelled_observations():
    """A supervised sanity check: the torso tells 16 real DoorKey layouts apart."""
    torch.manual_seed(0)
    obs, space, num_actions = minigrid_batch(num_envs=16, seed=3)
    keys = {(obs["image"][i].numpy().tobytes(), int(obs["direction"][i])) for i in range(16)}
    assert len(keys) == 16  # distinct observations
    labels = torch.randint(0, num_actions, (16,))
    policy = MiniGridPolicy(space, num_actions)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    for _ in range(200):
        logits, v_ext, _ = policy(obs)
        loss = torch.nn.functional.cross_entropy(logits, labels) + (v_ext - labels.float()).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    logits, v_ext, _ = policy(obs)
    assert (logits.argmax(-1) == labels).all()
    torch.testing.assert_close(v_ext, labels.float(), atol=0.3, rtol=0)
