"""The MiniHack VecEnv (worker processes over real NLE, no doubles), its conventions and its faults."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("nle")
minihack = pytest.importorskip("minihack")

import gymnasium as gym  # noqa: E402
from test_pool import gone  # noqa: E402  (tests/ is on sys.path under pytest)

from envs import minihack as mh  # noqa: E402
from envs import registration  # noqa: E402
from explore.errors import UnknownEnvError  # noqa: E402

ROOM = "MiniHack-Room-Random-5x5-v0"  # a lit 5x5 room: random start and stairs, no monsters, 8 moves
# CompassDirection order of MiniHack's navigation actions: N E S W NE SE SW NW
MOVES = {(0, -1): 0, (1, 0): 1, (0, 1): 2, (-1, 0): 3, (1, -1): 4, (1, 1): 5, (-1, 1): 6, (-1, -1): 7}


def make(num_envs: int = 4, **kwargs) -> mh.MiniHackVecEnv:
    kwargs.setdefault("num_workers", 2)
    kwargs.setdefault("env_id", ROOM)
    return mh.MiniHackVecEnv(num_envs=num_envs, **kwargs)


def kill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:  # dead (zombie or reaped) before we go on
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.01)


@pytest.fixture(scope="module")
def room():
    vec = make(seed=0)
    yield vec
    vec.close()


# --- ids and the suite -----------------------------------------------------------------------


def test_the_id_list_is_minihacks_registry():
    registered = sorted(i for i in gym.registry if i.startswith("MiniHack-"))
    assert list(mh.MINIHACK_IDS) == registered
    assert mh.minihack_ids() == registered
    assert set(mh.PAPER_TASKS) <= set(registered)  # all 16 of Henaff et al. 2023 exist in 1.0.2
    assert len(set(mh.PAPER_TASKS)) == 16


def test_suite_recognizes_ids_and_passes_only_a_set_episode_limit():
    suite = mh.suite()
    assert suite.name == "minihack" and suite.extra == "minihack"
    assert suite.id_pattern.match("MiniHack-Anything-v0")
    assert not suite.id_pattern.match("MontezumaRevenge-v5")
    assert suite.make_vec is mh.MiniHackVecEnv
    assert suite.config_kwargs(type("C", (), {"max_episode_steps": None})()) == {}
    assert suite.config_kwargs(type("C", (), {"max_episode_steps": 50})()) == {"max_episode_steps": 50}


def test_unknown_id_lists_close_matches_through_the_registry(monkeypatch):
    monkeypatch.setattr(registration, "SUITE_MODULES", (*registration.SUITE_MODULES, "envs.minihack"))
    monkeypatch.setattr(registration, "SUITES", [*registration.SUITES, mh.suite()])
    with pytest.raises(UnknownEnvError) as excinfo:
        registration.make("MiniHack-Room-Random-5x5-v1", num_envs=1)
    assert ROOM in excinfo.value.suggestions
    assert registration.find_suite(f"Explore/{ROOM}").name == "minihack"
    with pytest.raises(UnknownEnvError, match=ROOM):
        mh.MiniHackVecEnv("MiniHack-Rom-Random-5x5-v0", num_envs=1)


def test_gymnasium_make_and_make_vec_entry_points():
    full = f"{registration.NAMESPACE}/{ROOM}"
    added = full not in gym.registry
    if added:  # as register_gymnasium_ids does once the suite is in SUITE_MODULES
        gym.register(
            id=full,
            entry_point=mh.MiniHackEnv,
            vector_entry_point=mh.MiniHackVecEnv,
            kwargs={"env_id": ROOM},
            disable_env_checker=True,
        )
    try:
        env = gym.make(full)
        obs, _ = env.reset(seed=1)
        assert env.observation_space.contains(obs)
        env.close()
        vec = gym.make_vec(full, num_envs=2, num_workers=1)
        assert isinstance(vec, mh.MiniHackVecEnv)
        obs, info = vec.reset()
        assert vec.observation_space.contains(obs)
        vec.close()
    finally:
        if added:
            del gym.registry[full]


def test_end_status_matches_nle():
    status = minihack.MiniHack.StepStatus
    assert int(status.ABORTED) == mh.EndStatus.ABORTED
    assert int(status.RUNNING) == mh.EndStatus.RUNNING
    assert int(status.DEATH) == mh.EndStatus.DEATH
    assert int(status.TASK_SUCCESSFUL) == mh.EndStatus.TASK_SUCCESSFUL


@pytest.mark.parametrize("env_id", mh.PAPER_TASKS)
def test_every_paper_task_builds_resets_and_steps(env_id):
    # Covers the minigrid 3.x adapters: MultiRoom (width/height) and LavaCrossing (grid_size).
    if "MultiRoom" in env_id or "Crossing" in env_id:
        pytest.importorskip("minigrid")
    env = mh.MiniHackEnv(env_id, seed=0)
    try:
        obs, _ = env.reset()
        assert env.observation_space.contains(obs)
        obs, reward, terminated, truncated, info = env.step(0)
        assert env.observation_space.contains(obs)
        assert isinstance(reward, float) and not truncated
    finally:
        env.close()


# --- spaces and the protocol -----------------------------------------------------------------


def test_spaces_hold_the_keys_agents_need(room):
    space = room.single_observation_space
    expected = {
        "glyphs": ((21, 79), np.int16),
        "glyphs_crop": ((9, 9), np.int16),
        "blstats": ((27,), np.int64),
        "message": ((256,), np.uint8),
    }
    assert set(space.spaces) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert space[key].shape == shape and space[key].dtype == dtype, key
    assert room.single_action_space == gym.spaces.Discrete(8)
    assert room.max_episode_steps == 100  # the task's own limit (20 x its size)
    assert room.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP


def test_reset_and_step_match_the_spaces(room):
    obs, info = room.reset(seed=0)
    assert room.observation_space.contains(obs)
    np.testing.assert_array_equal(info["env_id"], np.arange(4))
    np.testing.assert_array_equal(info["elapsed_step"], np.zeros(4))
    obs, reward, terminated, truncated, info = room.step(np.array([0, 1, 2, 3]))
    assert room.observation_space.contains(obs)
    assert reward.shape == (4,) and reward.dtype == np.float32
    assert terminated.dtype == np.bool_ and truncated.dtype == np.bool_
    assert not np.shares_memory(terminated, truncated)
    assert set(info) == {"env_id", "elapsed_step", "success", "end_status"}
    np.testing.assert_array_equal(info["elapsed_step"], np.ones(4))
    assert info["success"].dtype == np.bool_
    # the agent stands in the middle of its egocentric crop
    x, y = obs["blstats"][0, 0], obs["blstats"][0, 1]
    assert obs["glyphs_crop"][0, 4, 4] == obs["glyphs"][0, y, x]


def test_observation_keys_are_selectable():
    vec = make(num_envs=1, num_workers=1, observation_keys=("chars", "blstats"))
    try:
        assert set(vec.single_observation_space.spaces) == {"chars", "blstats"}
        obs, _ = vec.reset()
        assert obs["chars"].shape == (1, 21, 79) and obs["chars"].dtype == np.uint8
    finally:
        vec.close()


def test_truncation_returns_the_final_observation_then_a_dummy_reset_step():
    seed, limit = 7, 3
    vec = make(num_envs=2, num_workers=1, seed=seed, max_episode_steps=limit)
    singles = [mh.MiniHackEnv(ROOM, seed=seed + i, max_episode_steps=limit) for i in range(2)]
    try:
        obs, _ = vec.reset()
        for i, env in enumerate(singles):
            first, _ = env.reset()
            np.testing.assert_array_equal(obs["glyphs"][i], first["glyphs"])
        actions = np.array([1, 3])
        for t in range(1, limit + 1):
            obs, reward, terminated, truncated, info = vec.step(actions)
            finals = [env.step(int(a)) for env, a in zip(singles, actions, strict=True)]
            np.testing.assert_array_equal(info["elapsed_step"], [t, t])
            assert not terminated.any()
            assert truncated.all() == (t == limit) and truncated.any() == (t == limit)
        for i, (final, *_rest) in enumerate(finals):
            for key in final:  # the true final observation, not the next episode's first
                np.testing.assert_array_equal(obs[key][i], final[key])
        assert list(info["end_status"]) == [mh.EndStatus.ABORTED] * 2
        assert not info["success"].any()

        obs, reward, terminated, truncated, info = vec.step(np.array([5, 6]))  # actions ignored
        np.testing.assert_array_equal(reward, [0.0, 0.0])
        np.testing.assert_array_equal(info["elapsed_step"], [0, 0])
        assert not (terminated | truncated).any()
        for i, env in enumerate(singles):  # the second episode's reset observation
            second, _ = env.reset()
            np.testing.assert_array_equal(obs["glyphs"][i], second["glyphs"])
            np.testing.assert_array_equal(obs["blstats"][i], second["blstats"])
        obs, *_, info = vec.step(np.array([0, 0]))
        np.testing.assert_array_equal(info["elapsed_step"], [1, 1])
    finally:
        vec.close()
        for env in singles:
            env.close()


def test_async_send_recv_returns_the_rows_named_by_env_id():
    vec = make(num_envs=4, batch_size=2, seed=3)
    try:
        with pytest.raises(RuntimeError, match="nothing in flight"):
            vec.recv()
        vec.async_reset()
        seen = []
        for _ in range(2):  # two batches of 2: each worker's pair
            obs, reward, terminated, truncated, info = vec.recv()
            assert len(info["env_id"]) == 2 and obs["glyphs"].shape[0] == 2
            assert set(info["env_id"]) in ({0, 1}, {2, 3})
            seen += list(info["env_id"])
        assert sorted(seen) == [0, 1, 2, 3]

        vec.send(np.array([1, 2]), env_ids=np.array([3, 0]))
        with pytest.raises(RuntimeError, match="recv"):
            vec.send(np.array([1]), env_ids=np.array([3]))  # still in flight
        obs, reward, terminated, truncated, info = vec.recv()
        np.testing.assert_array_equal(info["env_id"], [0, 3])
        np.testing.assert_array_equal(info["elapsed_step"], [1, 1])

        vec.send(np.array([4]), env_ids=np.array([2]))  # fewer in flight than batch_size
        *_, info = vec.recv()
        np.testing.assert_array_equal(info["env_id"], [2])
        with pytest.raises(ValueError, match="actions"):
            vec.send(np.array([8]), env_ids=np.array([1]))
    finally:
        vec.close()


@pytest.mark.slow  # three worker pools; the fast tier checks seeding on in-process envs (below)
def test_seeds_reproduce_observations():
    def rollout(seed: int) -> list[np.ndarray]:
        vec = make(num_envs=3, seed=seed)
        try:
            obs, _ = vec.reset()
            frames = [obs["glyphs"]]
            rng = np.random.default_rng(0)
            for _ in range(30):  # long enough for episodes to end and restart
                obs, *_ = vec.step(rng.integers(8, size=3))
                frames.append(obs["glyphs"])
            return frames
        finally:
            vec.close()

    a, b, c = rollout(11), rollout(11), rollout(12)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any((x != y).any() for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("env_id", [ROOM, "MiniHack-MultiRoom-N2-v0"])
def test_in_process_envs_are_seeded(env_id):
    if env_id != ROOM:  # MultiRoom builds on minigrid
        pytest.importorskip("minigrid")

    def first_frames(seed: int) -> list[np.ndarray]:
        env = mh.MiniHackEnv(env_id, seed=seed)
        try:
            return [env.reset()[0]["glyphs"] for _ in range(2)]
        finally:
            env.close()

    a, b, c = first_frames(5), first_frames(5), first_frames(6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert (a[0] != a[1]).any()  # one seed per episode, not one level forever
    assert any((x != y).any() for x, y in zip(a, c, strict=True))


def test_success_is_flagged_when_the_stairs_are_reached():
    vec = make(num_envs=2, num_workers=1, seed=0, observation_keys=("chars", "blstats"))
    try:
        obs, _ = vec.reset()
        solved = np.zeros(2, dtype=bool)
        for _ in range(12):
            actions = np.zeros(2, dtype=np.int64)
            for i in range(2):
                x, y = obs["blstats"][i, 0], obs["blstats"][i, 1]
                sy, sx = np.argwhere(obs["chars"][i] == ord(">"))[0]
                actions[i] = MOVES.get((int(np.sign(sx - x)), int(np.sign(sy - y))), 0)
            obs, reward, terminated, truncated, info = vec.step(actions)
            assert not info["success"][solved].any()  # only on the step that ends the episode
            newly = info["success"] & ~solved
            np.testing.assert_array_equal(terminated[newly], True)
            np.testing.assert_array_equal(info["end_status"][newly], mh.EndStatus.TASK_SUCCESSFUL)
            assert (reward[newly] > 0.5).all()
            solved |= newly
            if solved.all():
                break
        assert solved.all()
    finally:
        vec.close()


# --- faults ----------------------------------------------------------------------------------


def test_a_killed_worker_is_restarted_and_its_episodes_truncated():
    vec = make(num_envs=4, seed=0, max_restarts=2)
    try:
        vec.reset()
        actions = np.array([1, 1, 1, 1])
        for _ in range(2):
            last, *_ = vec.step(actions)
        old_pid = vec.worker_pids[0]

        kill_and_wait(old_pid)  # while the trainer holds the envs' latest rows
        obs, reward, terminated, truncated, info = vec.step(actions)
        np.testing.assert_array_equal(truncated, [True, True, False, False])
        assert not terminated.any()
        np.testing.assert_array_equal(info["end_status"][:2], mh.EndStatus.WORKER_LOST)
        np.testing.assert_array_equal(reward[:2], 0.0)
        np.testing.assert_array_equal(info["elapsed_step"], [3, 3, 3, 3])
        for key in obs:  # the cut bootstraps from the last state the trainer saw
            np.testing.assert_array_equal(obs[key][:2], last[key][:2])
        assert vec.worker_pids[0] != old_pid and vec.worker_restarts == [1, 0]
        assert gone(old_pid)

        obs, reward, terminated, truncated, info = vec.step(actions)  # the dummy step of envs 0, 1
        np.testing.assert_array_equal(info["elapsed_step"], [0, 0, 4, 4])
        np.testing.assert_array_equal(reward[:2], 0.0)
        assert not (terminated | truncated)[:2].any()
        assert vec.observation_space.contains(obs)

        # in flight when it dies: stopped, sent an action, killed
        os.kill(vec.worker_pids[1], signal.SIGSTOP)
        vec.send(actions)
        kill_and_wait(vec.worker_pids[1])
        *_, truncated, info = vec.recv()
        np.testing.assert_array_equal(truncated, [False, False, True, True])
        np.testing.assert_array_equal(info["end_status"][2:], mh.EndStatus.WORKER_LOST)
        assert vec.worker_restarts == [1, 1]
    finally:
        vec.close()


@pytest.mark.slow  # the restart itself is tested in the fast tier (above)
def test_too_many_restarts_stop_the_run_naming_the_worker_and_envs():
    vec = make(num_envs=4, seed=0, max_restarts=0)
    try:
        vec.reset()
        kill_and_wait(vec.worker_pids[1])
        with pytest.raises(mh.WorkerCrashedError, match=r"worker 1 .*envs 2-3.*killed by SIGKILL"):
            vec.step(np.zeros(4, dtype=np.int64))
    finally:
        vec.close()


def test_a_hung_worker_raises_timeout_instead_of_hanging():
    vec = make(num_envs=2, seed=0, timeout=1.0)
    try:
        vec.reset()
        pid = vec.worker_pids[1]
        os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=r"worker 1 \(pid \d+, envs 1\)"):
            vec.step(np.zeros(2, dtype=np.int64))
        assert time.monotonic() - start < 10
    finally:
        vec.close(timeout=0.5)  # it cannot answer: SIGKILL ends a stopped process too
    assert gone(pid)


def test_a_task_that_cannot_be_built_fails_clearly():
    with pytest.raises(mh.WorkerCrashedError, match="Observation key bogus is not supported"):
        make(num_envs=2, observation_keys=("glyphs", "bogus"))


def test_close_leaves_no_processes_or_shared_memory():
    vec = make(num_envs=4, seed=0)
    vec.reset()
    vec.step(np.zeros(4, dtype=np.int64))
    pids, shm_name, scratch = vec.worker_pids, vec._shm.name, vec._scratch
    vec.close()
    vec.close()  # idempotent
    assert vec.closed
    for pid in pids:
        assert gone(pid), f"worker {pid} still exists (zombie or alive)"
    assert not os.path.exists(f"/dev/shm/{shm_name}")
    assert not os.path.exists(scratch)
    with pytest.raises(RuntimeError, match="closed"):
        vec.step(np.zeros(4, dtype=np.int64))
