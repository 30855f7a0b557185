"""The CPU speed paths of the pixel trainer compute what the plain computation does (issue 16).

Each fast path is checked against an independent computation: oneDNN's NHWC convolutions against
torch's native NCHW convolutions (oneDNN switched off), on the values AND the gradients a PPO
update takes from them.
"""

from __future__ import annotations

import copy

import pytest
import torch

from agents.networks import TwoHeadPolicy


def native_nchw(module: torch.nn.Module, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The module's outputs with oneDNN off: torch's own NCHW convolution kernels, frames / 255 in float."""
    with torch.backends.mkldnn.flags(enabled=False):
        return module(frames.float().contiguous())


@pytest.mark.filterwarnings("ignore:TF32 acceleration")  # torch.backends.mkldnn.flags says it
def test_the_policy_on_cpu_frames_gives_the_nchw_values_and_gradients():
    torch.manual_seed(0)
    policy = TwoHeadPolicy(4, 18)
    reference = copy.deepcopy(policy)
    frames = torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8)
    outputs = policy(frames)
    expected = native_nchw(reference, frames)
    for ours, theirs in zip(outputs, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    weights = torch.randn(18), torch.randn(()), torch.randn(())
    sum(((o * w).sum() for o, w in zip(outputs, weights, strict=True)), torch.zeros(())).backward()
    sum(((o * w).sum() for o, w in zip(expected, weights, strict=True)), torch.zeros(())).backward()
    for (name, ours), theirs in zip(policy.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-6, msg=name)


def one_update(cpu_bf16: bool) -> tuple[dict[str, float], torch.Tensor]:
    """One PPO update (2 minibatches) of the Atari policy and RND from seed 0 on random frames:
    its mean losses and the policy's first-layer weights after it."""
    import dataclasses

    import agents.ppo as ppo
    from explore.rnd import RND

    torch.manual_seed(0)
    config = dataclasses.replace(
        ppo.Config(), num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, cpu_bf16=cpu_bf16
    )
    agent, bonus = TwoHeadPolicy(4, 18), RND(2)
    optimizer = ppo.make_optimizer(
        list(agent.parameters()) + list(bonus.predictor.parameters()), 1e-3, torch.device("cpu")
    )
    size = config.batch_size
    frames = torch.randint(0, 256, (size, 4, 84, 84), dtype=torch.uint8)
    flat = {
        "obs": frames,
        "next_obs": frames.roll(1, 0),
        "actions": torch.randint(0, 18, (size,)),
        "logprobs": torch.full((size,), -2.9),
        "valid": torch.ones(size, dtype=torch.bool),
        "starts": torch.zeros(size, dtype=torch.bool),
        "advantages": torch.randn(size),
        "ret_ext": torch.randn(size),
        "ret_int": torch.randn(size),
    }
    stats = ppo.ppo_update(agent, bonus, optimizer, flat, config)
    return stats, agent.torso[0][0].weight.detach().clone()


def test_cpu_bf16_is_off_by_default_and_its_update_is_the_float32_one_to_bf16_precision():
    import agents.ppo as ppo

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not ppo.uses_autocast(ppo.Config(), cpu) and ppo.uses_autocast(ppo.Config(cpu_bf16=True), cpu)
    assert ppo.uses_autocast(ppo.Config(), cuda) and not ppo.uses_autocast(ppo.Config(amp=False), cuda)
    fp32_stats, fp32_weight = one_update(cpu_bf16=False)
    bf16_stats, bf16_weight = one_update(cpu_bf16=True)
    assert not torch.equal(bf16_weight, fp32_weight)  # bf16 did run: other rounding, other weights
    for name in ("value_loss", "entropy", "bonus_loss"):  # bf16 keeps ~3 significant digits
        assert abs(bf16_stats[name] - fp32_stats[name]) <= 2e-2 * abs(fp32_stats[name]), name


@pytest.mark.filterwarnings("ignore:TF32 acceleration")
def test_rnd_prediction_error_on_cpu_frames_gives_the_nchw_values_and_gradients():
    from explore.rnd import RND

    torch.manual_seed(0)
    rnd = RND(num_envs=1)
    rnd.obs_rms.update(torch.randint(0, 256, (64, 1, 84, 84)).float())
    frames = torch.randint(0, 256, (32, 1, 84, 84), dtype=torch.uint8)
    errors = rnd.prediction_error(frames)
    reference = copy.deepcopy(rnd)
    with torch.backends.mkldnn.flags(enabled=False):
        x = reference.normalize_obs(frames).contiguous()
        expected = (reference.predictor(x) - reference.target(x)).pow(2).mean(-1)
    torch.testing.assert_close(errors, expected, rtol=1e-5, atol=1e-6)
    errors.sum().backward()
    expected.sum().backward()
    for (name, ours), theirs in zip(
        rnd.predictor.named_parameters(), reference.predictor.parameters(), strict=True
    ):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-4, atol=1e-5, msg=name)
