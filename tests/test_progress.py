"""What `explore train` prints: the progress-bar fields and the last line."""

from __future__ import annotations

import math

from explore.cli import train_size, train_summary
from explore.progress import progress_fields


def test_no_finished_episode_shows_a_dash_not_nan():
    assert progress_fields(120, math.nan, {"charts/SPS": 120}) == {"SPS": 120, "ret": "-"}


def test_every_exploration_scalar_is_shown_under_its_short_name():
    logged = {
        "charts/SPS": 50,
        "losses/policy_loss": 0.1,
        "exploration/rooms_visited": 3,
        "exploration/unique_states": 17,
    }
    assert progress_fields(50, 2.0, logged) == {
        "SPS": 50,
        "ret": 2.0,
        "rooms_visited": 3,
        "unique_states": 17,
    }


def test_goal_tasks_show_the_success_rate_of_the_episodes_that_finished():
    # a grid task logs no exploration/* scalar: its bar shows 2 successes in 3 finished episodes
    assert progress_fields(80, 0.5, {"charts/SPS": 80}, [1.0, 0.0, 1.0]) == {
        "SPS": 80,
        "ret": 0.5,
        "success": 2 / 3,
    }


def test_last_line_names_the_runs_own_folder_and_the_latest_return():
    result = {"global_step": 256, "run_dir": "runs/Pong-v5__rnd__1__1700000000", "latest_return": -21.0}
    assert train_summary(result) == (
        "finished 256 steps; run directory: runs/Pong-v5__rnd__1__1700000000; latest episodic return -21.0"
    )


def test_last_line_says_when_no_episode_finished():
    result = {"global_step": 64, "run_dir": "runs/x", "latest_return": math.nan}
    assert train_summary(result) == "finished 64 steps; run directory: runs/x; no episode finished yet"


def test_the_job_size_is_said_up_front():
    # --preset minihack: 50M steps in updates of 32 envs x 128 steps = 4,096; 12,207 whole updates
    assert train_size("MiniHack-MultiRoom-N4-Locked-v0", 32, 128, 50_000_000) == (
        "MiniHack-MultiRoom-N4-Locked-v0: 12,207 updates of 4,096 steps (32 envs x 128 steps), "
        "49,999,872 steps in all; the progress bar advances once per update"
    )
    assert train_size("Pong-v5", 8, 128, 49_152, world_size=2).startswith(
        "Pong-v5: 24 updates of 2,048 steps (8 envs x 128 steps x 2 ranks), 49,152 steps in all"
    )
