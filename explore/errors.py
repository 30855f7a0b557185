"""Errors that name the bad value and what would be valid."""

from __future__ import annotations

import dataclasses
import difflib
import errno
import importlib
import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

# envpool takes int32 seeds, and numpy's legacy seeding [0, 2**32): a seed must fit both
MAX_SEED = 2**31 - 1


class ConfigError(ValueError):
    """An invalid configuration value, raised before any environment starts."""


class UnknownEnvError(ConfigError, KeyError):
    """An environment id that no suite registers."""

    def __init__(self, env_id: str, known: Iterable[str]):
        self.env_id = env_id
        self.suggestions = close_matches(env_id, known)
        hint = f" Did you mean: {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown env id {env_id!r}.{hint} Run `explore list-envs` for every registered id.")

    def __str__(self) -> str:  # KeyError would otherwise print the message with quotes around it
        return self.args[0]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written (corrupt file, full disk); says which file and what to do."""


class MissingDependencyError(ImportError):
    """An optional dependency that is not installed; names the extra that provides it."""


def close_matches(value: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    by_lower = {c.lower(): c for c in candidates}
    return [by_lower[m] for m in difflib.get_close_matches(value.lower(), list(by_lower), n=n, cutoff=0.6)]


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{purpose} needs the optional dependency {module!r}, which is not installed. "
            f"Install it with: pip install 'explore-rl[{extra}]'"
        ) from exc


def check_seed(seed: object, span: int = 1, flag: str = "--seed") -> None:
    """Raise ConfigError unless seed .. seed + span - 1 (the seeds a run derives, e.g. one per env) are
    all valid seeds: integers in [0, 2**31 - 1]."""
    high = MAX_SEED - (span - 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= high:
        derived = f" (it derives {span} seeds from it, seed .. seed + {span - 1})" if span > 1 else ""
        raise ConfigError(f"{flag} {seed!r} is invalid: it must be an integer in [0, {high}]{derived}")


def check_writable_dir(path: str | os.PathLike[str], flag: str = "--run-dir") -> None:
    """Raise ConfigError unless directory `path` exists and can be written, or can be created.

    Nothing is left behind: the nearest existing ancestor is probed by creating and removing one empty
    temporary directory in it, which meets every obstacle the real mkdir would (permissions, ACLs, a
    read-only file system, a full disk), even for root, for whom os.access says yes to everything.
    """
    target = Path(path)
    ancestor = next((p for p in (target, *target.parents) if p.exists()), Path("."))
    if not ancestor.is_dir():
        what = "is a file" if ancestor == target else f"cannot be created: {ancestor} is a file"
        raise ConfigError(f"{flag} {str(path)!r} {what}; choose a directory path")
    try:
        probe = tempfile.mkdtemp(prefix=".explore-write-check-", dir=ancestor)
    except OSError as exc:
        reasons = {
            errno.EROFS: "the file system is read-only",
            errno.EACCES: "permission denied",
            errno.EPERM: "permission denied",
            errno.ENOSPC: "the disk is full",
            errno.EDQUOT: "the disk quota is exceeded",
        }
        reason = reasons.get(exc.errno or 0, exc.strerror or str(exc))
        where = "" if ancestor == target else f" (in {ancestor}, where it would be created)"
        raise ConfigError(
            f"{flag} {str(path)!r} cannot be written: {reason}{where}; choose a writable directory"
        ) from None
    os.rmdir(probe)


def check_finite_floats(config: Any) -> None:
    """Raise ConfigError naming the first float field of the dataclass `config` that is nan or infinite.

    Called before the range checks: nan passes every comparison (`nan < 0` and `nan >= 0` are both
    False), so a range check alone lets it through to poison a run.
    """
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            flag = "--" + field.name.replace("_", "-")
            raise ConfigError(f"{flag} {value!r} is invalid: it must be a finite number")
