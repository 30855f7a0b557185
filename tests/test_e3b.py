"""Exact tests of explore.e3b.E3B: Sherman-Morrison memory, the bonus, resets, carry, the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.testing import assert_close

from explore.bonus import BonusModule
from explore.e3b import E3B

RIDGE = 0.1


def make_e3b(
    num_envs: int = 3,
    embed_dim: int = 5,
    num_actions: int = 4,
    cov_dtype: torch.dtype = torch.float64,
    encoder: nn.Module | None = None,
    seed: int = 0,
) -> E3B:
    """An E3B whose encoder is the identity by default: the observation IS phi, so tests pick phi."""
    torch.manual_seed(seed)
    return E3B(
        num_envs,
        encoder if encoder is not None else nn.Identity(),
        embed_dim,
        num_actions,
        ridge=RIDGE,
        hidden_dim=32,
        cov_dtype=cov_dtype,
    )


def rollout(phi: Tensor, valid: Tensor | None = None, dones: Tensor | None = None) -> dict[str, Tensor]:
    """A (T, N) batch whose next observations are the given features phi (T, N, d)."""
    T, N = phi.shape[:2]
    return {
        "obs": torch.zeros_like(phi),
        "next_obs": phi,
        "actions": torch.zeros(T, N, dtype=torch.long),
        "valid": torch.ones(T, N, dtype=torch.bool) if valid is None else valid,
        "dones": torch.zeros(T, N, dtype=torch.bool) if dones is None else dones,
    }


def random_phi(*shape: int, seed: int = 0, scale: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def explicit_inverse(phis: Tensor, ridge: float = RIDGE) -> Tensor:
    """(ridge I + sum_k phi_k phi_k^T)^-1 for phis (K, d), in float64 by torch.linalg.inv."""
    d = phis.shape[-1]
    cov = ridge * torch.eye(d, dtype=torch.float64) + phis.T.double() @ phis.double()
    return torch.linalg.inv(cov)


def explicit_bonuses(phis: Tensor, ridge: float = RIDGE) -> Tensor:
    """b_t = phi_t^T (ridge I + sum_{k<t} phi_k phi_k^T)^-1 phi_t for one env's sequence (T, d)."""
    return torch.stack([phis[t] @ explicit_inverse(phis[:t], ridge) @ phis[t] for t in range(phis.shape[0])])


def first_visit(phi: Tensor, ridge: float = RIDGE) -> Tensor:
    return (phi.double() ** 2).sum(-1) / ridge


# --- the Sherman-Morrison memory ---------------------------------------------------------------


def test_e3b_is_an_episodic_bonus_module_starting_from_identity_over_ridge():
    e3b = make_e3b(num_envs=2, embed_dim=4)
    assert isinstance(e3b, BonusModule) and e3b.name == "e3b" and e3b.kind == "episodic"
    assert e3b.cov_inverse.shape == (2, 4, 4)
    assert_close(e3b.cov_inverse, torch.eye(4, dtype=torch.float64).expand(2, 4, 4) / RIDGE)
    with pytest.raises(ValueError, match="ridge"):
        E3B(2, nn.Identity(), 4, 3, ridge=0.0)
    with pytest.raises(ValueError, match="cov_dtype"):
        E3B(2, nn.Identity(), 4, 3, cov_dtype=torch.float16)


def test_sherman_morrison_inverse_equals_the_explicit_inverse_per_env():
    T, N, d = 12, 3, 5
    phi = random_phi(T, N, d, seed=1)
    phi[:, 2] *= 3.0  # envs see different sequences at different scales
    e3b = make_e3b(num_envs=N, embed_dim=d)
    e3b.bonus(rollout(phi))
    for n in range(N):
        assert_close(e3b.cov_inverse[n], explicit_inverse(phi[:, n]), rtol=1e-10, atol=1e-12)
    # the buffer stays symmetric
    assert_close(e3b.cov_inverse, e3b.cov_inverse.transpose(1, 2), rtol=0, atol=1e-12)


def test_float32_memory_matches_the_explicit_inverse_closely():
    T, N, d = 12, 3, 5
    phi = random_phi(T, N, d, seed=2)
    e3b = make_e3b(num_envs=N, embed_dim=d, cov_dtype=torch.float32)
    assert e3b.cov_inverse.dtype == torch.float32
    rewards = e3b.bonus(rollout(phi.float()))
    assert rewards.dtype == torch.float32
    for n in range(N):
        assert_close(e3b.cov_inverse[n].double(), explicit_inverse(phi[:, n]), rtol=1e-5, atol=1e-5)
        assert_close(rewards[:, n].double(), explicit_bonuses(phi[:, n]), rtol=1e-5, atol=1e-5)


def relative_drift(cov_dtype: torch.dtype, steps: int = 200, N: int = 4, d: int = 16) -> float:
    """Largest relative Frobenius error of C^-1 after `steps` Sherman-Morrison updates of unit-ish phi."""
    phi = random_phi(steps, N, d, seed=3, scale=d**-0.5)
    e3b = make_e3b(num_envs=N, embed_dim=d, cov_dtype=cov_dtype)
    e3b.bonus(rollout(phi.to(cov_dtype)))
    errors = [
        (e3b.cov_inverse[n].double() - explicit_inverse(phi[:, n])).norm()
        / explicit_inverse(phi[:, n]).norm()
        for n in range(N)
    ]
    return float(torch.stack(errors).max())


def test_float32_drift_over_200_steps_is_small_and_float64_removes_it():
    # measured: about 3e-6 in float32, 1e-14 in float64 (see the module docstring)
    assert relative_drift(torch.float32) < 1e-4
    assert relative_drift(torch.float64) < 1e-11


# --- the bonus ---------------------------------------------------------------------------------


def test_bonus_equals_the_explicit_quadratic_form_step_by_step():
    T, N, d = 10, 3, 4
    phi = random_phi(T, N, d, seed=4)
    rewards = make_e3b(num_envs=N, embed_dim=d).bonus(rollout(phi))
    assert rewards.shape == (T, N)
    for n in range(N):
        # scored with C^-1 BEFORE phi_t is included: the first step scores |phi|^2 / ridge
        assert_close(rewards[:, n].double(), explicit_bonuses(phi[:, n]), rtol=1e-6, atol=1e-8)
    assert_close(rewards[0].double(), first_visit(phi[0]), rtol=1e-6, atol=0)


def test_bonus_scores_the_encoding_of_next_obs():
    T, N, d, obs_dim = 6, 2, 3, 7
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(obs_dim, d))
    e3b = make_e3b(num_envs=N, embed_dim=d, encoder=encoder, cov_dtype=torch.float64)
    next_obs = random_phi(T, N, obs_dim, seed=5).float()
    batch = rollout(next_obs)
    batch["obs"] = torch.full_like(next_obs, 100.0)  # obs must not matter
    rewards = e3b.bonus(batch, chunk_size=5)  # 12 rows in chunks of 5
    with torch.no_grad():
        phi = encoder(next_obs.reshape(T * N, obs_dim)).reshape(T, N, d)
    for n in range(N):
        assert_close(rewards[:, n].double(), explicit_bonuses(phi[:, n].double()), rtol=1e-5, atol=1e-6)


def test_bonus_falls_strictly_on_a_repeated_state():
    T, d = 30, 4
    phi = random_phi(1, 2, d, seed=6).expand(T, 2, d).contiguous()
    rewards = make_e3b(num_envs=2, embed_dim=d).bonus(rollout(phi)).double()
    assert (rewards[1:] < rewards[:-1]).all()
    # k earlier visits: b_k = a / (1 + k a), a = |phi|^2 / ridge
    a = first_visit(phi[0])
    k = torch.arange(T, dtype=torch.float64)[:, None]
    assert_close(rewards, a / (1 + k * a), rtol=1e-6, atol=0)


def test_bonus_resets_after_the_step_that_ends_an_episode():
    T, d = 8, 3
    phi = random_phi(1, 2, d, seed=7).expand(T, 2, d).contiguous()
    dones = torch.zeros(T, 2, dtype=torch.bool)
    valid = torch.ones(T, 2, dtype=torch.bool)
    dones[3, 0] = True  # env 0 ends its episode at step 3 ...
    valid[4, 0] = False  # ... step 4 is the autoreset dummy
    rewards = make_e3b(num_envs=2, embed_dim=d).bonus(rollout(phi, valid, dones)).double()
    a = first_visit(phi[0])
    # env 0: visits 0..3 fall, the dummy scores 0, the new episode starts again at |phi|^2 / ridge
    expected0 = torch.stack([a[0] / (1 + k * a[0]) for k in (0, 1, 2, 3)] + [a[0] * 0])
    expected0 = torch.cat([expected0, torch.stack([a[0] / (1 + k * a[0]) for k in (0, 1, 2)])])
    assert_close(rewards[:, 0], expected0, rtol=1e-6, atol=0)
    assert rewards[4, 0].item() == 0.0
    assert_close(rewards[5, 0], a[0], rtol=1e-6, atol=0)  # first-visit value again
    # env 1 has no done: its memory is untouched by env 0's reset
    k = torch.arange(T, dtype=torch.float64)
    assert_close(rewards[:, 1], a[1] / (1 + k * a[1]), rtol=1e-6, atol=0)


def test_dummy_step_scores_zero_and_leaves_the_memory_unchanged():
    T, N, d = 6, 2, 4
    phi = random_phi(T, N, d, seed=8)
    valid = torch.ones(T, N, dtype=torch.bool)
    valid[2, 1] = False
    with_dummy = phi.clone()
    with_dummy[2, 1] = 1e6  # whatever the reset observation is, it must not count
    e3b = make_e3b(num_envs=N, embed_dim=d)
    rewards = e3b.bonus(rollout(with_dummy, valid))
    assert rewards[2, 1].item() == 0.0
    # env 1's memory is the one of its valid steps only, and its later bonuses ignore the dummy
    kept = torch.cat([phi[:2, 1], phi[3:, 1]])
    assert_close(e3b.cov_inverse[1], explicit_inverse(kept), rtol=1e-10, atol=1e-12)
    assert_close(rewards[valid[:, 1], 1].double(), explicit_bonuses(kept), rtol=1e-6, atol=1e-8)
    assert_close(e3b.cov_inverse[0], explicit_inverse(phi[:, 0]), rtol=1e-10, atol=1e-12)
    assert e3b.metrics()["intrinsic_reward_mean"] == pytest.approx(float(rewards.sum() / valid.sum()))


def episode_batch(T: int = 12, N: int = 3, d: int = 4, seed: int = 9) -> dict[str, Tensor]:
    """Random phi with a few episode ends, each followed by a dummy step."""
    phi = random_phi(T, N, d, seed=seed)
    dones = torch.zeros(T, N, dtype=torch.bool)
    dones[2, 0] = dones[7, 0] = dones[5, 1] = dones[T - 1, 2] = True
    valid = torch.ones(T, N, dtype=torch.bool)
    valid[1:] = ~dones[:-1]
    return rollout(phi, valid, dones)


def split(batch: dict[str, Tensor], start: int, stop: int) -> dict[str, Tensor]:
    return {key: value[start:stop] for key, value in batch.items()}


def test_memory_carries_across_rollouts_like_one_long_rollout():
    batch = episode_batch()
    whole = make_e3b(num_envs=3, embed_dim=4)
    expected = whole.bonus(batch)
    parts = make_e3b(num_envs=3, embed_dim=4)
    # env 0's second episode (steps 4..7) straddles the boundary at 6
    rewards = torch.cat([parts.bonus(split(batch, 0, 6)), parts.bonus(split(batch, 6, 12))])
    assert_close(rewards, expected, rtol=0, atol=0)
    assert_close(parts.cov_inverse, whole.cov_inverse, rtol=0, atol=0)


def test_reset_calls_while_collecting_do_not_cut_episodes_that_straddle_rollouts():
    """The trainer calls reset(done) after every step, then bonus(batch) on the whole rollout."""
    batch = episode_batch()
    reference = make_e3b(num_envs=3, embed_dim=4)
    expected = torch.cat([reference.bonus(split(batch, 0, 6)), reference.bonus(split(batch, 6, 12))])

    e3b = make_e3b(num_envs=3, embed_dim=4)
    rewards = []
    for start, stop in ((0, 6), (6, 12)):
        for t in range(start, stop):  # collection: the envs report their dones step by step
            e3b.reset(batch["dones"][t])
        rewards.append(e3b.bonus(split(batch, start, stop)))
    assert_close(torch.cat(rewards), expected, rtol=0, atol=0)
    assert_close(e3b.cov_inverse, reference.cov_inverse, rtol=0, atol=0)
    assert not e3b.pending_reset.any()


def test_reset_of_an_env_without_a_done_in_the_batch_clears_it_before_the_rollout():
    batch = episode_batch()
    e3b = make_e3b(num_envs=3, embed_dim=4)
    e3b.bonus(split(batch, 0, 4))
    e3b.reset(torch.tensor([False, True, False]))  # e.g. the caller restarted env 1
    tail = split(batch, 8, 12)  # env 1 has no done in steps 8..11
    rewards = e3b.bonus(tail)
    assert_close(rewards[:, 1].double(), explicit_bonuses(tail["next_obs"][:, 1]), rtol=1e-6, atol=1e-8)


# --- step mode ---------------------------------------------------------------------------------


def test_bonus_step_and_reset_match_the_rollout_pass():
    batch = episode_batch()
    expected = make_e3b(num_envs=3, embed_dim=4).bonus(batch)

    stepped = make_e3b(num_envs=3, embed_dim=4)
    with_done = make_e3b(num_envs=3, embed_dim=4)
    rows, rows_done = [], []
    for t in range(batch["valid"].shape[0]):
        rows.append(stepped.bonus_step(batch["next_obs"][t], batch["valid"][t]))
        stepped.reset(batch["dones"][t])
        rows_done.append(with_done.bonus_step(batch["next_obs"][t], batch["valid"][t], batch["dones"][t]))
    assert_close(torch.stack(rows), expected, rtol=0, atol=0)
    assert_close(torch.stack(rows_done), expected, rtol=0, atol=0)


def test_reset_restores_the_first_visit_bonus_in_step_mode():
    d = 3
    phi = random_phi(2, d, seed=10)
    e3b = make_e3b(num_envs=2, embed_dim=d)
    valid = torch.ones(2, dtype=torch.bool)
    first = e3b.bonus_step(phi, valid)
    second = e3b.bonus_step(phi, valid)
    assert (second < first).all()
    e3b.reset(torch.tensor([True, False]))
    third = e3b.bonus_step(phi, valid)
    assert_close(third[0], first[0], rtol=1e-12, atol=0)
    assert third[1] < second[1]


# --- the inverse-dynamics loss and what it trains ------------------------------------------------

GRID = 6
MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])  # up, down, left, right


def gridworld_transitions(num: int = 256, seed: int = 0) -> dict[str, Tensor]:
    """One-hot (1, GRID, GRID) positions of a deterministic gridworld; only moves that stay inside,
    so the action is recoverable from (s, s')."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.randint(1, GRID - 1, (num, 2), generator=g)  # interior cells: every move is legal
    actions = torch.randint(0, 4, (num,), generator=g)
    nxt = pos + MOVES[actions]

    def one_hot(p: Tensor) -> Tensor:
        grid = torch.zeros(num, 1, GRID, GRID)
        grid[torch.arange(num), 0, p[:, 0], p[:, 1]] = 1.0
        return grid

    return {
        "obs": one_hot(pos),
        "next_obs": one_hot(nxt),
        "actions": actions,
        "valid": torch.ones(num, dtype=torch.bool),
    }


def tiny_encoder(embed_dim: int = 16) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(GRID * GRID, embed_dim))


def test_inverse_dynamics_loss_falls_on_a_gridworld():
    e3b = make_e3b(num_envs=1, embed_dim=16, encoder=tiny_encoder(), cov_dtype=torch.float32)
    data = gridworld_transitions()
    optimizer = torch.optim.Adam([p for p in e3b.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(150):
        out = e3b.loss(data)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    final = e3b.loss(data)
    assert final["loss"].item() < 0.5 * losses[0]
    assert final["inverse_accuracy"].item() > 0.95
    metrics = e3b.metrics()  # averaged over the 151 loss calls
    assert metrics["inverse_loss"] < losses[0] and 0.0 < metrics["inverse_accuracy"] <= 1.0
    assert "inverse_loss" not in e3b.metrics()  # the averages restart after each read


def test_loss_is_cross_entropy_over_valid_transitions_only():
    e3b = make_e3b(num_envs=1, embed_dim=16, encoder=tiny_encoder(), cov_dtype=torch.float32)
    data = gridworld_transitions(num=10)
    data["valid"] = torch.tensor([True] * 7 + [False] * 3)
    out = e3b.loss(data)
    with torch.no_grad():
        phi_t, phi_t1 = e3b.encoder(data["obs"]), e3b.encoder(data["next_obs"])
        logits = e3b.inverse_head(torch.cat([phi_t, phi_t1], -1))
    expected = F.cross_entropy(logits[:7], data["actions"][:7])
    assert_close(out["loss"], expected)
    # changing the actions of the dummy rows changes nothing
    data["actions"][7:] = (data["actions"][7:] + 1) % 4
    assert_close(e3b.loss(data)["loss"], expected)


def test_encoder_is_trained_only_by_the_inverse_dynamics_loss():
    encoder = tiny_encoder(embed_dim=4)
    e3b = make_e3b(num_envs=2, embed_dim=4, encoder=encoder, cov_dtype=torch.float32)
    trainable = {id(p) for p in e3b.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in [*encoder.parameters(), *e3b.inverse_head.parameters()]}
    assert all(not b.requires_grad for b in e3b.buffers())

    # the bonus carries no graph, even when called with gradients enabled
    batch = gridworld_transitions(num=6)
    batch = {key: value.view(3, 2, *value.shape[1:]) for key, value in batch.items()}
    batch["dones"] = torch.zeros(3, 2, dtype=torch.bool)
    with torch.enable_grad():
        rewards = e3b.bonus(batch)
        step = e3b.bonus_step(batch["next_obs"][0], batch["valid"][0])
    assert not rewards.requires_grad and rewards.grad_fn is None and not step.requires_grad
    assert all(p.grad is None for p in encoder.parameters())

    # the inverse-dynamics loss reaches the encoder and the head
    flat = gridworld_transitions(num=6)
    e3b.loss(flat)["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    assert all(p.grad is not None for p in e3b.inverse_head.parameters())

    # a policy that shares the encoder is refused; a separate one is fine
    e3b.check_separate_from(nn.Sequential(tiny_encoder(embed_dim=4), nn.Linear(4, 4)))
    with pytest.raises(ValueError, match="encoder"):
        e3b.check_separate_from(nn.Sequential(encoder, nn.Linear(4, 4)))


def test_dict_observations_are_encoded_alike():
    class DictEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.glyphs = nn.Embedding(10, 3)
            self.stats = nn.Linear(2, 3)

        def forward(self, obs: dict[str, Tensor]) -> Tensor:
            return self.glyphs(obs["glyphs"]).sum(1) + self.stats(obs["stats"])

    torch.manual_seed(0)
    e3b = make_e3b(num_envs=2, embed_dim=3, encoder=DictEncoder(), cov_dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    T, N = 5, 2
    next_obs = {
        "glyphs": torch.randint(0, 10, (T, N, 4), generator=g),
        "stats": torch.randn(T, N, 2, generator=g),
    }
    batch = {
        "obs": {key: value.roll(1, 0) for key, value in next_obs.items()},
        "next_obs": next_obs,
        "actions": torch.randint(0, 4, (T, N), generator=g),
        "valid": torch.ones(T, N, dtype=torch.bool),
        "dones": torch.zeros(T, N, dtype=torch.bool),
    }
    rewards = e3b.bonus(batch, chunk_size=3)
    phi = e3b.embed(next_obs, leading=2)
    assert phi.shape == (T, N, 3)
    for n in range(N):
        assert_close(rewards[:, n].double(), explicit_bonuses(phi[:, n].double()), rtol=1e-5, atol=1e-6)
    flat = {
        "obs": {key: value.flatten(0, 1) for key, value in batch["obs"].items()},
        "next_obs": {key: value.flatten(0, 1) for key, value in next_obs.items()},
        "actions": batch["actions"].flatten(),
        "valid": batch["valid"].flatten(),
    }
    assert e3b.loss(flat)["loss"].requires_grad


# --- checkpoints -----------------------------------------------------------------------------------


def test_state_dict_round_trip_restores_the_memory():
    batch = episode_batch()
    e3b = make_e3b(num_envs=3, embed_dim=4)
    e3b.bonus(split(batch, 0, 6))
    e3b.reset(torch.tensor([False, False, True]))
    state = e3b.state_dict()
    assert "cov_inverse" in state and "pending_reset" in state
    assert "initial_inverse" not in state  # derived from ridge, not saved

    restored = make_e3b(num_envs=3, embed_dim=4, seed=1)
    assert not torch.equal(restored.cov_inverse, e3b.cov_inverse)
    restored.load_state_dict(state)
    assert_close(restored.cov_inverse, e3b.cov_inverse, rtol=0, atol=0)
    assert torch.equal(restored.pending_reset, e3b.pending_reset)
    assert_close(restored.bonus(split(batch, 6, 12)), e3b.bonus(split(batch, 6, 12)), rtol=0, atol=0)


def test_float64_keeps_a_long_repeated_state_strictly_falling_and_float32_stays_near():
    """float32 resolves C^-1 to about 1e-7 / ridge: the bonus of a much-revisited state has a floor."""
    T, d = 1000, 8
    phi = random_phi(1, 1, d, seed=12, scale=10.0 / d**0.5).expand(T, 1, d).contiguous()  # |phi|^2 ~ 100
    a = first_visit(phi[0, 0])
    exact = a / (1 + torch.arange(T, dtype=torch.float64) * a)
    r64 = make_e3b(num_envs=1, embed_dim=d).bonus(rollout(phi))[:, 0].double()
    r32 = (
        make_e3b(num_envs=1, embed_dim=d, cov_dtype=torch.float32).bonus(rollout(phi.float()))[:, 0].double()
    )
    assert (r64[1:] < r64[:-1]).all()
    assert_close(r64, exact, rtol=1e-5, atol=0)
    assert ((r32 - exact).abs() / a).max() < 1e-4  # small against the first-visit bonus


def test_resume_with_another_env_count_keeps_the_encoder_and_restarts_episodic_memory():
    saved = make_e3b(num_envs=2, embed_dim=4)
    saved.bonus(rollout(random_phi(5, 2, 4)))  # C^-1 rows now differ from I / ridge
    with torch.no_grad():
        for p in saved.parameters():
            p.add_(0.5)
    resumed = make_e3b(num_envs=3, embed_dim=4)
    result = resumed.load_state_dict(saved.state_dict())
    assert not result.missing_keys and not result.unexpected_keys
    for (name, p), (_, q) in zip(saved.named_parameters(), resumed.named_parameters(), strict=True):
        assert_close(p, q, msg=name)
    assert resumed.cov_inverse.shape == (3, 4, 4)
    assert_close(resumed.cov_inverse, torch.eye(4, dtype=torch.float64).expand(3, 4, 4) / RIDGE)
    same = make_e3b(num_envs=2, embed_dim=4)
    same.load_state_dict(saved.state_dict())  # same env count: the memory itself is restored
    assert_close(same.cov_inverse, saved.cov_inverse)
