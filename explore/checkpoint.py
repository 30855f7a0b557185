"""Run directories and atomic checkpoints: a kill at any moment leaves a loadable checkpoint.

Under torchrun only rank 0 calls the writers (the state they save is identical on every rank;
see docs/distributed.md), and rank 0 alone reads a checkpoint to resume, then broadcasts it, so
two ranks never write or race on the same file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"

C = TypeVar("C")


class PerEnvState(nn.Module):
    """A module whose listed buffers hold one row per env (episodic memory, running returns).

    Resuming with a different --num-envs cannot map old envs to new ones: saved rows whose shape no
    longer fits are dropped and `reset_per_env_state()` starts every env afresh, as at the start
    of training. Everything else in the state dict loads as usual.
    """

    per_env_buffers: tuple[str, ...] = ()

    def reset_per_env_state(self) -> None:
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        resized = [
            prefix + name
            for name in self.per_env_buffers
            if prefix + name in state_dict and state_dict[prefix + name].shape != getattr(self, name).shape
        ]
        if resized:
            state_dict = {k: v for k, v in state_dict.items() if k not in resized}
            self.reset_per_env_state()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        missing = args[2] if len(args) > 2 else kwargs.get("missing_keys")
        for key in resized:  # dropped on purpose: not missing
            if missing is not None and key in missing:
                missing.remove(key)


def atomic_write_bytes(path: Path, write) -> None:
    """Write through a temp file in the same folder, fsync it, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    path = Path(run_dir) / CHECKPOINT_NAME
    atomic_write_bytes(path, lambda f: torch.save(state, f))
    return path


def load_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: the run in {run_dir} has not saved one yet")
    return torch.load(path, map_location=map_location, weights_only=False)


def save_config(run_dir: Path, config: Any) -> Path:
    path = Path(run_dir) / CONFIG_NAME
    text = json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))
    return path


def load_config(run_dir: Path, config_type: type[C]) -> C:
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"--resume {run_dir}: no {CONFIG_NAME} there; is it a run directory written by explore?"
        )
    saved = json.loads(path.read_text())
    known = {f.name for f in dataclasses.fields(config_type)}
    return config_type(**{k: v for k, v in saved.items() if k in known})
