"""The novelty study's scoring and aggregation (benchmarks/novelty_study.py) on synthetic scores: no training."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rliable", reason="the study aggregates with rliable (pip install rliable)")

STUDY_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "novelty_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("novelty_study", STUDY_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["novelty_study"] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("novelty_study", None)


def test_final_score_is_the_mean_of_the_last_fraction(study):
    values = np.arange(10, dtype=float)  # 0..9
    assert study.final_score(values, 0.2) == pytest.approx(8.5)  # last 2 points
    assert study.final_score(values, 1.0) == pytest.approx(4.5)
    assert study.final_score([0.0, 1.0, 0.25], 0.01) == pytest.approx(0.25)  # at least one point
    assert np.isnan(study.final_score([], 0.2))


def test_final_score_weights_points_by_their_episodes(study):
    # the last 2 of 10 points: an update where one lone success finished, then one with 15 failures
    values, episodes = np.r_[np.zeros(8), 1.0, 0.0], np.r_[np.full(8, 16), 1, 15]
    assert study.final_score(values, 0.2, episodes) == pytest.approx(1 / 16)
    assert study.final_score(values, 0.2) == pytest.approx(0.5)  # unweighted: what an update-mean says


def test_per_step_mean_averages_values_logged_at_one_step(study):
    steps, values, counts = study.per_step_mean(
        [2048, 2048, 4096, 6144, 6144, 6144], [0.0, 1.0, 0.5, 1.0, 1.0, 0.0]
    )
    assert steps.tolist() == [2048, 4096, 6144]
    assert values == pytest.approx([0.5, 0.5, 2 / 3])
    assert counts.tolist() == [2, 1, 3]


def test_task_specs_with_an_episode_limit(study):
    assert study.parse_task("MiniGrid-Empty-16x16-v0@256") == ("MiniGrid-Empty-16x16-v0", 256)
    assert study.parse_task("MiniGrid-DoorKey-5x5-v0") == ("MiniGrid-DoorKey-5x5-v0", None)
    assert study.short_task("MiniGrid-Empty-16x16-v0@256") == "Empty-16x16@256"
    assert study.short_task("MiniGrid-DoorKey-5x5-v0") == "DoorKey-5x5"
    with pytest.raises(SystemExit, match="positive integer"):
        study.parse_task("MiniGrid-Empty-8x8-v0@x")


def _synthetic_scores(seeds: int = 8) -> dict[str, dict[str, np.ndarray]]:
    """Two tasks: 'good' succeeds everywhere; 'bad' only on 'fixed'; 'flat' is one constant."""
    rng = np.random.default_rng(0)
    return {
        "fixed": {
            "good": np.clip(0.9 + 0.05 * rng.standard_normal(seeds), 0, 1),
            "bad": np.clip(0.8 + 0.05 * rng.standard_normal(seeds), 0, 1),
            "flat": np.full(seeds, 0.3),
        },
        "procedural": {
            "good": np.clip(0.85 + 0.05 * rng.standard_normal(seeds), 0, 1),
            "bad": np.clip(0.1 + 0.05 * rng.standard_normal(seeds), 0, 1),
            "flat": np.full(seeds, 0.3),
        },
    }


def test_iqm_per_task_is_the_interquartile_mean(study):
    scores = {"task": {"b": np.arange(8, dtype=float)}}  # IQM drops 2 points each side: mean(2..5)
    (row,) = study.aggregate(scores, reps=200, seed=0)
    assert row["task"] == "task" and row["bonus"] == "b" and row["n"] == 8
    assert row["iqm"] == pytest.approx(3.5)
    assert row["ci_low"] <= row["iqm"] <= row["ci_high"]
    assert row["scores"].split() == [f"{x:.3f}" for x in range(8)]


def test_aggregate_rows_cis_and_the_all_tasks_row(study):
    scores = _synthetic_scores()
    rows = study.aggregate(scores, reps=300, seed=0)
    by_key = {(r["task"], r["bonus"]): r for r in rows}
    assert set(by_key) == {
        (t, b) for t in ("fixed", "procedural", study.ALL_TASKS) for b in ("good", "bad", "flat")
    }
    for (task, bonus), row in by_key.items():
        assert row["ci_low"] <= row["iqm"] <= row["ci_high"], (task, bonus)
        if task != study.ALL_TASKS:
            s = np.sort(scores[task][bonus])
            assert row["iqm"] == pytest.approx(s[2:6].mean())  # 8 seeds: the middle 4
            assert row["n"] == 8
    # a constant score has a degenerate interval
    flat = by_key[("fixed", "flat")]
    assert flat["iqm"] == flat["ci_low"] == flat["ci_high"] == pytest.approx(0.3)
    # over both tasks: IQM of all 16 (seed, task) scores; 'bad' is dragged down by 'procedural'
    allbad = by_key[(study.ALL_TASKS, "bad")]
    flat_scores = np.sort(np.concatenate([scores["fixed"]["bad"], scores["procedural"]["bad"]]))
    assert allbad["iqm"] == pytest.approx(flat_scores[4:12].mean())
    assert allbad["n"] == 16
    assert by_key[(study.ALL_TASKS, "good")]["iqm"] > allbad["iqm"]
    assert by_key[("procedural", "good")]["ci_low"] > by_key[("procedural", "bad")]["ci_high"]


def test_bootstrap_is_reproducible_from_its_seed(study):
    scores = _synthetic_scores(seeds=5)
    first = study.aggregate(scores, reps=200, seed=3)
    assert study.aggregate(scores, reps=200, seed=3) == first
    other = study.aggregate(scores, reps=200, seed=4)
    assert [r["iqm"] for r in other] == [r["iqm"] for r in first]  # the point estimate does not resample
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    study.aggregate(scores, reps=50, seed=3)  # the global NumPy RNG is left as it was
    assert np.random.rand() == expected


def test_all_tasks_row_leaves_out_a_bonus_missing_on_a_task(study):
    scores = {"a": {"x": [0.1, 0.2, 0.3], "y": [0.5, 0.5, 0.5]}, "b": {"x": [0.4, 0.5, 0.6]}}
    rows = study.aggregate(scores, reps=100, seed=0)
    assert [(r["task"], r["bonus"]) for r in rows] == [
        ("a", "x"),
        ("a", "y"),
        ("b", "x"),
        (study.ALL_TASKS, "x"),
    ]


def test_binned_curves_mean_and_std_over_runs(study):
    run1 = (np.array([100, 200, 900]), np.array([0.0, 0.2, 1.0]), np.array([1, 1, 4]))
    run2 = (np.array([150, 950]), np.array([0.4, 0.6]), np.array([2, 2]))
    x, mean, std = study.binned_curves([run1, run2], total_steps=1000, bins=2)
    assert x.tolist() == [250.0, 750.0]
    # bin 0: run1 mean(0, 0.2) = 0.1, run2 0.4; bin 1: run1 1.0, run2 0.6
    assert mean == pytest.approx([0.25, 0.8])
    assert std == pytest.approx([0.15, 0.2])
    _, mean, _ = study.binned_curves([run1], total_steps=1000, bins=4)  # a bin with no points is NaN
    assert np.isnan(mean[2]) and mean[0] == pytest.approx(0.1)
    weighted = (np.array([100, 200]), np.array([1.0, 0.0]), np.array([1, 3]))  # 1 success in 4 episodes
    _, mean, _ = study.binned_curves([weighted], total_steps=1000, bins=1)
    assert mean == pytest.approx([0.25])


def test_markdown_table_and_csv(study, tmp_path):
    scores = {
        "MiniGrid-Empty-16x16-v0@256": {"rnd": [1.0, 0.0, 1.0]},
        "MiniGrid-DoorKey-5x5-v0": {"rnd": [0.5] * 3},
    }
    by_metric = {m: study.aggregate(scores, reps=100, seed=0) for m in ("success", "return")}
    rows = study.merge_metric_rows(by_metric)
    assert len(rows) == 3 and rows[0]["success_iqm"] == rows[0]["return_iqm"]
    table = study.markdown_table(rows, {"success": "success_", "return": "return_"})
    lines = table.strip().splitlines()
    assert lines[0].startswith("| task | bonus | success IQM [95% CI] | return IQM [95% CI]")
    assert lines[2].startswith("| Empty-16x16@256 | rnd | ")
    assert lines[3].startswith("| DoorKey-5x5 | rnd | 0.500 [0.500, 0.500]")
    assert lines[4].startswith(f"| {study.ALL_TASKS} | rnd |")
    study.write_csv(tmp_path / "summary.csv", rows)
    header = (tmp_path / "summary.csv").read_text().splitlines()[0]
    assert header.startswith("task,bonus,n,success_iqm,success_ci_low,success_ci_high,success_scores")
