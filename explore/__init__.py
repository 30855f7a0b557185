"""explore: exploration in reinforcement learning.

The front door: `import explore` gives the public API, loaded lazily so that optional suites are
imported only when used, and registers every installed env id with gymnasium under `Explore/`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # training
    "Config": "agents.ppo",
    "PRESETS": "agents.ppo",
    "train": "agents.ppo",
    "validate": "agents.ppo",
    # environments
    "make": "envs",
    "VecEnv": "envs",
    "available_ids": "envs",
    # bonuses and credit
    "BonusModule": "explore.bonus",
    "RND": "explore.rnd",
    "generalized_advantages": "explore.credit",
    "rollout_advantages": "explore.credit",
    "RunningMeanStd": "explore.normalize",
    "DiscountedReturnFilter": "explore.normalize",
    # networks
    "TwoHeadPolicy": "agents.networks",
    # errors
    "ConfigError": "explore.errors",
    "UnknownEnvError": "explore.errors",
    "MissingDependencyError": "explore.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'explore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


def _register_gymnasium_ids() -> None:
    """gymnasium's convention (`gymnasium.register_envs(explore)`, `gymnasium.make("explore:Explore/...")`):
    importing the package registers its env ids under `Explore/`. `import envs` registers them at its
    end; when envs is what is importing this package, that registration is still to come."""
    import sys

    if "envs" not in sys.modules:
        importlib.import_module("envs")


_register_gymnasium_ids()
