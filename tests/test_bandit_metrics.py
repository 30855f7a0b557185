"""Bandit metrics (explore/bandit_metrics.py) on hand-built trajectories, the bootstrap, the table,
and the suite report (explore/bandit_report.py) on a tiny suite."""

from __future__ import annotations

import csv
import io

import pytest
import torch

from agents.bandits import Trajectory
from explore.bandit_metrics import (
    Estimate,
    ResultRow,
    arm_counts,
    bootstrap_ci,
    bootstrap_curve,
    csv_text,
    cumulative_regret,
    greedy_frac,
    markdown_table,
    min_frac,
    suffix_failure,
    summarize,
    total_regret,
)
from explore.bandit_report import BanditsConfig, bandits_main, evaluate_suite, validate, write_report
from explore.errors import ConfigError, UnknownEnvError


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: small tensors, and a second thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hand_built() -> Trajectory:
    """T = 6 rounds, B = 3 instances, K = 3 arms; best arm mean 0.75, the others 0.25 (gap 0.5).

    instance 0: best arm 0, arms 0 1 0 1 0 2, rewards 1 0 0 1 1 0
    instance 1: best arm 2, arms 2 2 1 2 1 2, rewards 0 0 1 0 0 1
    instance 2: best arm 0, arms 0 0 0 1 1 2, rewards 0 0 0 0 0 0
    """
    arms = torch.tensor([[0, 1, 0, 1, 0, 2], [2, 2, 1, 2, 1, 2], [0, 0, 0, 1, 1, 2]]).T
    rewards = torch.tensor(
        [[1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.float32
    ).T
    means = torch.tensor([[0.75, 0.25, 0.25], [0.25, 0.25, 0.75], [0.75, 0.25, 0.25]])
    chosen = means.gather(1, arms.T).T
    best = means.amax(dim=1).expand(6, 3)
    return Trajectory(arms, rewards, chosen, best.clone(), num_arms=3)


def test_regret_by_hand() -> None:
    traj = hand_built()
    # suboptimal pulls: instance 0 three, instance 1 two, instance 2 three; gap 0.5 each
    assert total_regret(traj).tolist() == [1.5, 1.0, 1.5]
    assert cumulative_regret(traj)[:, 0].tolist() == [0.0, 0.5, 0.5, 1.0, 1.0, 1.5]


def test_suffix_failure_by_hand() -> None:
    # rounds 3, 4, 5: instance 0 pulls arm 0 (best) at round 4; instance 1 pulls arm 2 (best);
    # instance 2 pulls 1, 1, 2 and never its best arm 0
    assert suffix_failure(hand_built()).tolist() == [0.0, 0.0, 1.0]
    # from round 1 on, instance 2 pulls arm 0 twice: no failure
    assert suffix_failure(hand_built(), start_frac=1 / 6).tolist() == [0.0, 0.0, 0.0]


def test_min_frac_by_hand() -> None:
    traj = hand_built()
    assert arm_counts(traj).tolist() == [[3, 2, 1], [0, 2, 4], [3, 2, 1]]
    assert min_frac(traj).tolist() == [3 * 1 / 6, 0.0, 3 * 1 / 6]


def test_greedy_frac_by_hand() -> None:
    # instance 0 (rounds 1..5): 1: arm1 untried -> no; 2: arm0 mean 1 vs arm1 0 -> yes;
    #   3: arm1 (0) vs arm0 (0.5) -> no; 4: arm0 0.5 ties arm1 0.5 -> yes; 5: arm2 untried -> no: 2/5
    # instance 1: 1: arm2, the only tried -> yes; 2: arm1 untried -> no; 3: arm2 0 vs arm1 1 -> no;
    #   4: arm1 1 vs arm2 0 -> yes; 5: arm2 0 vs arm1 0.5 -> no: 2/5
    # instance 2: 1, 2: arm0 the only tried -> yes, yes; 3: arm1 untried -> no;
    #   4: arm1 0 ties arm0 0 -> yes; 5: arm2 untried -> no: 3/5
    assert greedy_frac(hand_built()).tolist() == pytest.approx([0.4, 0.4, 0.6], abs=1e-15)


def test_greedy_frac_chunks_agree_with_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import explore.bandit_metrics as metrics

    torch.manual_seed(0)
    arms = torch.randint(4, (50, 37))
    rewards = torch.randn(50, 37)
    zeros = torch.zeros(50, 37)
    traj = Trajectory(arms, rewards, zeros, zeros, num_arms=4)
    whole = greedy_frac(traj)
    monkeypatch.setattr(metrics, "_CHUNK_ELEMENTS", 50 * 4 * 5)  # 5 instances per chunk
    assert torch.equal(greedy_frac(traj), whole)


def test_bootstrap_ci() -> None:
    constant = bootstrap_ci(torch.full((100,), 2.5))
    assert constant == Estimate(2.5, 2.5, 2.5)
    coins = torch.tensor([0.0, 1.0]).repeat(200)  # mean 0.5, standard error 0.025
    est = bootstrap_ci(coins, num_resamples=4000, seed=1)
    assert est.mean == 0.5
    assert est.low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.006)
    assert est.high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.006)
    assert bootstrap_ci(coins, seed=3) == bootstrap_ci(coins, seed=3)
    with pytest.raises(ValueError):
        bootstrap_ci(coins, confidence=1.0)


def test_bootstrap_curve_band_contains_the_mean() -> None:
    torch.manual_seed(0)
    curves = torch.randn(30, 200).cumsum(dim=0).abs()
    mean, low, high = bootstrap_curve(curves, num_resamples=500)
    assert mean.shape == low.shape == high.shape == (30,)
    assert (low <= mean + 1e-12).all() and (mean <= high + 1e-12).all()
    torch.testing.assert_close(mean, curves.double().mean(dim=1))


def test_summary_table_and_csv() -> None:
    metrics = summarize(hand_built(), num_resamples=200)
    assert metrics["regret"].mean == pytest.approx(4.0 / 3.0)
    assert metrics["suff_fail_freq"].mean == pytest.approx(1 / 3)
    rows = [ResultRow("Task-A", "ucb", 6, 3, metrics), ResultRow("Task-A", "uniform", 6, 3, metrics)]
    md = markdown_table(rows)
    lines = md.strip().splitlines()
    assert len(lines) == 4 and "SuffFailFreq(T/2)" in lines[0] and "GreedyFrac" in lines[0]
    assert lines[2].startswith("| Task-A | ucb | 6 | 3 | 1.33 [")
    parsed = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert [r["agent"] for r in parsed] == ["ucb", "uniform"]
    assert float(parsed[0]["greedy_frac_mean"]) == pytest.approx(1.4 / 3)
    assert float(parsed[0]["k_min_frac_low"]) <= float(parsed[0]["k_min_frac_mean"])


# --- the report --------------------------------------------------------------------------------------


def test_report_writes_table_csv_and_plots(tmp_path, capsys) -> None:
    out = tmp_path / "report"
    bandits_main(
        [
            "--env-ids",
            "Bandit-Bernoulli-K5-Easy-v0",
            "Bandit-Linear-K10-v0",
            "--num-instances",
            "24",
            "--horizon",
            "30",
            "--num-resamples",
            "100",
            "--out-dir",
            str(out),
        ]
    )
    md = (out / "results.md").read_text()
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    expected = {
        ("Bandit-Bernoulli-K5-Easy-v0", name)
        for name in ("ucb", "thompson_beta", "epsilon_greedy", "greedy", "uniform")
    } | {("Bandit-Linear-K10-v0", name) for name in ("ucb", "epsilon_greedy", "greedy", "linucb", "uniform")}
    assert {(r["task"], r["agent"]) for r in rows} == expected
    # the job's size up front (5 agents on each task, 30 rounds each), then a bar over every round
    captured = capsys.readouterr()
    assert captured.out.startswith(
        "2 tasks, 10 agent runs, 300 rounds of 24 instances on cpu with 1 torch thread"
    )
    assert "300/300" in captured.err
    assert all(r["horizon"] == "30" and r["num_instances"] == "24" for r in rows)
    for task, agent in expected:
        assert f"| {task} | {agent} | 30 | 24 |" in md
    assert "GreedyFrac:" in md  # the definitions are in the report
    for task in ("Bandit-Bernoulli-K5-Easy-v0", "Bandit-Linear-K10-v0"):
        png = out / f"regret_{task}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_curves_and_agent_selection(tmp_path) -> None:
    config = BanditsConfig(
        env_ids=["Bandit-Gaussian-K5-Easy-v0"],
        agents=["ucb", "linucb", "thompson_gaussian"],
        num_instances=10,
        horizon=12,
        num_resamples=50,
        out_dir=str(tmp_path),
        plots=False,
    )
    result = evaluate_suite(config, log=False)
    assert [r.agent for r in result.rows] == ["ucb", "thompson_gaussian"]  # linucb: contextual only
    curve = result.curves["Bandit-Gaussian-K5-Easy-v0"][0]
    assert curve.rounds.tolist() == list(range(1, 13))
    assert (curve.mean[1:] >= curve.mean[:-1]).all()  # cumulative regret never falls
    paths = write_report(result)
    assert set(paths) == {"markdown", "csv"}


def test_config_errors_name_the_valid_values() -> None:
    with pytest.raises(ConfigError, match="core"):
        evaluate_suite(BanditsConfig(suite="cor"), log=False)
    with pytest.raises(ConfigError, match="Valid agents"):
        validate(BanditsConfig(agents=["ucbb"]))
    with pytest.raises(ConfigError, match="num-instances"):
        validate(BanditsConfig(num_instances=0))
    with pytest.raises(UnknownEnvError):
        evaluate_suite(BanditsConfig(env_ids=["Bandit-Bernoulli-K5-Hrd-v0"]), log=False)
