"""The env-count scaling benchmark (benchmarks/bench_scaling.py) at tiny sizes.

What is pinned: one CSV row per (preset, env count) with the figures as numbers, a PNG plot, and
an unknown preset named with the valid ones before anything runs.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("envpool")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_scaling  # noqa: E402
from bench_scaling import Bench  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_every_point_gets_a_csv_row_with_numbers_and_the_plot_is_written(tmp_path):
    bench = Bench(
        presets=("paper", "minigrid-fast"),
        env_counts=(2, 4),
        num_steps=8,
        updates=1,
        csv_out=str(tmp_path / "scaling.csv"),
        png_out=str(tmp_path / "scaling.png"),
    )
    points = bench_scaling.main(bench)
    with (tmp_path / "scaling.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["preset"], int(r["num_envs"])) for r in rows] == [
        ("paper", 2),
        ("paper", 4),
        ("minigrid-fast", 2),
        ("minigrid-fast", 4),
    ]
    assert [r["env_id"] for r in rows] == ["MontezumaRevenge-v5"] * 2 + ["MiniGrid-MultiRoom-N4-S5-v0"] * 2
    assert [r["bonus"] for r in rows] == ["rnd", "rnd", "none", "none"]
    for row, point in zip(rows, points, strict=True):
        assert list(row) == list(bench_scaling.FIELDS)
        assert int(row["num_steps"]) == 8 and int(row["updates"]) == 2 and row["device"] == "cpu"
        for key in ("steady_sps", "update_seconds_per_update", "process_seconds"):
            assert math.isfinite(float(row[key])) and float(row[key]) > 0, key
        # a process that imported torch holds tens of MB at least; the tree sum is sampled, the other exact
        for key in ("peak_rss_mb", "peak_tree_rss_mb"):
            assert float(row[key]) > 50, key
        assert float(row["steady_sps"]) == point["steady_sps"]
    assert (tmp_path / "scaling.png").read_bytes().startswith(PNG_SIGNATURE)


def test_an_unknown_preset_is_named_before_any_run(tmp_path):
    bench = Bench(presets=("paper", "no-such-preset"), csv_out=str(tmp_path / "s.csv"))
    with pytest.raises(SystemExit, match="--presets no-such-preset: unknown; valid presets: paper, quick"):
        bench_scaling.main(bench)
    assert not (tmp_path / "s.csv").exists()
