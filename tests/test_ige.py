"""Intelligent Go-Explore on real TextWorldExpress coin-collector games (envs.text)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from test_llm_client import FakeOpenAI  # tests/ is on sys.path under pytest

from explore.archive.cells import text_cell
from explore.archive.ige import IGE, IGEConfig, run_ige
from explore.archive.replay import replay
from explore.errors import ConfigError
from explore.judge import HTTPJudge, UniformJudge

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("textworld_express") is None, reason="the 'text' extra is not installed"
)

GAME = {"numLocations": 6, "includeDoors": 1, "numDistractorItems": 0}


def coin_env(**kwargs: Any) -> Any:
    from envs.text import make_text_env

    return make_text_env("TWX-CoinCollector-v0", max_episode_steps=10_000, **{**GAME, **kwargs})


@pytest.fixture
def env():
    e = coin_env()
    yield e
    e.close()


def test_uniform_ige_solves_a_small_coin_collector_and_every_cell_replays_exactly(env):
    ige = IGE(env, UniformJudge(seed=0), IGEConfig(budget=1500, seed=0))
    result = ige.run()
    assert result.success and result.steps_to_solve is not None and result.steps_to_solve <= 1500
    assert result.total_steps == result.explore_steps + result.replay_steps == result.steps_to_solve
    assert result.explore_steps_to_solve == result.explore_steps and result.replay_steps > 0
    assert result.archive_size == len(ige.archive) > 3 and result.replay_mismatches == 0
    assert result.rejected == 0  # the uniform judge finds everything interesting
    # the solution, replayed from the seed's reset, wins the game
    replayed = replay(env, result.solution, seed=0)
    assert replayed.info["success"] and replayed.terminated
    # every archived cell: its trajectory returns to exactly the archived observation
    for record in ige.archive.records():
        back = replay(env, [str(c) for c in record.trajectory.tolist()], seed=0)
        assert back.obs == record.state and text_cell(back.obs) == record.key
    # the same seed gives the same run
    again = run_ige(coin_env(), UniformJudge(seed=0), IGEConfig(budget=1500, seed=0))
    assert (again.steps_to_solve, again.solution) == (result.steps_to_solve, result.solution)


def test_budget_ends_an_unsolved_run_and_replay_can_be_left_out_of_it(env):
    result = run_ige(env, UniformJudge(seed=1), IGEConfig(budget=5, seed=1, count_replay=False))
    assert not result.success and result.steps_to_solve is None
    assert result.explore_steps == 5 and result.total_steps == 5 + result.replay_steps


def test_selection_modes_and_a_filtering_judge(env):
    class Picky(UniformJudge):
        """Finds only states that mention a coin or a door interesting (a real judge, just a simple one)."""

        def _score(self, states, archive):
            return [1.0 if ("coin" in s or "door" in s) else 0.0 for s in states]

    for select in ("weights", "uniform"):
        cfg = IGEConfig(budget=3000, seed=2, select=select, action="uniform")
        r = run_ige(env, UniformJudge(seed=2), cfg)
        assert r.success
    r = run_ige(env, Picky(seed=2), IGEConfig(budget=3000, seed=2))
    assert r.judged > 0 and r.rejected > 0 and r.success and not r.exhausted
    # a judge that finds nothing interesting leaves nothing to explore: the run stops early
    r = run_ige(env, UniformJudge(value=0.0, seed=2), IGEConfig(budget=3000, seed=2))
    assert r.exhausted and not r.success and r.archive_size == 1 and r.total_steps < 3000
    with pytest.raises(ConfigError, match="select"):
        IGEConfig(select="best").validate()


def test_judge_failure_mid_run_falls_back_and_the_run_completes(env, caplog):
    def reply(prompt: str) -> str:  # a scripted model: "yes" to every state, the first option
        return "State 0" if prompt.rstrip().endswith("State") else ("yes" if "yes or no" in prompt else "0")

    server = FakeOpenAI(reply=reply).__enter__()
    judge = HTTPJudge(
        url=server.url, model="m", max_retries=1, backoff=0.001, timeout=2.0, fallback="uniform"
    )
    stopped = {}

    def stop_server_after_a_while(stats: dict[str, Any]) -> None:
        if stats["iterations"] == 5 and not stopped:
            stopped["requests"] = server.requests
            server.__exit__(None, None, None)  # the judge's server goes away mid-run

    with caplog.at_level("WARNING"):
        result = IGE(env, judge, IGEConfig(budget=3000, seed=0), progress=stop_server_after_a_while).run()
    assert stopped["requests"] > 0  # the server answered the first iterations
    assert result.success
    m = result.judge_metrics
    assert m["judge/fallbacks"] > 0 and set(judge.fallback_kinds) <= {"unreachable", "breaker_open"}
    assert any("falling back to UniformJudge" in r.getMessage() for r in caplog.records)


def test_the_runner_writes_csv_json_and_tensorboard(tmp_path):
    path = Path(__file__).resolve().parents[1] / "runs" / "ige_text.py"
    spec = importlib.util.spec_from_file_location("ige_text_runner", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ige_text_runner"] = module
    spec.loader.exec_module(module)
    cfg = module.IGETextConfig(
        judge="uniform",
        seeds=[0, 1],
        budget=800,
        env_kwargs=json.dumps({"numLocations": 3, "includeDoors": 0}),
        out_dir=str(tmp_path),
    )
    report = module.main(cfg)
    assert report["summary"]["success_rate"] == 1.0
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [r["seed"] for r in rows] == ["0", "1"]
    assert json.loads((tmp_path / "results.json").read_text())["runs"][0]["success"] is True
    assert list((tmp_path / "tb" / "seed_0").glob("events.out.tfevents.*"))
    with pytest.raises(ConfigError, match="JSON"):
        module.env_kwargs(module.IGETextConfig(env_kwargs="{oops"))
