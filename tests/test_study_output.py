"""Study scripts write to results/<study>/ unless asked to publish into benchmarks/ (tracked files)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_novelty_study_plots_go_to_results_unless_published(in_tmp):
    pytest.importorskip("rliable")
    study = load("novelty_study")
    try:
        assert study.plots_prefix(study.Args()) == Path("results/novelty_study/novelty")
        assert (in_tmp / "results" / "novelty_study").is_dir()
        assert study.plots_prefix(study.Args(publish=True)) == BENCHMARKS / "novelty"
        assert study.plots_prefix(study.Args(plots=Path("elsewhere/x"))) == Path("elsewhere/x")
        assert (in_tmp / "elsewhere").is_dir()
    finally:
        sys.modules.pop("novelty_study", None)


def test_text_credit_study_table_goes_to_results_unless_published(in_tmp):
    study = load("text_credit_study")
    try:
        assert study.out_prefix(study.Args()) == Path("results/text_credit_study/text_credit_study")
        assert (in_tmp / "results" / "text_credit_study").is_dir()
        assert study.out_prefix(study.Args(publish=True)) == BENCHMARKS / "text_credit_study"
    finally:
        sys.modules.pop("text_credit_study", None)


def test_text_credit_study_says_its_size_and_time_up_front():
    study = load("text_credit_study")
    try:
        line = study.study_size(study.Args(seeds=[1, 2], total_timesteps=4096, jobs=2), runs=6)
    finally:
        sys.modules.pop("text_credit_study", None)
    # the reference: 15 runs x 16,384 steps, 2 at a time, 44 min -> 88 s per 4,096-step run; 3 rounds of 2
    assert line.startswith("6 runs (3 credits x 2 seeds) of 4,096 env steps, 2 at a time.")
    assert "about 1.5 min on the 2-core development VM" in line
    assert "about 4 min for the study" in line
