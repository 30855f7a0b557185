"""Suites own their quirks: Montezuma's room counter and Atari's settings live in envs/atari.py, and
the trainer reads them through the generic EnvSuite hooks."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import torch

from agents.ppo import PRESETS
from envs.atari import MONTEZUMA_ROOM_RAM_INDEX, suite

REPO = Path(__file__).resolve().parents[1]


def ram_with_rooms(rooms: list[int]) -> dict[str, np.ndarray]:
    ram = np.zeros((len(rooms), 128), dtype=np.uint8)
    ram[:, MONTEZUMA_ROOM_RAM_INDEX] = rooms
    return {"ram": ram}


def test_montezuma_counts_the_distinct_rooms_of_ram_byte_3():
    (rooms,) = suite().info_metrics("MontezumaRevenge-v5", torch.device("cpu"))
    assert rooms.name == "rooms_visited"
    rooms.observe(ram_with_rooms([1, 1, 1]))
    assert rooms.value() == 1
    rooms.observe(ram_with_rooms([1, 0, 4]))
    rooms.observe(ram_with_rooms([4, 255, 0]))
    assert rooms.value() == 4  # rooms 0, 1, 4, 255


def test_room_tables_of_several_ranks_merge_into_their_union():
    ranks = [suite().info_metrics("MontezumaRevenge-v5", torch.device("cpu"))[0] for _ in range(2)]
    ranks[0].observe(ram_with_rooms([1, 2]))
    ranks[1].observe(ram_with_rooms([2, 7]))
    summed = ranks[0].table_as_counts() + ranks[1].table_as_counts()  # what all_reduce_sum_ returns
    for metric in ranks:
        metric.merge_counts(summed)
        assert metric.value() == 3


def test_other_games_have_no_room_counter():
    assert suite().info_metrics("Breakout-v5", torch.device("cpu")) == []


def test_atari_settings_come_from_the_fields_the_suite_declares():
    config = dataclasses.replace(PRESETS["paper"], sticky_action_prob=0.0, full_action_space=False)
    assert suite().config_kwargs(config) == {"repeat_action_probability": 0.0, "full_action_space": False}
    config = dataclasses.replace(config, max_episode_steps=100)
    assert suite().config_kwargs(config)["max_episode_steps"] == 100


def test_envs_import_neither_agents_nor_the_trainer_config():
    for path in sorted((REPO / "envs").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("agents"), f"{path} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("agents") for a in node.names), path
    atari = (REPO / "envs" / "atari.py").read_text()
    assert "config.sticky_action_prob" not in atari and "MontezumaRevenge" in atari
    trainer = (REPO / "agents" / "ppo.py").read_text()
    assert "MONTEZUMA" not in trainer and '"ram"' not in trainer
