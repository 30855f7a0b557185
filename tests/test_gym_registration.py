"""gymnasium's conventions, each in a fresh interpreter (this process has imported everything already):
`import explore` registers the `Explore/` ids, `gymnasium.register_envs(explore)` is the idiom that
keeps the import, and `gymnasium.make("explore:Explore/<id>")` imports the package itself."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_fresh(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """`code` in a new interpreter that imports this checkout's packages, run outside the repository."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
    )


def test_import_explore_registers_the_ids(tmp_path):
    result = run_fresh(
        """
        import importlib.util
        import gymnasium as gym
        assert not any(k.startswith("Explore/") for k in gym.registry)
        import explore
        gym.register_envs(explore)
        env = gym.make("Explore/Bandit-Bernoulli-K5-Hard-v0")
        obs, info = env.reset(seed=0)
        print(env.action_space.n, obs.shape)
        if importlib.util.find_spec("envpool") is not None:  # the README's example (the 'atari' extra)
            env = gym.make("Explore/MontezumaRevenge-v5")
            obs, info = env.reset(seed=0)
            vec = gym.make_vec("Explore/MontezumaRevenge-v5", num_envs=2)
            print(obs.shape, vec.num_envs)
            env.close()
            vec.close()
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # 5 arms; the observation is the previous action one-hot (5) and the previous reward (1)
    assert lines[0] == "5 (6,)"
    if importlib.util.find_spec("envpool") is not None:
        assert lines[1] == "(4, 84, 84) 2"  # RND's 4 stacked 84x84 frames; 2 envs


def test_module_colon_id_form_imports_the_package(tmp_path):
    result = run_fresh(
        """
        import gymnasium as gym
        env = gym.make("explore:Explore/Bandit-Bernoulli-K5-Hard-v0")
        print(env.spec.id)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Explore/Bandit-Bernoulli-K5-Hard-v0"


def test_import_envs_first_still_registers_once(tmp_path):
    """envs imports explore.errors, which runs explore/__init__: no circular import, every id registered."""
    result = run_fresh(
        """
        import envs
        import explore
        import gymnasium as gym
        ids = [k for k in gym.registry if k.startswith("Explore/")]
        print(len(ids) == sum(len(v) for v in envs.available_ids().values()))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
