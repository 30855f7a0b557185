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
