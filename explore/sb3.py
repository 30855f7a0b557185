"""Stable-Baselines3 interoperability: our vector envs and intrinsic bonuses inside SB3.

    import envs
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor
    from explore.sb3 import BonusVecEnvWrapper, ExplorationMetricsCallback, SB3VecEnv

    venv = SB3VecEnv(envs.make("MontezumaRevenge-v5", num_envs=8, seed=0))
    venv = BonusVecEnvWrapper(VecMonitor(venv), "rnd", n_steps=128, warmup_steps=128)
    PPO("CnnPolicy", venv, n_steps=128).learn(100_000, callback=ExplorationMetricsCallback())

Three pieces:

- `SB3VecEnv` exposes any `envs.VecEnv` (Atari, MiniGrid/BabyAI, MiniHack) as an SB3 `VecEnv`,
  converting our NEXT_STEP autoreset into SB3's same-step autoreset (see its docstring).
- `BonusVecEnvWrapper` adds one of our bonus modules (an expression for
  `explore.combine.build_bonus`, e.g. "rnd", "e3b", "count_e", "e3b*rnd", or any `BonusModule`)
  to the reward SB3 sees, and trains the module on the transitions it observes.
- `ExplorationMetricsCallback` logs the bonus's metrics to SB3's logger.

Put `VecMonitor` BELOW the bonus wrapper (as above): SB3 logs `rollout/ep_rew_mean` from the
"episode" infos VecMonitor writes, and there it sees the extrinsic reward only. SB3 adds no
monitor to a VecEnv by itself.

Limits, stated plainly:
- SB3's PPO has ONE value head and one discount. Our trainer keeps two streams (extrinsic,
  episodic, gamma 0.999; intrinsic, non-episodic for RND, gamma 0.99) and adds their advantages
  (2 A_ext + 1 A_int). Here the intrinsic reward is added to the extrinsic one,
  r = ext_coef * clip(r_ext) + int_coef * r_int, and both are discounted with SB3's gamma and cut
  at episode ends: RND's non-episodic intrinsic return is approximated by an episodic one. With
  equal discounts the sum of advantages equals the advantage of the summed reward, so what is
  lost is the separate discount, the non-episodic bootstrap across episode ends and the separate
  value scales. One consequence is real: an always-positive bonus in an episodic stream pays the
  agent for making episodes last, so it can learn to avoid a terminal goal (with the count bonus
  at int_coef 1, SB3 PPO on a 20-state chain like tests/test_sb3.py's learned to stop short of
  the goal; at int_coef 0.1 it reached it). Keep int_coef small against the extrinsic reward.
- The bonus is scored step by step (see `BonusVecEnvWrapper`), so statistics that our trainer
  updates once per rollout (RND's observation and reward statistics) are updated every step.
- The bonus module has its own Adam optimizer; in our trainer the bonus's parameters share the
  policy's optimizer and gradient-norm clip.
- SB3's `CnnPolicy` takes the Atari frame stacks as they are ((4, 84, 84) uint8, channels first).
  MiniGrid's 7x7 dict image is treated as an image by SB3's `MultiInputPolicy`, whose NatureCNN
  needs at least 36x36 pixels: give MiniGrid a custom `features_extractor_class`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from explore.bonus import Batch, BonusModule
from explore.combine import BonusContext, build_bonus
from explore.errors import MissingDependencyError
from explore.obs import allocate_obs, map_obs, obs_to_tensor, write_obs

try:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecEnv as SB3BaseVecEnv
    from stable_baselines3.common.vec_env import VecEnvWrapper
    from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(
        "explore.sb3 needs the optional dependency 'stable_baselines3', which is not installed. "
        "Install it with: pip install 'explore-rl[sb3]'"
    ) from exc

NumpyObs = np.ndarray | dict[str, np.ndarray]

__all__ = ["BonusVecEnvWrapper", "ExplorationMetricsCallback", "SB3VecEnv", "find_bonus_wrapper"]


# --- numpy observation helpers ---------------------------------------------------------------


def _map_np(fn: Callable[[np.ndarray], np.ndarray], obs: NumpyObs) -> NumpyObs:
    """Apply `fn` to the array, or to every entry of a dict observation."""
    return {k: fn(v) for k, v in obs.items()} if isinstance(obs, dict) else fn(obs)


def _row(obs: NumpyObs, i: int) -> NumpyObs:
    """One env's observation as an independent copy (SB3 keeps terminal observations in infos)."""
    return _map_np(lambda x: x[i].copy(), obs)


def _write_rows(dest: NumpyObs, rows: np.ndarray, value: NumpyObs) -> None:
    """dest[rows] = value, entry by entry for dicts."""
    if isinstance(dest, dict):
        for key in dest:
            dest[key][rows] = value[key]
    else:
        dest[rows] = value


# --- the adapter -------------------------------------------------------------------------------


class SB3VecEnv(SB3BaseVecEnv):
    """One of our `envs.VecEnv`s as a Stable-Baselines3 `VecEnv`.

    Autoreset. Our envs autoreset NEXT_STEP: the step that ends an episode returns the true
    final observation, and the env's NEXT step is a dummy (action ignored, reset observation,
    reward 0). SB3 expects SAME-STEP autoreset: the step that ends an episode returns the reset
    observation, with the final one in `info["terminal_observation"]`. So `step_wait`, after
    receiving a step in which envs D ended their episodes, performs the dummy step for D alone,
    at once: `send(dummy_actions[D], env_ids=D)` then `recv()`, which returns exactly the rows of
    D, and writes their reset observations into the observation SB3 gets. The dummy step never
    reaches SB3: its reward and flags are dropped, its info becomes `reset_infos[i]`. The other
    envs are not stepped by it, so no env ever loses or repeats a step: per env, SB3 sees exactly
    the valid transitions of our own rollout with the same actions (tests/test_sb3.py checks it).

    Why a subset step is sound: with `batch_size == num_envs` (synchronous, our default), envpool
    and MiniHackVecEnv accept `send(actions, env_ids)` for any subset, and the following `recv`
    waits for exactly the envs in flight and returns their rows, named by `info["env_id"]`
    (tests/test_sb3.py pins this for envpool 1.2.5; MiniHackVecEnv's `recv` waits for the envs in
    flight by construction). Pools in async
    mode (`batch_size < num_envs`) are refused: their `recv` returns the first `batch_size` envs
    to finish, which a dummy step of fewer envs would never fill, and SB3 steps every env on every
    step anyway. The alternatives are wrong: stepping ALL envs for the dummy advances the envs
    that did not finish with actions SB3 never chose, and deferring the dummy to the next
    `step_async` would hand SB3 the final observation as the next state of the new episode.
    A step with an episode end therefore costs one extra round trip, for the finished envs only.

    `step_async` sends the actions at once (envpool simulates on its own threads) and `step_wait`
    receives them. Rows come back in env order (reordered by `info["env_id"]` if a suite does not).

    Infos. SB3's list of dicts is built with one comprehension over envs (the API needs a dict
    per env): each holds the info arrays' rows (by default every array with a leading env
    dimension, e.g. "elapsed_step", "success", Atari's "ram"; choose with `info_keys`) and
    "TimeLimit.truncated" (truncated and not terminated, as SB3's DummyVecEnv sets it, so SB3's
    PPO bootstraps from the value of the terminal observation). Only envs that ended an episode
    get "terminal_observation" (a copy of the true final observation; a dict for dict spaces).

    Seeds: `seed(s)` (SB3's) makes the next `reset()` reset our env with seed s, and env i plays
    the episodes of seed s + i, the seeds SB3 assigns. `set_options` is not supported (our
    envs take no reset options). Attributes and methods are the batch's: our VecEnv is one object
    for all envs, so `get_attr` returns its attribute for each index, and `set_attr` and
    `env_method` act on the whole batch, which they therefore require `indices` to cover.
    """

    def __init__(
        self,
        venv: Any,
        info_keys: Sequence[str] | None = None,
        dummy_action: np.ndarray | int | None = None,
        max_dummy_retries: int = 3,
    ):
        """
        Args:
            venv: an `envs.VecEnv` (e.g. `envs.make(env_id, num_envs, seed)`), synchronous.
            info_keys: info arrays copied into each env's info dict (default: all with a leading
                env dimension).
            dummy_action: the action sent on dummy steps (ignored by the env; default zeros).
            max_dummy_retries: dummy steps repeated for an env whose dummy step itself reported an
                episode end (MiniHack reports a crashed worker's episode on the env's next step).
        """
        num_envs = int(venv.num_envs)
        batch_size = int(getattr(venv, "batch_size", num_envs))
        if batch_size != num_envs:
            raise ValueError(
                f"SB3VecEnv needs a synchronous env (batch_size == num_envs); got batch_size={batch_size} "
                f"for num_envs={num_envs}. SB3 steps every env on every step; build the env without "
                "batch_size."
            )
        self.venv = venv  # before super().__init__, which reads attributes through get_attr
        super().__init__(num_envs, venv.single_observation_space, venv.single_action_space)
        self.info_keys = None if info_keys is None else tuple(info_keys)
        self.max_dummy_retries = int(max_dummy_retries)
        space = self.action_space
        dummy = np.zeros((num_envs, *space.shape), dtype=space.dtype)
        if dummy_action is not None:
            dummy[...] = dummy_action
        self._dummy_actions = dummy
        self._env_order = np.arange(num_envs)
        self.dummy_steps = 0
        """how many dummy steps this adapter performed (each for the envs that had just finished)"""

    # --- reset and step ---

    def reset(self) -> VecEnvObs:
        seeds = [s for s in self._seeds if s is not None]
        if any(o for o in self._options):
            warnings.warn("SB3VecEnv ignores reset options: our environments take none", stacklevel=2)
        obs, info = self.venv.reset(seed=seeds[0] if seeds else None)
        obs, info = self._in_env_order(obs, info)
        self.reset_infos = self._info_dicts(info)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self.venv.send(np.asarray(actions))

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, terminated, truncated, info = self.venv.recv()
        obs, info, reward, terminated, truncated = self._in_env_order(
            obs, info, reward, terminated, truncated
        )
        dones = np.asarray(terminated | truncated, dtype=bool)
        infos = self._info_dicts(info, time_limit=truncated & ~terminated)
        if dones.any():
            done_ids = np.flatnonzero(dones)
            for i in done_ids.tolist():
                infos[i]["terminal_observation"] = _row(obs, i)
            obs = self._dummy_step(_map_np(np.array, obs), done_ids)
        return obs, np.asarray(reward, dtype=np.float32), dones, infos

    def _dummy_step(self, obs: NumpyObs, done_ids: np.ndarray) -> NumpyObs:
        """Step the envs `done_ids` (only them) through their NEXT_STEP dummy; their reset
        observations replace their rows of `obs` (a copy the caller owns)."""
        pending = done_ids.astype(np.int32)
        for _ in range(self.max_dummy_retries + 1):
            self.venv.send(self._dummy_actions[pending], pending)
            reset_obs, _, terminated, truncated, info = self.venv.recv()
            ids = np.asarray(info.get("env_id", pending), dtype=np.int64)
            if not np.array_equal(np.sort(ids), np.sort(pending)):
                raise RuntimeError(
                    f"the dummy step sent to envs {pending.tolist()} came back for envs {ids.tolist()}: "
                    "the env does not return exactly the subset sent (an async pool?)"
                )
            self.dummy_steps += 1
            _write_rows(obs, ids, reset_obs)
            for i, row_info in zip(ids.tolist(), self._info_dicts(info), strict=True):
                self.reset_infos[i] = row_info
            again = np.asarray(terminated | truncated, dtype=bool)
            if not again.any():
                return obs
            pending = ids[again].astype(np.int32)
        raise RuntimeError(
            f"envs {pending.tolist()} still reported an episode end after {self.max_dummy_retries + 1} dummy steps"
        )

    def _in_env_order(self, obs: NumpyObs, info: dict[str, Any], *arrays: np.ndarray) -> tuple:
        """The step's rows sorted by env id, if the suite returned them in another order."""
        ids = info.get("env_id")
        if ids is None or np.array_equal(ids, self._env_order):
            return (obs, info, *arrays)
        if len(ids) != self.num_envs:
            raise RuntimeError(
                f"expected rows for all {self.num_envs} envs, got envs {np.asarray(ids).tolist()}"
            )
        order = np.argsort(ids)
        info = {
            k: v[order] if isinstance(v, np.ndarray) and v.shape[:1] == (self.num_envs,) else v
            for k, v in info.items()
        }
        return (_map_np(lambda x: x[order], obs), info, *(np.asarray(a)[order] for a in arrays))

    def _info_dicts(self, info: dict[str, Any], time_limit: np.ndarray | None = None) -> list[dict[str, Any]]:
        """One dict per row of `info`: the chosen info arrays' rows, and "TimeLimit.truncated"."""
        rows = len(next(iter(v for v in info.values() if isinstance(v, np.ndarray)), ()))
        keys = [
            k
            for k, v in info.items()
            if isinstance(v, np.ndarray)
            and v.shape[:1] == (rows,)
            and (self.info_keys is None or k in self.info_keys)
        ]
        columns: list[Sequence[Any]] = [info[k] for k in keys]
        if time_limit is not None:
            keys.append("TimeLimit.truncated")
            columns.append(np.asarray(time_limit, dtype=bool).tolist())
        if not keys:
            return [{} for _ in range(rows)]
        return [dict(zip(keys, values, strict=True)) for values in zip(*columns, strict=True)]

    # --- the rest of SB3's VecEnv API ---

    def close(self) -> None:
        self.venv.close()

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        return list(self._get_indices(indices))

    def _require_all(self, indices: VecEnvIndices, what: str) -> None:
        if sorted(set(self._indices(indices))) != list(range(self.num_envs)):
            raise ValueError(
                f"{what} acts on the whole batch (our VecEnv is one object for all envs); "
                f"indices must cover all {self.num_envs} envs, got {indices!r}"
            )

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The batch's attribute, once per index (AttributeError if it has none, as SB3 expects)."""
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set the attribute on the batch; `indices` must cover every env."""
        self._require_all(indices, "set_attr")
        setattr(self.venv, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        """Call the batch's method once; its result is returned for each env (`indices` must cover all)."""
        self._require_all(indices, "env_method")
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in range(self.num_envs)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Our envs are not gymnasium-wrapped (episode statistics: use SB3's VecMonitor)."""
        return [False for _ in self._indices(indices)]


# --- the bonus wrapper -------------------------------------------------------------------------


class _ProtocolView:
    """Our VecEnv protocol's `reset`/`step` over an SB3 VecEnv, for bonus warm-ups (`RND.warmup`
    steps a random agent through `envs.reset()` and `envs.step(actions)`)."""

    def __init__(self, venv: SB3BaseVecEnv):
        self.venv = venv
        self.num_envs = venv.num_envs
        self.single_action_space = venv.action_space
        self.single_observation_space = venv.observation_space

    def reset(self, **kwargs: Any) -> tuple[VecEnvObs, dict]:
        return self.venv.reset(), {}

    def step(self, actions: np.ndarray) -> tuple:
        obs, reward, dones, _ = self.venv.step(actions)
        return obs, reward, dones, np.zeros_like(dones), {}


class BonusVecEnvWrapper(VecEnvWrapper):
    """Adds an intrinsic bonus to the reward SB3 sees, and trains the bonus on what it observes.

        reward = ext_coef * clip(r_ext, -reward_clip, reward_clip) + int_coef * r_int

    Per step, not per window, and why. SB3 consumes each step's reward as soon as `step_wait`
    returns it, while our trainer scores a whole (T, N) rollout after collecting it. A wrapper can
    either score each step when it happens, or score a window once it is complete and add the
    result to the NEXT window's rewards; the latter pays every bonus to a transition other than
    the one that earned it, which breaks the credit. So each step is scored at once, as the
    (1, N) batch {"obs": s_t, "next_obs": s_{t+1}, "actions": a_t, "valid": True, "dones": d_t}
    where s_{t+1} is the true final observation at an episode end (SB3's
    `info["terminal_observation"]`), exactly what `module.bonus` returns for that batch (the test
    asserts equality). Every transition SB3 sees is valid: the adapter never shows it a dummy
    step. Episodic modules (counts, E3B) carry their per-env state across calls and clear it
    after a step whose `dones` is set, as they do across our rollouts.

    Training. The transitions are collected into a window of `n_steps` steps; when it is full the
    module trains on it with its own Adam optimizer, `update_epochs` passes of `num_minibatches`
    random minibatches of `module.loss` (RND's predictor then learns from `update_proportion` of
    each), with the gradient norm clipped to `max_grad_norm`. Match `n_steps` to PPO's `n_steps`
    and the module's parameters lag the rewards by one rollout, as in our trainer. Modules with
    nothing to learn (counts) get no optimizer.

    Warm-up: `warmup_steps` > 0 runs the module's `warmup` (RND's observation statistics from a
    random agent, `warmup_steps` steps per env) on the first `reset`; those steps are not SB3's.

    The last step's parts are kept for logging (`last_intrinsic`, `last_extrinsic`), and
    `metrics()` returns the means since it was last called, the last training's losses and the
    module's own `metrics()`; `ExplorationMetricsCallback` logs them.
    """

    def __init__(
        self,
        venv: SB3BaseVecEnv,
        bonus: str | BonusModule,
        *,
        int_coef: float = 1.0,
        ext_coef: float = 1.0,
        reward_clip: float | None = None,
        n_steps: int = 128,
        update_epochs: int = 4,
        num_minibatches: int = 4,
        learning_rate: float = 1e-4,
        max_grad_norm: float = 0.5,
        warmup_steps: int = 0,
        device: torch.device | str = "cpu",
        context: BonusContext | None = None,
        seed: int = 0,
    ):
        """
        Args:
            venv: an SB3 VecEnv (usually `VecMonitor(SB3VecEnv(...))`; any SB3 VecEnv that puts
                "terminal_observation" in its infos works).
            bonus: a bonus expression for `build_bonus` ("rnd", "e3b*rnd", "count_e+0.5*rnd", ...)
                or a built `BonusModule` (its num_envs must match).
            int_coef, ext_coef, reward_clip: the reward SB3 sees (see above).
            n_steps: transitions per env in a training window.
            update_epochs, num_minibatches, learning_rate, max_grad_norm: the module's training.
            warmup_steps: random-agent steps per env for the module's `warmup`, at the first reset.
            device: where the module runs.
            context: the BonusContext for an expression (default: this env's spaces and
                `num_envs`, on `device`, with the bonus defaults).
            seed: seeds the module's minibatch order and the warm-up's random actions.
        """
        super().__init__(venv)
        self.device = torch.device(device)
        if isinstance(bonus, str):
            context = context or BonusContext(
                num_envs=venv.num_envs,
                observation_space=venv.observation_space,
                action_space=venv.action_space,
                device=self.device,
            )
            bonus = build_bonus(bonus, context)
        self.module: BonusModule = bonus.to(self.device)
        self.int_coef, self.ext_coef, self.reward_clip = float(int_coef), float(ext_coef), reward_clip
        self.n_steps = int(n_steps)
        self.update_epochs = int(update_epochs)
        self.num_minibatches = int(num_minibatches)
        if min(self.n_steps, self.update_epochs, self.num_minibatches) < 1:
            raise ValueError("n_steps, update_epochs and num_minibatches must be >= 1")
        self.max_grad_norm = float(max_grad_norm)
        self.warmup_steps = int(warmup_steps)
        self.seed_value = int(seed)
        self._params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self._params, lr=learning_rate, eps=1e-5) if self._params else None
        self._generator = torch.Generator(device="cpu").manual_seed(self.seed_value)
        discrete = isinstance(self.action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete))
        self._action_dtype = torch.long if discrete else torch.float32

        T, N = self.n_steps, self.num_envs
        self._window: Batch = {
            "obs": allocate_obs(self.observation_space, (T, N), self.device),
            "next_obs": allocate_obs(self.observation_space, (T, N), self.device),
            "actions": torch.zeros(
                (T, N, *self.action_space.shape), dtype=self._action_dtype, device=self.device
            ),
            "valid": torch.ones((T, N), dtype=torch.bool, device=self.device),
            "dones": torch.zeros((T, N), dtype=torch.bool, device=self.device),
        }
        self._t = 0
        self._last_obs: Any = None
        self._actions: np.ndarray | None = None
        self._warmed_up = False
        self.num_updates = 0
        """full windows so far (the module trained on each, if it has parameters)"""
        self.last_intrinsic = np.zeros(N, dtype=np.float32)
        self.last_extrinsic = np.zeros(N, dtype=np.float32)
        self.last_losses: dict[str, float] = {}
        self._sums = np.zeros(3)  # intrinsic sum, extrinsic sum, transitions, since metrics()

    # --- reset and step ---

    def reset(self) -> VecEnvObs:
        if self.warmup_steps > 0 and not self._warmed_up:
            self.module.warmup(_ProtocolView(self.venv), self.warmup_steps, self.device, seed=self.seed_value)
        self._warmed_up = True
        obs = self.venv.reset()
        self._last_obs = obs_to_tensor(obs, self.device)
        # every env starts a new episode: episodic memories restart
        self.module.reset(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, ext, dones, infos = self.venv.step_wait()
        if self._last_obs is None:
            raise RuntimeError("BonusVecEnvWrapper.step before reset()")
        done_ids = np.flatnonzero(dones)
        if done_ids.size:  # the transition's next state is the true final observation
            next_obs = _map_np(np.array, obs)
            for i in done_ids.tolist():
                _write_rows(
                    next_obs,
                    np.array([i]),
                    _map_np(lambda x: np.asarray(x)[None], infos[i]["terminal_observation"]),
                )
            next_obs_t = obs_to_tensor(next_obs, self.device)
            new_last = obs_to_tensor(obs, self.device)
        else:
            next_obs_t = new_last = obs_to_tensor(obs, self.device)
        actions = torch.as_tensor(self._actions, device=self.device).to(self._action_dtype)
        actions = actions.reshape(self.num_envs, *self.action_space.shape)
        dones_t = torch.as_tensor(dones, device=self.device)
        batch = {
            "obs": map_obs(lambda x: x.unsqueeze(0), self._last_obs),
            "next_obs": map_obs(lambda x: x.unsqueeze(0), next_obs_t),
            "actions": actions.unsqueeze(0),
            "valid": torch.ones((1, self.num_envs), dtype=torch.bool, device=self.device),
            "dones": dones_t.unsqueeze(0),
        }
        intrinsic = self.module.score(batch)[0].float().cpu().numpy()

        t = self._t
        write_obs(self._window["obs"], t, self._last_obs)
        write_obs(self._window["next_obs"], t, next_obs_t)
        self._window["actions"][t] = actions
        self._window["dones"][t] = dones_t
        self._t += 1
        self._last_obs = new_last
        if self._t == self.n_steps:
            self._train()
            self._t = 0

        ext = np.asarray(ext, dtype=np.float32)
        clipped = ext if self.reward_clip is None else np.clip(ext, -self.reward_clip, self.reward_clip)
        reward = (self.ext_coef * clipped + self.int_coef * intrinsic).astype(np.float32)
        self.last_intrinsic, self.last_extrinsic = intrinsic, ext
        self._sums += (float(intrinsic.sum()), float(ext.sum()), self.num_envs)
        return obs, reward, dones, infos

    # --- training ---

    def _train(self) -> None:
        """Optimize `module.loss` over the full window: epochs of random minibatches."""
        self.num_updates += 1
        if self.optimizer is None:
            return
        T, N = self.n_steps, self.num_envs
        flat = {
            key: map_obs(lambda x: x.reshape(T * N, *x.shape[2:]), value)
            for key, value in self._window.items()
        }
        size = T * N
        mb_size = max(1, size // self.num_minibatches)
        totals: dict[str, float] = {}
        count = 0
        for _ in range(self.update_epochs):
            order = torch.randperm(size, generator=self._generator).to(self.device)
            for start in range(0, size, mb_size):
                index = order[start : start + mb_size]
                mb = {key: map_obs(lambda x, index=index: x[index], value) for key, value in flat.items()}
                terms = self.module.loss(mb)
                if "loss" not in terms:
                    continue
                self.optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                torch.nn.utils.clip_grad_norm_(self._params, self.max_grad_norm)
                self.optimizer.step()
                for key, value in terms.items():
                    totals[key] = totals.get(key, 0.0) + float(value.detach())
                count += 1
        self.last_losses = {k: v / max(count, 1) for k, v in totals.items()}

    # --- logging ---

    def metrics(self) -> dict[str, float]:
        """Means since the last call, the last training's losses, the module's metrics."""
        intrinsic, extrinsic, n = (float(x) for x in self._sums)
        out = {
            "intrinsic_reward_mean": intrinsic / max(n, 1.0),
            "extrinsic_reward_mean": extrinsic / max(n, 1.0),
            "bonus_updates": float(self.num_updates),
        }
        out.update({f"loss/{k}": v for k, v in self.last_losses.items()})
        out.update({f"{self.module.name}/{k}": float(v) for k, v in self.module.metrics().items()})
        self._sums[:] = 0.0
        return out


def find_bonus_wrapper(venv: SB3BaseVecEnv) -> BonusVecEnvWrapper:
    """The BonusVecEnvWrapper in a chain of SB3 wrappers (SB3 may add VecTransposeImage on top)."""
    env: Any = venv
    while True:
        if isinstance(env, BonusVecEnvWrapper):
            return env
        if not isinstance(env, VecEnvWrapper):
            raise ValueError(f"no BonusVecEnvWrapper in the env chain of {type(venv).__name__}")
        env = env.venv


class ExplorationMetricsCallback(BaseCallback):
    """Logs the bonus wrapper's metrics to SB3's logger at the end of every rollout.

    Keys: `<prefix>/intrinsic_reward_mean`, `<prefix>/extrinsic_reward_mean` (means over the
    rollout's transitions), `<prefix>/bonus_updates`, `<prefix>/loss/<entry>` (the last training
    of the module) and `<prefix>/<module>/<metric>` (`module.metrics()`, e.g. RND's reward std).
    SB3's PPO writes them with its own train/ and rollout/ keys after the update.
    """

    def __init__(self, wrapper: BonusVecEnvWrapper | None = None, prefix: str = "explore", verbose: int = 0):
        super().__init__(verbose)
        self.wrapper = wrapper
        self.prefix = prefix
        self.last_metrics: dict[str, float] = {}
        """what the last rollout logged (without the prefix)"""

    def _init_callback(self) -> None:
        if self.wrapper is None:
            self.wrapper = find_bonus_wrapper(self.training_env)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        assert self.wrapper is not None
        self.last_metrics = self.wrapper.metrics()
        for key, value in self.last_metrics.items():
            self.logger.record(f"{self.prefix}/{key}", value)
