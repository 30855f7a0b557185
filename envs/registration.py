"""One registry for every suite: `make(env_id, num_envs)` and gymnasium ids under `Explore/`.

Each suite is an `EnvSuite`: it lists its ids (which may need an optional dependency) and
builds a `VecEnv`. Ids are accepted bare ('MontezumaRevenge-v5') or namespaced
('Explore/MontezumaRevenge-v5').
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from envs.core import VecEnv
from envs.metrics import DistinctIds
from explore.errors import MissingDependencyError, UnknownEnvError

NAMESPACE = "Explore"


@dataclass(frozen=True)
class EnvSuite:
    """A family of environments. Each suite module (see SUITE_MODULES) exposes `suite() -> EnvSuite`."""

    name: str
    extra: str  # the pip extra that installs the suite's dependencies
    id_pattern: re.Pattern[str]  # recognizes the suite's ids without importing its dependencies
    list_ids: Callable[[], list[str]]
    make_vec: Callable[..., VecEnv]
    make_single: Callable[..., gym.Env]
    # env settings a training config carries for this suite, e.g. Atari's sticky actions
    config_kwargs: Callable[[Any], dict[str, Any]] = lambda config: {}
    # the suite's exploration measures of an env id, read from step infos (envs.metrics), which a
    # trainer logs as exploration/<name>: (env_id, device) -> measures
    info_metrics: Callable[[str, Any], list[DistinctIds]] = lambda env_id, device: []
    # what its observations are (`explore.obs.OBSERVATION_KINDS`), so that validation can tell, before
    # any env starts, whether a bonus can read them; None: not checked
    observation_kind: str | None = None


def kwargs_from_fields(fields: dict[str, str]) -> Callable[[Any], dict[str, Any]]:
    """A `config_kwargs` that reads the settings a suite declares: {make() kwarg: the training
    config's field that sets it}. A field the config lacks, or sets to None, keeps the suite's default."""

    def config_kwargs(config: Any) -> dict[str, Any]:
        values = {kwarg: getattr(config, field, None) for kwarg, field in fields.items()}
        return {kwarg: value for kwarg, value in values.items() if value is not None}

    return config_kwargs


# Suites in lookup order; each module exposes `suite()` and imports its dependencies lazily.
SUITE_MODULES: tuple[str, ...] = (
    "envs.atari",
    "envs.minigrid",
    "envs.minihack",
    "envs.bandits",
    "envs.deepsea",
    "envs.text",
)
SUITES: list[EnvSuite] = [importlib.import_module(name).suite() for name in SUITE_MODULES]


def strip_namespace(env_id: str) -> str:
    prefix = NAMESPACE + "/"
    return env_id[len(prefix) :] if env_id.startswith(prefix) else env_id


def available_ids() -> dict[str, list[str]]:
    """Ids per suite whose dependencies are installed (suites without them are left out)."""
    ids = {}
    for suite in SUITES:
        try:
            ids[suite.name] = suite.list_ids()
        except MissingDependencyError:
            continue
    return ids


def find_suite(env_id: str) -> EnvSuite:
    """The suite that owns `env_id`; raises UnknownEnvError or MissingDependencyError."""
    bare = strip_namespace(env_id)
    known: list[str] = []
    for suite in SUITES:
        try:
            ids = suite.list_ids()
        except MissingDependencyError as exc:
            if suite.id_pattern.match(bare):
                raise MissingDependencyError(
                    f"env id {env_id!r} looks like a {suite.name} id. {exc}"
                ) from exc
            continue
        if bare in ids:
            return suite
        known += ids
    raise UnknownEnvError(env_id, known)


def make(env_id: str, num_envs: int = 1, seed: int = 0, **kwargs: Any) -> VecEnv:
    """Build `num_envs` copies of `env_id` behind the VecEnv protocol."""
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    suite = find_suite(env_id)
    return suite.make_vec(strip_namespace(env_id), num_envs=num_envs, seed=seed, **kwargs)


def register_gymnasium_ids() -> list[str]:
    """Register every installed id as `Explore/<id>` for gymnasium.make and gymnasium.make_vec."""
    registered = []
    for suite in SUITES:
        try:
            ids = suite.list_ids()
        except MissingDependencyError:
            continue
        for bare in ids:
            full = f"{NAMESPACE}/{bare}"
            if full not in gym.registry:
                gym.register(
                    id=full,
                    entry_point=suite.make_single,
                    vector_entry_point=suite.make_vec,
                    kwargs={"env_id": bare},
                    disable_env_checker=True,
                )
            registered.append(full)
    return registered
