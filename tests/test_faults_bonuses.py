"""Non-finite observations through every registered bonus (issue 13, defect 5), and empty batches (defect 8).

A NaN or inf in an observation must not reach any statistic: RND's observation and reward running
statistics, E3B's inverse covariance, the count tables, NovelD's and the products' normalizers. The
boundary (`BonusModule.score`) gives such transitions bonus 0 and leaves them out, so afterwards
clean batches score EXACTLY as they do in a module that never saw the bad batch.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from explore.bonus import BonusModule
from explore.combine import BonusContext, BonusSettings, bonus_names, build_bonus

T, N = 4, 2
ACTIONS = gym.spaces.Discrete(3)
VECTOR = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)
FLOAT_FRAMES = gym.spaces.Box(0.0, 255.0, (1, 12, 12), np.float32)  # the archive has no cell for vectors
# every registered bonus but the judge, which reads integer MiniHack/MiniGrid observations (captions:
# nothing there can be NaN) and needs a judge model
EXPRESSIONS = [
    *(name for name in bonus_names() if name != "judge"),
    "e3b*rnd",
    "e3b*noveld",
    "count_e+0.5*rnd",
]
SETTINGS = BonusSettings(e3b_dim=8)


def space_of(expr: str) -> gym.spaces.Box:
    return FLOAT_FRAMES if "archive" in expr else VECTOR


def build(expr: str) -> BonusModule:
    torch.manual_seed(0)  # the same networks for every module built here
    context = BonusContext(num_envs=N, observation_space=space_of(expr), action_space=ACTIONS)
    return build_bonus(expr, context, SETTINGS)


def rollout(space: gym.spaces.Box, seed: int) -> dict[str, torch.Tensor]:
    """A (T, N) rollout of float observations, with an autoreset dummy step and an episode end."""
    g = torch.Generator().manual_seed(seed)
    scale = 255.0 if space is FLOAT_FRAMES else 3.0
    seq = (torch.rand((T + 1, N, *space.shape), generator=g) * scale).round()  # repeats, so counts count
    valid = torch.ones(T, N, dtype=torch.bool)
    valid[2, 1] = False
    dones = torch.zeros(T, N, dtype=torch.bool)
    dones[1, 1] = True
    return {
        "obs": seq[:-1],
        "next_obs": seq[1:],
        "actions": torch.randint(0, 3, (T, N), generator=g),
        "valid": valid,
        "dones": dones,
    }


def poisoned(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every transition of `batch` with a NaN, +inf or -inf somewhere in its obs or next_obs, no episode end."""
    bad = {key: value.clone() for key, value in batch.items()}
    values = (float("nan"), float("inf"), float("-inf"))
    for t in range(T):
        for n in range(N):
            key = "next_obs" if (t + n) % 2 else "obs"
            bad[key][t, n].view(-1)[(t * N + n) % bad[key][t, n].numel()] = values[(t + n) % 3]
    bad["valid"] = torch.ones(T, N, dtype=torch.bool)
    bad["dones"] = torch.zeros(T, N, dtype=torch.bool)
    return bad


def buffers_equal(a: BonusModule, b: BonusModule) -> list[str]:
    """Names of the saved tensors (statistics, tables, C^-1) that differ between a and b."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_a_nonfinite_batch_changes_nothing_that_clean_batches_score(expr):
    space = space_of(expr)
    clean1, clean2, clean3 = (rollout(space, seed) for seed in (1, 2, 3))
    exposed, fresh = build(expr), build(expr)

    torch.testing.assert_close(exposed.score(clean1), fresh.score(clean1), rtol=0, atol=0)
    rewards = exposed.score(poisoned(clean2))
    assert torch.equal(rewards, torch.zeros(T, N))
    for batch in (clean2, clean3):
        torch.testing.assert_close(exposed.score(batch), fresh.score(batch), rtol=0, atol=0)
    assert buffers_equal(exposed, fresh) == []
    with pytest.warns(RuntimeWarning, match=r"8 transitions had NaN or inf observations"):
        assert exposed.metrics()["nonfinite_skipped"] == T * N
    assert fresh.metrics()["nonfinite_skipped"] == 0


@pytest.mark.parametrize("expr", ["rnd", "e3b", "noveld", "count_e", "e3b*rnd"])
def test_a_partly_nonfinite_batch_scores_zero_there_and_stays_finite(expr):
    space = space_of(expr)
    batch = rollout(space, 5)
    batch["next_obs"] = batch["next_obs"].clone()
    batch["next_obs"][0, 0].view(-1)[0] = float("nan")  # transition (0, 0)
    batch["next_obs"][3, 1].view(-1)[-1] = float("inf")  # transition (3, 1)
    bonus = build(expr)
    rewards = bonus.score(batch)
    assert rewards[0, 0] == 0 and rewards[3, 1] == 0 and torch.isfinite(rewards).all()
    assert rewards[batch["valid"]].ne(0).sum() >= 1  # the clean transitions still earn
    assert all(torch.isfinite(v).all() for v in bonus.state_dict().values() if v.is_floating_point())
    assert torch.isfinite(bonus.score(rollout(space, 6))).all()
    with pytest.warns(RuntimeWarning):
        metrics = bonus.metrics()
    assert metrics["nonfinite_skipped"] == 2


def test_the_warning_is_given_once():
    bonus = build("count")
    bonus.score(poisoned(rollout(VECTOR, 1)))
    with pytest.warns(RuntimeWarning):
        bonus.metrics()
    bonus.score(poisoned(rollout(VECTOR, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        assert bonus.metrics()["nonfinite_skipped"] == 2 * T * N


def flat(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.flatten(0, 1) for key, value in batch.items()}


@pytest.mark.parametrize("expr", ["rnd", "e3b", "noveld"])
def test_losses_leave_out_nonfinite_transitions(expr):
    """The loss on a minibatch with NaN/inf rows equals the loss with those rows invalid (and zeroed)."""
    minibatch = flat(rollout(VECTOR, 7))
    bad = {key: value.clone() for key, value in minibatch.items()}
    bad["obs"][1, 0], bad["next_obs"][4, 2] = float("nan"), float("-inf")
    masked = {key: value.clone() for key, value in minibatch.items()}
    masked["obs"][1, 0], masked["next_obs"][4, 2] = 0.0, 0.0
    masked["valid"][[1, 4]] = False
    settings = BonusSettings(e3b_dim=8, update_proportion=1.0)
    context = BonusContext(num_envs=N, observation_space=VECTOR, action_space=ACTIONS)
    torch.manual_seed(0)
    module = build_bonus(expr, context, settings)
    torch.manual_seed(1)
    got = module.loss(bad)["loss"]
    torch.manual_seed(1)
    expected = module.loss(masked)["loss"]
    assert torch.isfinite(got) and torch.equal(got, expected)


@pytest.mark.parametrize("expr", ["rnd", "e3b", "noveld"])
def test_an_empty_minibatch_is_a_clear_error_and_an_empty_rollout_scores_nothing(expr):
    bonus = build(expr)
    empty = {
        "obs": torch.zeros(0, 3),
        "next_obs": torch.zeros(0, 3),
        "actions": torch.zeros(0, dtype=torch.long),
        "valid": torch.zeros(0, dtype=torch.bool),
        "dones": torch.zeros(0, dtype=torch.bool),
    }
    with pytest.raises(ValueError, match=r"the minibatch is empty \(valid has shape \(0,\)\)"):
        bonus.loss(empty)
    rollout_of_nothing = {key: value.view(0, N, *value.shape[1:]) for key, value in empty.items()}
    before = {k: v.clone() for k, v in bonus.state_dict().items()}
    assert bonus.score(rollout_of_nothing).shape == (0, N)
    assert all(torch.equal(before[k], v) for k, v in bonus.state_dict().items())
