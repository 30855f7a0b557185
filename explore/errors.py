"""Errors that name the bad value and what would be valid."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from types import ModuleType


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
