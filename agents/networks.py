"""The pixel policy: the Nature-CNN torso (`explore.networks.frame_torso`) with two value heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from explore.networks import frame_torso, layer_init, nature_cnn  # noqa: F401 (re-exported)


class TwoHeadPolicy(nn.Module):
    """RND's policy: Nature CNN, two dense layers, a policy head and extrinsic/intrinsic value heads.

    Takes uint8 frames (B, C, 84, 84) and scales them to [0, 1] itself (the RND observation
    normalization is for the RND networks only).
    """

    def __init__(self, in_channels: int, num_actions: int, hidden: int = 448):
        super().__init__()
        self.torso = frame_torso(in_channels, hidden)
        self.policy_head = nn.Sequential(
            layer_init(nn.Linear(hidden, hidden), std=0.01),
            nn.ReLU(),
            layer_init(nn.Linear(hidden, num_actions), std=0.01),
        )
        self.value_torso = nn.Sequential(layer_init(nn.Linear(hidden, hidden), std=0.1), nn.ReLU())
        self.value_ext = layer_init(nn.Linear(hidden, 1), std=0.01)
        self.value_int = layer_init(nn.Linear(hidden, 1), std=0.01)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (logits (B, A), v_ext (B,), v_int (B,))."""
        if obs.device.type == "cpu" and obs.dim() == 4:
            # oneDNN's NHWC convolutions: on the CPU the 4-channel first layer trains ~2x faster than
            # NCHW (same values up to rounding); converting the uint8 frames is the cheap place to do it
            obs = obs.contiguous(memory_format=torch.channels_last)
        hidden = self.torso(obs.div(255.0))  # one pass uint8 -> float32 [0, 1], equal to obs.float() / 255
        value_features = hidden + self.value_torso(hidden)  # residual, as in the reference policy
        return (
            self.policy_head(hidden),
            self.value_ext(value_features).squeeze(-1),
            self.value_int(value_features).squeeze(-1),
        )
