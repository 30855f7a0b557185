"""Stable-Baselines3 interoperability (explore/sb3.py), on real envpool envs and a small chain.

What is pinned, and how:
- SB3's own `check_env` on the single envs SB3 users would wrap, and on a one-env view of the
  adapter; a smoke test of the VecEnv API for the rest (shapes, dtypes, info dicts,
  terminal_observation, TimeLimit.truncated, seeds, attributes).
- Exact autoreset: per env, the transitions SB3 sees through `SB3VecEnv` equal the valid
  transitions of our own NEXT_STEP rollout of the same env with the same per-env action
  sequence, across terminations and truncations (MiniGrid dict observations; Atari frames with
  sticky actions, so the env's random stream must line up too).
- The bonus wrapper's intrinsic reward is exactly the module's `bonus` on the same (1, N) batch,
  across trainings of the module (RND, an episodic x global product, E3B).
- SB3 PPO with the count bonus solves a deceptive chain that it fails without the bonus.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3")
pytest.importorskip("envpool")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env  # noqa: E402
from stable_baselines3.common.logger import KVWriter, Logger  # noqa: E402
from stable_baselines3.common.vec_env import VecCheckNan, VecEnvWrapper, VecMonitor  # noqa: E402

import envs  # noqa: E402
from envs.core import VecEnv  # noqa: E402
from envs.minigrid import FORWARD, LEFT, RIGHT  # noqa: E402
from explore.sb3 import (  # noqa: E402
    BonusVecEnvWrapper,
    ExplorationMetricsCallback,
    SB3VecEnv,
    find_bonus_wrapper,
)

EMPTY = "MiniGrid-Empty-5x5-v0"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These networks are small: on a shared 2-core machine a second thread costs more than it gives."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- helpers -------------------------------------------------------------------------------------


def obs_row(obs: Any, i: int) -> Any:
    return {k: v[i].copy() for k, v in obs.items()} if isinstance(obs, dict) else obs[i].copy()


def assert_obs_equal(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    else:
        np.testing.assert_array_equal(a, b)


def minigrid_actions(steps: int, num_envs: int, seed: int) -> np.ndarray:
    """Mostly FORWARD, so Empty-5x5's goal (5 steps away) is reached within short episodes."""
    rng = np.random.default_rng(seed)
    return rng.choice([FORWARD, FORWARD, FORWARD, LEFT, RIGHT], size=(steps, num_envs))


def our_rollout(venv: VecEnv, actions: np.ndarray) -> list[list[tuple]]:
    """Per env, its first len(actions) VALID transitions (obs, action, reward, terminated,
    truncated, next_obs) under NEXT_STEP autoreset; env i takes actions[k, i] at its k-th valid
    step, and the dummy step after an episode end is left out (its action is ignored)."""
    steps, n = actions.shape
    obs, _ = venv.reset()
    current = [obs_row(obs, i) for i in range(n)]
    taken = np.zeros(n, dtype=int)
    dummy = np.zeros(n, dtype=bool)
    out: list[list[tuple]] = [[] for _ in range(n)]
    while (taken < steps).any():
        chosen = np.where(dummy | (taken >= steps), 0, actions[np.minimum(taken, steps - 1), np.arange(n)])
        obs, reward, terminated, truncated, _ = venv.step(chosen)
        for i in range(n):
            if not dummy[i] and taken[i] < steps:
                out[i].append(
                    (current[i], chosen[i], reward[i], terminated[i], truncated[i], obs_row(obs, i))
                )
                taken[i] += 1
            current[i] = obs_row(obs, i)
        dummy = terminated | truncated
    return out


def adapter_rollout(venv: SB3VecEnv, actions: np.ndarray) -> list[list[tuple]]:
    """The same transitions as SB3 sees them (same-step autoreset, terminal_observation)."""
    steps, n = actions.shape
    obs = venv.reset()
    out: list[list[tuple]] = [[] for _ in range(n)]
    for k in range(steps):
        new_obs, reward, dones, infos = venv.step(actions[k])
        for i in range(n):
            truncated = bool(infos[i]["TimeLimit.truncated"])
            next_obs = infos[i]["terminal_observation"] if dones[i] else obs_row(new_obs, i)
            out[i].append(
                (obs_row(obs, i), actions[k, i], reward[i], dones[i] and not truncated, truncated, next_obs)
            )
        obs = new_obs
    return out


class ChainVecEnv(VecEnv):
    """A deceptive chain behind our VecEnv protocol (NEXT_STEP autoreset, subset send/recv).

    States 0..length-1, one-hot observations, start at 0; action 1 moves right, 0 left. Reaching
    the right end pays 1 and ends the episode; moving left from state 0 EXITS with `exit_reward`
    (0.1), a small sure reward next to the start; episodes end after `max_steps` steps. A random
    walk finds the exit at once and essentially never the end (it must take 39 steps right
    without once leaving from state 0), so PPO without a bonus converges to the exit. The time
    limit terminates (no bootstrap), so a randomly initialized value function cannot pay the
    agent for wandering off; `truncate=True` reports it as a truncation instead.
    """

    def __init__(
        self,
        num_envs: int,
        length: int = 40,
        max_steps: int = 60,
        exit_reward: float = 0.1,
        truncate: bool = False,
    ):
        self.num_envs, self.length, self.max_steps = num_envs, length, max_steps
        self.exit_reward, self.truncate = exit_reward, truncate
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (length,), np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.pos = np.zeros(num_envs, dtype=np.int64)
        self.elapsed = np.zeros(num_envs, dtype=np.int64)
        self.ended = np.zeros(num_envs, dtype=bool)
        self._result: tuple | None = None

    def _obs(self, ids: np.ndarray) -> np.ndarray:
        obs = np.zeros((len(ids), self.length), dtype=np.float32)
        obs[np.arange(len(ids)), self.pos[ids]] = 1.0
        return obs

    def async_reset(self, seed: int | None = None) -> None:
        self.pos[:], self.elapsed[:], self.ended[:] = 0, 0, False
        ids = np.arange(self.num_envs)
        flags = np.zeros(self.num_envs, dtype=bool)
        info = {"env_id": ids.astype(np.int32), "elapsed_step": self.elapsed.copy()}
        self._result = (self._obs(ids), np.zeros(self.num_envs, np.float32), flags, flags.copy(), info)

    def send(self, actions: np.ndarray, env_ids: np.ndarray | None = None) -> None:
        ids = np.arange(self.num_envs) if env_ids is None else np.asarray(env_ids, dtype=np.int64)
        actions = np.asarray(actions).reshape(-1)
        dummy = self.ended[ids]
        exits = ~dummy & (self.pos[ids] == 0) & (actions != 1)
        moved = np.clip(self.pos[ids] + np.where(actions == 1, 1, -1), 0, self.length - 1)
        self.pos[ids] = np.where(dummy, 0, moved)
        self.elapsed[ids] = np.where(dummy, 0, self.elapsed[ids] + 1)
        goal = ~dummy & (self.pos[ids] == self.length - 1)
        limit = ~dummy & ~(goal | exits) & (self.elapsed[ids] >= self.max_steps)
        terminated = goal | exits | (limit & (not self.truncate))
        truncated = limit & self.truncate
        self.ended[ids] = terminated | truncated
        reward = (goal + self.exit_reward * exits).astype(np.float32)
        info = {"env_id": ids.astype(np.int32), "elapsed_step": self.elapsed[ids].copy()}
        self._result = (self._obs(ids), reward, terminated, truncated, info)

    def recv(self):
        assert self._result is not None
        result, self._result = self._result, None
        return result

    def close(self, **kwargs: Any) -> None:
        self.closed = True


class SingleEnvView(gym.Env):
    """One env of a 1-env SB3VecEnv with gymnasium's Env API, for SB3's check_env."""

    def __init__(self, venv: SB3VecEnv):
        assert venv.num_envs == 1
        self.venv = venv
        self.observation_space = venv.observation_space
        self.action_space = venv.action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.venv.seed(seed)
        return obs_row(self.venv.reset(), 0), dict(self.venv.reset_infos[0])

    def step(self, action):
        obs, reward, dones, infos = self.venv.step(np.array([action]))
        info = infos[0]
        truncated = bool(info["TimeLimit.truncated"])
        next_obs = info["terminal_observation"] if dones[0] else obs_row(obs, 0)
        return next_obs, float(reward[0]), bool(dones[0]) and not truncated, truncated, info


class Recorder(VecEnvWrapper):
    """Keeps what passes through: the observation before each step, actions, rewards, infos."""

    def __init__(self, venv):
        super().__init__(venv)
        self.steps: list[dict[str, Any]] = []
        self._obs = None

    def reset(self):
        self._obs = self.venv.reset()
        return self._obs

    def step_async(self, actions):
        self._actions = np.array(actions)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, reward, dones, infos = self.venv.step_wait()
        self.steps.append(
            {
                "obs": self._obs,
                "actions": self._actions,
                "reward": reward.copy(),
                "dones": dones.copy(),
                "infos": infos,
            }
        )
        self._obs = obs
        return obs, reward, dones, infos


class RecordingWriter(KVWriter):
    def __init__(self):
        self.records: list[dict[str, Any]] = []

    def write(self, key_values, key_excluded, step=0):
        self.records.append(dict(key_values))


# --- SB3's env checker ---------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", [EMPTY, "MontezumaRevenge-v5"])
def test_sb3_check_env_passes_on_single_envs_and_a_one_env_adapter(env_id):
    single = gym.make(f"Explore/{env_id}")
    check_env(single, warn=False)  # what SB3 users wrap with DummyVecEnv
    single.close()
    adapter = SB3VecEnv(envs.make(env_id, num_envs=1, seed=0, max_episode_steps=5))
    check_env(SingleEnvView(adapter), warn=False, skip_render_check=True)
    adapter.close()


# --- the VecEnv API ----------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", [EMPTY, "MontezumaRevenge-v5"])
def test_vec_env_api_smoke(env_id):
    n, limit = 3, 4
    venv = SB3VecEnv(envs.make(env_id, num_envs=n, seed=5, max_episode_steps=limit))
    checked = VecCheckNan(venv, raise_exception=True)
    space = venv.observation_space
    assert venv.num_envs == n and venv.action_space == gym.spaces.Discrete(venv.action_space.n)
    obs = checked.reset()
    assert len(venv.reset_infos) == n and all(int(i["elapsed_step"]) == 0 for i in venv.reset_infos)
    rng = np.random.default_rng(0)
    seen_done = 0
    for step in range(2 * limit + 1):
        obs, reward, dones, infos = checked.step(rng.integers(venv.action_space.n, size=n))
        assert reward.shape == (n,) and reward.dtype == np.float32
        assert dones.shape == (n,) and dones.dtype == bool
        assert isinstance(infos, list) and len(infos) == n and all(isinstance(i, dict) for i in infos)
        for i in range(n):
            assert space.contains(obs_row(obs, i))
            assert isinstance(infos[i]["TimeLimit.truncated"], bool)
            assert int(infos[i]["env_id"]) == i
            # steps count 1..limit within every episode: the dummy step (elapsed 0) is never shown
            assert int(infos[i]["elapsed_step"]) == step % limit + 1
            if dones[i]:
                seen_done += 1
                assert space.contains(infos[i]["terminal_observation"])
                assert int(infos[i]["elapsed_step"]) == limit  # the true last step, not the dummy
                assert infos[i]["TimeLimit.truncated"] is True  # the episode limit truncates
                assert int(venv.reset_infos[i]["elapsed_step"]) == 0
            else:
                assert "terminal_observation" not in infos[i]
                assert infos[i]["TimeLimit.truncated"] is False
        # every env ends exactly at the limit (Empty-5x5's goal is 5 steps away; no life is lost)
        assert dones.all() if (step + 1) % limit == 0 else not dones.any()
    assert seen_done == 2 * n and venv.dummy_steps == 2

    # seeds: SB3's seed(s) restarts env i from seed s + i, so the same seed gives the same episodes
    venv.seed(11)
    first = venv.reset()
    other = SB3VecEnv(envs.make(env_id, num_envs=n, seed=11, max_episode_steps=limit))
    assert_obs_equal(first, other.reset())
    actions = rng.integers(venv.action_space.n, size=n)
    assert_obs_equal(venv.step(actions)[0], other.step(actions)[0])

    # attributes and methods are the batch's
    assert venv.get_attr("max_episode_steps") == [limit] * n
    assert venv.get_attr("num_envs", indices=[0, 2]) == [n, n]
    assert venv.has_attr("seed") and not venv.has_attr("no_such_attribute")
    venv.set_attr("note", "x")
    assert venv.venv.note == "x"
    with pytest.raises(ValueError, match="whole batch"):
        venv.set_attr("note", "y", indices=[1])
    assert venv.env_is_wrapped(gym.Wrapper) == [False] * n
    venv.set_attr("double", lambda x: 2 * x)
    assert venv.env_method("double", 3) == [6] * n
    with pytest.raises(ValueError, match="whole batch"):
        venv.env_method("double", 3, indices=0)
    checked.close()
    other.close()


def test_adapter_refuses_async_pools():
    with pytest.raises(ValueError, match="synchronous"):
        SB3VecEnv(envs.make(EMPTY, num_envs=4, seed=0, batch_size=2))


def test_dummy_step_is_a_subset_step_that_leaves_the_other_envs_alone():
    venv = envs.make(EMPTY, num_envs=4, seed=0)
    venv.reset()
    venv.send(np.zeros(2, dtype=np.int32), np.array([3, 1], dtype=np.int32))
    _, _, _, _, info = venv.recv()
    assert sorted(info["env_id"].tolist()) == [1, 3]
    _, _, _, _, info = venv.step(np.zeros(4, dtype=np.int32))
    assert info["elapsed_step"].tolist() == [1, 2, 1, 2]  # envs 0 and 2 stepped once, 1 and 3 twice
    venv.close()


# --- exact autoreset: the adapter's transitions equal our own rollout's ------------------------


@pytest.mark.parametrize(
    ("env_id", "num_envs", "limit", "steps"),
    [(EMPTY, 4, 8, 60), ("MontezumaRevenge-v5", 3, 10, 32)],
)
def test_adapter_transitions_equal_our_rollout_across_episode_ends(env_id, num_envs, limit, steps):
    if env_id == EMPTY:
        actions = minigrid_actions(steps, num_envs, seed=1)
    else:
        actions = np.random.default_rng(1).integers(18, size=(steps, num_envs))
    ours = our_rollout(envs.make(env_id, num_envs=num_envs, seed=3, max_episode_steps=limit), actions)
    adapter = SB3VecEnv(envs.make(env_id, num_envs=num_envs, seed=3, max_episode_steps=limit))
    theirs = adapter_rollout(adapter, actions)
    adapter.close()
    terminations = truncations = 0
    for i in range(num_envs):
        assert len(ours[i]) == len(theirs[i]) == steps
        for k, (a, b) in enumerate(zip(ours[i], theirs[i], strict=True)):
            assert_obs_equal(a[0], b[0])  # the observation the action was chosen on
            assert a[1] == b[1]
            assert a[2] == b[2], (i, k)  # reward
            assert (bool(a[3]), bool(a[4])) == (bool(b[3]), bool(b[4])), (i, k)
            assert_obs_equal(a[5], b[5])  # next observation (the true final one at an end)
            terminations += bool(a[3])
            truncations += bool(a[4])
    assert truncations > 0
    if env_id == EMPTY:  # the goal was reached, with MiniGrid's positive reward
        assert terminations > 0
        assert any(t[2] > 0 for env in theirs for t in env)


# --- the bonus wrapper ---------------------------------------------------------------------------


def reference_batch(step: dict[str, Any], obs_space: gym.Space) -> dict[str, Any]:
    """The (1, N) batch of one recorded step, built independently of the wrapper."""
    dones = step["dones"]
    n = len(dones)
    next_obs = [
        step["infos"][i]["terminal_observation"] if dones[i] else obs_row(step["next"], i) for i in range(n)
    ]

    def stack(rows: list[Any]) -> Any:
        if isinstance(obs_space, gym.spaces.Dict):
            return {k: torch.from_numpy(np.stack([r[k] for r in rows]))[None] for k in obs_space.spaces}
        return torch.from_numpy(np.stack(rows))[None]

    return {
        "obs": stack([obs_row(step["obs"], i) for i in range(n)]),
        "next_obs": stack(next_obs),
        "actions": torch.as_tensor(step["actions"]).long()[None],
        "valid": torch.ones((1, n), dtype=torch.bool),
        "dones": torch.as_tensor(dones)[None],
    }


@pytest.mark.parametrize("expr", ["rnd", "count_e*rnd", "e3b"])
def test_bonus_wrapper_rewards_equal_the_modules_bonus_on_the_same_batch(expr):
    torch.manual_seed(0)
    n, window, coef = 4, 6, 0.5
    recorder = Recorder(SB3VecEnv(envs.make(EMPTY, num_envs=n, seed=2, max_episode_steps=5)))
    wrapper = BonusVecEnvWrapper(
        recorder, expr, n_steps=window, int_coef=coef, warmup_steps=4, learning_rate=1e-3
    )
    wrapper.reset()
    reference = copy.deepcopy(wrapper.module)  # the same state, fed the batches independently
    params_before = [p.detach().clone() for p in wrapper.module.parameters() if p.requires_grad]
    actions = minigrid_actions(3 * window, n, seed=4)
    dones_seen = 0
    for k in range(3 * window):
        obs, reward, dones, _ = wrapper.step(actions[k])
        step = recorder.steps[-1]
        step["next"] = obs
        expected = reference.bonus(reference_batch(step, wrapper.observation_space))[0].numpy()
        np.testing.assert_array_equal(wrapper.last_intrinsic, expected)
        np.testing.assert_array_equal(reward, (step["reward"] + coef * expected).astype(np.float32))
        assert (expected > 0).all()
        dones_seen += int(dones.sum())
        if (k + 1) % window == 0:  # the wrapper trained the module: carry its parameters over
            assert wrapper.num_updates == (k + 1) // window
            reference.load_state_dict(wrapper.module.state_dict())
    assert dones_seen > 0
    assert wrapper.last_losses and all(np.isfinite(v) for v in wrapper.last_losses.values())
    params_after = [p.detach() for p in wrapper.module.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(params_before, params_after, strict=True))
    metrics = wrapper.metrics()
    assert metrics["bonus_updates"] == 3 and metrics["intrinsic_reward_mean"] > 0
    assert any(key.startswith("loss/") for key in metrics)
    wrapper.close()


def test_bonus_wrapper_with_a_given_module_and_no_optimizer():
    from explore.counts import GlobalCount

    chain = ChainVecEnv(2, length=5, max_steps=9, exit_reward=0.0)
    wrapper = BonusVecEnvWrapper(SB3VecEnv(chain), GlobalCount(), n_steps=2)
    assert wrapper.optimizer is None
    wrapper.reset()
    # count first, then reward: every env's visit at a step counts before that step is rewarded
    expected = {(1, 1): [2**-0.5, 2**-0.5], (1, 0): [1.0, 1.0], (0, 1): [0.5, 0.5]}
    for actions, rewards in expected.items():
        _, reward, _, _ = wrapper.step(np.array(actions))
        np.testing.assert_allclose(reward, rewards, rtol=1e-6)
    assert wrapper.num_updates == 1  # one full window, nothing to train
    with pytest.raises(ValueError, match="no BonusVecEnvWrapper"):
        find_bonus_wrapper(SB3VecEnv(ChainVecEnv(1)))
    assert find_bonus_wrapper(VecMonitor(wrapper)) is wrapper


# --- SB3 PPO: the bonus makes the difference -----------------------------------------------------


def train_chain(bonus: str | None, seed: int = 0, timesteps: int = 12_288) -> tuple[float, RecordingWriter]:
    """SB3 PPO on the deceptive chain; returns the greedy policy's success rate and the logs."""
    venv = VecMonitor(SB3VecEnv(ChainVecEnv(8)))
    if bonus is not None:
        venv = BonusVecEnvWrapper(venv, bonus, n_steps=64, int_coef=0.1, seed=seed)
    model = PPO(
        "MlpPolicy",
        venv,
        n_steps=64,
        batch_size=128,
        n_epochs=4,
        learning_rate=1e-3,
        ent_coef=0.0,
        seed=seed,
        policy_kwargs={"net_arch": [64, 64]},
        device="cpu",
    )
    writer = RecordingWriter()
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    model.learn(timesteps, callback=ExplorationMetricsCallback() if bonus is not None else None)
    evaluation = SB3VecEnv(ChainVecEnv(8))
    obs = evaluation.reset()
    goals = 0.0
    for _ in range(ChainVecEnv(1).max_steps):
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, dones, _ = evaluation.step(action)
        goals += float((reward == 1.0).sum())
    return goals / 8, writer


def test_sb3_ppo_solves_the_deceptive_chain_with_the_count_bonus_and_not_without():
    """Seeds 0-3 were checked: with the bonus all four solve it by 12k steps (most by 8k), without
    it all four settle on the exit next to the start."""
    with_bonus, writer = train_chain("count", seed=0)
    without_bonus, _ = train_chain(None, seed=0)
    assert with_bonus == 1.0
    assert without_bonus == 0.0
    logged = {k for record in writer.records for k in record}
    assert {"explore/intrinsic_reward_mean", "explore/count/distinct_states"} <= logged
    assert "rollout/ep_rew_mean" in logged


# --- the example script ----------------------------------------------------------------------------


def test_runs_sb3_rnd_script_smoke(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))
    try:
        import sb3_rnd
    finally:
        sys.path.pop(0)
    result = sb3_rnd.main(
        sb3_rnd.Args(
            num_envs=2,
            n_steps=16,
            batch_size=16,
            n_epochs=1,
            total_timesteps=32,
            warmup_steps=8,
            max_episode_steps=20,
            run_dir=str(tmp_path / "run"),
            progress=False,
        )
    )
    assert result["timesteps"] >= 32
    assert (tmp_path / "run" / "model.zip").exists()
