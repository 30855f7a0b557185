"""Standing fault tests: ill-formed actions on every suite get an error naming them, never a silent
accept or a process abort (issue 13, defect 4). Real envs, no doubles.

Every case is checked against a hand-written expectation of the message, and each suite must
still step normally afterwards: a refused batch changes nothing.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import envs
from envs.core import InvalidActionError, check_actions


def installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def needs(*modules: str):
    return pytest.mark.skipif(not installed(*modules), reason=f"needs {', '.join(modules)}")


NUM_ENVS = 2
# suite -> (env id, make kwargs, number of actions, modules it needs)
SUITES = {
    "atari": ("Pong-v5", {}, 18, ("envpool",)),
    "minigrid": ("MiniGrid-Empty-5x5-v0", {}, 7, ("envpool",)),
    "babyai": ("BabyAI-GoToRedBall-v0", {}, 7, ("envpool",)),
    "minihack": ("MiniHack-Room-5x5-v0", {"num_workers": 1}, 8, ("nle", "minihack")),
    "bandits": ("Bandit-Bernoulli-K5-Hard-v0", {}, 5, ()),
    "deepsea": ("DeepSea-N5-v0", {}, 2, ()),
}


@pytest.fixture(
    scope="module",
    params=[pytest.param(name, marks=needs(*spec[3])) for name, spec in SUITES.items()],
)
def suite_env(request):
    env_id, kwargs, num_actions, _ = SUITES[request.param]
    vec = envs.make(env_id, num_envs=NUM_ENVS, seed=0, **kwargs)
    vec.reset(seed=0)
    yield vec, num_actions
    vec.close()


# (actions, the message expected for NUM_ENVS = 2 and n actions); {n} is the suite's action count
BAD_ACTIONS = {
    "one past the end": (
        lambda n: np.array([n, 0]),
        r"actions must be integers in \[0, {n}\), got {n} \(env 0\)$",
    ),
    "far out": (
        lambda n: np.array([99, 1000]),
        r"must be integers in \[0, {n}\), got 99 \(env 0\), 1000 \(env 1\)$",
    ),
    "negative": (lambda n: np.array([0, -1]), r"actions must be integers in \[0, {n}\), got -1 \(env 1\)$"),
    "float": (lambda n: np.array([0.5, 1.7]), r"actions must be integers in \[0, {n}\), got dtype float64"),
    "integral float": (lambda n: np.array([1.0, 2.0]), r"must be integers in \[0, {n}\), got dtype float64"),
    "bool": (lambda n: np.array([True, False]), r"must be integers in \[0, {n}\), got dtype bool"),
    "python floats": (lambda n: [0.0, 3.5], r"must be integers in \[0, {n}\), got dtype float64"),
    "strings": (lambda n: np.array(["0", "1"]), r"must be integers in \[0, {n}\), got dtype <U1"),
    "more than envs": (
        lambda n: np.array([0, 1, 2]),
        r"expected actions of shape \(2,\), .*got shape \(3,\)",
    ),
    "fewer than envs": (lambda n: np.array([0]), r"expected actions of shape \(2,\), .*got shape \(1,\)"),
    "column": (lambda n: np.array([[0], [1]]), r"expected actions of shape \(2,\), .*got shape \(2, 1\)"),
    "scalar": (lambda n: np.int64(0), r"expected actions of shape \(2,\), .*got shape \(\)"),
}


@pytest.mark.parametrize("case", list(BAD_ACTIONS))
def test_bad_actions_are_refused_by_every_suite_and_change_nothing(suite_env, case):
    vec, n = suite_env
    make_actions, message = BAD_ACTIONS[case]
    with pytest.raises(InvalidActionError, match=message.format(n=n)):
        vec.step(make_actions(n))
    # nothing was sent: a valid step goes through (the process, and the env, survived)
    obs, reward, terminated, truncated, info = vec.step(np.array([n - 1, 0]))
    assert reward.shape == (NUM_ENVS,) and terminated.shape == truncated.shape == (NUM_ENVS,)


BAD_ENV_IDS = {
    "out of range": (np.array([0, 5]), r"env_ids must lie in \[0, 2\), got 5 \(position 1\)$"),
    "negative": (np.array([-2]), r"env_ids must lie in \[0, 2\), got -2 \(position 0\)$"),
    "repeated": (np.array([1, 1]), r"env_ids name an env twice: \[1, 1\]"),
    "float": (np.array([0.0]), r"env_ids must be a 1-D integer array, got shape \(1,\) dtype float64"),
}


@pytest.mark.parametrize("case", list(BAD_ENV_IDS))
def test_bad_env_ids_are_refused_by_every_suite(suite_env, case):
    vec, n = suite_env
    ids, message = BAD_ENV_IDS[case]
    with pytest.raises(InvalidActionError, match=message):
        vec.send(np.zeros(len(ids), dtype=np.int64), env_ids=ids)
    vec.step(np.zeros(NUM_ENVS, dtype=np.int64))


def test_actions_for_env_ids_name_the_env_not_the_position():
    with pytest.raises(InvalidActionError, match=r"got 7 \(env 3\)$"):
        check_actions(np.array([0, 7]), num_actions=5, num_envs=4, env_ids=np.array([1, 3]))
    with pytest.raises(
        InvalidActionError, match=r"shape \(2,\), one for each of the 2 env_ids; got shape \(3,\)"
    ):
        check_actions(np.array([0, 1, 2]), num_actions=5, num_envs=4, env_ids=np.array([1, 3]))


def test_valid_actions_pass_through_as_int64():
    actions, ids = check_actions(np.array([0, 17], dtype=np.int32), num_actions=18, num_envs=2)
    assert actions.dtype == np.int64 and actions.tolist() == [0, 17] and ids is None
    actions, ids = check_actions([4], num_actions=5, num_envs=3, env_ids=np.array([2], dtype=np.int32))
    assert actions.tolist() == [4] and ids.dtype == np.int64 and ids.tolist() == [2]
    empty, ids = check_actions(
        np.zeros(0, dtype=np.int64), num_actions=5, num_envs=3, env_ids=np.zeros(0, np.int64)
    )
    assert empty.shape == (0,) and ids.shape == (0,)


def test_a_long_list_of_bad_actions_is_cut_short():
    with pytest.raises(InvalidActionError, match=r"-1 \(env 7\) and 2 more$"):
        check_actions(np.full(10, -1), num_actions=5, num_envs=10)


@needs("envpool")
@pytest.mark.parametrize("env_id", ["MiniGrid-Empty-5x5-v0", "BabyAI-GoToRedBall-v0"])
def test_minigrid_actions_that_used_to_abort_the_process_raise_in_a_subprocess(env_id):
    """envpool's MiniGrid port aborts the whole process (SIGABRT from a C++ check) on action 50 or -2.

    Run in a child process, so that an abort shows as its exit status instead of killing pytest."""
    script = textwrap.dedent(
        f"""
        import numpy as np, envs
        from envs.core import InvalidActionError
        vec = envs.make({env_id!r}, num_envs=2, seed=0)
        vec.reset()
        for bad in ([50, 0], [0, -2], [7, 7]):
            try:
                vec.step(np.array(bad))
            except InvalidActionError as exc:
                print("refused:", exc)
        vec.step(np.array([2, 2]))
        print("alive")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the child died with status {done.returncode}:\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert lines == [
        "refused: actions must be integers in [0, 7), got 50 (env 0)",
        "refused: actions must be integers in [0, 7), got -2 (env 1)",
        "refused: actions must be integers in [0, 7), got 7 (env 0), 7 (env 1)",
        "alive",
    ]


@needs("envpool")
def test_single_envpool_env_refuses_bad_actions():
    import gymnasium as gym

    env = gym.make("Explore/Pong-v5")
    try:
        env.reset(seed=0)
        for bad, message in ((18, r"got 18 \(env 0\)"), (-1, r"got -1 \(env 0\)"), (1.5, "dtype float64")):
            with pytest.raises(InvalidActionError, match=message):
                env.step(bad)
        env.step(17)
    finally:
        env.close()


def test_single_bandit_env_refuses_float_actions_instead_of_truncating_them():
    from envs.bandits import BanditEnv

    env = BanditEnv("Bandit-Bernoulli-K5-Hard-v0", seed=0)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match=r"must be integers in \[0, 5\), got dtype float64"):
        env.step(1.7)
    with pytest.raises(InvalidActionError, match=r"must be integers in \[0, 5\), got 5 \(env 0\)"):
        env.step(5)
    env.step(4)


@needs("nle", "minihack")
def test_single_minihack_env_refuses_bad_actions():
    from envs.minihack import MiniHackEnv

    env = MiniHackEnv("MiniHack-Room-5x5-v0", seed=0)
    try:
        env.reset(seed=0)
        for bad, message in ((8, r"got 8 \(env 0\)"), (-1, r"got -1 \(env 0\)"), (0.5, "dtype float64")):
            with pytest.raises(InvalidActionError, match=message):
                env.step(bad)
        env.step(1)
    finally:
        env.close()


# --- text games: the actions are strings, one per env -----------------------------------------


@needs("envpool")
def test_babyai_text_refuses_a_wrong_number_of_commands():
    from envs.text import make_text_vec_env

    vec = make_text_vec_env("BabyAI-Text-GoToRedBall-v0", num_envs=2, seed=0)
    try:
        vec.reset()
        with pytest.raises(InvalidActionError, match=r"expected 2 commands, one per env, got 3"):
            vec.step(["go forward"] * 3)
        with pytest.raises(
            InvalidActionError, match=r"commands must be a list of 2 strings.*got str 'go forward'"
        ):
            vec.step("go forward")
        vec.step(["go forward", "turn left"])
    finally:
        vec.close()


@needs("textworld_express")
def test_twx_refuses_a_wrong_number_of_commands():
    from envs.text import make_text_vec_env

    vec = make_text_vec_env(
        "TWX-CoinCollector-v0", num_envs=2, num_workers=0, seed=0, numLocations=3, includeDoors=False
    )
    try:
        vec.reset()
        with pytest.raises(InvalidActionError, match=r"expected 2 commands, one per env, got 1"):
            vec.step(["look around"])
        with pytest.raises(InvalidActionError, match=r"commands must be a list of 2 strings.*got int '3'"):
            vec.step(3)
        vec.step(["look around", "inventory"])
    finally:
        vec.close()
