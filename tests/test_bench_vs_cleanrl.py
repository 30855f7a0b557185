"""The paired benchmark against the CleanRL-equivalent reference (benchmarks/bench_vs_cleanrl.py).

What is pinned: the reference's networks ARE ours (our policy's and RND's weights, loaded into
the reference's modules in order, give the same outputs), and a tiny paired run alternates the
two programs, takes the ratio within each pair and summarizes it as min / median / max.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("envpool")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_vs_cleanrl as bench_module  # noqa: E402
from bench_vs_cleanrl import Bench, ReferencePolicy, ReferenceRND  # noqa: E402

from agents.grid_networks import make_policy  # noqa: E402
from explore.rnd import RND  # noqa: E402

NUM_ACTIONS = 18


def copy_weights_in_order(source: torch.nn.Module, destination: torch.nn.Module) -> None:
    """Copy every parameter of `source` into the parameter of `destination` in the same position."""
    pairs = list(zip(source.parameters(), destination.parameters(), strict=True))
    assert [a.shape for a, _ in pairs] == [b.shape for _, b in pairs]
    with torch.no_grad():
        for a, b in pairs:
            b.copy_(a)


def test_the_reference_policy_is_our_policy():
    torch.manual_seed(0)
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    ours, reference = make_policy(space, NUM_ACTIONS), ReferencePolicy(NUM_ACTIONS)
    copy_weights_in_order(ours, reference)
    frames = torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        logits, v_ext, v_int = ours(frames)
        action = torch.arange(5) % NUM_ACTIONS
        _, logprob, entropy, ref_ext, ref_int = reference.act(frames.float(), action)
        values = reference.values(frames.float())
    expected = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(logprob, expected.log_prob(action))
    torch.testing.assert_close(entropy, expected.entropy())
    for ref, mine in ((ref_ext, v_ext), (ref_int, v_int), (values[0], v_ext), (values[1], v_int)):
        torch.testing.assert_close(ref.squeeze(-1), mine)


def test_the_reference_rnd_networks_are_ours():
    torch.manual_seed(0)
    ours, reference = RND(num_envs=1), ReferenceRND()
    copy_weights_in_order(ours.target, reference.target)
    copy_weights_in_order(ours.predictor, reference.predictor)
    assert not any(p.requires_grad for p in reference.target.parameters())
    x = torch.randn(3, 1, 84, 84)
    with torch.no_grad():
        torch.testing.assert_close(reference.target(x), ours.target(x))
        torch.testing.assert_close(reference.predictor(x), ours.predictor(x))


@pytest.mark.slow
def test_a_tiny_paired_run_alternates_and_summarizes_the_ratio(tmp_path):
    bench = Bench(
        num_envs=2,
        num_steps=8,
        num_minibatches=2,
        update_epochs=1,
        total_timesteps=32,  # two updates: the steady SPS has one
        threads=(1,),
        pairs=2,
        json_out=str(tmp_path / "vs_cleanrl.json"),
    )
    report = bench_module.main(bench)
    summary = report["by_threads"]["1"]
    pairs = summary["pairs"]
    assert [p["order"] for p in pairs] == [["ours", "reference"], ["reference", "ours"]]
    for pair in pairs:
        for program in ("ours", "reference"):
            run = pair[program]
            assert run["threads"] == 1 and run["global_step"] == 32
            assert run["sps"] > 0 and run["steady_sps"] > 0 and run["process_seconds"] > 0
        assert pair["ratio"] == pair["ours"]["sps"] / pair["reference"]["sps"]
    ratios = [p["ratio"] for p in pairs]
    assert summary["ratio"] == {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}
    assert (tmp_path / "vs_cleanrl.json").exists()


def test_bad_sizes_are_named_before_any_run():
    with pytest.raises(SystemExit, match="--num-minibatches 3 must divide the batch 1024"):
        bench_module.main(Bench(num_minibatches=3))
