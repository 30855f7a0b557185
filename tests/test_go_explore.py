"""Tiny real Go-Explore runs on Montezuma's Revenge (ale-py, in-process and with workers), and resume."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("ale_py")

from explore.archive import Archive, Downscale  # noqa: E402
from explore.archive.ale import decompress_frame  # noqa: E402
from explore.archive.go_explore import GoExplore, GoExploreConfig, main  # noqa: E402


def _rows(run_dir):
    with open(run_dir / "progress.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_finds_cells_and_resumes(tmp_path):
    run_dir = tmp_path / "ge"
    config = GoExploreConfig(frames=4000, run_dir=str(run_dir), progress=False, log_interval=0.0)
    summary = GoExplore(config).run()
    assert summary["frames"] >= 4000 and summary["cells"] > 1 and summary["rooms"] >= 1
    archive = Archive.load(run_dir / "archive.pkl")
    assert len(archive) == summary["cells"] and archive.meta["frames"] == summary["frames"]
    assert set(archive.meta["rooms"]) == {1}  # the first room of Montezuma's Revenge
    assert (run_dir / "config.json").is_file() and list(run_dir.glob("events.out.tfevents.*"))

    resumed = main(["--resume", str(run_dir), "--frames", "8000", "--no-progress"])
    assert resumed["frames"] >= 8000 and resumed["cells"] >= summary["cells"]
    assert resumed["explorations"] > summary["explorations"]
    again = Archive.load(run_dir / "archive.pkl")
    assert set(archive.keys()) <= set(again.keys())  # no cell lost
    frames = [int(r["frames"]) for r in _rows(run_dir)]
    assert frames == sorted(frames) and frames[-1] == resumed["frames"]


def test_workers_and_policy_and_dynamic_cells(tmp_path):
    with_workers = GoExplore(
        GoExploreConfig(frames=3000, num_workers=2, tasks_per_message=2, run_dir=str(tmp_path / "w"),
                        progress=False)
    ).run()
    assert with_workers["cells"] > 1 and with_workers["frames"] >= 3000

    rng = np.random.default_rng(0)
    runner = GoExplore(
        GoExploreConfig(frames=2000, tasks_per_message=3, explore_steps=50, run_dir=str(tmp_path / "p"),
                        progress=False),
        policy=lambda frames: rng.integers(0, 18, len(frames)),
    )
    policy = runner.run()
    assert policy["cells"] > 1
    for rec in runner.archive.records():  # trajectories lead back from the reset
        assert rec.length == len(rec.trajectory)

    dyn = GoExplore(
        GoExploreConfig(frames=3000, dynamic_cells=True, dynamic_interval=1000, dynamic_target=8,
                        run_dir=str(tmp_path / "d"), progress=False)
    )
    noise = np.random.default_rng(0).integers(0, 256, (100, 210, 160), dtype=np.uint8)
    dyn.samples.extend(noise)  # noise splits into many cells at 11 x 8 x 8: a coarser one is chosen
    dyn.run()
    rep = dyn.representation
    assert rep != Downscale() and dyn.archive.meta["representation"] == (rep.width, rep.height, rep.levels)
    for rec in dyn.archive.records():  # the archive was re-keyed with the new representation
        assert rec.key == int(rep(decompress_frame(rec.frame)[None])[0])
