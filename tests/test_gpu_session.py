"""The one-call GPU session driver (benchmarks/gpu_session.py), run on the CPU at tiny sizes.

What is pinned: every phase runs and reports figures (numbers, not placeholders) into one JSON
and one Markdown table; a phase that fails (CUDA missing) or outruns its budget records its error
and the phases after it still run; the interval union behind the profile's busy times.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("envpool")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_session  # noqa: E402
from gpu_session import Session  # noqa: E402

GENEROUS = 3600.0  # budgets far above the phases' needs: these tests time nothing
TINY = dict(
    device="cpu",
    env_counts=(2,),
    num_steps=8,
    updates=1,
    raw_steps=20,
    profile_envs=2,
    torch_threads=1,
    total_budget=4 * GENEROUS,
    budget_environment=GENEROUS,
    budget_raw=GENEROUS,
    budget_train=GENEROUS,
    budget_profile_eager=GENEROUS,
    budget_profile_compiled=GENEROUS,
)


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_union_of_intervals_counts_overlaps_once():
    # [0, 2) and [1, 3) overlap in [1, 2): together 3; [5, 6) adds 1; [5.2, 5.5) lies inside it
    assert gpu_session._union_us([(5, 6), (0, 2), (1, 3), (5.2, 5.5)]) == 4
    assert gpu_session._union_us([]) == 0


def test_a_profile_of_one_step_splits_into_forward_backward_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 2))
    optimizer = torch.optim.Adam(model.parameters())
    x = torch.randn(8, 1, 8, 8)

    def step() -> None:
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # Adam's state is allocated outside the profile
    start = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    summary = gpu_session.summarize_profile(prof, time.perf_counter() - start, on_cuda=False)
    parts = [summary[f"ops_{part}_ms"] for part in gpu_session.OP_PARTS]
    assert all(ms > 0 for ms in parts)
    # one thread: the parts' ops do not overlap, so they add up to the time inside torch ops
    assert sum(parts) == pytest.approx(summary["torch_ops_ms"], abs=0.03)
    assert summary["torch_ops_ms"] <= summary["profiled_wall_ms"]
    names = [row["name"] for row in summary["top"]]
    assert "aten::convolution_backward" in names or any("conv" in name for name in names)
    assert gpu_session.op_part("autograd::engine::evaluate_function: ConvolutionBackward0") == "backward"
    assert gpu_session.op_part("Optimizer.step#Adam.step") == "optimizer"
    assert gpu_session.op_part("aten::conv2d") == "forward_and_other"


@pytest.mark.slow
def test_every_phase_reports_numbers_in_one_json_and_one_table(tmp_path):
    report = gpu_session.main(Session(out=str(tmp_path), **TINY))
    expected = ["environment", "raw_envpool", "train_2", "profile_eager", "profile_compiled"]
    assert list(report["phases"]) == expected
    for name, record in report["phases"].items():
        assert record["status"] == "ok", (name, record.get("error"), record.get("log_tail"))
    assert json.loads((tmp_path / gpu_session.JSON_NAME).read_text()) == json.loads(json.dumps(report))

    phases = {name: record["result"] for name, record in report["phases"].items()}
    assert phases["environment"]["obs_shape"] == [2, 4, 84, 84]
    for key in ("raw_sync_sps_2", "raw_async_sps_2"):
        assert is_number(phases["raw_envpool"][key]) and phases["raw_envpool"][key] > 0
    train = phases["train_2"]
    assert train["updates"] == 2 and train["device"] == "cpu"
    assert is_number(train["steady_sps"]) and train["steady_sps"] > 0
    assert is_number(train["update_seconds_per_update"]) and train["update_seconds_per_update"] > 0
    for name, compiled in (("profile_eager", False), ("profile_compiled", True)):
        profile = phases[name]
        assert profile["compile"] is compiled
        # 2 envs x 8 steps; the paper preset's 4 epochs x 4 minibatches
        assert profile["samples_per_update"] == 16 and profile["minibatches_per_update"] == 16
        for key in ("update_wall_ms", "profiled_wall_ms", "torch_ops_ms", "device_busy_ms"):
            assert is_number(profile[key]) and profile[key] > 0, key
        # on the CPU the device is the CPU: busy = inside torch ops; the rest of the wall is outside them
        assert profile["device_busy_ms"] == profile["torch_ops_ms"]
        assert profile["torch_ops_ms"] <= profile["profiled_wall_ms"]
        assert profile["outside_ops_ms"] == pytest.approx(
            profile["profiled_wall_ms"] - profile["torch_ops_ms"], abs=0.02
        )
        assert profile["kernel_launches"] == 0
        parts = [profile[f"ops_{part}_ms"] for part in gpu_session.OP_PARTS]
        assert all(ms > 0 for ms in parts) and sum(parts) == pytest.approx(profile["torch_ops_ms"], abs=0.05)
        top = profile["top"]
        assert 0 < len(top) <= gpu_session.TOP_KERNELS
        assert [row["self_ms"] for row in top] == sorted((row["self_ms"] for row in top), reverse=True)
        assert all(row["calls"] >= 1 and 0 < row["share"] <= 1 for row in top)
        # a PPO update of a conv policy spends time in convolutions (their backward at least)
        assert any("convolution" in row["name"] for row in top)

    table = (tmp_path / gpu_session.MARKDOWN_NAME).read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| phase")]
    for name in expected:
        assert any(row.startswith(f"| {name} | ok") for row in rows), name
    assert "error" not in table and "nan" not in table.lower()
    assert f"| train_2 | ok ({report['phases']['train_2']['seconds']}" in table
    assert f"| steady_sps | {train['steady_sps']:,} |" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_failing_or_slow_phase_records_why_and_the_session_goes_on(tmp_path):
    settings = {
        **TINY,
        "device": "cuda",
        "raw_steps": 10**7,  # hours of stepping: the raw phase must hit its 2 s budget
        "budget_raw": 2.0,
        "phases": ("raw_envpool", "train_2", "environment"),
    }
    report = gpu_session.main(Session(out=str(tmp_path), **settings))
    raw, train, environment = (report["phases"][name] for name in settings["phases"])
    assert raw["status"] == "timeout" and "budget of 2 s" in raw["error"]
    assert train["status"] == "error" and "CUDA is not available" in train["error"]
    assert "ConfigError" in train["error"]
    assert environment["status"] == "ok" and environment["result"]["cuda_available"] is False
    table = (tmp_path / gpu_session.MARKDOWN_NAME).read_text()
    assert "| raw_envpool | timeout" in table and "| train_2 | error" in table
    assert json.loads((tmp_path / gpu_session.JSON_NAME).read_text()) == json.loads(json.dumps(report))


def test_an_unknown_phase_is_named_with_the_valid_ones(tmp_path):
    with pytest.raises(
        SystemExit, match="--phases train_999: unknown; valid phases: environment, raw_envpool"
    ):
        gpu_session.main(Session(out=str(tmp_path), **{**TINY, "phases": ("train_999",)}))
    assert not (tmp_path / gpu_session.JSON_NAME).exists()
