"""The `--device` flag of every trainer."""

from __future__ import annotations

import torch

from explore.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N' -> a torch.device; ConfigError otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r} is invalid: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r} is invalid: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name!r}: CUDA is not available on this machine; use --device cpu")
    return device
