"""The interface every intrinsic-bonus module implements, and the registry of named bonuses.

A rollout batch is a dict of tensors with leading dims (T, N):
  "obs"       observation at t            (T, N, *obs_shape)
  "next_obs"  observation after the step  (T, N, *obs_shape); under NEXT_STEP this is the true
              final observation at a done
  "actions"   (T, N)
  "valid"     (T, N) bool, False on the autoreset dummy step
  "dones"     (T, N) bool, terminated | truncated
A minibatch has the same keys with one flat leading dim.

Text games (the text trainer; observation kind "text"): "obs"/"next_obs" are (T, N, 1) int64 keys of
the observation strings (`explore.obs.text_keys`), so that bonuses hashing observations count
distinct strings, and the batch also holds the strings, "obs_text"/"next_obs_text": lists of T * N
str, time-major; it has no "actions" (a command is text). Only bonuses whose config's `observation_problem` accepts kind "text" get them.

The trainer owns optimizers, gradient clipping and mixed precision; a bonus only says what its
loss is. Statistics are buffers, so `state_dict()` saves and restores them.

Adding a bonus takes one file and one line. The file holds the module, its networks, a config
dataclass (a `BonusConfig` whose fields, with docstrings, become CLI flags) and a builder
registered with a decorator:

    @dataclass
    class MyConfig(BonusConfig):
        my_scale: float = 1.0
        \"\"\"what --my-scale does\"\"\"

    @register_bonus("mine", MyConfig, kind="global")
    def build_mine(context: BonusContext, config: MyConfig) -> BonusModule:
        return MyBonus(context.num_envs, config.my_scale)

The line adds `MyConfig` to the bases of `explore.combine.BonusSettings` (importing the file
registers the bonus, and the trainer's Config inherits the flags). A bonus without
hyperparameters registers with `config=None` and needs only to be imported there.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import torch
from torch import Tensor, nn

from explore.errors import ConfigError
from explore.obs import ObservationKind

Batch = dict[str, Tensor]
Kind = Literal["episodic", "global", "combined"]


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of `x` over the entries where `mask` is set (0 when none is), with no host sync."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


# --- non-finite inputs ----------------------------------------------------------------------------


def _finite_rows(value: Tensor, leading: int) -> Tensor | None:
    """(lead) bool: rows of `value` whose entries are all finite; None for integer tensors (always finite)."""
    if not value.is_floating_point():
        return None
    finite = torch.isfinite(value)
    return finite.flatten(leading).all(-1) if value.dim() > leading else finite


def drop_nonfinite(batch: Batch) -> tuple[Batch, Tensor | None]:
    """`batch` with every transition whose obs or next_obs holds a NaN or inf marked invalid.

    The bad values are replaced by 0 as well, so that networks and running statistics, which weight
    rows by `valid`, see nothing non-finite (NaN * 0 is NaN). Returns (batch, skipped mask or None
    when nothing can be non-finite). Integer observations (Atari frames, MiniGrid, MiniHack) cost
    nothing: only floating-point entries are checked.
    """
    valid = batch["valid"]
    leading = valid.dim()
    finite: Tensor | None = None
    for key in ("obs", "next_obs"):
        obs = batch.get(key)
        values = obs.values() if isinstance(obs, dict) else [] if obs is None else [obs]
        for value in values:
            rows = _finite_rows(value, leading)
            if rows is not None:
                finite = rows if finite is None else finite & rows
    if finite is None:
        return batch, None
    cleaned = dict(batch)
    for key in ("obs", "next_obs"):
        if key in batch:
            cleaned[key] = _zero_nonfinite(batch[key])
    skipped = valid.bool() & ~finite
    cleaned["valid"] = valid & finite
    return cleaned, skipped


def loss_minibatch(minibatch: Batch, name: str) -> Batch:
    """What a bonus's `loss` trains on: `minibatch` without its non-finite transitions (see `drop_nonfinite`).

    Raises ValueError, naming the bonus, on an empty minibatch: a mean over no transition is undefined.
    """
    if minibatch["valid"].numel() == 0:
        raise ValueError(
            f"bonus {name!r}: the minibatch is empty (valid has shape {tuple(minibatch['valid'].shape)}); "
            "a loss needs at least one transition"
        )
    return drop_nonfinite(minibatch)[0]


def _zero_nonfinite(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {key: _zero_nonfinite(value) for key, value in obs.items()}
    return torch.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0) if obs.is_floating_point() else obs


# --- the module interface -------------------------------------------------------------------------


class BonusModule(nn.Module):
    """Base class: `bonus` scores a rollout, `loss` trains on a minibatch, `reset` clears episodic state.

    Callers score through `score(batch)`, the boundary that keeps non-finite observations out of
    every statistic (see `drop_nonfinite`); a bonus implements `bonus(batch)` and may assume
    finite inputs there.
    """

    name: str = "bonus"
    kind: Kind = "global"  # "episodic" (state cleared at episode end), "global" (all of training), "combined"

    def reset(self, done: Tensor) -> None:
        """Mark envs whose episode was cut outside a batch (e.g. envs restarted on resume), `done` (N,) bool.

        Within a rollout, `bonus(batch)` reads episode ends from batch["dones"] itself, so the trainer
        does not call this per step. Global bonuses keep nothing per episode.
        """

    def warmup(
        self, envs: Any, num_steps: int, device: torch.device | str = "cpu", seed: int = 0, **kwargs: Any
    ) -> None:
        """Initialize statistics from a uniformly random agent (`num_steps` steps of `envs`); default none.

        Bonuses that normalize their inputs (RND, NovelD) override this; it may leave the envs mid-episode.
        """

    @torch.no_grad()
    def score(self, batch: Batch) -> Tensor:
        """The intrinsic reward of each transition, (T, N): `bonus(batch)` without non-finite inputs.

        A transition whose obs or next_obs holds a NaN or inf earns 0 and enters no statistic; the
        count of such transitions is `metrics()["nonfinite_skipped"]`, and the first one warns.
        """
        valid = batch["valid"]
        if valid.numel() == 0:  # an empty rollout: nothing to score, no statistic changes
            return torch.zeros(valid.shape, device=valid.device)
        clean, skipped = drop_nonfinite(batch)
        count = torch.zeros((), dtype=torch.long, device=valid.device) if skipped is None else skipped.sum()
        previous = getattr(self, "_nonfinite", None)
        self._nonfinite = count if previous is None else previous + count  # read in metrics(): no sync here
        return self.bonus(clean)

    @torch.no_grad()
    def bonus(self, batch: Batch) -> Tensor:
        """The intrinsic reward of each transition, (T, N), 0 where `valid` is False."""
        raise NotImplementedError

    def loss(self, minibatch: Batch) -> dict[str, Tensor]:
        """{"loss": scalar to minimize, other entries are logged}. Bonuses with nothing to learn return {}."""
        return {}

    def part_means(self) -> dict[str, Tensor]:
        """The mean bonus of the last rollout per kind ("episodic", "global"), as device tensors.

        Empty for a bonus of one kind, `self.kind`: its part is its whole mean reward. Composites
        split theirs by their factors' kinds.
        """
        return {}

    def parts(self) -> dict[str, float]:
        """`part_means()` read to the host, for charts/bonus_<kind> (empty: the bonus is all `self.kind`)."""
        return {k: float(v) for k, v in self.part_means().items()}

    def metrics(self) -> dict[str, float]:
        """Scalars to log once per update (read outside the rollout loop); subclasses extend this dict.

        Holds "nonfinite_skipped" (transitions left out for NaN/inf observations, since the start)
        once `score` has been called.
        """
        count = getattr(self, "_nonfinite", None)
        if count is None:
            return {}
        skipped = float(count)
        if skipped and not getattr(self, "_warned_nonfinite", False):
            self._warned_nonfinite = True
            warnings.warn(
                f"bonus {self.name!r}: {skipped:.0f} transitions had NaN or inf observations; they earn "
                f"bonus 0 and are left out of its statistics (logged as {self.name}/nonfinite_skipped)",
                RuntimeWarning,
                stacklevel=2,
            )
        return {"nonfinite_skipped": skipped}


# --- configuration and registry -------------------------------------------------------------------


def invalid_flag(name: str, value: Any, valid: str) -> ConfigError:
    """ConfigError "--<name> <value> is invalid: <valid>", naming the CLI flag of config field `name`."""
    return ConfigError(f"--{name.replace('_', '-')} {value!r} is invalid: {valid}")


@dataclass
class BonusConfig:
    """Base of every bonus's hyperparameters. Fields are flat CLI flags of the trainer's Config."""

    def validate_bonus_settings(self) -> None:
        """Raise ConfigError naming a bad flag. Overrides call `super().validate_bonus_settings()`."""

    def observation_problem(self, kind: ObservationKind) -> str | None:
        """Why the bonus cannot read observations of `kind` with these settings (None: it can)."""
        if kind.name == "text":
            return "it reads tensor observations, and text games give strings"
        return None


@dataclass
class BonusContext:
    """What the env and the trainer give a bonus builder: env count, spaces, device, intrinsic discount."""

    num_envs: int
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None
    device: torch.device | str = "cpu"
    gamma_int: float = 0.99
    """discount of the intrinsic stream (RND's and the "return" normalization's)"""
    network: str = "default"
    """the policy's architecture (explore.networks.NETWORKS): a bonus that learns an encoder of the policy's
    shape (E3B) builds this one, so `--network compact` makes the bonus as cheap as the policy"""
    episodic_partner: bool = False
    """set by build_bonus for the non-episodic factors of a product that has an episodic factor"""
    run_dir: str | None = None
    """the run's directory, where a bonus keeps its own files by default (None: no run, e.g. a library call)"""

    def __post_init__(self) -> None:
        if self.num_envs < 1:
            raise ConfigError(f"num_envs {self.num_envs!r} is invalid: it must be >= 1")

    def require_space(self, name: str) -> gym.Space:
        """The observation space, or a ConfigError saying that bonus `name` needs it."""
        if self.observation_space is None:
            raise ConfigError(
                f"bonus {name!r} needs BonusContext.observation_space (its networks depend on it)"
            )
        return self.observation_space


Builder = Callable[[BonusContext, Any], BonusModule]


@dataclass(frozen=True)
class BonusEntry:
    builder: Builder
    config: type[BonusConfig] | None
    kind: Kind
    self_normalized: bool = True  # False: alone, its raw scale is normalized like a product's


REGISTRY: dict[str, BonusEntry] = {}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def register_bonus(
    name: str,
    config: type[BonusConfig] | None = None,
    *,
    kind: Kind = "global",
    self_normalized: bool = True,
    replace: bool = False,
) -> Callable[[Builder], Builder]:
    """Decorator: make `name` usable in bonus expressions; `builder(context, config)` constructs it.

    `config` is the bonus's BonusConfig class (the builder gets one filled from the trainer's
    settings; None: the builder gets None). `kind` ("episodic" or "global") tells products which
    factors are episodic before anything is built; the built module must say the same. Registering
    a taken name raises unless `replace`.
    """
    if not _NAME.match(name):
        raise ConfigError(
            f"bonus name {name!r} is invalid: use letters, digits and '_', not starting with a digit"
        )
    if kind not in ("episodic", "global", "combined"):
        raise ConfigError(f"bonus kind {kind!r} is invalid: use 'episodic', 'global' or 'combined'")
    if name in REGISTRY and not replace:
        raise ConfigError(f"bonus {name!r} is already registered (pass replace=True to replace it)")

    def register(builder: Builder) -> Builder:
        REGISTRY[name] = BonusEntry(builder, config, kind, self_normalized)
        return builder

    return register


def unregister_bonus(name: str) -> None:
    """Remove a registered bonus (for tests and plugins that register temporary names)."""
    if name not in REGISTRY:
        raise ConfigError(f"bonus {name!r} is not registered")
    del REGISTRY[name]


def bonus_names() -> list[str]:
    """The registered bonus names, sorted."""
    return sorted(REGISTRY)


def config_from(cls: type[BonusConfig], settings: Any = None) -> BonusConfig:
    """A `cls` filled from the same-named attributes of `settings` (e.g. the trainer's Config); defaults otherwise."""
    if type(settings) is cls:  # not a subclass: `cls`'s own methods (e.g. observation_problem) must run
        return settings
    values = {f.name: getattr(settings, f.name) for f in dataclasses.fields(cls) if hasattr(settings, f.name)}
    return cls(**values)


def build_named(name: str, context: BonusContext, settings: Any = None) -> BonusModule:
    """Build the registered bonus `name` with its config taken from `settings`."""
    entry = REGISTRY[name]
    module = entry.builder(context, None if entry.config is None else config_from(entry.config, settings))
    if not isinstance(module, BonusModule):
        raise TypeError(f"the builder of bonus {name!r} returned {type(module).__name__}, not a BonusModule")
    if module.kind != entry.kind:
        raise TypeError(
            f"bonus {name!r} is registered as {entry.kind!r} but its module {type(module).__name__} says "
            f"{module.kind!r}"
        )
    module.name = name  # the registered name labels its losses and metrics (count_e1, not count_e)
    return module
