"""Checkpoint files (explore/checkpoint.py): stale temp files, the previous checkpoint as a fallback,
corrupt files and a full disk give clear errors, and one resolve_resume for every trainer."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pytest
import torch

import explore.checkpoint as checkpoint_module
from agents.ppo import PRESETS, Config
from explore.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    PREVIOUS_CHECKPOINT_NAME,
    Checkpointer,
    DiskFullError,
    given_fields,
    load_checkpoint,
    remove_stale_temp_files,
    resolve_resume,
    save_checkpoint,
    save_config,
)
from explore.cli import main, parse_train_config
from explore.errors import CheckpointError


def state(step: int) -> dict:
    return {"global_step": step, "update": step // 10, "weights": torch.arange(1000.0) * step}


# --- defect 2: temp files that killed saves left behind --------------------------------------------


def test_stale_temp_files_are_removed_when_a_run_starts(tmp_path):
    stale = [
        tmp_path / f".{CHECKPOINT_NAME}.abc123.tmp",
        tmp_path / f".{PREVIOUS_CHECKPOINT_NAME}.x.tmp",
        tmp_path / f".{CONFIG_NAME}.q9.tmp",
    ]
    keep = [tmp_path / CHECKPOINT_NAME, tmp_path / ".other.tmp", tmp_path / "notes.txt"]
    for path in stale + keep:
        path.write_bytes(b"half a file")
    Checkpointer(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in keep)
    assert remove_stale_temp_files(tmp_path) == []


# --- defect 3: the last two checkpoints, corrupt files ---------------------------------------------


def test_the_previous_checkpoint_is_kept(tmp_path):
    save_checkpoint(tmp_path, state(10))
    assert not (tmp_path / PREVIOUS_CHECKPOINT_NAME).exists()
    save_checkpoint(tmp_path, state(20))
    save_checkpoint(tmp_path, state(30))
    assert torch.load(tmp_path / CHECKPOINT_NAME)["global_step"] == 30
    assert torch.load(tmp_path / PREVIOUS_CHECKPOINT_NAME)["global_step"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME])


def corrupt(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a readable pickle that is not a checkpoint
        torch.save([1, 2, 3], path)


HOW = ["truncated", "random bytes", "empty", "not a checkpoint"]


@pytest.mark.parametrize("how", HOW)
def test_a_corrupt_checkpoint_names_the_file_and_what_to_do(tmp_path, how):
    save_checkpoint(tmp_path, state(10))
    corrupt(tmp_path / CHECKPOINT_NAME, how)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    message = str(error.value)
    assert str(tmp_path / CHECKPOINT_NAME) in message
    assert "restore them from a backup" in message and "start a new run" in message


@pytest.mark.parametrize("how", HOW)
def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, how):
    save_checkpoint(tmp_path, state(10))
    save_checkpoint(tmp_path, state(20))
    corrupt(tmp_path / CHECKPOINT_NAME, how)
    with pytest.warns(UserWarning, match=f"previous checkpoint .*{PREVIOUS_CHECKPOINT_NAME} \\(step 10\\)"):
        loaded = load_checkpoint(tmp_path)
    assert loaded["global_step"] == 10
    assert torch.equal(loaded["weights"], state(10)["weights"])


def test_a_missing_newest_checkpoint_falls_back(tmp_path):
    save_checkpoint(tmp_path, state(10))
    save_checkpoint(tmp_path, state(20))
    (tmp_path / CHECKPOINT_NAME).unlink()
    with pytest.warns(UserWarning, match="missing"):
        assert load_checkpoint(tmp_path)["global_step"] == 10


def test_the_previous_checkpoint_is_copied_where_hard_links_fail(tmp_path, monkeypatch):
    def no_links(*args):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(checkpoint_module.os, "link", no_links)
    save_checkpoint(tmp_path, state(10))
    save_checkpoint(tmp_path, state(20))
    assert torch.load(tmp_path / PREVIOUS_CHECKPOINT_NAME)["global_step"] == 10
    assert torch.load(tmp_path / CHECKPOINT_NAME)["global_step"] == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME])


def test_both_checkpoints_corrupt_names_both(tmp_path):
    save_checkpoint(tmp_path, state(10))
    save_checkpoint(tmp_path, state(20))
    corrupt(tmp_path / CHECKPOINT_NAME, "empty")
    corrupt(tmp_path / PREVIOUS_CHECKPOINT_NAME, "random bytes")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path)
    assert str(tmp_path / CHECKPOINT_NAME) in str(error.value)
    assert str(tmp_path / PREVIOUS_CHECKPOINT_NAME) in str(error.value)


def test_the_cli_reports_a_corrupt_checkpoint_without_a_traceback(tmp_path, capsys):
    run_dir = tmp_path / "run"
    save_config(run_dir, dataclasses.replace(PRESETS["quick"], run_dir=str(run_dir)))
    save_checkpoint(run_dir, state(10))
    corrupt(run_dir / CHECKPOINT_NAME, "truncated")
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("explore train: error: ") and str(run_dir / CHECKPOINT_NAME) in err
    assert "Traceback" not in err


# --- defect 9: a full disk ----------------------------------------------------------------------------


def disk_full_after_half(monkeypatch):
    def torch_save_filling_the_disk(obj, f):
        f.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", torch_save_filling_the_disk)


def test_a_full_disk_says_so_and_names_the_good_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, state(10))
    save_checkpoint(tmp_path, state(20))
    disk_full_after_half(monkeypatch)
    with pytest.raises(DiskFullError) as error:
        save_checkpoint(tmp_path, state(30))
    message = str(error.value)
    assert "full" in message and "step 30" in message
    assert f"{tmp_path / CHECKPOINT_NAME}, is intact" in message and f"--resume {tmp_path}" in message
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["global_step"] == 20  # nothing rotated, nothing half-written left
    assert torch.load(tmp_path / PREVIOUS_CHECKPOINT_NAME)["global_step"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_NAME, PREVIOUS_CHECKPOINT_NAME])


def test_a_full_disk_before_any_checkpoint_says_none_is_saved(tmp_path, monkeypatch):
    disk_full_after_half(monkeypatch)
    with pytest.raises(DiskFullError, match="no checkpoint of this run was saved"):
        save_checkpoint(tmp_path, state(10))
    assert list(tmp_path.iterdir()) == []


# --- one resolve_resume -------------------------------------------------------------------------------


@pytest.fixture
def saved_run(tmp_path) -> Path:
    """A run directory whose saved config differs from the defaults in many fields."""
    run_dir = tmp_path / "run"
    saved = dataclasses.replace(
        PRESETS["quick"],
        env_id="MiniGrid-Empty-5x5-v0",
        num_envs=4,
        env_groups=1,
        seed=9,
        run_dir=str(run_dir),
    )
    save_config(run_dir, saved)
    return run_dir


def test_the_cli_takes_the_saved_config_and_the_flags_given(saved_run):
    config = parse_train_config(["--resume", str(saved_run), "--total-timesteps", "4096"])
    assert (config.env_id, config.num_envs, config.seed, config.device) == (
        "MiniGrid-Empty-5x5-v0",
        4,
        9,
        "cpu",
    )
    assert config.total_timesteps == 4096 and config.resume == str(saved_run)


def test_a_flag_set_back_to_its_default_overrides_the_saved_value(saved_run):
    default = Config()
    assert default.env_groups == 2 and default.seed == 1  # the saved run has 1 and 9
    config = parse_train_config(["--resume", str(saved_run), "--env-groups", "2", "--seed=1", "--progress"])
    assert (config.env_groups, config.seed, config.progress) == (2, 1, True)
    assert config.num_envs == 4  # not given: saved


def test_a_library_call_merges_like_the_cli(saved_run):
    config = resolve_resume(Config(resume=str(saved_run), total_timesteps=4096))
    assert config == parse_train_config(["--resume", str(saved_run), "--total-timesteps", "4096"])
    assert resolve_resume(config) is config  # a resolved config is final


def test_given_fields_reads_flags_in_every_spelling():
    argv = ["--num-envs", "4", "--num_steps=8", "--no-progress", "--amp", "--resume", "x", "positional"]
    assert given_fields(argv, Config) == {"num_envs", "num_steps", "progress", "amp", "resume"}


def test_the_text_trainer_resumes_the_same_way(saved_run, tmp_path):
    text = pytest.importorskip("agents.llm.ppo")
    run_dir = tmp_path / "text"
    save_config(run_dir, text.Config(max_new_tokens=8, num_envs=4, group_size=2, run_dir=str(run_dir)))
    assert text.Config().max_new_tokens == 12
    config = text.parse_config(["--resume", str(run_dir), "--max-new-tokens", "12"])
    assert (config.max_new_tokens, config.num_envs, config.group_size) == (12, 4, 2)
    library = resolve_resume(text.Config(resume=str(run_dir), total_timesteps=99))
    assert (library.max_new_tokens, library.num_envs, library.total_timesteps) == (8, 4, 99)
