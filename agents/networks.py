"""Networks for pixel observations: the Nature-CNN policy with two value heads and RND's networks."""

from __future__ import annotations

import math

from torch import Tensor, nn


def layer_init(layer: nn.Module, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Module:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def nature_cnn(in_channels: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """The DQN Nature torso: 84x84 input -> 64 x 7 x 7 = 3136 features."""
    return nn.Sequential(
        layer_init(nn.Conv2d(in_channels, 32, 8, stride=4)),
        activation(),
        layer_init(nn.Conv2d(32, 64, 4, stride=2)),
        activation(),
        layer_init(nn.Conv2d(64, 64, 3, stride=1)),
        activation(),
        nn.Flatten(),
    )


class TwoHeadPolicy(nn.Module):
    """RND's policy: Nature CNN, two dense layers, a policy head and extrinsic/intrinsic value heads.

    Takes uint8 frames (B, C, 84, 84) and scales them to [0, 1] itself (the RND observation
    normalization is for the RND networks only).
    """

    def __init__(self, in_channels: int, num_actions: int, hidden: int = 448):
        super().__init__()
        self.torso = nn.Sequential(
            nature_cnn(in_channels),
            layer_init(nn.Linear(64 * 7 * 7, 256)),
            nn.ReLU(),
            layer_init(nn.Linear(256, hidden)),
            nn.ReLU(),
        )
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
        hidden = self.torso(obs.float() / 255.0)
        value_features = hidden + self.value_torso(hidden)  # residual, as in the reference policy
        return (
            self.policy_head(hidden),
            self.value_ext(value_features).squeeze(-1),
            self.value_int(value_features).squeeze(-1),
        )


class RNDTarget(nn.Module):
    """The fixed random network whose features the predictor learns to reproduce."""

    def __init__(self, in_channels: int = 1, out_features: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nature_cnn(in_channels, nn.LeakyReLU), layer_init(nn.Linear(64 * 7 * 7, out_features))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class RNDPredictor(nn.Module):
    """The trained predictor: the same torso with a deeper head."""

    def __init__(self, in_channels: int = 1, out_features: int = 512):
        super().__init__()
        self.net = nn.Sequential(
            nature_cnn(in_channels, nn.LeakyReLU),
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.ReLU(),
            layer_init(nn.Linear(512, 512)),
            nn.ReLU(),
            layer_init(nn.Linear(512, out_features)),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
