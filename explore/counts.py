"""State keys and count-based bonuses: global 1/sqrt(N(s')), episodic 1/sqrt(N_e(s')) or 1{N_e(s') = 1}.

State keys. A key is one int64 per observation, a hash of a chosen part of it (`KEY_SPECS`):
the full observation, MiniHack's (x, y) position (blstats[0:2]), its glyphs or message, or any
dict entry by name. The hash is the multilinear universal hash sum_i w_i v_i mod p, computed for
two primes p just below 2^31 and packed into one int64 (h1 * p2 + h2 < 2^62):
- it is a vectorized elementwise product and a sum over the flattened observation, on the
  observation's device (no matmul: CUDA has no int64 matmul);
- every intermediate stays below 2^63, so nothing relies on integer overflow;
- two different observations collide with probability about 2^-62 for random weights (their
  values are split into 32-bit pieces first, so distinct values stay distinct mod p);
- the weights come from splitmix64 of the position with a fixed seed, computed in numpy uint64:
  the same observation gets the same key on every machine, device and torch version, so a saved
  global count table stays valid when a run resumes elsewhere.

Counts. Only the NEXT observation of a VALID transition is counted and rewarded: the autoreset
dummy step (valid False) neither counts nor gets a bonus (it gets 0). Counting is "count first,
then reward" at step granularity: the bonus of the transition at step t uses the count that
includes step t itself (and, for the global count, every env's visit at step t), so a first
visit scores 1.

Tables live on the bonus's device. The global table is a sorted array of keys with their counts,
merged with each rollout through `torch.unique`/`searchsorted` (one host sync per rollout, for the
sizes of the new arrays); it grows without bound and is saved by `state_dict()`. The episodic
state (the counts of each env's current episode) is carried across rollouts but not saved: on
resume the environments restart, so no saved episode continues.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Union

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from explore.bonus import Batch, BonusConfig, BonusContext, BonusModule, masked_mean, register_bonus
from explore.errors import ConfigError, close_matches
from explore.obs import ObservationKind, observed_keys

Obs = Union[Tensor, dict[str, Tensor]]  # noqa: UP007 (an alias, evaluated at runtime)

KEY_SPECS = ("obs", "xy", "glyphs", "message")
"""Named state keys; any other name selects the dict entry of that name."""

_PRIMES = (2_147_483_647, 2_147_483_629)  # the two largest primes below 2^31
_SEED = 0x5EED_C0DE
_HASH_CHUNK_ELEMENTS = 1 << 23  # bounds the (rows, features) int64 temporaries to 64 MiB


# --- hashing ----------------------------------------------------------------------------------


def _splitmix64(index: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64's output for stream position `index` from `seed` (uint64 arithmetic, wrapping).

    A fixed, portable pseudo-random sequence: unlike torch's or numpy's generators, no library
    version can change it.
    """
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _hash_weights(size: int, device: torch.device) -> list[Tensor]:
    """One weight vector in [1, p) per prime, (size,) int64 each; the same for every call."""
    index = np.arange(size, dtype=np.uint64)
    weights = []
    for i, p in enumerate(_PRIMES):
        w = _splitmix64(index, _SEED + (i << 40)) % np.uint64(p - 1) + np.uint64(1)
        weights.append(torch.from_numpy(w.astype(np.int64)).to(device))
    return weights


_WEIGHT_CACHE: dict[tuple[int, str], list[Tensor]] = {}


def _cached_weights(size: int, device: torch.device) -> list[Tensor]:
    key = (size, str(device))
    if key not in _WEIGHT_CACHE:
        _WEIGHT_CACHE[key] = _hash_weights(size, device)
    return _WEIGHT_CACHE[key]


def _as_hashable(x: Tensor) -> Tensor:
    """(B, D) values of any dtype -> (B, D') integers of at most 32 bits, distinct values kept distinct.

    Floats are hashed by their bits (so -0.0 and 0.0 differ); 64-bit values are split into two
    32-bit halves so that no two values are congruent modulo the hash primes. The dtype stays
    narrow (uint8, int16, ...) so that `_hash_parts` can take its fast path.
    """
    if x.dtype == torch.bool:
        return x.to(torch.uint8)
    if x.is_floating_point():
        bits = {8: torch.int64, 4: torch.int32, 2: torch.int16}[x.element_size()]
        x = x.contiguous().view(bits)
    if x.element_size() == 8:
        x = x.contiguous().view(torch.int32)  # last dim doubles: (low, high) halves
    return x


def hash_rows(x: Tensor) -> Tensor:
    """(B, D) tensor -> (B,) int64 keys in [0, 2^62): equal rows give equal keys."""
    return _hash_parts([_as_hashable(x.reshape(x.shape[0], -1))])


def _hash_parts(parts: list[Tensor]) -> Tensor:
    """The hash of the row-wise concatenation of `parts` ((B, D_i) outputs of `_as_hashable`).

    The sum over features is linear, so each part adds its own partial sum mod p. For values of at
    most 16 bits the products are below 2^47 and up to 2^15 of them sum below 2^62 without a
    per-element reduction (twice as fast); wider values are reduced mod p element by element.
    Rows are processed in chunks only to bound the int64 temporaries.
    """
    rows = parts[0].shape[0]
    device = parts[0].device
    total = sum(p.shape[1] for p in parts)
    weights = _cached_weights(total, device)
    chunk = max(1, _HASH_CHUNK_ELEMENTS // max(total, 1))
    keys = []
    for start in range(0, rows, chunk):
        sums = [torch.zeros((), dtype=torch.int64, device=device) for _ in _PRIMES]
        offset = 0
        for part in parts:
            block = part[start : start + chunk].long()
            width = part.shape[1]
            narrow = part.element_size() <= 2 and width <= 2**15
            for k, (p, w) in enumerate(zip(_PRIMES, weights, strict=True)):
                w = w[offset : offset + width]
                partial = (block * w).sum(-1) if narrow else (block.remainder(p) * w).remainder_(p).sum(-1)
                sums[k] = sums[k] + partial.remainder(p)
            offset += width
        h1, h2 = (s.remainder(p) for s, p in zip(sums, _PRIMES, strict=True))
        keys.append(h1 * _PRIMES[1] + h2)
    return torch.cat(keys) if keys else torch.zeros(rows, dtype=torch.int64, device=device)


# --- state keys -------------------------------------------------------------------------------


def _valid_specs(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*KEY_SPECS, *sorted(keys)]))


class StateKey:
    """Maps observations to int64 state keys by hashing the part that `spec` names.

    Specs: "obs" (the full observation: the tensor, or every dict entry but the privileged ones of
    `explore.obs.PRIVILEGED_KEYS`), "xy" (MiniHack's position, blstats[..., 0:2]), "glyphs", "message",
    or any other dict key name, e.g. "agent_pos" (MiniGrid's (x, y) position, from envpool's state). When the
    observation space is given, the spec is checked against it at once; otherwise on first use.
    """

    def __init__(self, spec: str = "obs", observation_space: gym.Space | None = None):
        self.spec = spec
        if observation_space is not None:
            self._check(observation_space)

    def _check(self, space: gym.Space) -> None:
        keys = list(space.spaces) if isinstance(space, gym.spaces.Dict) else None
        self._check_keys(keys)
        if self.spec == "xy" and isinstance(space, gym.spaces.Dict) and space["blstats"].shape[-1] < 2:
            raise ConfigError("state key 'xy' needs blstats with at least 2 entries (x, y)")

    def _check_keys(self, keys: list[str] | None) -> None:
        """Raise ConfigError unless the spec selects something from an observation with these dict keys.

        `keys` is None for a tensor observation.
        """
        spec = self.spec
        if keys is None:
            if spec != "obs":
                raise ConfigError(
                    f"state key {spec!r} needs a dict observation (MiniHack, MiniGrid); this "
                    f"observation is a single tensor, whose only state key is 'obs'"
                )
            return
        needed = "blstats" if spec == "xy" else None if spec == "obs" else spec
        if needed is None or needed in keys:
            return
        valid = _valid_specs(keys)
        if spec in KEY_SPECS:
            raise ConfigError(
                f"state key {spec!r} needs the observation entry {needed!r}, which this observation "
                f"lacks (it has: {', '.join(sorted(keys))}); valid state keys: {', '.join(valid)}"
            )
        suggestions = close_matches(spec, valid)
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        raise ConfigError(f"unknown state key {spec!r}; valid state keys: {', '.join(valid)}.{hint}")

    def parts(self, obs: Obs) -> list[Tensor]:
        """The tensors the key hashes, in a fixed order (dict entries sorted by name)."""
        self._check_keys(list(obs) if isinstance(obs, dict) else None)
        if not isinstance(obs, dict):
            return [obs]
        if self.spec == "obs":  # what the agent observes: the privileged entries only when named
            return [obs[k] for k in observed_keys(obs)]
        if self.spec == "xy":
            return [obs["blstats"][..., 0:2]]
        return [obs[self.spec]]

    def __call__(self, obs: Obs, batch_dims: int) -> Tensor:
        """Keys of observations with `batch_dims` leading dims, e.g. (T, N, ...) -> (T, N) int64."""
        parts = self.parts(obs)
        lead = parts[0].shape[:batch_dims]
        return _hash_parts([_as_hashable(p.reshape(math.prod(lead), -1)) for p in parts]).view(lead)


def state_key_problem(spec: str, kind: ObservationKind) -> str | None:
    """Why state key `spec` cannot select from observations of `kind`; None when it can, or when only
    an env's own space can tell (MiniHack's entries are chosen per env: checked when the bonus is built)."""
    if kind.dict_keys == ():
        return None
    try:
        StateKey(spec)._check_keys(None if kind.dict_keys is None else list(kind.dict_keys))
    except ConfigError as exc:
        return str(exc)
    return None


def state_keys(obs: Obs, spec: str = "obs", batch_dims: int = 2) -> Tensor:
    """Convenience: `StateKey(spec)(obs, batch_dims)`."""
    return StateKey(spec)(obs, batch_dims)


# --- counting helpers -------------------------------------------------------------------------


def _running_counts(groups: Tensor, times: Tensor, horizon: int) -> Tensor:
    """For each element, how many elements share its group with a time <= its own.

    groups, times: (M,) int64, times in [0, horizon). One sort and two binary searches; no loop.
    """
    order_key = groups * horizon + times
    sorted_key, _ = torch.sort(order_key)
    upto = torch.searchsorted(sorted_key, order_key, right=True)
    start = torch.searchsorted(sorted_key, groups * horizon)
    return upto - start


def _time_index(shape: torch.Size, device: torch.device) -> Tensor:
    return torch.arange(shape[0], device=device).unsqueeze(1).expand(shape)


def _counts_to_bonus(counts: Tensor, mode: str) -> Tensor:
    """(T, N) int64 counts (0 where not valid) -> float32 bonus, 0 where the count is 0."""
    if mode == "first_visit":
        return (counts == 1).float()
    return torch.where(counts > 0, counts.clamp(min=1).float().rsqrt(), 0.0)


# --- global counts ----------------------------------------------------------------------------


class GlobalCount(BonusModule):
    """Global count bonus 1 / sqrt(N(s')), N counting every valid visit over all of training.

    Count first, then reward: the visits at step t (of every env) are added before step t is
    rewarded, so the first visit of a state scores 1 and the k-th scores 1/sqrt(k); the steps of
    a rollout are counted in time order.

    The table (`table_keys` sorted, `table_counts`) is a pair of buffers on the module's device
    that grow with every new state; `state_dict()` saves them and `load_state_dict` resizes them.

    Across ranks (`sync_across_ranks`, set by `explore.distributed.mark_for_sync`, with a process
    group running): each rank hashes its own rollout, the (T, N_r) keys of all ranks are gathered
    (one all_gather of int64 keys, -1 for invalid steps) and EVERY rank counts the union, envs in
    rank order, then keeps its own columns. The tables stay identical on every rank and each
    rank's bonus is what one process stepping all ranks' envs would give. `bonus` is then a
    collective: every rank calls it once per rollout.
    """

    name = "count"
    kind = "global"

    def __init__(self, state_key: str = "obs", observation_space: gym.Space | None = None):
        super().__init__()
        self.state_key = StateKey(state_key, observation_space)
        self.register_buffer("table_keys", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("table_counts", torch.zeros(0, dtype=torch.int64))
        self._last_bonus_mean = torch.zeros(())
        self.sync_across_ranks = False

    def _update_counts_across_ranks(self, keys: Tensor, valid: Tensor) -> Tensor:
        """`update_counts` over the union of every rank's (T, N_r) keys; returns this rank's columns."""
        from explore.distributed import all_gather_variable, get_rank

        marked = torch.where(valid, keys, -1)  # keys lie in [0, 2^62): -1 marks an invalid step
        per_rank = all_gather_variable(marked.transpose(0, 1).contiguous())  # (N_r, T) each
        union = torch.cat(per_rank).transpose(0, 1)  # (T, sum N_r), envs in rank order
        counts = self.update_counts(union, union >= 0)
        start = sum(part.shape[0] for part in per_rank[: get_rank()])
        return counts[:, start : start + keys.shape[1]]

    def update_counts(self, keys: Tensor, valid: Tensor) -> Tensor:
        """Add the valid visits of (T, N) `keys` to the table; returns each visit's count N(s'), 0 where invalid."""
        flat_valid = valid.reshape(-1)
        visited = keys.reshape(-1)[flat_valid]  # time-major
        times = _time_index(keys.shape, keys.device).reshape(-1)[flat_valid]
        unique_keys, group = torch.unique(visited, return_inverse=True)

        size = self.table_keys.shape[0]
        if size:
            pos = torch.searchsorted(self.table_keys, unique_keys)
            safe = pos.clamp(max=size - 1)
            found = (pos < size) & (self.table_keys[safe] == unique_keys)
            prior = torch.where(found, self.table_counts[safe], 0)
        else:
            found = torch.zeros_like(unique_keys, dtype=torch.bool)
            prior = torch.zeros_like(unique_keys)

        counts = torch.zeros(keys.numel(), dtype=torch.int64, device=keys.device)
        counts[flat_valid] = prior[group] + _running_counts(group, times, keys.shape[0])

        totals = torch.bincount(group, minlength=unique_keys.shape[0])
        table_counts = self.table_counts
        if size:
            table_counts = table_counts.index_add(0, pos[found], totals[found])
        self.table_keys, self.table_counts = _merge_sorted(
            self.table_keys, table_counts, unique_keys[~found], totals[~found]
        )
        return counts.view(keys.shape)

    @torch.no_grad()
    def bonus(self, batch: Batch) -> Tensor:
        """1 / sqrt(N(s')) for each transition of a (T, N) rollout, counting it first; 0 where not valid."""
        valid = batch["valid"]
        keys = self.state_key(batch["next_obs"], valid.dim())
        if self.sync_across_ranks and valid.dim() == 2:
            counts = self._update_counts_across_ranks(keys, valid)
        else:
            counts = self.update_counts(keys, valid)
        rewards = _counts_to_bonus(counts, "sqrt")
        self._last_bonus_mean = masked_mean(rewards, valid)
        return rewards

    def count_of(self, keys: Tensor) -> Tensor:
        """The current table count of each key (any shape), 0 for unseen keys; does not count."""
        size = self.table_keys.shape[0]
        if not size:
            return torch.zeros_like(keys)
        pos = torch.searchsorted(self.table_keys, keys.reshape(-1)).clamp(max=size - 1)
        found = self.table_keys[pos] == keys.reshape(-1)
        return torch.where(found, self.table_counts[pos], 0).view(keys.shape)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Resize the table buffers to the saved table before the default copy."""
        for name in ("table_keys", "table_counts"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                current = getattr(self, name)
                setattr(self, name, torch.empty_like(saved, device=current.device, dtype=current.dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def metrics(self) -> dict[str, float]:
        return {
            **super().metrics(),
            "intrinsic_reward_mean": float(self._last_bonus_mean),
            "distinct_states": float(self.table_keys.shape[0]),
            "visits": float(self.table_counts.sum()),
        }


def _merge_sorted(
    keys: Tensor, counts: Tensor, new_keys: Tensor, new_counts: Tensor
) -> tuple[Tensor, Tensor]:
    """Merge sorted `new_keys` (none of them in sorted `keys`) into the table in O(K + U).

    Each element's place in the merged array is its own index plus the number of elements of the
    other array that sort before it.
    """
    if not new_keys.numel():
        return keys, counts
    size = keys.shape[0] + new_keys.shape[0]
    old_at = torch.arange(keys.shape[0], device=keys.device) + torch.searchsorted(new_keys, keys)
    new_at = torch.arange(new_keys.shape[0], device=keys.device) + torch.searchsorted(keys, new_keys)
    merged_keys = torch.empty(size, dtype=keys.dtype, device=keys.device)
    merged_counts = torch.empty(size, dtype=counts.dtype, device=keys.device)
    merged_keys[old_at], merged_keys[new_at] = keys, new_keys
    merged_counts[old_at], merged_counts[new_at] = counts, new_counts.to(counts.dtype)
    return merged_keys, merged_counts


# --- episodic counts --------------------------------------------------------------------------


class EpisodicCount(BonusModule):
    """Episodic count bonus: 1 / sqrt(N_e(s')) (mode "sqrt") or 1{N_e(s') = 1} (mode "first_visit").

    N_e counts the valid visits of the current episode of each env, count first then reward (a
    first visit has N_e = 1). A (T, N) rollout is processed in time order: the episode that ends
    at step t (`dones[t]`) shares no counts with the next one, the dummy step after it neither
    counts nor gets a bonus, and each env's current episode carries into the next rollout.

    Vectorized over time and envs: a visit's group is (env, episode segment within the rollout,
    key), the counts carried from the previous rollout seed segment 0, and a sort gives every
    visit the number of earlier visits in its group.

    `reset(done)` marks envs whose episode was cut outside a batch (e.g. envs restarted on resume,
    as `BonusModule.reset` says): their carried counts are dropped before the next batch's first
    step. It is deferred rather than immediate so that it never touches a batch already being
    scored; episode ends inside a batch come from batch["dones"], not from `reset`.
    """

    name = "count_e"
    kind = "episodic"

    def __init__(
        self,
        num_envs: int,
        state_key: str = "obs",
        mode: Literal["sqrt", "first_visit"] = "sqrt",
        observation_space: gym.Space | None = None,
    ):
        super().__init__()
        if mode not in ("sqrt", "first_visit"):
            raise ConfigError(f"episodic count mode {mode!r} is invalid: use 'sqrt' or 'first_visit'")
        self.num_envs = num_envs
        self.mode = mode
        self.state_key = StateKey(state_key, observation_space)
        # the current episode of each env: (env, key, count) triples, not saved (episodes restart on resume)
        for name in ("carry_env", "carry_keys", "carry_counts"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.int64), persistent=False)
        self.register_buffer("pending_reset", torch.zeros(num_envs, dtype=torch.bool), persistent=False)
        self._last_bonus_mean = torch.zeros(())

    def reset(self, done: Tensor) -> None:
        """Mark envs (`done` (N,) bool) whose episode was cut: their counts restart before the next batch."""
        self.pending_reset |= done.to(self.pending_reset.device, torch.bool)

    def update_counts(self, keys: Tensor, valid: Tensor, dones: Tensor) -> Tensor:
        """Count the valid visits of (T, N) `keys` episode by episode; returns N_e(s') per step, 0 where invalid."""
        steps, num_envs = keys.shape
        device = keys.device
        # envs marked by reset() start this batch with a fresh episode
        keep = ~self.pending_reset[self.carry_env]
        carry_env, carry_keys, carry_counts = (
            self.carry_env[keep],
            self.carry_keys[keep],
            self.carry_counts[keep],
        )
        self.pending_reset.zero_()

        done_steps = dones.long()
        segment = done_steps.cumsum(0) - done_steps  # episodes ended before step t, per env
        env = torch.arange(num_envs, device=device).expand(steps, num_envs)
        flat_valid = valid.reshape(-1)
        visit_keys = keys.reshape(-1)[flat_valid]
        visit_env = env.reshape(-1)[flat_valid]
        visit_seg = segment.reshape(-1)[flat_valid]
        visit_time = _time_index(keys.shape, device).reshape(-1)[flat_valid]

        # group = (env, segment, key) as one int64: keys are first replaced by their dense rank
        unique_keys, key_rank = torch.unique(torch.cat([carry_keys, visit_keys]), return_inverse=True)
        num_keys, num_segments = unique_keys.shape[0], steps + 1
        group_env = torch.cat([carry_env, visit_env])
        group_seg = torch.cat([torch.zeros_like(carry_env), visit_seg])
        group_id = (group_env * num_segments + group_seg) * num_keys + key_rank
        groups, group = torch.unique(group_id, return_inverse=True)
        num_carried = carry_env.shape[0]
        if num_keys == 0:  # nothing carried and nothing valid: every count is 0
            self.carry_env, self.carry_keys, self.carry_counts = carry_env, carry_keys, carry_counts
            return torch.zeros_like(keys)

        prior = torch.zeros(groups.shape[0], dtype=torch.int64, device=device)
        prior.index_add_(0, group[:num_carried], carry_counts)
        visit_group = group[num_carried:]
        counts = torch.zeros(keys.numel(), dtype=torch.int64, device=device)
        counts[flat_valid] = prior[visit_group] + _running_counts(visit_group, visit_time, steps)

        # carry each env's last episode (the segment after its last done) into the next rollout
        totals = prior.index_add_(0, visit_group, torch.ones_like(visit_group))
        groups_env = groups // num_keys // num_segments
        groups_seg = groups // num_keys % num_segments
        last = groups_seg == done_steps.sum(0)[groups_env]
        self.carry_env = groups_env[last]
        self.carry_keys = unique_keys[groups[last] % num_keys]
        self.carry_counts = totals[last]
        return counts.view(keys.shape)

    @torch.no_grad()
    def bonus(self, batch: Batch) -> Tensor:
        """The episodic bonus of each transition of a (T, N) rollout, from N_e(s'); 0 where not valid."""
        valid = batch["valid"]
        dones = batch.get("dones")
        if dones is None:
            dones = torch.zeros_like(valid)
        keys = self.state_key(batch["next_obs"], valid.dim())
        rewards = _counts_to_bonus(self.update_counts(keys, valid, dones), self.mode)
        self._last_bonus_mean = masked_mean(rewards, valid)
        return rewards

    def metrics(self) -> dict[str, float]:
        return {
            **super().metrics(),
            "intrinsic_reward_mean": float(self._last_bonus_mean),
            "episodic_states": float(self.carry_keys.shape[0]),
        }


# --- configuration and registration ---------------------------------------------------------


@dataclass
class StateKeyConfig(BonusConfig):
    state_key: str = "obs"
    """what the count bonuses count: obs (the whole observation), xy (MiniHack position), agent_pos (MiniGrid
    position), glyphs, message, or any observation key"""

    def observation_problem(self, kind: ObservationKind) -> str | None:
        if kind.name == "text":  # text games give int64 keys of their strings (explore.obs.text_keys)
            return None if self.state_key == "obs" else "--state-key: text is counted whole: use 'obs'"
        problem = state_key_problem(self.state_key, kind)
        return BonusConfig.observation_problem(self, kind) or (problem and f"--state-key: {problem}")


@dataclass
class CountConfig(StateKeyConfig):
    count_mode: Literal["sqrt", "first_visit"] = "sqrt"
    """count_e rewards 1/sqrt(N_e(s)) or 1{N_e(s) = 1} (count_e1 is always first visit)"""

    def validate_bonus_settings(self) -> None:
        super().validate_bonus_settings()
        if self.count_mode not in ("sqrt", "first_visit"):
            raise ConfigError(f"--count-mode {self.count_mode!r} is invalid: use 'sqrt' or 'first_visit'")


@register_bonus("count", CountConfig)
def build_count(context: BonusContext, config: CountConfig) -> GlobalCount:
    return GlobalCount(config.state_key, context.observation_space)


@register_bonus("count_e", CountConfig, kind="episodic")
def build_count_e(context: BonusContext, config: CountConfig) -> EpisodicCount:
    return EpisodicCount(context.num_envs, config.state_key, config.count_mode, context.observation_space)


@register_bonus("count_e1", CountConfig, kind="episodic")
def build_count_e1(context: BonusContext, config: CountConfig) -> EpisodicCount:
    return EpisodicCount(context.num_envs, config.state_key, "first_visit", context.observation_space)
