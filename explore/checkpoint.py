"""Run directories and atomic checkpoints: a kill at any moment leaves a loadable checkpoint.

- Every write goes through a temp file renamed over the target; temp files a kill left behind are
  removed when a run starts or resumes.
- The last two checkpoints are kept (checkpoint.pt, checkpoint.prev.pt): when the newest cannot be
  read, resuming falls back to the previous one and warns. A corrupt file raises CheckpointError
  naming it and what to do; a full disk raises DiskFullError naming the checkpoint that is still good.
- `resolve_resume` turns a config with `resume` into the config the resumed run runs.

Under torchrun only rank 0 calls the writers (the state they save is identical on every rank;
see docs/distributed.md), and rank 0 alone reads a checkpoint to resume, then broadcasts it, so
two ranks never write or race on the same file (`Checkpointer`).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import torch
from torch import nn

from explore.distributed import DistContext
from explore.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_CHECKPOINT_NAME = "checkpoint.prev.pt"  # the one before, kept as a fallback
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


def atomic_write_bytes(
    path: Path, write: Callable[[IO[bytes]], Any], keep_previous: Path | None = None
) -> None:
    """Write through a temp file in the same folder, fsync it, then rename over `path` (after
    keeping the old `path` as `keep_previous`, when given: `path` exists at every moment once
    written). A full disk raises DiskFullError and leaves the old file in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.is_file():
            _copy_atomically(path, keep_previous)  # `path` itself stays in place until the rename below
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"the disk holding {path.parent} is full: {path.name} was not written"
            ) from exc
        raise


def _copy_atomically(source: Path, target: Path) -> None:
    """target = source's bytes, through a hard link (no copy) or, where links fail, a copy; then a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class DiskFullError(CheckpointError):
    """No space left while writing a run's file; the previous version of the file is intact."""


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temp files that a save killed midway left in `run_dir`; returns them.

    Only this module's own temp names are touched (`.checkpoint.pt.*.tmp`, `.config.json.*.tmp`, ...):
    under torchrun rank 0 alone writes them, so none of them can belong to a save in progress."""
    stale = [
        p
        for name in (CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME, CONFIG_NAME)
        for p in Path(run_dir).glob(f".{name}.*.tmp")
    ]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write checkpoint.pt atomically; the checkpoint it replaces becomes checkpoint.prev.pt (the
    fallback when the newest one cannot be read)."""
    path = Path(run_dir) / CHECKPOINT_NAME
    try:
        atomic_write_bytes(
            path, lambda f: torch.save(state, f), keep_previous=path.with_name(PREVIOUS_CHECKPOINT_NAME)
        )
    except DiskFullError as exc:
        good = [p for p in (path, path.with_name(PREVIOUS_CHECKPOINT_NAME)) if p.is_file()]
        still_good = (
            f"the last checkpoint saved, {good[0]}, is intact: free some space, then resume with "
            f"--resume {run_dir}"
            if good
            else "no checkpoint of this run was saved before: free some space and start again"
        )
        raise DiskFullError(f"{exc} (step {state.get('global_step')}); {still_good}") from exc.__cause__
    return path


def _read_checkpoint(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ... on bad bytes
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise CheckpointError(f"{path} is not a readable checkpoint ({reason})") from exc
    if not isinstance(state, dict) or not {"global_step", "update"} <= set(state):
        raise CheckpointError(f"{path} is not a checkpoint written by explore (no global_step and update)")
    return state


def load_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The newest readable checkpoint of `run_dir`: checkpoint.pt, else (with a warning naming
    the reason) checkpoint.prev.pt. FileNotFoundError when the run saved none; CheckpointError,
    naming each file and what to do, when every one there is corrupt."""
    run_dir = Path(run_dir)
    newest, previous = run_dir / CHECKPOINT_NAME, run_dir / PREVIOUS_CHECKPOINT_NAME
    if not newest.is_file() and not previous.is_file():
        raise FileNotFoundError(f"no checkpoint at {newest}: the run in {run_dir} has not saved one yet")
    problems = []
    for path in (newest, previous):
        if not path.is_file():
            problems.append(f"{path} is missing (a save was interrupted)")
            continue
        try:
            state = _read_checkpoint(path, map_location)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        if path == previous:
            warnings.warn(
                f"{problems[0]}; resuming from the previous checkpoint {path} (step {state['global_step']})",
                stacklevel=2,
            )
        return state
    raise CheckpointError(
        f"no readable checkpoint in {run_dir}: {'; '.join(problems)}. The files are damaged (a copy cut "
        f"short, a full disk, another program's file?): restore them from a backup, or start a new run "
        f"with another --run-dir"
    )


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


# --- resuming ------------------------------------------------------------------------------------------

_RESOLVED = "_resume_resolved"  # marks a config resolve_resume returned: resolving it again changes nothing


def given_fields(argv: Sequence[str], config_type: type) -> set[str]:
    """The config fields named on a command line: `--num-envs 4`, `--num_envs=4`, `--no-progress`."""
    names = {f.name for f in dataclasses.fields(config_type)}
    given = set()
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name not in names and name.startswith("no_"):
            name = name[3:]
        if name in names:
            given.add(name)
    return given


def resolve_resume(config: C, given: Iterable[str] | None = None) -> C:
    """The config a run resumed from `config.resume` runs: the run's saved config.json, with the
    fields the user gave taken from `config` (every trainer, the CLI and library calls use this).

    `given`: the names of the fields the user set (a command line's flags: `given_fields`). None
    (a library call such as `train(Config(resume=d, total_timesteps=...))`) takes the fields that
    differ from the dataclass's defaults: a plain Config cannot tell a default passed on purpose, so
    to set a field back to its default pass `given`. A config without `resume` is returned as is.
    """
    if getattr(config, "resume", None) is None or getattr(config, _RESOLVED, False):
        return config
    run_dir = config.resume
    saved = load_config(run_dir, type(config))
    if given is None:
        given = [f.name for f in dataclasses.fields(config) if getattr(config, f.name) != _default(f)]
    overrides = {name: getattr(config, name) for name in given if name not in ("resume", "run_dir")}
    resolved = dataclasses.replace(saved, **overrides, resume=str(run_dir), run_dir=str(run_dir))
    object.__setattr__(resolved, _RESOLVED, True)  # not a field: asdict, replace and == ignore it
    return resolved


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


# --- the checkpoints of a run under torchrun -------------------------------------------------------------


class Checkpointer:
    """Saves and loads a run's checkpoints, hiding the ranks: rank 0 writes each checkpoint (the
    weights, optimizer and bonus statistics are identical on every rank) with every rank's RNG
    states; to resume, rank 0 reads it and broadcasts it (no shared file system needed), and every
    rank raises the same error when it cannot. Without torchrun every collective is the identity.

    `before_save` runs first on rank 0 (the trainer flushes its logs: what a checkpoint claims to
    have logged is on disk when the checkpoint is). Starting removes the temp files that saves
    killed midway left behind.
    """

    def __init__(
        self, run_dir: Path, dist: DistContext | None = None, before_save: Callable[[], None] | None = None
    ):
        self.run_dir = Path(run_dir)
        self.dist = dist if dist is not None else DistContext()
        self.before_save = before_save
        if self.dist.is_main:
            remove_stale_temp_files(self.run_dir)

    def load(self, map_location: str | torch.device) -> dict[str, Any]:
        if not self.dist.active:
            return load_checkpoint(self.run_dir, map_location=map_location)
        loaded: Any = None
        if self.dist.is_main:
            try:
                loaded = load_checkpoint(self.run_dir, map_location="cpu")
            except (FileNotFoundError, CheckpointError) as exc:
                loaded = exc
        loaded = self.dist.broadcast_object(loaded)
        if isinstance(loaded, Exception):
            raise type(loaded)(str(loaded))
        return loaded

    def save(self, state: dict[str, Any]) -> None:
        """Every rank calls this (it gathers the RNG states); rank 0 writes `state` with them."""
        rank_rng = self.dist.all_gather_object(
            (torch.get_rng_state(), np.random.get_state(), random.getstate())
        )
        if not self.dist.is_main:
            return
        if self.before_save is not None:
            self.before_save()
        torch_rng, numpy_rng, python_rng = rank_rng[0]
        save_checkpoint(
            self.run_dir,
            {
                **state,
                "torch_rng": torch_rng,
                "numpy_rng": numpy_rng,
                "python_rng": python_rng,
                "world_size": self.dist.world_size,
                "rank_rng": rank_rng,
            },
        )

    def restore_rng(self, resumed: dict[str, Any]) -> None:
        """This rank's RNG states as saved; a rank the saving run did not have keeps its fresh seed."""
        rank_rng = resumed.get("rank_rng") or [
            (resumed["torch_rng"], resumed["numpy_rng"], resumed.get("python_rng"))
        ]
        if self.dist.rank >= len(rank_rng):
            return
        states = rank_rng[self.dist.rank]
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        if len(states) > 2 and states[2] is not None:  # checkpoints before python_rng lack it
            random.setstate(states[2])
