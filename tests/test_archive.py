"""Go-Explore archive: cells, weights, selection, save/load with ALE states, restore, replay, bonus."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from explore.archive import Archive, Downscale, DynamicDownscale, atari_cell, cell_levels, text_cell
from explore.archive.cells import area_weights, minigrid_cell, minihack_cell, text_key

pytest.importorskip("ale_py")

from explore.archive.ale import ALEBatch, ALESettings, Emulator, ExploreTask, explore_random, rom_id  # noqa: E402
from explore.archive.bonus import ArchiveBonus  # noqa: E402
from explore.archive.replay import ReplayReturner, replay  # noqa: E402


def _archive_with_visits(visits, **kwargs) -> Archive:
    archive = Archive(**kwargs)
    for i, v in enumerate(visits):
        archive.add(i, 0.0, [])
        archive.visit([i] * v)
    return archive


# --- weights and selection ------------------------------------------------------------------


def test_selection_weights_exact():
    archive = _archive_with_visits([0, 1, 3, 8])
    np.testing.assert_array_equal(archive.visits, [0, 1, 3, 8])
    np.testing.assert_allclose(archive.weights(), [1.0, 2**-0.5, 0.5, 1 / 3], rtol=0, atol=1e-15)
    archive.weight_power = 1.0
    np.testing.assert_allclose(archive.weights(), [1.0, 0.5, 0.25, 1 / 9], rtol=0, atol=1e-15)
    chosen = _archive_with_visits([5, 5], weight_count="chosen")
    np.testing.assert_array_equal(chosen.weights(), [1.0, 1.0])  # nothing chosen yet
    chosen.select(3, np.random.default_rng(0))
    np.testing.assert_allclose(chosen.weights(), 1 / np.sqrt(chosen.times_chosen + 1.0))
    assert chosen.times_chosen.sum() == 3


def test_select_probabilities_match_weights():
    archive = _archive_with_visits([0, 1, 3, 8, 24])
    p = archive.probabilities()
    n = 200_000
    rows = archive.select(n, np.random.default_rng(1234), rows=True)
    observed = np.bincount(rows, minlength=len(archive))
    chi2 = float(((observed - n * p) ** 2 / (n * p)).sum())
    assert chi2 < 18.47  # chi-square, 4 degrees of freedom, p = 0.001
    np.testing.assert_array_equal(archive.times_chosen, observed)  # select counts its draws
    keys = archive.select(5, np.random.default_rng(0), count=False)
    assert all(k in archive for k in keys)


def test_add_keeps_the_better_trajectory():
    archive = Archive()
    assert archive.add(7, 10.0, [1, 2, 3], state="s1")
    archive.visit([7, 7])
    assert not archive.add(7, 5.0, [1], state="worse score")
    assert not archive.add(7, 10.0, [1, 2, 3, 4], state="same score, longer")
    assert not archive.add(7, 10.0, [3, 2, 1], state="same score, same length")
    assert archive.add(7, 10.0, [4, 4], state="same score, shorter")
    assert archive.cell(7).state == "same score, shorter"
    assert archive.add(np.int64(7), 20.0, [1, 2, 3, 4, 5], state="higher score")
    rec = archive.cell(7)
    assert (rec.score, rec.trajectory.tolist(), rec.state, rec.visits, rec.length) == (
        20.0, [1, 2, 3, 4, 5], "higher score", 2, 5)
    assert len(archive) == 1 and 7 in archive and np.int64(7) in archive and 8 not in archive


def test_batched_lookup_visit_update():
    archive = Archive(capacity=2)  # grows
    keys = np.arange(100, dtype=np.int64) * 1_000_003 - 7
    changed = archive.update(keys, np.zeros(100), [[i] for i in range(100)])
    assert changed.all() and len(archive) == 100
    np.testing.assert_array_equal(archive.lookup(keys[::-1]), np.arange(100)[::-1])
    np.testing.assert_array_equal(archive.lookup(torch.tensor([keys[3], 12345])), [3, -1])
    assert archive.visit(np.array([keys[1], keys[1], 12345])) == 2
    assert archive.cell(int(keys[1])).visits == 2
    assert archive.best().key == int(keys[0])  # all score 0: the shortest (length 1, first) wins ties


def test_rekey_merges_cells_keeping_the_best():
    archive = Archive()
    archive.add("a", 1.0, [1, 2], state="a")
    archive.add("b", 1.0, [1], state="b")
    archive.add("c", 0.0, [], state="c")
    archive.visit(["a", "b", "b", "c"])
    merged = archive.rekey(["x", "x", "y"])
    assert merged.keys() == ["x", "y"]
    x = merged.cell("x")
    assert (x.state, x.score, x.visits) == ("b", 1.0, 3)


# --- cells ----------------------------------------------------------------------------------


def test_downscale_levels_exact():
    # 88 x 80 frame made of 8 x 11 blocks of 11 x 8 pixels, block value -> level floor(v * 8 / 256)
    values = np.arange(88).reshape(8, 11) * 255 // 87
    frame = np.kron(values, np.ones((11, 8), np.int64)).astype(np.uint8)[None]
    np.testing.assert_array_equal(cell_levels(frame)[0], values * 8 // 256)
    np.testing.assert_array_equal(cell_levels(frame, levels=256)[0], values)
    # the 210 x 160 screen: fractional areas; uniform screens land exactly on every level boundary
    for level in range(8):
        screen = np.full((1, 210, 160), level * 32, np.uint8)
        assert (cell_levels(screen) == level).all()
        assert (cell_levels(screen - (level > 0)) == max(level - 1, 0)).all()
    np.testing.assert_allclose(area_weights(210, 8).sum(1), 1.0)
    np.testing.assert_allclose(area_weights(210, 8).sum(0), 8 / 210)  # every pixel counts equally
    # RGB is converted to grayscale; stacked frames use the newest one
    rgb = np.repeat(frame[..., None], 3, axis=-1)
    np.testing.assert_array_equal(cell_levels(rgb), cell_levels(frame))
    stack = np.stack([np.zeros_like(frame[0]), frame[0]])[None]
    np.testing.assert_array_equal(atari_cell(stack, stacked=True), atari_cell(frame))


def test_cell_keys_stable_and_backend_independent():
    frames = np.random.default_rng(0).integers(0, 256, (16, 210, 160), dtype=np.uint8)
    keys = atari_cell(frames)
    assert keys.dtype == np.int64 and len(set(keys.tolist())) == 16
    np.testing.assert_array_equal(atari_cell(frames.copy()), keys)
    np.testing.assert_array_equal(atari_cell(torch.from_numpy(frames)).numpy(), keys)
    assert atari_cell(frames[:1], 12, 8, 8)[0] != keys[0]  # the representation is part of the key
    code = (
        "import numpy as np; from explore.archive.cells import atari_cell, text_key;"
        "f = np.random.default_rng(0).integers(0, 256, (16, 210, 160), dtype=np.uint8);"
        "print(','.join(map(str, atari_cell(f).tolist())), text_key('A  Room'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": "", "OMP_NUM_THREADS": "1"},
                         cwd=Path(__file__).resolve().parents[1])
    sub_keys, sub_text = out.stdout.split()
    assert sub_keys == ",".join(map(str, keys.tolist()))
    assert int(sub_text) == text_key("a room")


def test_dynamic_downscale_picks_a_representation_near_the_target():
    rng = np.random.default_rng(0)
    frames = np.kron(rng.integers(0, 2, (300, 4, 4)) * 255, np.ones((1, 50, 40))).astype(np.uint8)
    dyn = DynamicDownscale(target_cells=16, num_candidates=40)
    rep = dyn.choose(frames, np.random.default_rng(1))
    n = len(np.unique(rep(frames)))
    assert abs(np.log(n / 16)) < abs(np.log(len(np.unique(Downscale()(frames)) / 16)))


def test_text_cell_normalizes():
    assert text_cell("  You are in the KITCHEN.\n\n  Score: 3/10   Moves: 12 \n> ") == "you are in the kitchen."
    assert text_cell("4 6 8 10") == "4 6 8 10"  # numbers that are the state stay
    assert text_cell("Hello\tWorld") == text_cell("hello world")


def test_minihack_cell():
    blstats = np.zeros((4, 27), np.int64)
    blstats[:, 0] = [3, 3, 4, 3]
    blstats[:, 1] = [5, 5, 5, 5]
    blstats[:, 12] = [1, 1, 1, 2]
    inv = np.zeros((4, 55), np.int16)
    inv[1, 7] = 2102  # a skeleton key
    keys = minihack_cell({"blstats": blstats, "inv_glyphs": inv})
    assert len(set(keys.tolist())) == 4
    no_inv = minihack_cell({"blstats": blstats})
    assert no_inv[0] == no_inv[1] and len(set(no_inv.tolist())) == 3
    t = minihack_cell({"blstats": torch.from_numpy(blstats), "inv_glyphs": torch.from_numpy(inv)})
    np.testing.assert_array_equal(t.numpy(), keys)


# --- ALE: restore, save/load ----------------------------------------------------------------


def _run(emu: Emulator, actions) -> list[np.ndarray]:
    out = []
    for a in actions:
        emu.step(int(a))
        out.append(emu.frame.copy())
    return out


@pytest.mark.parametrize("sticky", [0.0, 0.25])
def test_restore_reproduces_frames(sticky):
    settings = ALESettings(repeat_action_probability=sticky)
    actions = np.random.default_rng(0).integers(0, 18, 160)
    emu = Emulator(settings, seed=1)
    _run(emu, actions[:80])
    state = emu.clone()
    original = _run(emu, actions[80:])
    other = Emulator(settings, seed=99)  # another emulator, another seed: the state carries the RNG
    _run(other, actions[:5])
    other.restore(state)
    again = _run(other, actions[80:])
    assert any((a != original[0]).any() for a in original)  # the screen changes
    for a, b in zip(original, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_archive_save_load_with_ale_states(tmp_path):
    from ale_py import ALEState

    emu = Emulator(ALESettings(), seed=0)
    actions = np.random.default_rng(3).integers(0, 18, 60)
    archive = Archive(weight_power=0.7, weight_count="chosen")
    archive.meta["frames"] = 240
    _run(emu, actions[:30])
    archive.add(1, 0.0, actions[:30], emu.ale.cloneState(include_rng=True))  # an ALEState object
    archive.add("text", 1.0, [], None)
    archive.add(2, 0.0, actions[:30], emu.clone())  # serialized bytes
    archive.visit([1, 1, "text"])
    archive.select(4, np.random.default_rng(0))
    expected = _run(emu, actions[30:])
    path = archive.save(tmp_path / "a" / "archive.pkl")
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    loaded = Archive.load(path)
    assert (loaded.weight_power, loaded.weight_count, loaded.meta) == (0.7, "chosen", {"frames": 240})
    assert loaded.keys() == [1, "text", 2] and len(loaded) == 3
    for key in archive:
        a, b = archive.cell(key), loaded.cell(key)
        assert (a.score, a.visits, a.times_chosen, a.length) == (b.score, b.visits, b.times_chosen, b.length)
        np.testing.assert_array_equal(a.trajectory, b.trajectory)
    np.testing.assert_array_equal(loaded.weights(), archive.weights())
    assert isinstance(loaded.cell(1).state, ALEState)
    for key in (1, 2):
        fresh = Emulator(ALESettings(), seed=5)
        fresh.restore(loaded.cell(key).state)
        for a, b in zip(expected, _run(fresh, actions[30:]), strict=True):
            np.testing.assert_array_equal(a, b)


def test_explore_random_cells_and_trajectories_replay():
    emu = Emulator(ALESettings(), seed=0)
    start = emu.clone()
    result = explore_random(emu, ExploreTask(start, steps=100, seed=7))
    assert result.frames == 4 * len(result.actions) and len(result.cells) >= 1
    runs = np.diff(np.flatnonzero(np.diff(result.actions.astype(int)) != 0))
    assert len(result.actions) < 100 or len(runs) < 30  # actions repeat (mean run 20)
    cell = Downscale()
    for key, _score, t, state, _ in result.cells:  # each cell's trajectory leads back to its key
        fresh = Emulator(ALESettings(), seed=3)
        fresh.restore(start)
        _run(fresh, result.actions[:t])
        assert int(cell(fresh.frame[None])[0]) == key
        probe = Emulator(ALESettings(), seed=4)
        probe.restore(state)
        np.testing.assert_array_equal(probe.ram(), fresh.ram())
    assert rom_id("ALE/MontezumaRevenge-v5") == "montezuma_revenge"
    with pytest.raises(Exception, match="montezuma_revenge"):
        rom_id("MontezumasRevenge-v5")


def test_ale_batch_lockstep_in_process():
    with ALEBatch(ALESettings(), num_envs=2, num_workers=0) as batch:
        batch.reset()
        frames, rewards, over, lives, ram = batch.step([0, 3])
        assert frames.shape == (2, 210, 160) and ram.shape == (2, 128) and lives.tolist() == [6, 6]
        states = batch.clone_states()
        after = batch.step([4, 4])[0]
        batch.restore_states(states)
        np.testing.assert_array_equal(batch.step([4, 4])[0], after)


# --- replay ---------------------------------------------------------------------------------


def test_replay_returns_to_the_state_in_a_deterministic_env():
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make("ALE/MontezumaRevenge-v5", obs_type="ram")  # sticky actions 0.25, seeded
    obs, _ = env.reset(seed=11)
    actions = np.random.default_rng(0).integers(0, env.action_space.n, 150)
    total = 0.0
    for a in actions:
        obs, r, *_ = env.step(int(a))
        total += r
    other = gym.make("ALE/MontezumaRevenge-v5", obs_type="ram")
    other.reset(seed=0)
    result = ReplayReturner(other, seed=11).return_to(actions)
    np.testing.assert_array_equal(result.obs, obs)
    assert result.score == total and result.steps == 150
    lake = gym.make("FrozenLake-v1", is_slippery=True)
    lake.reset(seed=3)
    path = [lake.step(1)[0] for _ in range(3)]
    assert replay(gym.make("FrozenLake-v1", is_slippery=True), [1, 1, 1], seed=3, strict=False).obs == path[-1]


# --- bonus ----------------------------------------------------------------------------------


def _frames(values) -> torch.Tensor:
    """(T, N, 4, 84, 84) uint8 frames, each uniform at the given intensity."""
    v = torch.as_tensor(values, dtype=torch.uint8)
    return v[:, :, None, None, None].expand(*v.shape, 4, 84, 84).contiguous()


def test_archive_bonus_first_visits():
    from explore.combine import BonusContext, build_bonus

    bonus = build_bonus("archive", BonusContext(num_envs=3))
    assert isinstance(bonus, ArchiveBonus)
    # levels: 0, 1 (32), 0 again (5), 2 (64) ...; env 1 and 2 reach level 3 at the same step
    next_obs = _frames([[0, 32, 5], [64, 96, 100], [0, 64, 96]])
    valid = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    batch = {"next_obs": next_obs, "valid": valid, "dones": torch.zeros(3, 3, dtype=torch.bool)}
    r = bonus.bonus(batch)
    expected = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(r, expected, rtol=0, atol=0)
    assert bonus.metrics()["cells"] == 4
    again = bonus.bonus(batch)
    assert (again == 0).all()
    state = bonus.state_dict()
    fresh = ArchiveBonus()
    fresh.load_state_dict(state)
    assert (fresh.bonus(batch) == 0).all()
    newer = {"next_obs": _frames([[255, 128, 255]]), "valid": torch.ones(1, 3, dtype=torch.bool)}
    torch.testing.assert_close(fresh.bonus(newer), torch.tensor([[1.0, 1.0, 0.0]]), rtol=0, atol=0)
    invalid = {"next_obs": _frames([[200]]), "valid": torch.zeros(1, 1, dtype=torch.bool)}
    assert (fresh.bonus(invalid) == 0).all() and fresh.metrics()["cells"] == 6


MINIGRID_SPACE = gym.spaces.Dict(
    {
        "image": gym.spaces.Box(0, 10, (7, 7, 3), np.uint8),
        "direction": gym.spaces.Discrete(4),
        "mission": gym.spaces.Box(0, 255, (96,), np.uint8),
    }
)


def test_archive_bonus_on_minigrid_cells_are_the_view_and_the_facing():
    from explore.combine import BonusContext, build_bonus

    bonus = build_bonus("archive", BonusContext(num_envs=2, observation_space=MINIGRID_SPACE))
    assert bonus.obs_kind == "minigrid"
    view = torch.zeros(7, 7, 3, dtype=torch.uint8)
    other = view.clone()
    other[3, 3, 0] = 5  # a key in sight
    images = torch.stack([torch.stack([view, view]), torch.stack([view, other]), torch.stack([other, view])])
    direction = torch.tensor([[0, 1], [0, 1], [1, 0]])
    mission = torch.zeros(3, 2, 96, dtype=torch.uint8)  # the same mission everywhere: not part of the cell
    batch = {
        "next_obs": {"image": images, "direction": direction, "mission": mission},
        "valid": torch.ones(3, 2, dtype=torch.bool),
        "dones": torch.zeros(3, 2, dtype=torch.bool),
    }
    # cells: (view, 0), (view, 1) | (view, 0) again, (other, 1) | (other, 1) again, (view, 0) again
    expected = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(bonus.score(batch), expected, rtol=0, atol=0)
    assert bonus.metrics()["cells"] == 3
    flat = {"image": images.flatten(0, 1).numpy(), "direction": direction.flatten().numpy()}
    numpy_keys = minigrid_cell(flat)
    assert np.array_equal(numpy_keys, minigrid_cell({k: torch.as_tensor(v) for k, v in flat.items()}).numpy())


def test_archive_bonus_rejects_observations_without_a_cell_function():
    from explore.combine import BonusContext, build_bonus
    from explore.errors import ConfigError

    vectors = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    expected = r"no cell function for vector observations; .*frames, minigrid, minihack"
    with pytest.raises(ConfigError, match=expected):
        build_bonus("archive", BonusContext(num_envs=2, observation_space=vectors))
