"""The py-spy 'where the time goes' table (benchmarks/profile_training.py).

What is pinned: the shares from a hand-made collapsed profile, computed by hand (root filtering,
one count per stack for a recurring frame, imports apart, the near-universal frames and torch's
module plumbing left out); and a tiny real run under py-spy that names the PPO update.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import profile_training  # noqa: E402
from profile_training import Profile  # noqa: E402

PPO = "/repo/agents/ppo.py"
MODULE = "/site-packages/torch/nn/modules/module.py"
COLLAPSED = "\n".join(
    [
        # outside train(): start-up, not counted
        "<module> (run.py:1);_find_and_load (<frozen importlib._bootstrap>:1176) 50",
        # 6 samples in the update: backward 4, a forward through module plumbing 2
        f"<module> (run.py:9);train ({PPO}:470);ppo_update ({PPO}:400);backward (torch/autograd/__init__.py:3) 4",
        f"<module> (run.py:9);train ({PPO}:470);ppo_update ({PPO}:390);_call_impl ({MODULE}:1)"
        f";forward (agents/networks.py:50) 2",
        # 3 samples in the rollout, where act recurs on one stack (it counts once for those 3)
        f"<module> (run.py:9);train ({PPO}:470);act ({PPO}:560);act ({PPO}:561);send (envs/core.py:7) 3",
        # 1 sample in a lazy import inside train: apart
        f"<module> (run.py:9);train ({PPO}:470);_find_and_load (<frozen importlib._bootstrap>:1) 1",
        "",
        "a malformed line",
    ]
)


def test_shares_from_a_collapsed_profile_match_a_hand_count():
    counts = profile_training.where_time_goes(COLLAPSED)
    assert counts["samples"] == 9 and counts["import_samples"] == 1
    assert counts["inclusive"][("ppo_update", PPO)] == 6
    assert counts["inclusive"][("act", PPO)] == 3  # once per stack although it recurs
    assert counts["self"][("send", "envs/core.py")] == 3
    assert counts["self"][("ppo_update", PPO)] == 0
    rows = profile_training.table_rows(counts, top=10)
    shares = {row["function"]: (row["inclusive"], row["self"]) for row in rows}
    assert shares == {
        "ppo_update": (6 / 9, 0.0),
        "backward": (4 / 9, 4 / 9),
        "act": (3 / 9, 0.0),
        "send": (3 / 9, 3 / 9),
        "forward": (2 / 9, 2 / 9),
    }  # train and <module> are on every stack; _call_impl is torch's plumbing
    assert [row["function"] for row in rows] == ["ppo_update", "backward", "act", "send", "forward"]
    assert [row["function"] for row in profile_training.table_rows(counts, top=2)] == [
        "ppo_update",
        "backward",
    ]


def test_frames_without_a_location_keep_their_text():
    assert profile_training.frame_key("ppo_update (/x/agents/ppo.py:12)") == (
        "ppo_update",
        "/x/agents/ppo.py",
    )
    assert profile_training.frame_key("<native>") == ("<native>", "")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("py-spy") is None, reason="needs py-spy")
def test_a_tiny_run_under_py_spy_names_the_ppo_update(tmp_path):
    pytest.importorskip("envpool")
    out = tmp_path / "profile.md"
    text = profile_training.main(Profile(num_envs=2, num_steps=16, updates=2, rate=200, out=str(out)))
    assert out.read_text() == text
    rows = [
        line
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith(("| function", "| ---"))
    ]
    assert any(row.startswith("| ppo_update | agents/ppo.py | ") for row in rows)
    for row in rows:
        inclusive, self_share = (float(cell.strip().rstrip("%")) for cell in row.split("|")[3:5])
        assert 0 <= self_share <= inclusive < 100 * profile_training.NEARLY_ALL


def test_an_unknown_preset_is_named():
    with pytest.raises(SystemExit, match="--preset 'nope' is unknown; valid presets: paper"):
        profile_training.main(Profile(preset="nope"))
